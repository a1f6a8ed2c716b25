// Depthwise 'same' convolution kernels (forward, grad-input, grad-weight) for one instruction set.
//
// Included once per ISA by depthwise_avx512.cpp and depthwise_avx2.cpp, after
// `#pragma GCC target(...)` and with MMSLAK_DWCONV_ISA naming the namespace; MMSLAK_DWCONV_AVX512
// selects 512-bit vectors. Everything here has internal linkage or lives in that namespace, and no
// standard-library template is instantiated, so nothing compiled for AVX-512 can be merged by the
// linker into code that runs on an AVX2-only CPU.
//
// Design (2 MiB of L2 per core, 32 vector registers):
// * Work unit: (image n, block of 16 channels). The block's planes are copied once ("staged") into
//   contiguous per-thread buffers, reading along C for channels_last and along W for NCHW, and the
//   results are scattered back the same way: channels_last costs no extra pass over memory.
// * Orientation: a kernel whose long side runs along W is applied to the transposed plane, so the
//   short side always runs along the vectors and the long side along rows, where rows that fall in
//   the zero padding are skipped through loop bounds (a 47-tap kernel on a 14-row image does 14 taps).
// * Shifted copies: for a block of up to 4 vectors of columns, the plane is copied KW times, copy s
//   shifted left by s columns, with zero rows above and below. Tap (i, j) of output row r then reads
//   copy j at row r + i - kh / 2 with aligned loads only (unaligned 64-byte loads split cache lines
//   and halve the load throughput).
// * Forward / grad-input tile: R output rows x V vectors of accumulators (R * V <= 28); per tap one
//   broadcast and R * V FMAs, each with one aligned load. Grad-input is the forward with the flipped
//   kernel.
// * Grad-weight tile: TI x TJ taps of accumulators (<= 25); per (row, vector) one load of grad_out
//   and TI * TJ FMAs, each with one aligned load of a shifted copy of x; lanes are summed at the end.
// * Several kernels (the decomposed SLaK conv) share staging, copies and accumulators: one pass over
//   x in forward and over (grad_out, x) in backward.

