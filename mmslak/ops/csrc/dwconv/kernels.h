// Depthwise 'same' convolution kernels (forward, grad-input, grad-weight) for one instruction set.
//
// Included once per kernel build (dwconv_generic.cpp, x86/dwconv_*.cpp), each compiled with its own
// instruction-set flags and with MMSLAK_DWCONV_ISA naming the namespace; MMSLAK_DWCONV_AVX512 /
// MMSLAK_DWCONV_AVX2 select the intrinsics of vec.h (none: the compiler's vector extensions), and
// MMSLAK_DWCONV_AVX512BF16 the bfloat16 dot-product kernels. Everything here has internal linkage or lives
// in that namespace, and no standard-library template is instantiated, so nothing compiled for AVX-512
// can be merged by the linker into code that runs on a CPU without it.
//
// Design (1-2 MiB of L2 per core, 32 vector registers), the channel-blocked layout of oneDNN:
// * Work unit: (image n, block of L channels), L = lanes of a vector (16 floats with AVX-512). The
//   block is copied ("staged") into a per-thread [H + 2 pr][W + 2 pc][L] buffer with a small zero
//   border: one pixel of the block is one aligned vector. For channels_last input the copy reads
//   contiguous channels; for NCHW it interleaves L planes. 56x56x16 floats with the border take
//   290 KB, so input, grad_out and output of a block stay in L2. Every map size uses all lanes
//   (a 7x7 map is as efficient as a 56x56 one).
// * Forward / grad-input tile: R output rows x WT output columns of accumulators (R * WT <= 28); per
//   tap one weight vector (the L channels' taps) and R * WT FMAs, each with one aligned load. Taps
//   whose rows or columns fall entirely in the zero padding of the tile are skipped through the loop
//   bounds; the border of R - 1 rows and WT - 1 columns absorbs partially valid taps. Grad-input is
//   the forward with the flipped kernel.
// * Grad-weight tile: TI x TJ taps of accumulators (<= 25); per output pixel one load of grad_out
//   and TI * TJ FMAs, each with one aligned load of x. The accumulators hold the L channels'
//   gradients, so no horizontal sums are needed.
// * Tile shapes are chosen per kernel by a cost model (make_tiling in tiling.h): on a 14x14 map a
//   (47, 5) kernel gets short, wide tiles and a (5, 47) kernel tall, narrow ones, so few taps are wasted.
// * Several kernels (the decomposed SLaK conv) share the staged block: x (and grad_out) are read
//   from memory once per block, and each kernel's tiles add into the block's output in L2.
// * bfloat16 is computed in float32 (accumulators, block outputs, the per-image weight gradients) and
//   rounded once when written. Without AVX512-BF16 the staging widens it to float32 and the float32
//   tiles run. With it, the block is staged as pairs of horizontally adjacent pixels (lane l of position
//   c holds channel l of pixels c and c + 1, as bfloat16) and the kernels as pairs of adjacent taps
//   (i, 2j), (i, 2j + 1): one VDPBF16PS per output and tap pair (forward, grad-input), or per tap and
//   pixel pair (grad-weight), with the same tiles. An odd kernel width pads its last pair with a zero
//   tap; the border grows by one column.
//
// Work is spread over torch's intra-op threads by cpu::run_workers: tasks are taken one at a time, and
// each worker allocates its scratch blocks once.

