// Portable build of the depthwise kernels (see dwconv/kernels.h) with the compiler's vector extensions:
// SSE2 on x86-64, NEON on aarch64; compiled with the target's baseline flags only, so it runs on every
// CPU of the target.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "depthwise.h"

#define MMSLAK_DWCONV_ISA generic

#include "dwconv/kernels.h"
