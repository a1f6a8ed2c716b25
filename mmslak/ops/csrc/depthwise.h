// Interface between the torch bindings (depthwise.cpp) and the per-ISA kernels (depthwise_avx512.cpp,
// depthwise_avx2.cpp, both built from depthwise_kernels.h). Only plain types cross it, so the ISA
// translation units include no torch or standard-library templates that the linker could merge with
// copies compiled for another instruction set.
#pragma once

#include <cstdint>

namespace mmslak::dwconv {

// Sizes of an (N, C, H, W) tensor and its strides in elements (any layout).
struct Geometry {
  int64_t n, c, h, w;
};
struct Strides {
  int64_t n, c, h, w;
};

// One to three depthwise kernels whose 'same' convolutions are summed. weight[k] is (C, kh, kw)
// contiguous; kh and kw are odd. grad_weight[k] (backward only) has the same layout, or is null.
// forward and backward return false when scratch memory cannot be allocated.
template <typename T>
struct KernelSet {
  int count;
  const T* weight[3];
  int kh[3], kw[3];
};

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

MMSLAK_DWCONV_DECLARE_ISA(avx512)
MMSLAK_DWCONV_DECLARE_ISA(avx2)

#undef MMSLAK_DWCONV_DECLARE_ISA

}  // namespace mmslak::dwconv