namespace mmslak::dwconv::MMSLAK_DWCONV_ISA {
namespace {

#include "vec.h"
#include "tiling.h"

// The type a storage type is computed in.
template <typename S>
struct ComputeOf {
  using type = S;
};
template <>
struct ComputeOf<BFloat16> {
  using type = float;
};

inline float widen(BFloat16 v) { return bf16_to_float(v); }
inline float widen(float v) { return v; }
inline double widen(double v) { return v; }
inline void narrow(float v, BFloat16* out) { *out = float_to_bf16(v); }
template <typename T>
void narrow(T v, T* out) {
  *out = v;
}

// Runs work(queue) on the workers of cpu::run_workers.
template <typename Work>
void run_tasks(int64_t tasks, int64_t work_per_task, Work& work) {
  cpu::run_workers(tasks, work_per_task, &work,
                   [](void* context, cpu::TaskQueue* queue) { (*static_cast<Work*>(context))(queue); });
}

// Taps of all kernels of a set: the multiply-adds per pixel of a block.
template <typename S>
int64_t total_taps(const KernelSet<S>& kernels) {
  int64_t taps = 0;
  for (int k = 0; k < kernels.count; ++k) taps += int64_t(kernels.kh[k]) * kernels.kw[k];
  return taps;
}

// Calls tile.template run<R, C>() for the runtime tile shape (rows, cols), rows <= R and cols <= C.
template <int R, int C, typename Tile>
void run_tile(int rows, int cols, const Tile& tile) {
  if constexpr (R >= 1 && C >= 1) {
    if (rows < R)
      run_tile<R - 1, C>(rows, cols, tile);
    else if (cols < C)
      run_tile<R, C - 1>(rows, cols, tile);
    else
      tile.template run<R, C>();
  }
}

// Stores the R x WT accumulators of the tile at (r0, c0) into out[h][w][L] (adding to it when asked),
// skipping the positions beyond the map.
template <typename T, int R, int WT>
void store_tile(typename Vec<T>::Reg (&acc)[R][WT], int h, int w, int r0, int c0, bool accumulate, T* out) {
  using VT = Vec<T>;
  constexpr int L = VT::kLanes;
  const int rows = imin(R, h - r0), cols = imin(WT, w - c0);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < WT; ++c)
      if (r < rows && c < cols) {
        T* dst = out + (int64_t(r0 + r) * w + c0 + c) * L;
        VT::store(dst, accumulate ? VT::add(acc[r][c], VT::load(dst)) : acc[r][c]);
      }
}

// Adds the TI x TJ accumulators of the taps at (i0, j0) to out[kh][kw][L].
template <typename T, int TI, int TJ>
void add_taps(typename Vec<T>::Reg (&acc)[TI][TJ], int kw, int i0, int j0, T* out) {
  using VT = Vec<T>;
  constexpr int L = VT::kLanes;
#pragma GCC unroll 8
  for (int a = 0; a < TI; ++a)
#pragma GCC unroll 8
    for (int b = 0; b < TJ; ++b) {
      T* dst = out + (int64_t(i0 + a) * kw + j0 + b) * L;
      VT::store(dst, VT::add(acc[a][b], VT::load(dst)));
    }
}

// ---------------------------------------------------------------- tiles
// P is the number of pixels (taps) one lane of the staged block (of a rearranged kernel) holds: 1 for
// float and double, 2 for the bfloat16 pairs. With P = 2 a multiply-add is a dot product of pairs.

template <typename T, int P>
typename Vec<T>::Reg multiply_add(typename Vec<T>::Reg acc, typename Vec<T>::Reg a, typename Vec<T>::Reg b) {
  if constexpr (P == 2)
    return Vec<T>::dot_pairs(acc, a, b);
  else
    return Vec<T>::fma(a, b, acc);
}

// Forward / grad-input tile: R x WT outputs at (r0, c0); per tap (pair of taps) of the kernel that reaches
// the tile one weight load and R * WT multiply-adds. A pair is taken whole when one of its taps reaches the
// tile: its other tap meets zeros of the border (one more column with P = 2) or has weight zero (the pad
// tap of an odd kernel width).
template <typename T, int P, int R, int WT>
void conv_tile(const Staged<T>& x, int h, int w, const BlockKernel<T>& kernel, int r0, int c0, bool accumulate,
               T* out) {
  if constexpr (R * WT <= kAccumulators) {
    using VT = Vec<T>;
    constexpr int L = VT::kLanes;
    typename VT::Reg acc[R][WT];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int c = 0; c < WT; ++c) acc[r][c] = VT::zero();
    const int64_t rs = x.row_stride;
    const int kh = kernel.kh, kw = kernel.kw, ph = kh / 2, pw = kw / 2, row_vectors = (kw + P - 1) / P;
    const int i_lo = imax(0, ph - (r0 + R - 1)), i_hi = imin(kh - 1, ph + h - 1 - r0);
    const int jv_lo = imax(0, pw - (c0 + WT - 1)) / P, jv_hi = imin(kw - 1, pw + w - 1 - c0) / P;
    for (int i = i_lo; i <= i_hi; ++i) {
      const T* tap = kernel.taps + int64_t(i * row_vectors) * L;
      const T* row = x.at(r0 + i - ph, c0 - pw);
      for (int jv = jv_lo; jv <= jv_hi; ++jv) {
        const typename VT::Reg weight = VT::load(tap + jv * L);
        const T* p = row + P * jv * L;
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
          for (int c = 0; c < WT; ++c) acc[r][c] = multiply_add<T, P>(acc[r][c], weight, VT::load(p + r * rs + c * L));
      }
    }
    store_tile<T, R, WT>(acc, h, w, r0, c0, accumulate, out);
  }
}

