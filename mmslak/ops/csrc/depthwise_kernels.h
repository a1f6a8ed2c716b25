// Depthwise 'same' convolution kernels (forward, grad-input, grad-weight) for one instruction set.
//
// Included once per ISA by depthwise_avx512.cpp and depthwise_avx2.cpp, after
// `#pragma GCC target(...)` and with MMSLAK_DWCONV_ISA naming the namespace; MMSLAK_DWCONV_AVX512
// selects 512-bit vectors. Everything here has internal linkage or lives in that namespace, and no
// standard-library template is instantiated, so nothing compiled for AVX-512 can be merged by the
// linker into code that runs on an AVX2-only CPU.
//
// Design (2 MiB of L2 per core, 32 vector registers), the channel-blocked layout of oneDNN:
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
// * Tile shapes are chosen per kernel by a cost model (make_tiling): on a 14x14 map a (47, 5)
//   kernel gets short, wide tiles and a (5, 47) kernel tall, narrow ones, so few taps are wasted.
// * Several kernels (the decomposed SLaK conv) share the staged block: x (and grad_out) are read
//   from memory once per block, and each kernel's tiles add into the block's output in L2.

namespace mmslak::dwconv::MMSLAK_DWCONV_ISA {
namespace {

// Vec<T>: one register of L = kLanes values. Besides aligned load / store / fma / add, it reads and
// writes the first `count` lanes only (load_first / store_first, the others read as zero and are not
// written, so tails at the end of a tensor are never touched) and gathers `count` values `stride`
// elements apart (gather_first): channels of NCHW maps, taps of different channels' kernels.
#if defined(MMSLAK_DWCONV_AVX512)
constexpr int kAccumulators = 28;  // of 32 registers: the rest hold the weight and the loads
constexpr int kMaxTileRows = 8, kMaxTileCols = 8;
constexpr int kWeightAccumulators = 25, kMaxTapRows = 8, kMaxTapCols = 8;

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  using Reg = __m512;
  static constexpr int kLanes = 16;
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg broadcast(float v) { return _mm512_set1_ps(v); }
  static Reg load(const float* p) { return _mm512_load_ps(p); }
  static void store(float* p, Reg v) { _mm512_store_ps(p, v); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  static __mmask16 first(int count) { return __mmask16((1u << count) - 1); }
  static Reg load_first(const float* p, int count) { return _mm512_maskz_loadu_ps(first(count), p); }
  static void store_first(float* p, Reg v, int count) { _mm512_mask_storeu_ps(p, first(count), v); }
  static Reg gather_first(const float* p, int stride, int count) {
    const __m512i index = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                             _mm512_set1_epi32(stride));
    return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), first(count), index, p, sizeof(float));
  }
};
template <>
struct Vec<double> {
  using Reg = __m512d;
  static constexpr int kLanes = 8;
  static Reg zero() { return _mm512_setzero_pd(); }
  static Reg broadcast(double v) { return _mm512_set1_pd(v); }
  static Reg load(const double* p) { return _mm512_load_pd(p); }
  static void store(double* p, Reg v) { _mm512_store_pd(p, v); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_pd(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm512_add_pd(a, b); }
  static __mmask8 first(int count) { return __mmask8((1u << count) - 1); }
  static Reg load_first(const double* p, int count) { return _mm512_maskz_loadu_pd(first(count), p); }
  static void store_first(double* p, Reg v, int count) { _mm512_mask_storeu_pd(p, first(count), v); }
  static Reg gather_first(const double* p, int stride, int count) {
    const __m256i index = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(stride));
    return _mm512_mask_i32gather_pd(_mm512_setzero_pd(), first(count), index, p, sizeof(double));
  }
};
#else
constexpr int kAccumulators = 12;  // of 16 registers
constexpr int kMaxTileRows = 4, kMaxTileCols = 4;
constexpr int kWeightAccumulators = 12, kMaxTapRows = 4, kMaxTapCols = 4;

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  using Reg = __m256;
  static constexpr int kLanes = 8;
  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg broadcast(float v) { return _mm256_set1_ps(v); }
  static Reg load(const float* p) { return _mm256_load_ps(p); }
  static void store(float* p, Reg v) { _mm256_store_ps(p, v); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  static __m256i first(int count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static Reg load_first(const float* p, int count) { return _mm256_maskload_ps(p, first(count)); }
  static void store_first(float* p, Reg v, int count) { _mm256_maskstore_ps(p, first(count), v); }
  static Reg gather_first(const float* p, int stride, int count) {
    const __m256i index = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(stride));
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), p, index, _mm256_castsi256_ps(first(count)), sizeof(float));
  }
};
template <>
struct Vec<double> {
  using Reg = __m256d;
  static constexpr int kLanes = 4;
  static Reg zero() { return _mm256_setzero_pd(); }
  static Reg broadcast(double v) { return _mm256_set1_pd(v); }
  static Reg load(const double* p) { return _mm256_load_pd(p); }
  static void store(double* p, Reg v) { _mm256_store_pd(p, v); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_pd(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm256_add_pd(a, b); }
  static __m256i first(int count) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(count), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static Reg load_first(const double* p, int count) { return _mm256_maskload_pd(p, first(count)); }
  static void store_first(double* p, Reg v, int count) { _mm256_maskstore_pd(p, first(count), v); }
  static Reg gather_first(const double* p, int stride, int count) {
    const __m128i index = _mm_mullo_epi32(_mm_setr_epi32(0, 1, 2, 3), _mm_set1_epi32(stride));
    return _mm256_mask_i32gather_pd(_mm256_setzero_pd(), p, index, _mm256_castsi256_pd(first(count)), sizeof(double));
  }
};
#endif

constexpr int64_t kAlign = 64;

inline int imin(int a, int b) { return a < b ? a : b; }
inline int imax(int a, int b) { return a > b ? a : b; }
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
// How many of the `total` values from `first` on fit in one vector of L lanes.
template <typename T>
int lanes_from(int64_t first, int64_t total) {
  return int(total - first < Vec<T>::kLanes ? total - first : Vec<T>::kLanes);
}

// A 64-byte aligned, zero-initialised scratch array.
template <typename T>
class Buffer {
 public:
  explicit Buffer(int64_t count) {
    const int64_t bytes = ceil_div((count > 0 ? count : 1) * int64_t(sizeof(T)), kAlign) * kAlign;
    data_ = static_cast<T*>(aligned_alloc(kAlign, bytes));
    if (data_ != nullptr) memset(data_, 0, bytes);
  }
  ~Buffer() { free(data_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* get() const { return data_; }
  bool ok() const { return data_ != nullptr; }

 private:
  T* data_;
};

// Sum over the tiles of `extent` (tiles of `tile`) of the number of taps of a k-tap kernel axis that
// reach the map: the FMAs per output of a tile, summed along one axis.
inline int64_t taps_per_tiles(int extent, int tile, int k) {
  const int p = k / 2;
  int64_t sum = 0;
  for (int t0 = 0; t0 < extent; t0 += tile) sum += imax(0, imin(k - 1, p + extent - 1 - t0) - imax(0, p - (t0 + tile - 1)) + 1);
  return sum;
}

// Forward tiles (R x WT output pixels) and grad-weight tiles (TI x TJ taps) of each kernel, fixed
// per call by the map and kernel sizes, and the zero border of the staged block they need.
struct Tiling {
  int rows[3], cols[3];
  int tap_rows[3], tap_cols[3];
  int pad_r, pad_c;
};

// Sum over tap tiles (`tile` taps of a k-tap axis, from the first tap that reaches the map) of the
// number of map positions any tap of the tile reaches: the grad-weight work along one axis.
inline int64_t positions_per_tap_tiles(int extent, int tile, int k) {
  const int p = k / 2;
  const int first = imax(0, p - (extent - 1)), last = imin(k - 1, p + extent - 1);
  int64_t sum = 0;
  for (int t0 = first; t0 <= last; t0 += tile)
    sum += imin(extent, extent + p - t0) - imax(0, p - (imin(last, t0 + tile - 1)));
  return sum;
}

// Pick each kernel's tile by a cost model: a tile computes every tap that reaches any of its pixels,
// so a tile that is long along the kernel's long side wastes taps on small maps (a 14-column tile
// under a 47-wide kernel computes 27 column taps for 14 useful ones); a tile of fewer than 8
// accumulators leaves the FMA pipes waiting on latency.
template <typename T>
Tiling make_tiling(int64_t h, int64_t w, const KernelSet<T>& kernels) {
  Tiling t;
  int max_rows = 1, max_cols = 1;
  for (int k = 0; k < kernels.count; ++k) {
    int64_t best = -1;
    for (int r = 1; r <= kMaxTileRows; ++r)
      for (int c = 1; c <= kMaxTileCols && r * c <= kAccumulators; ++c) {
        if ((r > 1 && r - 1 >= h) || (c > 1 && c - 1 >= w)) continue;
        const int64_t taps = taps_per_tiles(int(h), r, kernels.kh[k]) * taps_per_tiles(int(w), c, kernels.kw[k]);
        const int64_t cost = taps * (imax(r * c, 8) + 1);
        if (best < 0 || cost < best) best = cost, t.rows[k] = r, t.cols[k] = c;
      }
    best = -1;
    for (int a = 1; a <= kMaxTapRows; ++a)
      for (int b = 1; b <= kMaxTapCols && a * b <= kWeightAccumulators; ++b) {
        const int64_t positions = positions_per_tap_tiles(int(h), a, kernels.kh[k]) *
                                  positions_per_tap_tiles(int(w), b, kernels.kw[k]);
        const int64_t cost = positions * (imax(a * b, 8) + 1);
        if (best < 0 || cost < best) best = cost, t.tap_rows[k] = a, t.tap_cols[k] = b;
      }
    max_rows = imax(max_rows, imax(t.rows[k], t.tap_rows[k]));
    max_cols = imax(max_cols, imax(t.cols[k], t.tap_cols[k]));
  }
  t.pad_r = max_rows - 1;
  t.pad_c = max_cols - 1;
  return t;
}

// A staged block: pixel (r, c) of the map, r in [-pad_r, h + pad_r), is the vector at(r, c).
template <typename T>
struct Staged {
  T* data;
  int64_t row_stride;  // (w + 2 pad_c) * L
  int pad_r, pad_c;
  T* at(int r, int c) const {
    return data + (r + pad_r) * row_stride + int64_t(c + pad_c) * Vec<T>::kLanes;
  }
};

// One kernel for one channel block: taps [kh * kw][L], tap (i, j) of lane l is channel l's w[i][j].
template <typename T>
struct BlockKernel {
  const T* taps;
  int kh, kw;
};

// ---------------------------------------------------------------- forward / grad-input tile

template <typename T, int R, int WT>
void conv_tile(const Staged<T>& x, int h, int w, const BlockKernel<T>* kernels, int count, int r0,
               int c0, bool accumulate, T* out) {
  if constexpr (R * WT <= kAccumulators) {
    using VT = Vec<T>;
    constexpr int L = VT::kLanes;
    typename VT::Reg acc[R][WT];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int c = 0; c < WT; ++c) acc[r][c] = VT::zero();
    const int64_t rs = x.row_stride;
    for (int k = 0; k < count; ++k) {
      const BlockKernel<T>& kernel = kernels[k];
      const int kh = kernel.kh, kw = kernel.kw, ph = kh / 2, pw = kw / 2;
      const int i_lo = imax(0, ph - (r0 + R - 1)), i_hi = imin(kh - 1, ph + h - 1 - r0);
      const int j_lo = imax(0, pw - (c0 + WT - 1)), j_hi = imin(kw - 1, pw + w - 1 - c0);
      for (int i = i_lo; i <= i_hi; ++i) {
        const T* tap = kernel.taps + int64_t(i * kw) * L;
        const T* row = x.at(r0 + i - ph, c0 - pw);
        for (int j = j_lo; j <= j_hi; ++j) {
          const typename VT::Reg weight = VT::load(tap + j * L);
          const T* p = row + j * L;
#pragma GCC unroll 8
          for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
            for (int c = 0; c < WT; ++c) acc[r][c] = VT::fma(weight, VT::load(p + r * rs + c * L), acc[r][c]);
        }
      }
    }
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
}

template <typename T, int R, int WT = kMaxTileCols>
void conv_tile_cols(int cols, const Staged<T>& x, int h, int w, const BlockKernel<T>* kernels,
                    int count, int r0, int c0, bool accumulate, T* out) {
  if constexpr (WT >= 1) {
    if (cols == WT)
      conv_tile<T, R, WT>(x, h, w, kernels, count, r0, c0, accumulate, out);
    else
      conv_tile_cols<T, R, WT - 1>(cols, x, h, w, kernels, count, r0, c0, accumulate, out);
  }
}

template <typename T, int R = kMaxTileRows>
void conv_tile_dispatch(int rows, int cols, const Staged<T>& x, int h, int w,
                        const BlockKernel<T>* kernels, int count, int r0, int c0, bool accumulate,
                        T* out) {
  if constexpr (R >= 1) {
    if (rows == R)
      conv_tile_cols<T, R>(cols, x, h, w, kernels, count, r0, c0, accumulate, out);
    else
      conv_tile_dispatch<T, R - 1>(rows, cols, x, h, w, kernels, count, r0, c0, accumulate, out);
  }
}

// out[h][w][L] = sum over kernels of the 'same' convolution of the staged block. Each kernel runs
// with its own tile shape and adds to out, which stays in L2 with the staged block.
template <typename T>
void convolve_block(const Staged<T>& x, int h, int w, const Tiling& tiling,
                    const BlockKernel<T>* kernels, int count, T* out) {
  for (int k = 0; k < count; ++k)
    for (int r0 = 0; r0 < h; r0 += tiling.rows[k])
      for (int c0 = 0; c0 < w; c0 += tiling.cols[k])
        conv_tile_dispatch(tiling.rows[k], tiling.cols[k], x, h, w, kernels + k, 1, r0, c0, k > 0, out);
}

// ---------------------------------------------------------------- grad-weight tile

template <typename T, int TI, int TJ>
void weight_tile(const Staged<T>& x, const Staged<T>& grad, int h, int w, int kh, int kw, int i0,
                 int j0, T* out) {
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
    for (int c = w_lo; c < w_hi; ++c) {
      const typename VT::Reg gv = VT::load(g + c * L);
      const T* p = row + c * L;
#pragma GCC unroll 8
      for (int a = 0; a < TI; ++a)
#pragma GCC unroll 8
        for (int b = 0; b < TJ; ++b) acc[a][b] = VT::fma(gv, VT::load(p + a * rs + b * L), acc[a][b]);
    }
  }
#pragma GCC unroll 8
  for (int a = 0; a < TI; ++a)
#pragma GCC unroll 8
    for (int b = 0; b < TJ; ++b) {
      T* dst = out + (int64_t(i0 + a) * kw + j0 + b) * L;
      VT::store(dst, VT::add(acc[a][b], VT::load(dst)));
    }
  }
}

template <typename T, int TI, int TJ = kMaxTapCols>
void weight_tile_cols(int tj, const Staged<T>& x, const Staged<T>& grad, int h, int w, int kh, int kw,
                      int i0, int j0, T* out) {
  if constexpr (TJ >= 1) {
    if (tj == TJ)
      weight_tile<T, TI, TJ>(x, grad, h, w, kh, kw, i0, j0, out);
    else
      weight_tile_cols<T, TI, TJ - 1>(tj, x, grad, h, w, kh, kw, i0, j0, out);
  }
}

template <typename T, int TI = kMaxTapRows>
void weight_tile_dispatch(int ti, int tj, const Staged<T>& x, const Staged<T>& grad, int h, int w,
                          int kh, int kw, int i0, int j0, T* out) {
  if constexpr (TI >= 1) {
    if (ti == TI)
      weight_tile_cols<T, TI>(tj, x, grad, h, w, kh, kw, i0, j0, out);
    else
      weight_tile_dispatch<T, TI - 1>(ti, tj, x, grad, h, w, kh, kw, i0, j0, out);
  }
}

// out[kh * kw][L] += correlation of the staged grad_out and x blocks, for the taps that reach the map,
// in tiles of tap_rows x tap_cols taps.
template <typename T>
void weight_grad_block(const Staged<T>& x, const Staged<T>& grad, int h, int w, int kh, int kw,
                       int tap_rows, int tap_cols, T* out) {
  const int ph = kh / 2, pw = kw / 2;
  const int i_lo = imax(0, ph - (h - 1)), i_hi = imin(kh - 1, ph + h - 1);
  const int j_lo = imax(0, pw - (w - 1)), j_hi = imin(kw - 1, pw + w - 1);
  for (int i0 = i_lo; i0 <= i_hi; i0 += tap_rows)
    for (int j0 = j_lo; j0 <= j_hi; j0 += tap_cols)
      weight_tile_dispatch(imin(tap_rows, i_hi + 1 - i0), imin(tap_cols, j_hi + 1 - j0), x, grad, h, w,
                           kh, kw, i0, j0, out);
}

// ---------------------------------------------------------------- staging

// Inputs may have any strides with (L - 1) * s.c within a 32-bit gather index; outputs are
// channels_last (s.c == 1) or contiguous NCHW (each channel plane one run of h * w values). The
// bindings guarantee both.

// Copy channels [c0, c0 + count) of image n into the staged block; lanes >= count are zero. One
// vector per pixel: a masked load for channels_last, a gather across the channel planes for NCHW.
template <typename T>
void stage_block(const T* src, const Geometry& g, Strides s, int64_t n, int64_t c0, int count,
                 const Staged<T>& dst) {
  using VT = Vec<T>;
  const T* base = src + n * s.n + c0 * s.c;
  for (int64_t r = 0; r < g.h; ++r)
    for (int64_t c = 0; c < g.w; ++c) {
      const T* p = base + r * s.h + c * s.w;
      VT::store(dst.at(int(r), int(c)), s.c == 1 ? VT::load_first(p, count) : VT::gather_first(p, int(s.c), count));
    }
}

// Write out[h][w][L] to channels [c0, c0 + count) of image n, adding bias[c] when given. For NCHW,
// each channel plane is written in runs of L pixels gathered from out.
template <typename T>
void unstage_block(const T* out, const Geometry& g, Strides s, int64_t n, int64_t c0, int count,
                   const T* bias, T* dst) {
  using VT = Vec<T>;
  constexpr int L = VT::kLanes;
  T* base = dst + n * s.n + c0 * s.c;
  if (s.c == 1) {
    const typename VT::Reg b = bias != nullptr ? VT::load_first(bias + c0, count) : VT::zero();
    for (int64_t r = 0; r < g.h; ++r)
      for (int64_t c = 0; c < g.w; ++c)
        VT::store_first(base + r * s.h + c * s.w, VT::add(VT::load(out + (r * g.w + c) * L), b), count);
    return;
  }
  const int64_t pixels = g.h * g.w;
  for (int l = 0; l < count; ++l) {
    const typename VT::Reg b = VT::broadcast(bias != nullptr ? bias[c0 + l] : T(0));
    T* plane = base + l * s.c;
    for (int64_t p0 = 0; p0 < pixels; p0 += L) {
      const int run = lanes_from<T>(p0, pixels);
      VT::store_first(plane + p0, VT::add(VT::gather_first(out + p0 * L + l, L, run), b), run);
    }
  }
}

// Kernels rearranged per channel block ([blocks][kh * kw][L]), flipped for the input gradient.
// allocate_kernels reserves them; prepare_block fills one block, so the threads fill them in parallel
// (serially, rearranging the ~150k taps of a 1000-channel layer took as long as its convolution).
template <typename T>
bool allocate_kernels(const KernelSet<T>& kernels, int64_t channels, T* prepared[3]) {
  constexpr int L = Vec<T>::kLanes;
  const int64_t blocks = ceil_div(channels, L);
  for (int k = 0; k < kernels.count; ++k) {
    const int64_t taps = int64_t(kernels.kh[k]) * kernels.kw[k];
    prepared[k] = static_cast<T*>(aligned_alloc(kAlign, ceil_div(sizeof(T) * blocks * taps * L, kAlign) * kAlign));
    if (prepared[k] == nullptr) return false;
  }
  return true;
}

template <typename T>
void prepare_block(const KernelSet<T>& kernels, int64_t channels, bool flip, int64_t b, T* const prepared[3]) {
  using VT = Vec<T>;
  constexpr int L = VT::kLanes;
  const int count = lanes_from<T>(b * L, channels);
  for (int k = 0; k < kernels.count; ++k) {
    const int taps = kernels.kh[k] * kernels.kw[k];
    const T* block = kernels.weight[k] + b * L * taps;
    T* dst = prepared[k] + b * taps * L;
    for (int t = 0; t < taps; ++t)  // flipping both axes reverses the taps
      VT::store(dst + t * L, VT::gather_first(block + (flip ? taps - 1 - t : t), taps, count));
  }
}

struct Allocations {
  void* data[6] = {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
  ~Allocations() {
    for (void* p : data) free(p);
  }
};

template <typename T>
void block_kernels(const KernelSet<T>& kernels, T* const prepared[3], int64_t block, BlockKernel<T> out[3]) {
  constexpr int L = Vec<T>::kLanes;
  for (int k = 0; k < kernels.count; ++k) {
    const int64_t taps = int64_t(kernels.kh[k]) * kernels.kw[k];
    out[k] = BlockKernel<T>{prepared[k] + block * taps * L, kernels.kh[k], kernels.kw[k]};
  }
}

}  // namespace

template <typename T>
bool forward(const Geometry& g, const T* x, Strides xs, T* y, Strides ys, const T* bias,
             const KernelSet<T>& kernels) {
  constexpr int L = Vec<T>::kLanes;
  Allocations allocations;
  T* prepared[3] = {nullptr, nullptr, nullptr};
  const bool prepared_ok = allocate_kernels(kernels, g.c, prepared);
  for (int k = 0; k < 3; ++k) allocations.data[k] = prepared[k];
  if (!prepared_ok) return false;
  const Tiling tiling = make_tiling(g.h, g.w, kernels);
  const int64_t staged_size = (g.h + 2 * tiling.pad_r) * (g.w + 2 * tiling.pad_c) * L;
  const int64_t blocks = ceil_div(g.c, L);
  const int64_t tasks = g.n * blocks;
  bool failed = false;
#pragma omp parallel if (tasks > 1)
  {
    Buffer<T> staged(staged_size), out(g.h * g.w * L);
    const Staged<T> block{staged.get(), (g.w + 2 * tiling.pad_c) * L, tiling.pad_r, tiling.pad_c};
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) prepare_block(kernels, g.c, false, b, prepared);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      if (!staged.ok() || !out.ok()) {
#pragma omp atomic write
        failed = true;
        continue;
      }
      const int64_t n = task / blocks, b = task % blocks, c0 = b * L;
      const int count = lanes_from<T>(c0, g.c);
      BlockKernel<T> block_kernel[3];
      block_kernels(kernels, prepared, b, block_kernel);
      stage_block(x, g, xs, n, c0, count, block);
      convolve_block(block, int(g.h), int(g.w), tiling, block_kernel, kernels.count, out.get());
      unstage_block(out.get(), g, ys, n, c0, count, bias, y);
    }
  }
  return !failed;
}

