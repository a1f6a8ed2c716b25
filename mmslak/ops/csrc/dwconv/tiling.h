// Scratch memory, the staged channel block and the choice of tile shapes of the depthwise kernels.
// Included inside an instruction set's namespace after vec.h (the tile limits depend on its registers).

constexpr int64_t kAlign = 64;

inline int imin(int a, int b) { return a < b ? a : b; }
inline int imax(int a, int b) { return a > b ? a : b; }
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
// How many of the `total` values from `first` on fit in one vector of L lanes.
template <typename T>
int lanes_from(int64_t first, int64_t total) {
  return int(total - first < Vec<T>::kLanes ? total - first : Vec<T>::kLanes);
}

inline void* aligned_bytes(int64_t bytes) {
  return aligned_alloc(kAlign, ceil_div(bytes > 0 ? bytes : 1, kAlign) * kAlign);
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

// Up to six blocks of memory of one call, freed together.
struct Allocations {
  void* data[6] = {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
  ~Allocations() {
    for (void* p : data) free(p);
  }
};

// Sum over the tiles of `extent` (tiles of `tile`) of the number of taps of a k-tap kernel axis that
// reach the map: the FMAs per output of a tile, summed along one axis.
inline int64_t taps_per_tiles(int extent, int tile, int k) {
  const int p = k / 2;
  int64_t sum = 0;
  for (int t0 = 0; t0 < extent; t0 += tile) sum += imax(0, imin(k - 1, p + extent - 1 - t0) - imax(0, p - (t0 + tile - 1)) + 1);
  return sum;
}

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

// Forward tiles (R x WT output pixels) and grad-weight tiles (TI x TJ taps) of each kernel, fixed
// per call by the map and kernel sizes, and the zero border of the staged block they need.
struct Tiling {
  int rows[3], cols[3];
  int tap_rows[3], tap_cols[3];
  int pad_r, pad_c;
};

// Pick each kernel's tile by a cost model: a tile computes every tap that reaches any of its pixels,
// so a tile that is long along the kernel's long side wastes taps on small maps (a 14-column tile
// under a 47-wide kernel computes 27 column taps for 14 useful ones); a tile of fewer than 8
// accumulators leaves the FMA pipes waiting on latency. The border is R - 1 rows and WT - 1 columns
// (the taps of a tile that reach the map for some but not all of its pixels); `extra_cols` more
// columns on each side for kernels that read pixels in pairs.
template <typename T>
Tiling make_tiling(int64_t h, int64_t w, const int* kh, const int* kw, int count, int extra_cols) {
  Tiling t;
  int max_rows = 1, max_cols = 1;
  for (int k = 0; k < count; ++k) {
    int64_t best = -1;
    for (int r = 1; r <= kMaxTileRows; ++r)
      for (int c = 1; c <= kMaxTileCols && r * c <= kAccumulators; ++c) {
        if ((r > 1 && r - 1 >= h) || (c > 1 && c - 1 >= w)) continue;
        const int64_t taps = taps_per_tiles(int(h), r, kh[k]) * taps_per_tiles(int(w), c, kw[k]);
        const int64_t cost = taps * (imax(r * c, 8) + 1);
        if (best < 0 || cost < best) best = cost, t.rows[k] = r, t.cols[k] = c;
      }
    best = -1;
    for (int a = 1; a <= kMaxTapRows; ++a)
      for (int b = 1; b <= kMaxTapCols && a * b <= kWeightAccumulators; ++b) {
        const int64_t positions = positions_per_tap_tiles(int(h), a, kh[k]) * positions_per_tap_tiles(int(w), b, kw[k]);
        const int64_t cost = positions * (imax(a * b, 8) + 1);
        if (best < 0 || cost < best) best = cost, t.tap_rows[k] = a, t.tap_cols[k] = b;
      }
    max_rows = imax(max_rows, imax(t.rows[k], t.tap_rows[k]));
    max_cols = imax(max_cols, imax(t.cols[k], t.tap_cols[k]));
  }
  t.pad_r = max_rows - 1;
  t.pad_c = max_cols - 1 + extra_cols;
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

// One kernel for one channel block: taps [kh * kw][L], tap (i, j) of lane l is channel l's w[i][j]
// (paired kernels: [kh * ceil(kw / 2)][L], lane l holding taps (i, 2j) and (i, 2j + 1) as bfloat16).
template <typename T>
struct BlockKernel {
  const T* taps;
  int kh, kw;
};