template <typename T, int P>
struct ConvTile {
  const Staged<T>& x;
  int h, w;
  const BlockKernel<T>& kernel;
  int r0, c0;
  bool accumulate;
  T* out;
  template <int R, int C>
  void run() const {
    conv_tile<T, P, R, C>(x, h, w, kernel, r0, c0, accumulate, out);
  }
};

// Grad-weight tile: TI x TJ taps at (i0, j0); per output pixel (pixel pair (c, c + 1) with P = 2) one load
// of grad_out and TI * TJ multiply-adds with x at the tap's offset. A pair that starts at the last pixel of
// a row reads grad_out's zero border as its second pixel; one that starts at the last pixel whose x is in
// range reads x's zero border.
template <typename T, int P, int TI, int TJ>
void weight_tile(const Staged<T>& x, const Staged<T>& grad, int h, int w, int kh, int kw, int i0, int j0, T* out) {
  if constexpr (TI * TJ <= kWeightAccumulators) {
    using VT = Vec<T>;
    constexpr int L = VT::kLanes;
    typename VT::Reg acc[TI][TJ];
#pragma GCC unroll 8
    for (int a = 0; a < TI; ++a)
#pragma GCC unroll 8
      for (int b = 0; b < TJ; ++b) acc[a][b] = VT::zero();
    const int ph = kh / 2, pw = kw / 2;
    const int h_lo = imax(0, ph - (i0 + TI - 1)), h_hi = imin(h, h + ph - i0);
    const int w_lo = imax(0, pw - (j0 + TJ - 1)), w_hi = imin(w, w + pw - j0);
    const int64_t rs = x.row_stride;
    for (int r = h_lo; r < h_hi; ++r) {
      const T* g = grad.at(r, 0);
      const T* row = x.at(r + i0 - ph, j0 - pw);
      for (int c = w_lo; c < w_hi; c += P) {
        const typename VT::Reg gv = VT::load(g + c * L);
        const T* p = row + c * L;
#pragma GCC unroll 8
        for (int a = 0; a < TI; ++a)
#pragma GCC unroll 8
          for (int b = 0; b < TJ; ++b) acc[a][b] = multiply_add<T, P>(acc[a][b], gv, VT::load(p + a * rs + b * L));
      }
    }
    add_taps<T, TI, TJ>(acc, kw, i0, j0, out);
  }
}

template <typename T, int P>
struct WeightTile {
  const Staged<T>& x;
  const Staged<T>& grad;
  int h, w, kh, kw, i0, j0;
  T* out;
  template <int TI, int TJ>
  void run() const {
    weight_tile<T, P, TI, TJ>(x, grad, h, w, kh, kw, i0, j0, out);
  }
};

// out[h][w][L] = sum over kernels of the 'same' convolution of the staged block. Each kernel runs
// with its own tile shape and adds to out, which stays in L2 with the staged block.
template <typename T, int P>
void convolve(const Staged<T>& x, int h, int w, const Tiling& tiling, const BlockKernel<T>* kernels, int count,
              T* out) {
  for (int k = 0; k < count; ++k)
    for (int r0 = 0; r0 < h; r0 += tiling.rows[k])
      for (int c0 = 0; c0 < w; c0 += tiling.cols[k])
        run_tile<kMaxTileRows, kMaxTileCols>(tiling.rows[k], tiling.cols[k],
                                             ConvTile<T, P>{x, h, w, kernels[k], r0, c0, k > 0, out});
}

// out[kh * kw][L] += correlation of the staged grad_out and x blocks, for the taps that reach the
// map, in tiles of tap_rows x tap_cols taps.
template <typename T, int P>
void correlate(const Staged<T>& x, const Staged<T>& grad, int h, int w, int kh, int kw, int tap_rows, int tap_cols,
               T* out) {
  const int ph = kh / 2, pw = kw / 2;
  const int i_lo = imax(0, ph - (h - 1)), i_hi = imin(kh - 1, ph + h - 1);
  const int j_lo = imax(0, pw - (w - 1)), j_hi = imin(kw - 1, pw + w - 1);
  for (int i0 = i_lo; i0 <= i_hi; i0 += tap_rows)
    for (int j0 = j_lo; j0 <= j_hi; j0 += tap_cols)
      run_tile<kMaxTapRows, kMaxTapCols>(imin(tap_rows, i_hi + 1 - i0), imin(tap_cols, j_hi + 1 - j0),
                                         WeightTile<T, P>{x, grad, h, w, kh, kw, i0, j0, out});
}

