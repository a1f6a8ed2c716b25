// CPU kernels of the peripheral depthwise convolution (PeLK): a depthwise "same" convolution whose K×K
// kernel is constant on the k'×k' cells of a grid, computed as separable box filters in about k'²
// multiply-adds per pixel instead of K² (see mmslak/ops/peripheral.py for the algorithm).
//
// Layout: NCHW float32/float64/bfloat16, one (n, c) plane per task, vectorised along W with 64-byte GCC
// vector types. bfloat16 planes are widened to float32 when they are copied into the per-thread scratch
// rows the algorithm works on anyway, computed in float32 and rounded once when written; weights and
// bias are used in float32, and the weight gradient is accumulated in float64 and returned in bfloat16.
// On x86-64 the same source is compiled for AVX-512, AVX2 and the baseline ISA (target attributes on
// wrappers around always-inline templates, so no out-of-line code is built for a wider ISA than the
// caller's) and the instruction set of runtime.h picks one at run time: the binary stays portable.
// Elsewhere (aarch64: NEON) the baseline build is the only one. Planes (forward) and channels (weight
// gradient) are spread over torch's intra-op threads by cpu::run_workers.
//
// Registered with TORCH_LIBRARY_FRAGMENT(mmslak_ext, ...) (no PYBIND11_MODULE here: the depthwise
// kernels own the module init of mmslak._ext):
//   mmslak_ext::peripheral_forward(Tensor x, Tensor weight, int[] grid, Tensor? bias) -> Tensor
//   mmslak_ext::peripheral_grad_weight(Tensor grad_out, Tensor x, int[] grid) -> Tensor
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "runtime.h"

#define MMSLAK_INLINE inline __attribute__((always_inline))

// The 64-byte vectors never cross a call boundary (their helpers are always inlined), so GCC's note
// that passing them without AVX-512 changes the ABI does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace {

// One 64-byte vector (16 floats or 8 doubles): a zmm register on AVX-512, split by GCC elsewhere.
template <typename T>
struct Simd {
  typedef T Vec __attribute__((vector_size(64)));
  static constexpr int64_t lanes = 64 / sizeof(T);
  static MMSLAK_INLINE Vec load(const T* p) {
    Vec v;
    std::memcpy(&v, p, sizeof(Vec));
    return v;
  }
  static MMSLAK_INLINE void store(T* p, Vec v) { std::memcpy(p, &v, sizeof(Vec)); }
  static MMSLAK_INLINE Vec splat(T s) { return Vec{} + s; }
  static MMSLAK_INLINE double sum(Vec v) {
    double total = 0;
    for (int64_t l = 0; l < lanes; ++l) total += v[l];
    return total;
  }
};

constexpr int64_t kBlock = 4;  // cells per register block in the k'×k' loops

