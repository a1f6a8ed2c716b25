// AVX-512 build of the depthwise kernels (see dwconv/kernels.h), compiled with
// -mavx512f -mavx512dq -mavx512vl -mavx512bw -mavx2 -mfma (setup.py); the bindings call it only on CPUs
// (and OSes) with those. bfloat16 is widened to float32 and computed with float32 FMAs.
#include <immintrin.h>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "../depthwise.h"

#define MMSLAK_DWCONV_ISA avx512
#define MMSLAK_DWCONV_AVX512
#include "../dwconv/kernels.h"
