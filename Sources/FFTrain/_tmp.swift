public enum _PFFTrain {}