// ---------------------------------------------------------------- staging

// Inputs may have any strides with (L - 1) * s.c within a 32-bit gather index; outputs are
// channels_last (s.c == 1) or contiguous NCHW (each channel plane one run of h * w values). The
// bindings guarantee both.

// Vector of channels [c0, c0 + count) of one pixel (lanes >= count zero): a masked load for
// channels_last, a gather across the channel planes otherwise.
template <typename T, typename S>
typename Vec<T>::Reg load_pixel(const S* p, int64_t channel_stride, int count) {
  return channel_stride == 1 ? Vec<T>::load_first(p, count) : Vec<T>::gather_first(p, int(channel_stride), count);
}

// Copy channels [c0, c0 + count) of image n into the staged block; lanes >= count are zero.
template <typename T, typename S>
void stage_block(const S* src, const Geometry& g, Strides s, int64_t n, int64_t c0, int count, const Staged<T>& dst) {
  const S* base = src + n * s.n + c0 * s.c;
  for (int64_t r = 0; r < g.h; ++r)
    for (int64_t c = 0; c < g.w; ++c)
      Vec<T>::store(dst.at(int(r), int(c)), load_pixel<T>(base + r * s.h + c * s.w, s.c, count));
}

// Write out[h][w][L] to channels [c0, c0 + count) of image n, adding bias[c] when given. For NCHW,
// each channel plane is written in runs of L pixels gathered from out.
template <typename T, typename S>
void unstage_block(const T* out, const Geometry& g, Strides s, int64_t n, int64_t c0, int count, const S* bias,
                   S* dst) {
  using VT = Vec<T>;
  constexpr int L = VT::kLanes;
  S* base = dst + n * s.n + c0 * s.c;
  if (s.c == 1) {
    const typename VT::Reg b = bias != nullptr ? VT::load_first(bias + c0, count) : VT::zero();
    for (int64_t r = 0; r < g.h; ++r)
      for (int64_t c = 0; c < g.w; ++c)
        VT::store_first(base + r * s.h + c * s.w, VT::add(VT::load(out + (r * g.w + c) * L), b), count);
    return;
  }
  const int64_t pixels = g.h * g.w;
  for (int l = 0; l < count; ++l) {
    const typename VT::Reg b = VT::broadcast(bias != nullptr ? widen(bias[c0 + l]) : T(0));
    S* plane = base + l * s.c;
    for (int64_t p0 = 0; p0 < pixels; p0 += L) {
      const int run = lanes_from<T>(p0, pixels);
      VT::store_first(plane + p0, VT::add(VT::gather_first(out + p0 * L + l, L, run), b), run);
    }
  }
}

// ---------------------------------------------------------------- methods: staging and kernel layout

// Direct: one pixel per lane, in the compute type T of the storage type S.
template <typename S>
struct Direct {
  using T = typename ComputeOf<S>::type;
  static constexpr int kPixels = 1;

  // Kernel k of channel block b as [kh * kw][L], flipped (both axes: the taps reversed) for the input
  // gradient.
  static void prepare(const KernelSet<S>& kernels, int64_t channels, bool flip, int64_t b, T* const prepared[3]) {
    constexpr int L = Vec<T>::kLanes;
    const int count = lanes_from<T>(b * L, channels);
    for (int k = 0; k < kernels.count; ++k) {
      const int taps = kernels.kh[k] * kernels.kw[k];
      const S* block = kernels.weight[k] + b * L * taps;
      T* dst = prepared[k] + b * taps * L;
      for (int t = 0; t < taps; ++t)
        Vec<T>::store(dst + t * L, Vec<T>::gather_first(block + (flip ? taps - 1 - t : t), taps, count));
    }
  }

  static void stage(const S* src, const Geometry& g, Strides s, int64_t n, int64_t c0, int count,
                    const Staged<T>& dst) {
    stage_block(src, g, s, n, c0, count, dst);
  }
};