int64_t round_up(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

struct CellGrid {
  int64_t cells = 0, kernel = 0, half = 0;
  std::vector<int64_t> width, offset, reversed_offset;

  explicit CellGrid(at::IntArrayRef grid) : cells(grid.size()) {
    for (int64_t w : grid) {
      TORCH_CHECK(w > 0, "peripheral grid widths must be positive, got ", grid);
      offset.push_back(kernel);
      width.push_back(w);
      kernel += w;
    }
    TORCH_CHECK(cells > 0 && kernel % 2 == 1, "peripheral grid must sum to an odd kernel size, got ", grid);
    half = kernel / 2;
    for (int64_t a = 0; a < cells; ++a) reversed_offset.push_back(kernel - offset[a] - width[a]);
  }

  // Input rows [lo, hi) of cell a for output row p, clipped to the image (zero padding outside).
  MMSLAK_INLINE void rows(int64_t a, int64_t p, int64_t size, int64_t& lo, int64_t& hi) const {
    lo = std::max<int64_t>(0, p + offset[a] - half);
    hi = std::min<int64_t>(size, p + offset[a] + width[a] - half);
  }
};

constexpr int kGroup = 4;  // vector blocks along W per step: independent accumulators for the FMA pipes

// out[q] = Σ_{r in [lo, hi)} src[r * stride + q] for q in [q0, q0 + NQ * lanes): the rows of a cell
// (stride = row length) or the columns of a cell in a zero-padded row (stride = 1). Two accumulator
// sets halve the dependency chain of long cells.
template <typename T, int NQ>
MMSLAK_INLINE void sum_shifted(int64_t q0, const T* src, int64_t stride, int64_t lo, int64_t hi, T* out) {
  using S = Simd<T>;
  using V = typename S::Vec;
  constexpr int64_t L = S::lanes;
  V even[NQ] = {}, odd[NQ] = {};
  int64_t r = lo;
  for (; r + 1 < hi; r += 2) {
    for (int j = 0; j < NQ; ++j) {
      even[j] += S::load(src + r * stride + q0 + j * L);
      odd[j] += S::load(src + (r + 1) * stride + q0 + j * L);
    }
  }
  if (r < hi)
    for (int j = 0; j < NQ; ++j) even[j] += S::load(src + r * stride + q0 + j * L);
  for (int j = 0; j < NQ; ++j) S::store(out + q0 + j * L, even[j] + odd[j]);
}

// mixed[b0 + i][q] = Σ_a w[a][b0 + i] · boxes[a][q] for i < kBlock: kBlock × NQ accumulators.
template <typename T, int NQ>
MMSLAK_INLINE void mix_cells(int64_t q0, const T* boxes, int64_t box_stride, const char* active,
                             int64_t cells,
                             const T* wpad, int64_t wpad_stride, int64_t b0, T* mixed, int64_t mixed_stride) {
  using S = Simd<T>;
  using V = typename S::Vec;
  constexpr int64_t L = S::lanes;
  V acc[kBlock][NQ] = {};
  for (int64_t a = 0; a < cells; ++a) {
    if (!active[a]) continue;
    V r[NQ];
    for (int j = 0; j < NQ; ++j) r[j] = S::load(boxes + a * box_stride + q0 + j * L);
    const T* wa = wpad + a * wpad_stride + b0;
    for (int i = 0; i < kBlock; ++i) {
      const V wv = S::splat(wa[i]);
      for (int j = 0; j < NQ; ++j) acc[i][j] += r[j] * wv;
    }
  }
  for (int i = 0; i < kBlock; ++i)
    for (int j = 0; j < NQ; ++j) S::store(mixed + (b0 + i) * mixed_stride + q0 + j * L, acc[i][j]);
}

// Runs STEP<T, NQ>(q0, ...) over groups of up to kGroup vector blocks covering [0, Wv).
#define MMSLAK_VECTOR_GROUPS(Wv, L, STEP, ...)                       \
  for (int64_t q0 = 0; q0 < (Wv); q0 += kGroup * (L)) {              \
    switch (std::min<int64_t>(kGroup, ((Wv) - q0) / (L))) {          \
      case 4: STEP<T, 4>(q0, __VA_ARGS__); break;                    \
      case 3: STEP<T, 3>(q0, __VA_ARGS__); break;                    \
      case 2: STEP<T, 2>(q0, __VA_ARGS__); break;                    \
      default: STEP<T, 1>(q0, __VA_ARGS__); break;                   \
    }                                                                \
  }

// The type a storage type is computed in.
template <typename S>
struct ComputeOf {
  using type = S;
};
template <>
struct ComputeOf<at::BFloat16> {
  using type = float;
};

// Copies an H×W plane into rows of Wv (whose tail lanes stay zero), so every vector load is in bounds;
// bfloat16 is widened to the compute type T on the way.
template <typename Storage, typename T>
MMSLAK_INLINE void copy_plane(const Storage* src, int64_t H, int64_t W, int64_t Wv, T* dst) {
  for (int64_t p = 0; p < H; ++p) std::copy(src + p * W, src + (p + 1) * W, dst + p * Wv);
}

// Buffers of one thread for one call, reused from plane to plane (small planes would otherwise spend
// their time in the allocator and in clearing memory).
template <typename T>
struct Scratch {
  std::vector<T> plane, boxes, mixed, row, weight, grad_rows, col_boxes;
  std::vector<char> active, col_active;
  std::vector<double> total;
};

// Zero-fills a buffer on its first use in a call. Every plane of a call has the same shape, so the
// zeros a plane relies on (padding, tail lanes, cells that never see the image) are never overwritten.
template <typename Buffer>
MMSLAK_INLINE void prepare(Buffer& buffer, int64_t size) {
  if (static_cast<int64_t>(buffer.size()) != size) buffer.assign(size, 0);
}

// One (n, c) plane: y = bias + Σ_b colbox_b(Σ_a w[a, b] rowbox_a(x)), row by row.
template <typename Storage, typename T>
MMSLAK_INLINE void forward_plane(const Storage* x, const T* w, T bias, const CellGrid& g, int64_t H, int64_t W,
                                 Storage* y, Scratch<T>& s) {
  const int64_t L = Simd<T>::lanes, k = g.cells, Wv = round_up(W, L), ld = Wv + g.kernel - 1;
  const int64_t kp = round_up(k, kBlock);
  // The plane with zero tail lanes; row boxes; mixed rows T_b zero padded by K//2 on both sides;
  // weights padded to whole blocks of columns with zeros.
  std::vector<T>&plane = s.plane, &boxes = s.boxes, &mixed = s.mixed, &row = s.row, &wpad = s.weight;
  std::vector<char>& active = s.active;
  prepare(plane, H * Wv);
  prepare(boxes, k * Wv);
  prepare(mixed, kp * ld);
  prepare(row, Wv);
  prepare(wpad, k * kp);
  prepare(active, k);
  copy_plane(x, H, W, Wv, plane.data());
  for (int64_t a = 0; a < k; ++a) std::copy(w + a * k, w + (a + 1) * k, wpad.data() + a * kp);
  for (int64_t p = 0; p < H; ++p) {
    for (int64_t a = 0; a < k; ++a) {
      int64_t lo, hi;
      g.rows(a, p, H, lo, hi);
      active[a] = lo < hi;
      if (active[a]) MMSLAK_VECTOR_GROUPS(Wv, L, sum_shifted, plane.data(), Wv, lo, hi, boxes.data() + a * Wv)
    }
    for (int64_t b0 = 0; b0 < k; b0 += kBlock)
      MMSLAK_VECTOR_GROUPS(Wv, L, mix_cells, boxes.data(), Wv, active.data(), k, wpad.data(), kp, b0,
                           mixed.data() + g.half, ld)
    std::fill(row.begin(), row.end(), bias);
    for (int64_t b = 0; b < k; ++b) {
      // Columns [offset, offset + width) of the padded mixed row, shifted by q; skip pure padding.
      const int64_t first = g.offset[b];
      if (first > g.half + W - 1 || first + g.width[b] + W - 2 < g.half) continue;
      MMSLAK_VECTOR_GROUPS(Wv, L, sum_shifted, mixed.data() + b * ld + first, 1, 0, g.width[b],
                           boxes.data())
      for (int64_t q = 0; q < W; ++q) row[q] += boxes[q];
    }
    std::copy(row.data(), row.data() + W, y + p * W);
  }
}


// Channel c: grad_w[a, b] = Σ_{n, p, q} rowbox_a(x)[p, q] · colbox'_b(g)[p, q], where colbox'_b is the
// column box of the reversed cell (the adjoint of the column box of cell b).
template <typename Storage, typename T>
MMSLAK_INLINE void grad_weight_channel(const Storage* x, const Storage* grad, int64_t N, int64_t plane_stride,
                                       const CellGrid& g, int64_t H, int64_t W, T* grad_w, Scratch<T>& s) {
  using S = Simd<T>;
  using V = typename S::Vec;
  const int64_t L = S::lanes, k = g.cells, Wv = round_up(W, L), ld = Wv + g.kernel - 1;
  const int64_t kp = round_up(k, kBlock), rows_size = H * Wv;
  // Boxes of cells beyond k' stay zero; the gradient rows are zero padded by K//2 on both sides.
  std::vector<T>&plane = s.plane, &grad_rows = s.grad_rows, &row_boxes = s.boxes, &col_boxes = s.col_boxes;
  std::vector<double>& total = s.total;
  // Cells that see the image for some output row (column): the others have all-zero boxes.
  std::vector<char>&row_active = s.active, &col_active = s.col_active;
  prepare(plane, H * Wv);
  prepare(grad_rows, H * ld);
  prepare(row_boxes, kp * rows_size);
  prepare(col_boxes, kp * rows_size);
  total.assign(k * k, 0.0);
  row_active.assign(kp, 0);
  col_active.assign(kp, 0);
  for (int64_t a = 0; a < k; ++a) {
    int64_t lo, hi;
    for (int64_t p = 0; p < H; ++p) {
      g.rows(a, p, H, lo, hi);
      row_active[a] |= lo < hi;
    }
    const int64_t first = g.reversed_offset[a];
    col_active[a] = first <= g.half + W - 1 && first + W + g.width[a] - 2 >= g.half;
  }
  for (int64_t n = 0; n < N; ++n) {
    copy_plane(x + n * plane_stride, H, W, Wv, plane.data());
    copy_plane(grad + n * plane_stride, H, W, ld, grad_rows.data() + g.half);
    for (int64_t p = 0; p < H; ++p) {
      for (int64_t a = 0; a < k; ++a) {
        int64_t lo, hi;
        g.rows(a, p, H, lo, hi);
        if (row_active[a])
          MMSLAK_VECTOR_GROUPS(Wv, L, sum_shifted, plane.data(), Wv, lo, hi,
                               row_boxes.data() + a * rows_size + p * Wv)
      }
      for (int64_t b = 0; b < k; ++b)
        if (col_active[b])
          MMSLAK_VECTOR_GROUPS(Wv, L, sum_shifted, grad_rows.data() + p * ld + g.reversed_offset[b], 1, 0,
                               g.width[b], col_boxes.data() + b * rows_size + p * Wv)
    }
    // 4×4 register blocks of (a, b); lanes beyond W hold zero row boxes, so they add nothing.
    for (int64_t a0 = 0; a0 < kp; a0 += kBlock) {
      if (!(row_active[a0] | row_active[a0 + 1] | row_active[a0 + 2] | row_active[a0 + 3])) continue;
      for (int64_t b0 = 0; b0 < kp; b0 += kBlock) {
        if (!(col_active[b0] | col_active[b0 + 1] | col_active[b0 + 2] | col_active[b0 + 3])) continue;
        V acc[kBlock][kBlock] = {};
        for (int64_t at = 0; at < rows_size; at += L) {
          V r[kBlock], c[kBlock];
          for (int i = 0; i < kBlock; ++i) r[i] = S::load(row_boxes.data() + (a0 + i) * rows_size + at);
          for (int j = 0; j < kBlock; ++j) c[j] = S::load(col_boxes.data() + (b0 + j) * rows_size + at);
          for (int i = 0; i < kBlock; ++i)
            for (int j = 0; j < kBlock; ++j) acc[i][j] += r[i] * c[j];
        }
        for (int i = 0; i < kBlock && a0 + i < k; ++i)
          for (int j = 0; j < kBlock && b0 + j < k; ++j) total[(a0 + i) * k + b0 + j] += S::sum(acc[i][j]);
      }
    }
  }
  for (int64_t i = 0; i < k * k; ++i) grad_w[i] = static_cast<T>(total[i]);
}

// The kernels compiled for each instruction set; GCC lowers the 64-byte vectors to what the target has.
#define MMSLAK_PERIPHERAL_ISA(isa, attributes)                                                          \
  template <typename Storage, typename T>                                                                  \
  attributes void forward_plane_##isa(const Storage* x, const T* w, T bias, const CellGrid& g, int64_t H,   \
                                      int64_t W, Storage* y, Scratch<T>& s) {                              \
    forward_plane<Storage, T>(x, w, bias, g, H, W, y, s);                                                  \
  }                                                                                                  \
  template <typename Storage, typename T>                                                                  \
  attributes void grad_weight_channel_##isa(const Storage* x, const Storage* grad, int64_t N, int64_t plane_stride, \
                                            const CellGrid& g, int64_t H, int64_t W, T* grad_w,      \
                                            Scratch<T>& s) {                                         \
    grad_weight_channel<Storage, T>(x, grad, N, plane_stride, g, H, W, grad_w, s);                         \
  }

