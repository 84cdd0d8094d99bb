// Everything is static inline in include/fastmath.h; SwiftPM needs one source file per C target.
#include "fastmath.h"