#if defined(MMSLAK_DWCONV_AVX512BF16)
// Pairs: lane l of position c holds channel l of pixels c and c + 1 as bfloat16 (of a kernel: taps
// (i, 2j) and (i, 2j + 1)), for VDPBF16PS.
struct Pairs {
  using T = float;
  static constexpr int kPixels = 2;

  // Kernel k of channel block b as [kh][ceil(kw / 2)][L] tap pairs, flipped for the input gradient.
  static void prepare(const KernelSet<BFloat16>& kernels, int64_t channels, bool flip, int64_t b,
                      float* const prepared[3]) {
    using VT = Vec<float>;
    constexpr int L = VT::kLanes;
    const int count = lanes_from<float>(b * L, channels);
    for (int k = 0; k < kernels.count; ++k) {
      const int kh = kernels.kh[k], kw = kernels.kw[k], taps = kh * kw, pairs = (kw + 1) / 2;
      const BFloat16* block = kernels.weight[k] + b * L * taps;
      float* dst = prepared[k] + b * kh * pairs * L;
      const auto tap = [&](int i, int j) {
        if (j >= kw) return VT::zero();
        const int t = i * kw + j;
        return VT::gather_first(block + (flip ? taps - 1 - t : t), taps, count);
      };
      for (int i = 0; i < kh; ++i)
        for (int jp = 0; jp < pairs; ++jp) VT::store(dst + (i * pairs + jp) * L, VT::pack_pairs(tap(i, 2 * jp), tap(i, 2 * jp + 1)));
    }
  }

  // Position c of row r holds pixels (c, c + 1): written for c in [-1, w), the border stays zero.
  static void stage(const BFloat16* src, const Geometry& g, Strides s, int64_t n, int64_t c0, int count,
                    const Staged<float>& dst) {
    using VT = Vec<float>;
    const BFloat16* base = src + n * s.n + c0 * s.c;
    for (int64_t r = 0; r < g.h; ++r) {
      VT::Reg previous = VT::zero();
      for (int64_t c = 0; c <= g.w; ++c) {
        const VT::Reg current = c < g.w ? load_pixel<float>(base + r * s.h + c * s.w, s.c, count) : VT::zero();
        VT::store(dst.at(int(r), int(c) - 1), VT::pack_pairs(previous, current));
        previous = current;
      }
    }
  }
};

template <typename S>
struct MethodOf {
  using type = Direct<S>;
};
template <>
struct MethodOf<BFloat16> {
  using type = Pairs;
};
#else
template <typename S>
struct MethodOf {
  using type = Direct<S>;
};
#endif

// ---------------------------------------------------------------- shared by forward and backward

// Vectors of one channel block's rearranged kernel.
template <typename Method>
int64_t kernel_vectors(int kh, int kw) {
  return int64_t(kh) * ((kw + Method::kPixels - 1) / Method::kPixels);
}

// Reserves the rearranged kernels of every channel block ([blocks][vectors][L] per kernel); they are
// filled per block by the workers (serially, rearranging the ~150k taps of a 1000-channel layer took as
// long as its convolution).
template <typename Method, typename S>
bool allocate_kernels(const KernelSet<S>& kernels, int64_t channels, typename Method::T* prepared[3],
                      Allocations& allocations, int slot) {
  using T = typename Method::T;
  constexpr int L = Vec<T>::kLanes;
  for (int k = 0; k < kernels.count; ++k) {
    const int64_t vectors = kernel_vectors<Method>(kernels.kh[k], kernels.kw[k]);
    prepared[k] = static_cast<T*>(aligned_bytes(int64_t(sizeof(T)) * ceil_div(channels, L) * vectors * L));
    allocations.data[slot + k] = prepared[k];
    if (prepared[k] == nullptr) return false;
  }
  return true;
}

template <typename Method, typename S>
void prepare_kernels(const KernelSet<S>& kernels, int64_t channels, bool flip, typename Method::T* const prepared[3]) {
  auto work = [&](cpu::TaskQueue* queue) {
    for (int64_t b; (b = cpu::take_task(queue)) >= 0;) Method::prepare(kernels, channels, flip, b, prepared);
  };
  run_tasks(ceil_div(channels, Vec<typename Method::T>::kLanes), total_taps(kernels), work);
}