template <typename T>
bool backward(const Geometry& g, const T* grad_out, Strides gs, const T* x, Strides xs, T* grad_x,
              Strides gxs, const KernelSet<T>& kernels, T* const grad_weight[3]) {
  constexpr int L = Vec<T>::kLanes;
  const bool need_weight = grad_weight[0] != nullptr;
  const int64_t blocks = ceil_div(g.c, L);
  Allocations allocations;
  T* flipped[3] = {nullptr, nullptr, nullptr};
  if (grad_x != nullptr) {
    const bool prepared_ok = allocate_kernels(kernels, g.c, flipped);
    for (int k = 0; k < 3; ++k) allocations.data[k] = flipped[k];
    if (!prepared_ok) return false;
  }
  // Per-image partial weight gradients [n][blocks][kh * kw][L], summed over images at the end; each
  // task zeroes its own slice.
  T* partial[3] = {nullptr, nullptr, nullptr};
  if (need_weight)
    for (int k = 0; k < kernels.count; ++k) {
      const int64_t bytes = ceil_div(g.n * blocks * kernels.kh[k] * kernels.kw[k] * L * int64_t(sizeof(T)), kAlign) * kAlign;
      partial[k] = static_cast<T*>(aligned_alloc(kAlign, bytes));
      allocations.data[3 + k] = partial[k];
      if (partial[k] == nullptr) return false;
    }
  const Tiling tiling = make_tiling(g.h, g.w, kernels);
  const int64_t staged_size = (g.h + 2 * tiling.pad_r) * (g.w + 2 * tiling.pad_c) * L;
  const int64_t tasks = g.n * blocks;
  bool failed = false;
  // One parallel region for the blocks and the sum over images: on a busy machine every region
  // costs a wait for all threads to be scheduled.
#pragma omp parallel if (tasks > 1)
  {
    Buffer<T> staged_grad(staged_size), staged_x(need_weight ? staged_size : 0),
        out(grad_x != nullptr ? g.h * g.w * L : 0);
    const int64_t row_stride = (g.w + 2 * tiling.pad_c) * L;
    const Staged<T> grad_block{staged_grad.get(), row_stride, tiling.pad_r, tiling.pad_c};
    const Staged<T> x_block{staged_x.get(), row_stride, tiling.pad_r, tiling.pad_c};
    if (grad_x != nullptr) {
#pragma omp for schedule(static)
      for (int64_t b = 0; b < blocks; ++b) prepare_block(kernels, g.c, true, b, flipped);
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      if (!staged_grad.ok() || !staged_x.ok() || !out.ok()) {
#pragma omp atomic write
        failed = true;
        continue;
      }
      const int64_t n = task / blocks, b = task % blocks, c0 = b * L;
      const int count = lanes_from<T>(c0, g.c);
      stage_block(grad_out, g, gs, n, c0, count, grad_block);
      if (grad_x != nullptr) {
        BlockKernel<T> block_kernel[3];
        block_kernels(kernels, flipped, b, block_kernel);
        convolve_block(grad_block, int(g.h), int(g.w), tiling, block_kernel, kernels.count, out.get());
        unstage_block(out.get(), g, gxs, n, c0, count, static_cast<const T*>(nullptr), grad_x);
      }
      if (!need_weight) continue;
      stage_block(x, g, xs, n, c0, count, x_block);
      for (int k = 0; k < kernels.count; ++k) {
        const int64_t taps = int64_t(kernels.kh[k]) * kernels.kw[k];
        T* slice = partial[k] + (n * blocks + b) * taps * L;
        memset(slice, 0, taps * L * sizeof(T));
        weight_grad_block(x_block, grad_block, int(g.h), int(g.w), kernels.kh[k], kernels.kw[k],
                          tiling.tap_rows[k], tiling.tap_cols[k], slice);
      }
    }
    // Sum the images' partial gradients a vector (the block's L channels) at a time, then write
    // the lanes to the (C, kh, kw) layout.
    if (need_weight)
      for (int k = 0; k < kernels.count; ++k) {
        const int64_t taps = int64_t(kernels.kh[k]) * kernels.kw[k];
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; ++b) {
          const int count = lanes_from<T>(b * L, g.c);
          alignas(kAlign) T lanes[L];
          for (int64_t t = 0; t < taps; ++t) {
            typename Vec<T>::Reg sum = Vec<T>::load(partial[k] + (b * taps + t) * L);
            for (int64_t n = 1; n < g.n; ++n)
              sum = Vec<T>::add(sum, Vec<T>::load(partial[k] + ((n * blocks + b) * taps + t) * L));
            Vec<T>::store(lanes, sum);
            for (int l = 0; l < count; ++l) grad_weight[k][(b * L + l) * taps + t] = lanes[l];
          }
        }
      }
  }
  return !failed;
}

template bool forward<float>(const Geometry&, const float*, Strides, float*, Strides, const float*,
                             const KernelSet<float>&);
template bool forward<double>(const Geometry&, const double*, Strides, double*, Strides, const double*,
                              const KernelSet<double>&);
template bool backward<float>(const Geometry&, const float*, Strides, const float*, Strides, float*,
                              Strides, const KernelSet<float>&, float* const[3]);
template bool backward<double>(const Geometry&, const double*, Strides, const double*, Strides, double*,
                               Strides, const KernelSet<double>&, double* const[3]);

}  // namespace mmslak::dwconv::MMSLAK_DWCONV_ISA
