public enum _PFFData {}
