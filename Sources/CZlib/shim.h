#include <zlib.h>

// inflateInit2 / deflateInit2 are macros: Swift needs functions. 16 + MAX_WBITS selects the gzip
// wrapper.
static inline int cz_inflate_init_gzip(z_stream *s) { return inflateInit2(s, 16 + MAX_WBITS); }
static inline int cz_deflate_init_gzip(z_stream *s) {
    return deflateInit2(s, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
}
