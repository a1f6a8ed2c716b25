// Torch bindings of the depthwise CPU kernels, and the Python module object of mmslak._ext.
//
// Ops are registered with TORCH_LIBRARY_FRAGMENT(mmslak_ext, ...), so other files of the extension
// (the peripheral convolution) add their own ops to the same namespace; this file owns the single
// PYBIND11_MODULE, which only makes `import mmslak._ext` load the library.
//
//   torch.ops.mmslak_ext.dwconv2d_forward(x, weights, bias) -> y
//       y = bias + sum_k conv2d(x, weights[k], padding=(kh_k // 2, kw_k // 2), groups=C)
//   torch.ops.mmslak_ext.dwconv2d_backward(grad_out, x, weights, need_input, need_weight)
//       -> (grad_x, grad_weights)   (empty tensors for what was not asked for)
//   torch.ops.mmslak_ext.dwconv2d_cpu_isa() -> 'avx512bf16' | 'avx512' | 'avx2' | 'generic' (the build in use)
//   torch.ops.mmslak_ext.cpu_isas() -> the builds this CPU runs, narrowest first (MMSLAK_CPU_ISA values)
//
// float32, float64 and bfloat16 (computed in float32; weight gradients accumulated in float32 and
// returned in bfloat16, the weights' dtype).
#include <torch/extension.h>

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "depthwise.h"

namespace mmslak::dwconv {
namespace {

using cpu::Isa;

// The kernel build for an instruction set (cpu::current_isa only returns builds that exist).
template <typename T>
struct Kernels {
  decltype(&generic::forward<T>) forward;
  decltype(&generic::backward<T>) backward;
};

template <typename T>
Kernels<T> kernels_for(Isa isa) {
  switch (isa) {
#if defined(MMSLAK_WITH_AVX512BF16)
    case Isa::kAvx512Bf16: return {avx512bf16::forward<T>, avx512bf16::backward<T>};
#endif
#if defined(MMSLAK_WITH_AVX512)
    case Isa::kAvx512: return {avx512::forward<T>, avx512::backward<T>};
#endif
#if defined(MMSLAK_WITH_AVX2)
    case Isa::kAvx2: return {avx2::forward<T>, avx2::backward<T>};
#endif
    default: return {generic::forward<T>, generic::backward<T>};
  }
}

std::string isa_name() { return cpu::isa_name(cpu::current_isa()); }

std::vector<std::string> runnable_isa_names() {
  std::vector<std::string> names;
  for (int isa = 0; isa <= int(cpu::best_isa()); ++isa) names.emplace_back(cpu::isa_name(Isa(isa)));
  return names;
}

// The kernels' element type of a tensor's scalar type (at::BFloat16 is stored as its 16 bits).
template <typename T>
struct KernelType {
  using type = T;
};
template <>
struct KernelType<at::BFloat16> {
  using type = BFloat16;
};
template <typename T>
using kernel_t = typename KernelType<T>::type;

template <typename T>
kernel_t<T>* kernel_ptr(const at::Tensor& t) {
  return reinterpret_cast<kernel_t<T>*>(t.data_ptr<T>());
}

Geometry geometry_of(const at::Tensor& t) { return {t.size(0), t.size(1), t.size(2), t.size(3)}; }
Strides strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

std::vector<at::Tensor> checked_weights(const at::Tensor& x, const std::vector<at::Tensor>& weights) {
  TORCH_CHECK(x.dim() == 4, "x must be (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(x.device().is_cpu(), "the C++ kernels take CPU tensors");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble || x.scalar_type() == at::kBFloat16,
              "the C++ kernels take float32, float64 and bfloat16, got ", x.scalar_type());
  TORCH_CHECK(!weights.empty() && weights.size() <= 3, "one to three kernels, got ", weights.size());
  std::vector<at::Tensor> result;
  for (const at::Tensor& w : weights) {
    TORCH_CHECK(w.dim() == 4 && w.size(0) == x.size(1) && w.size(1) == 1,
                "weights must be (C, 1, kh, kw) with C = ", x.size(1), ", got ", w.sizes());
    TORCH_CHECK(w.size(2) % 2 == 1 && w.size(3) % 2 == 1, "kernel sides must be odd, got ", w.sizes());
    TORCH_CHECK(w.scalar_type() == x.scalar_type() && w.device() == x.device(),
                "weights must have the dtype and device of x");
    result.push_back(w.contiguous());
  }
  return result;
}

template <typename T>
KernelSet<kernel_t<T>> kernel_set(const std::vector<at::Tensor>& weights) {
  KernelSet<kernel_t<T>> set{};
  set.count = int(weights.size());
  for (int k = 0; k < set.count; ++k) {
    set.weight[k] = kernel_ptr<T>(weights[k]);
    set.kh[k] = int(weights[k].size(2));
    set.kw[k] = int(weights[k].size(3));
  }
  return set;
}

// The kernels gather the channels of a pixel with 32-bit indices (any strides otherwise); an input
// whose channel stride is too large for that (planes over 2^27 pixels) is read from a channels_last
// copy.
at::Tensor kernel_layout(const at::Tensor& t) {
  constexpr int64_t kMaxGatherStride = INT32_MAX / 16;
  if (t.stride(1) <= kMaxGatherStride) return t;
  return t.contiguous(at::MemoryFormat::ChannelsLast);
}

// Outputs are channels_last or contiguous NCHW, the two layouts the kernels write.
at::Tensor empty_like_layout(const at::Tensor& x) {
  return at::empty(x.sizes(), x.options().memory_format(x.suggest_memory_format()));
}

at::Tensor forward(const at::Tensor& input, const std::vector<at::Tensor>& weights,
                   const std::optional<at::Tensor>& bias) {
  const std::vector<at::Tensor> w = checked_weights(input, weights);
  const at::Tensor x = kernel_layout(input);
  at::Tensor b;
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == x.size(1) &&
                    bias->scalar_type() == x.scalar_type() && bias->device() == x.device(),
                "bias must be (C,) with the dtype and device of x");
    b = bias->contiguous();
  }
  at::Tensor y = empty_like_layout(x);
  if (y.numel() == 0) return y;
  const Isa isa = cpu::current_isa();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "dwconv2d_forward", [&] {
    const auto set = kernel_set<scalar_t>(w);
    const kernel_t<scalar_t>* bias_ptr = b.defined() ? kernel_ptr<scalar_t>(b) : nullptr;
    const bool ok = kernels_for<kernel_t<scalar_t>>(isa).forward(geometry_of(x), kernel_ptr<scalar_t>(x), strides_of(x),
                                                                 kernel_ptr<scalar_t>(y), strides_of(y), bias_ptr, set);
    TORCH_CHECK(ok, "dwconv2d_forward: out of memory for the per-thread scratch buffers");
  });
  return y;
}

