// Interface between the torch bindings (depthwise.cpp) and the depthwise kernels, built once per
// instruction set from dwconv/kernels.h (dwconv_generic.cpp everywhere, x86/dwconv_*.cpp on x86-64).
// Only plain types cross it, so the kernel files include no torch or standard-library templates that
// the linker could merge with copies compiled for another instruction set.
#pragma once

#include <cstdint>

#include "runtime.h"

namespace mmslak::dwconv {

using cpu::BFloat16;

// Sizes of an (N, C, H, W) tensor and its strides in elements (any layout).
struct Geometry {
  int64_t n, c, h, w;
};
struct Strides {
  int64_t n, c, h, w;
};

// One to three depthwise kernels whose 'same' convolutions are summed. weight[k] is (C, kh, kw)
// contiguous, of the input's dtype; kh and kw are odd. grad_weight[k] (backward only) has the same
// layout and dtype, or is null; bfloat16 weight gradients are accumulated in float32 and rounded once.
// forward and backward return false when scratch memory cannot be allocated.
template <typename T>
struct KernelSet {
  int count;
  const T* weight[3];
  int kh[3], kw[3];
};

// T is float, double or BFloat16 (computed in float32).
#define MMSLAK_DWCONV_DECLARE_ISA(isa)                                                             \
  namespace isa {                                                                                \
  template <typename T>                                                                          \
  bool forward(const Geometry& geometry, const T* x, Strides x_strides, T* y, Strides y_strides,  \
               const T* bias, const KernelSet<T>& kernels);                                      \
  template <typename T>                                                                          \
  bool backward(const Geometry& geometry, const T* grad_out, Strides grad_out_strides, const T* x, \
                Strides x_strides, T* grad_x, Strides grad_x_strides, const KernelSet<T>& kernels, \
                T* const grad_weight[3]);                                                        \
  }

MMSLAK_DWCONV_DECLARE_ISA(generic)
MMSLAK_DWCONV_DECLARE_ISA(avx2)
MMSLAK_DWCONV_DECLARE_ISA(avx512)
MMSLAK_DWCONV_DECLARE_ISA(avx512bf16)

#undef MMSLAK_DWCONV_DECLARE_ISA

}  // namespace mmslak::dwconv
