public enum _PFFModel {}