MMSLAK_PERIPHERAL_ISA(baseline, )
#if defined(__x86_64__) || defined(_M_X64)
#define MMSLAK_TARGET_AVX512 "avx512f,avx512vl,avx512dq,avx2,fma,prefer-vector-width=512"
MMSLAK_PERIPHERAL_ISA(avx512, __attribute__((target(MMSLAK_TARGET_AVX512))))
MMSLAK_PERIPHERAL_ISA(avx2, __attribute__((target("avx2,fma"))))
#endif

using mmslak::cpu::Isa;

void check_input(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(x.dim() == 4, name, " must be 4-D (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble || x.scalar_type() == at::kBFloat16,
              name, " must be float32, float64 or bfloat16, got ", x.scalar_type());
}

// Runs work(queue, scratch) on the workers of cpu::run_workers, each with its own scratch rows.
template <typename T, typename Work>
void run_with_scratch(int64_t tasks, int64_t work_per_task, Work& work) {
  mmslak::cpu::run_workers(tasks, work_per_task, &work, [](void* context, mmslak::cpu::TaskQueue* queue) {
    Scratch<T> scratch;
    (*static_cast<Work*>(context))(queue, scratch);
  });
}

// Every (n, c) plane of the forward, one task each.
template <typename Storage, typename T>
void forward_planes(const Storage* x, const T* w, const T* bias, const CellGrid& g, int64_t N, int64_t C, int64_t H,
                    int64_t W, Storage* y, Isa isa) {
  auto work = [&](mmslak::cpu::TaskQueue* queue, Scratch<T>& scratch) {
    for (int64_t plane; (plane = mmslak::cpu::take_task(queue)) >= 0;) {
      const int64_t c = plane % C;
      const T* wc = w + c * g.cells * g.cells;
      const Storage* xp = x + plane * H * W;
      Storage* yp = y + plane * H * W;
#if defined(__x86_64__) || defined(_M_X64)
      if (isa >= Isa::kAvx512) {
        forward_plane_avx512<Storage, T>(xp, wc, bias[c], g, H, W, yp, scratch);
        continue;
      }
      if (isa == Isa::kAvx2) {
        forward_plane_avx2<Storage, T>(xp, wc, bias[c], g, H, W, yp, scratch);
        continue;
      }
#endif
      forward_plane_baseline<Storage, T>(xp, wc, bias[c], g, H, W, yp, scratch);
    }
  };
  // Per plane: the row boxes, the k' x k' mixing and the column boxes, about k'^2 multiply-adds a pixel.
  run_with_scratch<T>(N * C, H * W * g.cells * g.cells / Simd<T>::lanes, work);
}

