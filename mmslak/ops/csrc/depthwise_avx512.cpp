// AVX-512 build of the depthwise kernels (see depthwise_kernels.h). Every header is included before
// the target pragma, so only this file's own functions are compiled for AVX-512; the bindings call
// them only when the CPU (and OS) support AVX-512F.
#include <immintrin.h>
#include <omp.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "depthwise.h"

#pragma GCC target("avx512f,avx512dq,avx512vl,avx2,fma")
#define MMSLAK_DWCONV_ISA avx512
#define MMSLAK_DWCONV_AVX512
#include "depthwise_kernels.h"
