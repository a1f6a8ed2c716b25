// AVX2 + FMA build of the depthwise kernels (see depthwise_kernels.h), for CPUs without AVX-512.
// Every header is included before the target pragma, so only this file's own functions are compiled
// for AVX2.
#include <immintrin.h>
#include <omp.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "depthwise.h"

#pragma GCC target("avx2,fma")
#define MMSLAK_DWCONV_ISA avx2
#include "depthwise_kernels.h"
