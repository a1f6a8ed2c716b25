// AVX2 + FMA build of the depthwise kernels (see dwconv/kernels.h), compiled with -mavx2 -mfma
// (setup.py); the bindings call it only on CPUs with AVX2 and FMA.
#include <immintrin.h>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "../depthwise.h"

#define MMSLAK_DWCONV_ISA avx2
#define MMSLAK_DWCONV_AVX2
#include "../dwconv/kernels.h"