// The weight gradient of every channel, one task each (a channel reduces over the N images itself: no
// atomics).
template <typename Storage, typename T>
void grad_weight_channels(const Storage* x, const Storage* grad, const CellGrid& g, int64_t N, int64_t C, int64_t H,
                          int64_t W, T* grad_w, Isa isa) {
  auto work = [&](mmslak::cpu::TaskQueue* queue, Scratch<T>& scratch) {
    for (int64_t c; (c = mmslak::cpu::take_task(queue)) >= 0;) {
      const int64_t start = c * H * W, stride = C * H * W;
      T* gw = grad_w + c * g.cells * g.cells;
#if defined(__x86_64__) || defined(_M_X64)
      if (isa >= Isa::kAvx512) {
        grad_weight_channel_avx512<Storage, T>(x + start, grad + start, N, stride, g, H, W, gw, scratch);
        continue;
      }
      if (isa == Isa::kAvx2) {
        grad_weight_channel_avx2<Storage, T>(x + start, grad + start, N, stride, g, H, W, gw, scratch);
        continue;
      }
#endif
      grad_weight_channel_baseline<Storage, T>(x + start, grad + start, N, stride, g, H, W, gw, scratch);
    }
  };
  run_with_scratch<T>(C, N * H * W * g.cells * g.cells / Simd<T>::lanes, work);
}

