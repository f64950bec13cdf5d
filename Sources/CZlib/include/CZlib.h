#ifndef CZLIB_H
#define CZLIB_H

#include <zlib.h>

/// deflateInit2 is a macro Swift cannot import; this is its one-line wrapper.
int CZlib_deflateInit2(z_streamp stream, int level, int method, int windowBits, int memLevel, int strategy);

#endif