template <typename Method, typename S>
void block_kernels(const KernelSet<S>& kernels, typename Method::T* const prepared[3], int64_t block,
                   BlockKernel<typename Method::T> out[3]) {
  constexpr int L = Vec<typename Method::T>::kLanes;
  for (int k = 0; k < kernels.count; ++k) {
    const int64_t vectors = kernel_vectors<Method>(kernels.kh[k], kernels.kw[k]);
    out[k] = BlockKernel<typename Method::T>{prepared[k] + block * vectors * L, kernels.kh[k], kernels.kw[k]};
  }
}

template <typename Method, typename S>
Tiling tiling_for(const Geometry& g, const KernelSet<S>& kernels) {
  return make_tiling<typename Method::T>(g.h, g.w, kernels.kh, kernels.kw, kernels.count, Method::kPixels - 1);
}

inline int64_t staged_size(const Geometry& g, const Tiling& tiling, int lanes) {
  return (g.h + 2 * tiling.pad_r) * (g.w + 2 * tiling.pad_c) * lanes;
}

template <typename S>
bool forward_blocks(const Geometry& g, const S* x, Strides xs, S* y, Strides ys, const S* bias, const KernelSet<S>& kernels) {
  using Method = typename MethodOf<S>::type;
  using T = typename Method::T;
  constexpr int L = Vec<T>::kLanes;
  Allocations allocations;
  T* prepared[3] = {nullptr, nullptr, nullptr};
  if (!allocate_kernels<Method>(kernels, g.c, prepared, allocations, 0)) return false;
  prepare_kernels<Method>(kernels, g.c, false, prepared);
  const Tiling tiling = tiling_for<Method>(g, kernels);
  const int64_t blocks = ceil_div(g.c, L);
  int failed = 0;
  auto work = [&](cpu::TaskQueue* queue) {
    Buffer<T> staged(staged_size(g, tiling, L)), out(g.h * g.w * L);
    if (!staged.ok() || !out.ok()) {
      __atomic_store_n(&failed, 1, __ATOMIC_RELAXED);
      return;
    }
    const Staged<T> block{staged.get(), (g.w + 2 * tiling.pad_c) * L, tiling.pad_r, tiling.pad_c};
    for (int64_t task; (task = cpu::take_task(queue)) >= 0;) {
      const int64_t n = task / blocks, b = task % blocks, c0 = b * L;
      const int count = lanes_from<T>(c0, g.c);
      BlockKernel<T> block_kernel[3];
      block_kernels<Method>(kernels, prepared, b, block_kernel);
      Method::stage(x, g, xs, n, c0, count, block);
      convolve<T, Method::kPixels>(block, int(g.h), int(g.w), tiling, block_kernel, kernels.count, out.get());
      unstage_block(out.get(), g, ys, n, c0, count, bias, y);
    }
  };
  run_tasks(g.n * blocks, g.h * g.w * total_taps(kernels), work);
  return !failed;
}