at::Tensor peripheral_forward(const at::Tensor& x_in, const at::Tensor& weight_in, at::IntArrayRef grid,
                              const std::optional<at::Tensor>& bias_in) {
  check_input(x_in, "x");
  const CellGrid g(grid);
  const int64_t N = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  TORCH_CHECK(weight_in.sizes() == at::IntArrayRef({C, 1, g.cells, g.cells}),
              "weight must be (C, 1, k', k') matching x and grid, got ", weight_in.sizes());
  TORCH_CHECK(weight_in.device() == x_in.device(), "weight must be on the device of x");
  TORCH_CHECK(!bias_in.has_value() ||
                  (bias_in->dim() == 1 && bias_in->size(0) == C && bias_in->device() == x_in.device()),
              "bias must be (C,) = (", C, ",) on the device of x");
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "peripheral_forward", [&] {
    using compute_t = typename ComputeOf<scalar_t>::type;
    const auto compute_type = c10::CppTypeToScalarType<compute_t>::value;
    const at::Tensor weight = weight_in.to(compute_type).contiguous();
    const at::Tensor bias = bias_in.has_value() ? bias_in->to(compute_type).contiguous()
                                                : at::zeros({C}, x.options().dtype(compute_type));
    forward_planes<scalar_t, compute_t>(x.data_ptr<scalar_t>(), weight.data_ptr<compute_t>(),
                                        bias.data_ptr<compute_t>(), g, N, C, H, W, y.data_ptr<scalar_t>(),
                                        mmslak::cpu::current_isa());
  });
  return y;
}

