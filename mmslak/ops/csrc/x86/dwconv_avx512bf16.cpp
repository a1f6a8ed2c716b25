// AVX-512 + AVX512-BF16 build of the depthwise kernels (see dwconv/kernels.h), compiled with the
// AVX-512 flags and -mavx512bf16 (setup.py): float32 and float64 as in the AVX-512 build, bfloat16 with
// VDPBF16PS dot products of pixel and tap pairs.
#include <immintrin.h>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "../depthwise.h"

#define MMSLAK_DWCONV_ISA avx512bf16
#define MMSLAK_DWCONV_AVX512
#define MMSLAK_DWCONV_AVX512BF16
#include "../dwconv/kernels.h"