namespace mmslak::dwconv::MMSLAK_DWCONV_ISA {
namespace {

#if defined(MMSLAK_DWCONV_AVX512)
constexpr int kAccumulators = 28;  // of 32 registers: the rest hold the broadcast weight and loads
constexpr int kTapRows = 5, kTapCols = 5;

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  using Reg = __m512;
  static constexpr int kLanes = 16;
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg set1(float v) { return _mm512_set1_ps(v); }
  static Reg load(const float* p) { return _mm512_load_ps(p); }
  static void store(float* p, Reg v) { _mm512_store_ps(p, v); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  static float sum(Reg v) { return _mm512_reduce_add_ps(v); }
};
template <>
struct Vec<double> {
  using Reg = __m512d;
  static constexpr int kLanes = 8;
  static Reg zero() { return _mm512_setzero_pd(); }
  static Reg set1(double v) { return _mm512_set1_pd(v); }
  static Reg load(const double* p) { return _mm512_load_pd(p); }
  static void store(double* p, Reg v) { _mm512_store_pd(p, v); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_pd(a, b, c); }
  static double sum(Reg v) { return _mm512_reduce_add_pd(v); }
};
#else
constexpr int kAccumulators = 12;  // of 16 registers
constexpr int kTapRows = 3, kTapCols = 4;

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  using Reg = __m256;
  static constexpr int kLanes = 8;
  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg set1(float v) { return _mm256_set1_ps(v); }
  static Reg load(const float* p) { return _mm256_load_ps(p); }
  static void store(float* p, Reg v) { _mm256_store_ps(p, v); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static float sum(Reg v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};
template <>
struct Vec<double> {
  using Reg = __m256d;
  static constexpr int kLanes = 4;
  static Reg zero() { return _mm256_setzero_pd(); }
  static Reg set1(double v) { return _mm256_set1_pd(v); }
  static Reg load(const double* p) { return _mm256_load_pd(p); }
  static void store(double* p, Reg v) { _mm256_store_pd(p, v); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_pd(a, b, c); }
  static double sum(Reg v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }
};
#endif

constexpr int kMaxVectors = 4;      // vectors per row of a column block
constexpr int kMaxRows = 14;        // output rows per forward tile
constexpr int kChannelBlock = 16;   // channels per work unit
constexpr int64_t kAlign = 64;

constexpr int max_rows(int vectors) {
  return kAccumulators / vectors < kMaxRows ? kAccumulators / vectors : kMaxRows;
}

inline int imin(int a, int b) { return a < b ? a : b; }
inline int imax(int a, int b) { return a > b ? a : b; }
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A 64-byte aligned, zero-initialised scratch array owned by one thread.
template <typename T>
class Buffer {
 public:
  explicit Buffer(int64_t count) {
    int64_t bytes = ceil_div(count * int64_t(sizeof(T)), kAlign) * kAlign;
    data_ = static_cast<T*>(aligned_alloc(kAlign, bytes > 0 ? bytes : kAlign));
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

// A kernel as applied in one orientation: weight (C, kh, kw), taps (i, j) read copy s0 + j.
template <typename T>
struct OrientedKernel {
  const T* weight;
  int kh, kw;
  int s0;
};

// The kernels applied in one orientation (rows of the plane = H, or rows = W for 'transposed').
template <typename T>
struct Group {
  int count = 0;
  bool transposed = false;
  int max_kw = 0;  // number of shifted copies
  OrientedKernel<T> kernel[3];
  int source[3];  // index in the KernelSet
};

// Shifted copies of one column block of an (rows x cols) plane:
// copy s, row r (in [-pad, rows + pad)), column t (in [0, V * L)) holds plane[r][col0 + t + s - pw],
// zero outside the plane.
template <typename T>
struct Copies {
  T* data;
  int64_t copy_stride;  // elements between consecutive copies
  int pad;              // zero rows above (and below) the plane
  int row_stride;       // V * L
  const T* at(int s, int row) const { return data + s * copy_stride + int64_t(row + pad) * row_stride; }
};

template <typename T>
Copies<T> build_copies(const T* plane, int rows, int cols, int col0, int vectors, int count, int pw,
                       int pad, T* storage, T* row_scratch) {
  constexpr int L = Vec<T>::kLanes;
  Copies<T> c{storage, int64_t(rows + 2 * pad) * vectors * L, pad, vectors * L};
  const int width = vectors * L;
  const int span = width + count - 1;
  for (int r = -pad; r < rows + pad; ++r) {
    if (r < 0 || r >= rows) {
      for (int s = 0; s < count; ++s) memset(storage + s * c.copy_stride + int64_t(r + pad) * width, 0,
                                             sizeof(T) * width);
      continue;
    }
    const T* src = plane + int64_t(r) * cols;
    for (int t = 0; t < span; ++t) {
      const int col = col0 + t - pw;
      row_scratch[t] = (col >= 0 && col < cols) ? src[col] : T(0);
    }
    for (int s = 0; s < count; ++s) {
      T* dst = storage + s * c.copy_stride + int64_t(r + pad) * width;
      for (int t = 0; t < width; ++t) dst[t] = row_scratch[t + s];
    }
  }
  return c;
}

// Column-block geometry and the range of kernel taps that can reach the image.
struct Block {
  int rows, cols;  // oriented plane
  int col0, vectors;
  int last_col;    // last column of the block inside the plane
};

inline void tap_columns(const Block& b, int kw, int* lo, int* hi) {
  const int pw = kw / 2;
  *lo = imax(0, pw - b.last_col);
  *hi = imin(kw - 1, pw + b.cols - 1 - b.col0);
}

// ---------------------------------------------------------------- forward / grad-input tile

template <typename T, int V, int R>
void conv_tile(const Copies<T>& copies, const Block& b, const Group<T>& group,
               const T* const* weights, int r0, T* tile) {
  using VT = Vec<T>;
  constexpr int L = VT::kLanes;
  typename VT::Reg acc[R][V];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[r][v] = VT::zero();
  for (int k = 0; k < group.count; ++k) {
    const OrientedKernel<T>& kernel = group.kernel[k];
    const int kh = kernel.kh, kw = kernel.kw, ph = kh / 2;
    const int i_lo = imax(0, ph - r0 - (R - 1));
    const int i_hi = imin(kh - 1, b.rows - 1 + ph - r0);
    int j_lo, j_hi;
    tap_columns(b, kw, &j_lo, &j_hi);
    const T* weight = weights[k];
    for (int i = i_lo; i <= i_hi; ++i) {
      const T* w_row = weight + i * kw;
      for (int j = j_lo; j <= j_hi; ++j) {
        const typename VT::Reg w = VT::set1(w_row[j]);
        const T* p = copies.at(kernel.s0 + j, r0 + i - ph);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
          for (int v = 0; v < V; ++v) acc[r][v] = VT::fma(w, VT::load(p + r * V * L + v * L), acc[r][v]);
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) VT::store(tile + r * V * L + v * L, acc[r][v]);
}

template <typename T, int V, int R = max_rows(V)>
void conv_tile_rows(int rows, const Copies<T>& copies, const Block& b, const Group<T>& group,
                    const T* const* weights, int r0, T* tile) {
  if constexpr (R >= 1) {
    if (rows == R)
      conv_tile<T, V, R>(copies, b, group, weights, r0, tile);
    else
      conv_tile_rows<T, V, R - 1>(rows, copies, b, group, weights, r0, tile);
  }
}

template <typename T>
void conv_tile_dispatch(int vectors, int rows, const Copies<T>& copies, const Block& b,
                        const Group<T>& group, const T* const* weights, int r0, T* tile) {
  switch (vectors) {
    case 1: conv_tile_rows<T, 1>(rows, copies, b, group, weights, r0, tile); break;
    case 2: conv_tile_rows<T, 2>(rows, copies, b, group, weights, r0, tile); break;
    case 3: conv_tile_rows<T, 3>(rows, copies, b, group, weights, r0, tile); break;
    default: conv_tile_rows<T, 4>(rows, copies, b, group, weights, r0, tile); break;
  }
}

// Balanced row tiles: as few tiles as the register budget allows, all of the same height.
inline int tile_rows(int rows, int vectors) {
  const int limit = max_rows(vectors);
  const int tiles = int(ceil_div(rows, limit));
  return int(ceil_div(rows, tiles));
}

// ---------------------------------------------------------------- grad-weight tile

template <typename T, int V, int TI, int TJ>
void weight_tile(const Copies<T>& copies, const Block& b, const T* grad, int ph, int i0, int s_first,
                 T* out, int ldo) {
  using VT = Vec<T>;
  constexpr int L = VT::kLanes;
  typename VT::Reg acc[TI][TJ];
#pragma GCC unroll 8
  for (int a = 0; a < TI; ++a)
#pragma GCC unroll 8
    for (int c = 0; c < TJ; ++c) acc[a][c] = VT::zero();
  const int h_lo = imax(0, ph - (i0 + TI - 1));
  const int h_hi = imin(b.rows, b.rows + ph - i0);
  for (int h = h_lo; h < h_hi; ++h) {
    const T* g_row = grad + int64_t(h) * V * L;
    const T* x_row = copies.at(s_first, h + i0 - ph);
    for (int v = 0; v < V; ++v) {
      const typename VT::Reg g = VT::load(g_row + v * L);
#pragma GCC unroll 8
      for (int a = 0; a < TI; ++a)
#pragma GCC unroll 8
        for (int c = 0; c < TJ; ++c)
          acc[a][c] = VT::fma(g, VT::load(x_row + c * copies.copy_stride + a * V * L + v * L), acc[a][c]);
    }
  }
#pragma GCC unroll 8
  for (int a = 0; a < TI; ++a)
#pragma GCC unroll 8
    for (int c = 0; c < TJ; ++c) out[a * ldo + c] += VT::sum(acc[a][c]);
}

template <typename T, int V, int TI, int TJ = kTapCols>
void weight_tile_cols(int tj, const Copies<T>& copies, const Block& b, const T* grad, int ph, int i0,
                      int s_first, T* out, int ldo) {
  if constexpr (TJ >= 1) {
    if (tj == TJ)
      weight_tile<T, V, TI, TJ>(copies, b, grad, ph, i0, s_first, out, ldo);
    else
      weight_tile_cols<T, V, TI, TJ - 1>(tj, copies, b, grad, ph, i0, s_first, out, ldo);
  }
}

template <typename T, int V, int TI = kTapRows>
void weight_tile_rows(int ti, int tj, const Copies<T>& copies, const Block& b, const T* grad, int ph,
                      int i0, int s_first, T* out, int ldo) {
  if constexpr (TI >= 1) {
    if (ti == TI)
      weight_tile_cols<T, V, TI>(tj, copies, b, grad, ph, i0, s_first, out, ldo);
    else
      weight_tile_rows<T, V, TI - 1>(ti, tj, copies, b, grad, ph, i0, s_first, out, ldo);
  }
}

template <typename T>
void weight_tile_dispatch(int vectors, int ti, int tj, const Copies<T>& copies, const Block& b,
                          const T* grad, int ph, int i0, int s_first, T* out, int ldo) {
  switch (vectors) {
    case 1: weight_tile_rows<T, 1>(ti, tj, copies, b, grad, ph, i0, s_first, out, ldo); break;
    case 2: weight_tile_rows<T, 2>(ti, tj, copies, b, grad, ph, i0, s_first, out, ldo); break;
    case 3: weight_tile_rows<T, 3>(ti, tj, copies, b, grad, ph, i0, s_first, out, ldo); break;
    default: weight_tile_rows<T, 4>(ti, tj, copies, b, grad, ph, i0, s_first, out, ldo); break;
  }
}

// ---------------------------------------------------------------- planes

// Per-thread scratch, sized for the largest orientation of the problem.
template <typename T>
struct Workspace {
  Workspace(int64_t h, int64_t w, int max_kw, bool backward)
      : longest(h > w ? h : w),
        plane(h * w),
        stage_in(kChannelBlock * plane),
        stage_x(backward ? kChannelBlock * plane : 0),
        stage_out(kChannelBlock * plane),
        transposed(plane),
        copies(int64_t(max_kw) * (longest + 2 * pad()) * width()),
        grad_block(longest * width()),
        row_scratch(width() + max_kw),
        tile(int64_t(kMaxRows) * width()) {}
  static int width() { return kMaxVectors * Vec<T>::kLanes; }
  static int pad() { return imax(kMaxRows, kTapRows) - 1; }
  bool ok() const {
    return stage_in.ok() && stage_x.ok() && stage_out.ok() && transposed.ok() && copies.ok() &&
           grad_block.ok() && row_scratch.ok() && tile.ok();
  }
  int64_t longest, plane;
  Buffer<T> stage_in, stage_x, stage_out, transposed, copies, grad_block, row_scratch, tile;
};

// Copy channels [c0, c0 + count) of image n into `stage` as contiguous (H, W) planes.
template <typename T>
void stage_planes(const T* src, const Geometry& g, Strides s, int64_t n, int64_t c0, int count,
                  T* stage) {
  const int64_t plane = g.h * g.w;
  const T* base = src + n * s.n + c0 * s.c;
  if (s.c < s.w) {  // channels_last-like: read along C
    for (int64_t h = 0; h < g.h; ++h)
      for (int64_t w = 0; w < g.w; ++w) {
        const T* p = base + h * s.h + w * s.w;
        for (int c = 0; c < count; ++c) stage[c * plane + h * g.w + w] = p[c * s.c];
      }
  } else {
    for (int c = 0; c < count; ++c)
      for (int64_t h = 0; h < g.h; ++h) {
        const T* p = base + c * s.c + h * s.h;
        T* q = stage + c * plane + h * g.w;
        for (int64_t w = 0; w < g.w; ++w) q[w] = p[w * s.w];
      }
  }
}

// Write the staged planes to channels [c0, c0 + count) of image n, adding bias[c] when given.
template <typename T>
void unstage_planes(const T* stage, const Geometry& g, Strides s, int64_t n, int64_t c0, int count,
                    const T* bias, T* dst) {
  const int64_t plane = g.h * g.w;
  T* base = dst + n * s.n + c0 * s.c;
  if (s.c < s.w) {
    for (int64_t h = 0; h < g.h; ++h)
      for (int64_t w = 0; w < g.w; ++w) {
        T* p = base + h * s.h + w * s.w;
        for (int c = 0; c < count; ++c)
          p[c * s.c] = stage[c * plane + h * g.w + w] + (bias ? bias[c0 + c] : T(0));
      }
  } else {
    for (int c = 0; c < count; ++c) {
      const T b = bias ? bias[c0 + c] : T(0);
      for (int64_t h = 0; h < g.h; ++h) {
        T* p = base + c * s.c + h * s.h;
        const T* q = stage + c * plane + h * g.w;
        for (int64_t w = 0; w < g.w; ++w) p[w * s.w] = q[w] + b;
      }
    }
  }
}

template <typename T>
void transpose_plane(const T* src, int rows, int cols, T* dst) {
  constexpr int kBlock = 16;
  for (int r0 = 0; r0 < rows; r0 += kBlock)
    for (int c0 = 0; c0 < cols; c0 += kBlock)
      for (int r = r0; r < imin(rows, r0 + kBlock); ++r)
        for (int c = c0; c < imin(cols, c0 + kBlock); ++c) dst[int64_t(c) * rows + r] = src[int64_t(r) * cols + c];
}

// The plane in the group's orientation: itself, or its transpose written to `scratch`.
template <typename T>
const T* oriented(const Group<T>& group, const T* plane, const Geometry& g, T* scratch, int* rows,
                  int* cols) {
  if (!group.transposed) {
    *rows = int(g.h), *cols = int(g.w);
    return plane;
  }
  transpose_plane(plane, int(g.h), int(g.w), scratch);
  *rows = int(g.w), *cols = int(g.h);
  return scratch;
}

// out (H, W) (+)= the group's convolution of `plane` (H, W); weights[k] point at this channel.
template <typename T>
void convolve_plane(const Group<T>& group, const T* const* weights, const T* plane, const Geometry& g,
                    bool accumulate, T* out, Workspace<T>& ws) {
  constexpr int L = Vec<T>::kLanes;
  int rows, cols;
  const T* src = oriented(group, plane, g, ws.transposed.get(), &rows, &cols);
  const int col_vectors = int(ceil_div(cols, L));
  for (int cv = 0; cv < col_vectors; cv += kMaxVectors) {
    const int vectors = imin(kMaxVectors, col_vectors - cv);
    const int r_tile = tile_rows(rows, vectors);
    const Block b{rows, cols, cv * L, vectors, imin(cols, (cv + vectors) * L) - 1};
    const Copies<T> copies = build_copies(src, rows, cols, b.col0, vectors, group.max_kw,
                                          group.max_kw / 2, r_tile - 1, ws.copies.get(),
                                          ws.row_scratch.get());
    const int width = vectors * L;
    const int valid_cols = b.last_col - b.col0 + 1;
    for (int r0 = 0; r0 < rows; r0 += r_tile) {
      T* tile = ws.tile.get();
      conv_tile_dispatch(vectors, r_tile, copies, b, group, weights, r0, tile);
      const int valid_rows = imin(r_tile, rows - r0);
      for (int r = 0; r < valid_rows; ++r)
        for (int t = 0; t < valid_cols; ++t) {
          const int64_t row = r0 + r, col = b.col0 + t;
          T& dst = group.transposed ? out[col * g.w + row] : out[row * g.w + col];
          dst = accumulate ? dst + tile[r * width + t] : tile[r * width + t];
        }
    }
  }
}

// grad_weights[k] (oriented kh x kw of this channel) += correlation of grad_out and x planes.
template <typename T>
void weight_grad_plane(const Group<T>& group, const T* grad_plane, const T* x_plane, const Geometry& g,
                       T* const* grad_weights, Workspace<T>& ws) {
  constexpr int L = Vec<T>::kLanes;
  int rows, cols;
  const T* x = oriented(group, x_plane, g, ws.transposed.get(), &rows, &cols);
  const int col_vectors = int(ceil_div(cols, L));
  for (int cv = 0; cv < col_vectors; cv += kMaxVectors) {
    const int vectors = imin(kMaxVectors, col_vectors - cv);
    const int width = vectors * L;
    const Block b{rows, cols, cv * L, vectors, imin(cols, (cv + vectors) * L) - 1};
    const Copies<T> copies = build_copies(x, rows, cols, b.col0, vectors, group.max_kw,
                                          group.max_kw / 2, kTapRows - 1, ws.copies.get(),
                                          ws.row_scratch.get());
    T* grad = ws.grad_block.get();
    for (int r = 0; r < rows; ++r)
      for (int t = 0; t < width; ++t) {
        const int col = b.col0 + t;
        grad[int64_t(r) * width + t] =
            col < cols ? (group.transposed ? grad_plane[int64_t(col) * g.w + r] : grad_plane[int64_t(r) * g.w + col])
                       : T(0);
      }
    for (int k = 0; k < group.count; ++k) {
      const OrientedKernel<T>& kernel = group.kernel[k];
      const int kh = kernel.kh, kw = kernel.kw, ph = kh / 2;
      int j_lo, j_hi;
      tap_columns(b, kw, &j_lo, &j_hi);
      const int i_lo = imax(0, ph - (rows - 1)), i_hi = imin(kh - 1, ph + rows - 1);
      for (int i0 = i_lo; i0 <= i_hi; i0 += kTapRows) {
        const int ti = imin(kTapRows, i_hi + 1 - i0);
        for (int j0 = j_lo; j0 <= j_hi; j0 += kTapCols) {
          const int tj = imin(kTapCols, j_hi + 1 - j0);
          weight_tile_dispatch(vectors, ti, tj, copies, b, grad, ph, i0, kernel.s0 + j0,
                               grad_weights[k] + i0 * kw + j0, kw);
        }
      }
    }
  }
}

// ---------------------------------------------------------------- kernel preparation

// Split the kernels into the normal group (kh >= kw) and the transposed group (kw > kh), and write
// each kernel, transposed if its group is and flipped when `flip`, to prepared[k] (C, kh', kw').
template <typename T>
void prepare_groups(const KernelSet<T>& kernels, int64_t channels, bool flip, T* const* prepared,
                    Group<T> groups[2]) {
  groups[0].transposed = false;
  groups[1].transposed = true;
  for (int k = 0; k < kernels.count; ++k) {
    const bool transposed = kernels.kw[k] > kernels.kh[k];
    const int kh = transposed ? kernels.kw[k] : kernels.kh[k];
    const int kw = transposed ? kernels.kh[k] : kernels.kw[k];
    const int64_t taps = int64_t(kh) * kw;
    if (prepared != nullptr) {
      for (int64_t c = 0; c < channels; ++c) {
        const T* src = kernels.weight[k] + c * taps;
        T* dst = prepared[k] + c * taps;
        for (int i = 0; i < kh; ++i)
          for (int j = 0; j < kw; ++j) {
            const int si = flip ? kh - 1 - i : i, sj = flip ? kw - 1 - j : j;
            dst[i * kw + j] = transposed ? src[sj * kernels.kw[k] + si] : src[si * kw + sj];
          }
      }
    }
    Group<T>& group = groups[transposed ? 1 : 0];
    group.kernel[group.count] = OrientedKernel<T>{prepared ? prepared[k] : nullptr, kh, kw, 0};
    group.source[group.count] = k;
    group.count += 1;
    group.max_kw = imax(group.max_kw, kw);
  }
  for (int gi = 0; gi < 2; ++gi)
    for (int k = 0; k < groups[gi].count; ++k)
      groups[gi].kernel[k].s0 = groups[gi].max_kw / 2 - groups[gi].kernel[k].kw / 2;
}

template <typename T>
int max_short_side(const KernelSet<T>& kernels) {
  int m = 1;
  for (int k = 0; k < kernels.count; ++k) m = imax(m, imin(kernels.kh[k], kernels.kw[k]));
  return m;
}

template <typename T>
void convolve_block(const Group<T> groups[2], int64_t c0, int count, const T* stage, const Geometry& g,
                    T* out, Workspace<T>& ws) {
  const int64_t plane = g.h * g.w;
  for (int c = 0; c < count; ++c) {
    bool written = false;
    for (int gi = 0; gi < 2; ++gi) {
      const Group<T>& group = groups[gi];
      if (group.count == 0) continue;
      const T* weights[3];
      for (int k = 0; k < group.count; ++k) {
        const OrientedKernel<T>& kernel = group.kernel[k];
        weights[k] = kernel.weight + (c0 + c) * int64_t(kernel.kh) * kernel.kw;
      }
      convolve_plane(group, weights, stage + c * plane, g, written, out + c * plane, ws);
      written = true;
    }
  }
}

struct Scratch {
  void* data[3] = {nullptr, nullptr, nullptr};
  ~Scratch() {
    for (void* p : data) free(p);
  }
};

}  // namespace

template <typename T>
bool forward(const Geometry& g, const T* x, Strides xs, T* y, Strides ys, const T* bias,
             const KernelSet<T>& kernels) {
  Scratch scratch;
  T* prepared[3] = {nullptr, nullptr, nullptr};
  for (int k = 0; k < kernels.count; ++k) {
    scratch.data[k] = malloc(sizeof(T) * g.c * kernels.kh[k] * kernels.kw[k]);
    prepared[k] = static_cast<T*>(scratch.data[k]);
  }
  Group<T> groups[2];
  prepare_groups(kernels, g.c, false, prepared, groups);
  const int max_kw = imax(groups[0].max_kw, groups[1].max_kw);
  const int64_t blocks = ceil_div(g.c, kChannelBlock);
  const int64_t tasks = g.n * blocks;
  bool failed = false;
#pragma omp parallel
  {
    Workspace<T> ws(g.h, g.w, max_kw, false);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      if (!ws.ok()) {
#pragma omp atomic write
        failed = true;
        continue;
      }
      const int64_t n = task / blocks, c0 = (task % blocks) * kChannelBlock;
      const int count = int(g.c - c0 < kChannelBlock ? g.c - c0 : kChannelBlock);
      stage_planes(x, g, xs, n, c0, count, ws.stage_in.get());
      convolve_block(groups, c0, count, ws.stage_in.get(), g, ws.stage_out.get(), ws);
      unstage_planes(ws.stage_out.get(), g, ys, n, c0, count, bias, y);
    }
  }
  return !failed;
}

template <typename T>
bool backward(const Geometry& g, const T* grad_out, Strides gs, const T* x, Strides xs, T* grad_x,
              Strides gxs, const KernelSet<T>& kernels, T* const grad_weight[3]) {
  const bool need_weight = grad_weight[0] != nullptr;
  Scratch scratch;
  T* flipped[3] = {nullptr, nullptr, nullptr};
  for (int k = 0; k < kernels.count && grad_x != nullptr; ++k) {
    scratch.data[k] = malloc(sizeof(T) * g.c * kernels.kh[k] * kernels.kw[k]);
    flipped[k] = static_cast<T*>(scratch.data[k]);
  }
  Group<T> groups[2];
  prepare_groups(kernels, g.c, true, grad_x != nullptr ? flipped : nullptr, groups);
  // Per-image partial weight gradients in the oriented layout, summed over images at the end.
  T* partial[3] = {nullptr, nullptr, nullptr};
  Scratch partial_scratch;
  if (need_weight)
    for (int k = 0; k < kernels.count; ++k) {
      const size_t bytes = sizeof(T) * g.n * g.c * kernels.kh[k] * kernels.kw[k];
      partial_scratch.data[k] = calloc(1, bytes > 0 ? bytes : 1);
      partial[k] = static_cast<T*>(partial_scratch.data[k]);
    }
  const int max_kw = imax(groups[0].max_kw, groups[1].max_kw);
  const int64_t blocks = ceil_div(g.c, kChannelBlock);
  const int64_t tasks = g.n * blocks;
  const int64_t plane = g.h * g.w;
  bool failed = false;
#pragma omp parallel
  {
    Workspace<T> ws(g.h, g.w, max_kw, true);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      if (!ws.ok()) {
#pragma omp atomic write
        failed = true;
        continue;
      }
      const int64_t n = task / blocks, c0 = (task % blocks) * kChannelBlock;
      const int count = int(g.c - c0 < kChannelBlock ? g.c - c0 : kChannelBlock);
      stage_planes(grad_out, g, gs, n, c0, count, ws.stage_in.get());
      if (grad_x != nullptr) {
        convolve_block(groups, c0, count, ws.stage_in.get(), g, ws.stage_out.get(), ws);
        unstage_planes(ws.stage_out.get(), g, gxs, n, c0, count, static_cast<const T*>(nullptr), grad_x);
      }
      if (!need_weight) continue;
      stage_planes(x, g, xs, n, c0, count, ws.stage_x.get());
      for (int c = 0; c < count; ++c)
        for (int gi = 0; gi < 2; ++gi) {
          const Group<T>& group = groups[gi];
          if (group.count == 0) continue;
          T* targets[3];
          for (int k = 0; k < group.count; ++k) {
            const int source = group.source[k];
            const int64_t taps = int64_t(kernels.kh[source]) * kernels.kw[source];
            targets[k] = partial[source] + (n * g.c + c0 + c) * taps;
          }
          weight_grad_plane(group, ws.stage_in.get() + c * plane, ws.stage_x.get() + c * plane, g,
                            targets, ws);
        }
    }
  }
  if (failed || !need_weight) return !failed;
  for (int k = 0; k < kernels.count; ++k) {
    const int kh = kernels.kh[k], kw = kernels.kw[k];
    const bool transposed = kw > kh;
    const int64_t taps = int64_t(kh) * kw;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < g.c; ++c) {
      T* dst = grad_weight[k] + c * taps;
      for (int64_t t = 0; t < taps; ++t) dst[t] = T(0);
      for (int64_t n = 0; n < g.n; ++n) {
        const T* src = partial[k] + (n * g.c + c) * taps;
        for (int i = 0; i < kh; ++i)
          for (int j = 0; j < kw; ++j) dst[i * kw + j] += transposed ? src[j * kh + i] : src[i * kw + j];
      }
    }
  }
  return true;
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