at::Tensor peripheral_grad_weight(const at::Tensor& grad_in, const at::Tensor& x_in, at::IntArrayRef grid) {
  check_input(x_in, "x");
  check_input(grad_in, "grad_out");
  TORCH_CHECK(grad_in.sizes() == x_in.sizes(), "grad_out must have the shape of x");
  const CellGrid g(grid);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor grad = grad_in.to(x.scalar_type()).contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const at::ScalarType compute_type = x.scalar_type() == at::kBFloat16 ? at::kFloat : x.scalar_type();
  at::Tensor grad_w = at::zeros({C, 1, g.cells, g.cells}, x.options().dtype(compute_type));
  if (N == 0 || H == 0 || W == 0) return grad_w.to(x.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "peripheral_grad_weight", [&] {
    using compute_t = typename ComputeOf<scalar_t>::type;
    grad_weight_channels<scalar_t, compute_t>(x.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(), g, N, C, H, W,
                                              grad_w.data_ptr<compute_t>(), mmslak::cpu::current_isa());
  });
  return grad_w.to(x.scalar_type());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mmslak_ext, m) {
  m.def("peripheral_forward(Tensor x, Tensor weight, int[] grid, Tensor? bias) -> Tensor");
  m.def("peripheral_grad_weight(Tensor grad_out, Tensor x, int[] grid) -> Tensor");
}

TORCH_LIBRARY_IMPL(mmslak_ext, CPU, m) {
  m.impl("peripheral_forward", &peripheral_forward);
  m.impl("peripheral_grad_weight", &peripheral_grad_weight);
}