template <typename S>
bool backward_blocks(const Geometry& g, const S* grad_out, Strides gs, const S* x, Strides xs, S* grad_x, Strides gxs,
              const KernelSet<S>& kernels, S* const grad_weight[3]) {
  using Method = typename MethodOf<S>::type;
  using T = typename Method::T;
  constexpr int L = Vec<T>::kLanes;
  const bool need_weight = grad_weight[0] != nullptr;
  const int64_t blocks = ceil_div(g.c, L);
  Allocations allocations;
  T* flipped[3] = {nullptr, nullptr, nullptr};
  if (grad_x != nullptr) {
    if (!allocate_kernels<Method>(kernels, g.c, flipped, allocations, 0)) return false;
    prepare_kernels<Method>(kernels, g.c, true, flipped);
  }
  // Per-image partial weight gradients [n][blocks][kh * kw][L] in the compute type, summed over images
  // at the end; each task zeroes its own slice.
  T* partial[3] = {nullptr, nullptr, nullptr};
  if (need_weight)
    for (int k = 0; k < kernels.count; ++k) {
      partial[k] = static_cast<T*>(aligned_bytes(g.n * blocks * kernels.kh[k] * kernels.kw[k] * L * int64_t(sizeof(T))));
      allocations.data[3 + k] = partial[k];
      if (partial[k] == nullptr) return false;
    }
  const Tiling tiling = tiling_for<Method>(g, kernels);
  const int64_t size = staged_size(g, tiling, L), row_stride = (g.w + 2 * tiling.pad_c) * L;
  int failed = 0;
  auto work = [&](cpu::TaskQueue* queue) {
    Buffer<T> staged_grad(size), staged_x(need_weight ? size : 0), out(grad_x != nullptr ? g.h * g.w * L : 0);
    if (!staged_grad.ok() || !staged_x.ok() || !out.ok()) {
      __atomic_store_n(&failed, 1, __ATOMIC_RELAXED);
      return;
    }
    const Staged<T> grad_block{staged_grad.get(), row_stride, tiling.pad_r, tiling.pad_c};
    const Staged<T> x_block{staged_x.get(), row_stride, tiling.pad_r, tiling.pad_c};
    for (int64_t task; (task = cpu::take_task(queue)) >= 0;) {
      const int64_t n = task / blocks, b = task % blocks, c0 = b * L;
      const int count = lanes_from<T>(c0, g.c);
      Method::stage(grad_out, g, gs, n, c0, count, grad_block);
      if (grad_x != nullptr) {
        BlockKernel<T> block_kernel[3];
        block_kernels<Method>(kernels, flipped, b, block_kernel);
        convolve<T, Method::kPixels>(grad_block, int(g.h), int(g.w), tiling, block_kernel, kernels.count, out.get());
        unstage_block(out.get(), g, gxs, n, c0, count, static_cast<const S*>(nullptr), grad_x);
      }
      if (!need_weight) continue;
      Method::stage(x, g, xs, n, c0, count, x_block);
      for (int k = 0; k < kernels.count; ++k) {
        const int64_t taps = int64_t(kernels.kh[k]) * kernels.kw[k];
        T* slice = partial[k] + (n * blocks + b) * taps * L;
        memset(slice, 0, taps * L * sizeof(T));
        correlate<T, Method::kPixels>(x_block, grad_block, int(g.h), int(g.w), kernels.kh[k], kernels.kw[k],
                                      tiling.tap_rows[k], tiling.tap_cols[k], slice);
      }
    }
  };
  run_tasks(g.n * blocks, 2 * g.h * g.w * total_taps(kernels), work);
  if (failed || !need_weight) return !failed;
  // Sum the images' partial gradients a vector (the block's L channels) at a time, then write the
  // lanes to the (C, kh, kw) layout, rounded once to the storage type.
  auto reduce = [&](cpu::TaskQueue* queue) {
    for (int64_t b; (b = cpu::take_task(queue)) >= 0;) {
      const int count = lanes_from<T>(b * L, g.c);
      alignas(kAlign) T lanes[L];
      for (int k = 0; k < kernels.count; ++k) {
        const int64_t taps = int64_t(kernels.kh[k]) * kernels.kw[k];
        for (int64_t t = 0; t < taps; ++t) {
          typename Vec<T>::Reg sum = Vec<T>::load(partial[k] + (b * taps + t) * L);
          for (int64_t n = 1; n < g.n; ++n)
            sum = Vec<T>::add(sum, Vec<T>::load(partial[k] + ((n * blocks + b) * taps + t) * L));
          Vec<T>::store(lanes, sum);
          for (int l = 0; l < count; ++l) narrow(lanes[l], &grad_weight[k][(b * L + l) * taps + t]);
        }
      }
    }
  };
  run_tasks(blocks, g.n * total_taps(kernels), reduce);
  return true;
}

}  // namespace

template <typename S>
bool forward(const Geometry& g, const S* x, Strides xs, S* y, Strides ys, const S* bias, const KernelSet<S>& kernels) {
  return forward_blocks(g, x, xs, y, ys, bias, kernels);
}

template <typename S>
bool backward(const Geometry& g, const S* grad_out, Strides gs, const S* x, Strides xs, S* grad_x, Strides gxs,
              const KernelSet<S>& kernels, S* const grad_weight[3]) {
  return backward_blocks(g, grad_out, gs, x, xs, grad_x, gxs, kernels, grad_weight);
}

#define MMSLAK_DWCONV_INSTANTIATE(S)                                                                                 \
  template bool forward<S>(const Geometry&, const S*, Strides, S*, Strides, const S*, const KernelSet<S>&);        \
  template bool backward<S>(const Geometry&, const S*, Strides, const S*, Strides, S*, Strides, const KernelSet<S>&, \
                            S* const[3]);
MMSLAK_DWCONV_INSTANTIATE(float)
MMSLAK_DWCONV_INSTANTIATE(double)
MMSLAK_DWCONV_INSTANTIATE(BFloat16)
#undef MMSLAK_DWCONV_INSTANTIATE

}  // namespace mmslak::dwconv::MMSLAK_DWCONV_ISA