std::tuple<at::Tensor, std::vector<at::Tensor>> backward(const at::Tensor& grad_output,
                                                         const at::Tensor& input,
                                                         const std::vector<at::Tensor>& weights,
                                                         bool need_input, bool need_weight) {
  const std::vector<at::Tensor> w = checked_weights(input, weights);
  TORCH_CHECK(grad_output.sizes() == input.sizes() && grad_output.scalar_type() == input.scalar_type() &&
                  grad_output.device() == input.device(),
              "grad_out must have the shape, dtype and device of x");
  const at::Tensor x = kernel_layout(input), grad_out = kernel_layout(grad_output);
  at::Tensor grad_x = need_input ? empty_like_layout(x) : at::empty({0}, x.options());
  std::vector<at::Tensor> grad_w;
  for (const at::Tensor& weight : w)
    grad_w.push_back(need_weight ? at::empty_like(weight) : at::empty({0}, x.options()));
  if (!need_input && !need_weight) return {grad_x, grad_w};
  if (x.numel() == 0) {
    grad_x.zero_();
    for (at::Tensor& g : grad_w) g.zero_();
    return {grad_x, grad_w};
  }
  const Isa isa = cpu::current_isa();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "dwconv2d_backward", [&] {
    const auto set = kernel_set<scalar_t>(w);
    kernel_t<scalar_t>* grad_w_ptrs[3] = {nullptr, nullptr, nullptr};
    if (need_weight)
      for (size_t k = 0; k < grad_w.size(); ++k) grad_w_ptrs[k] = kernel_ptr<scalar_t>(grad_w[k]);
    const bool ok = kernels_for<kernel_t<scalar_t>>(isa).backward(
        geometry_of(x), kernel_ptr<scalar_t>(grad_out), strides_of(grad_out), kernel_ptr<scalar_t>(x), strides_of(x),
        need_input ? kernel_ptr<scalar_t>(grad_x) : nullptr, need_input ? strides_of(grad_x) : Strides{}, set,
        grad_w_ptrs);
    TORCH_CHECK(ok, "dwconv2d_backward: out of memory for the per-thread scratch buffers");
  });
  return {grad_x, grad_w};
}

}  // namespace
}  // namespace mmslak::dwconv

TORCH_LIBRARY_FRAGMENT(mmslak_ext, m) {
  m.def("dwconv2d_forward(Tensor x, Tensor[] weights, Tensor? bias) -> Tensor");
  m.def("dwconv2d_backward(Tensor grad_out, Tensor x, Tensor[] weights, bool need_input, "
        "bool need_weight) -> (Tensor, Tensor[])");
  m.def("dwconv2d_cpu_isa() -> str", &mmslak::dwconv::isa_name);
  m.def("cpu_isas() -> str[]", &mmslak::dwconv::runnable_isa_names);
}

TORCH_LIBRARY_IMPL(mmslak_ext, CPU, m) {
  m.impl("dwconv2d_forward", &mmslak::dwconv::forward);
  m.impl("dwconv2d_backward", &mmslak::dwconv::backward);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmslak C++ CPU kernels; the ops are registered under torch.ops.mmslak_ext";
}
