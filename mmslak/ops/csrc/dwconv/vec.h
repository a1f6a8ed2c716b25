// The vector layer of the depthwise kernels: Vec<T>, one register of kLanes values of float or double,
// for the instruction set the including file is compiled for (MMSLAK_DWCONV_AVX512 / _AVX2, or the
// compiler's vector extensions otherwise: SSE2 on x86-64, NEON on aarch64), and the register budget of
// the tiles. Included inside that instruction set's namespace (see kernels.h).
//
// Besides aligned load / store / fma / add, a Vec reads and writes the first `count` lanes only
// (load_first / store_first; the other lanes read as zero and are not written, so tails at the end of a
// tensor are never touched) and gathers `count` values `stride` elements apart (gather_first): channels
// of NCHW maps, taps of different channels' kernels. Vec<float> also reads and writes bfloat16 memory
// (exact widening; rounding to nearest even, NaN kept quiet, like torch's conversion).
//
// With MMSLAK_DWCONV_AVX512BF16, Vec<float> also packs two registers of bfloat16-exact floats into
// (a[l], b[l]) pairs (pack_pairs) and accumulates dot products of pairs (dot_pairs, VDPBF16PS), which
// the kernels use for bfloat16 inputs: half the instructions of the float32 FMAs.

// bfloat16 <-> float for single values, as torch converts (round to nearest even, quiet NaN).
inline float bf16_to_float(BFloat16 value) {
  const uint32_t bits = uint32_t(value.bits) << 16;
  float result;
  memcpy(&result, &bits, sizeof(result));
  return result;
}

inline BFloat16 float_to_bf16(float value) {
  uint32_t bits;
  memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return BFloat16{uint16_t((bits >> 16) | 0x40u)};
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return BFloat16{uint16_t(bits >> 16)};
}

template <typename T>
struct Vec;

#if defined(MMSLAK_DWCONV_AVX512)
constexpr int kAccumulators = 28;  // of 32 registers: the rest hold the weight and the loads
constexpr int kMaxTileRows = 8, kMaxTileCols = 8;
constexpr int kWeightAccumulators = 25, kMaxTapRows = 8, kMaxTapCols = 8;

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
  static Reg load_first(const BFloat16* p, int count) {
    const __m256i bits = _mm256_maskz_loadu_epi16(first(count), p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
  }
  // 32-bit gathers of the two bfloat16 values that end at each lane's value put it in the upper half,
  // where a float32 has it; lane 0's pair would start before p, so lane 0 is loaded alone.
  static Reg gather_first(const BFloat16* p, int stride, int count) {
    if (count == 0) return zero();
    const __m512i index = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                             _mm512_set1_epi32(stride));
    const __m512i pairs = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), first(count) & __mmask16(~1u), index,
                                                      reinterpret_cast<const char*>(p) - 2, 2);
    const __m512i high = _mm512_and_si512(pairs, _mm512_set1_epi32(int(0xffff0000u)));
    return _mm512_castsi512_ps(_mm512_mask_set1_epi32(high, 1, int(uint32_t(p[0].bits) << 16)));
  }
  static void store_first(BFloat16* p, Reg v, int count) {
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff)));
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    rounded = _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(bits, _mm512_set1_epi32(0x400000)));
    _mm256_mask_storeu_epi16(p, first(count), _mm512_cvtepi32_epi16(_mm512_srli_epi32(rounded, 16)));
  }
#if defined(MMSLAK_DWCONV_AVX512BF16)
  // Lane l: the bfloat16 of a[l] in the low half, of b[l] in the high half (a, b bfloat16-exact).
  static Reg pack_pairs(Reg a, Reg b) {
    const __m512i low = _mm512_srli_epi32(_mm512_castps_si512(a), 16);
    const __m512i high = _mm512_and_si512(_mm512_castps_si512(b), _mm512_set1_epi32(int(0xffff0000u)));
    return _mm512_castsi512_ps(_mm512_or_si512(low, high));
  }
  // acc[l] + a.low[l] * b.low[l] + a.high[l] * b.high[l], products exact, sums in float32.
  static Reg dot_pairs(Reg acc, Reg a, Reg b) {
    return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_castps_si512(a), (__m512bh)_mm512_castps_si512(b));
  }
#endif
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

#elif defined(MMSLAK_DWCONV_AVX2)
constexpr int kAccumulators = 12;  // of 16 registers
constexpr int kMaxTileRows = 4, kMaxTileCols = 4;
constexpr int kWeightAccumulators = 12, kMaxTapRows = 4, kMaxTapCols = 4;

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
  // AVX2 has no masked 16-bit loads and stores: whole vectors directly, tails through the gather (loads)
  // or an array (stores).
  static Reg load_first(const BFloat16* p, int count) {
    if (count < kLanes) return gather_first(p, 1, count);
    const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
  }
  // As the AVX-512 gather: pairs ending at each lane's value, lane 0 loaded alone.
  static Reg gather_first(const BFloat16* p, int stride, int count) {
    if (count == 0) return zero();
    const __m256i index = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(stride));
    const __m256i lanes = _mm256_and_si256(first(count), _mm256_setr_epi32(0, -1, -1, -1, -1, -1, -1, -1));
    const __m256i pairs = _mm256_mask_i32gather_epi32(
        _mm256_setzero_si256(), reinterpret_cast<const int*>(reinterpret_cast<const char*>(p) - 2), index, lanes, 2);
    const __m256i high = _mm256_and_si256(pairs, _mm256_set1_epi32(int(0xffff0000u)));
    return _mm256_castsi256_ps(_mm256_blend_epi32(high, _mm256_set1_epi32(int(uint32_t(p[0].bits) << 16)), 1));
  }
  static void store_first(BFloat16* p, Reg v, int count) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    __m256i rounded = _mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff)));
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    rounded = _mm256_blendv_epi8(rounded, _mm256_or_si256(bits, _mm256_set1_epi32(0x400000)), nan);
    const __m256i halves = _mm256_srli_epi32(rounded, 16);
    // packus works within 128-bit lanes: lanes 0-3 and 4-7 land in the two low quarters.
    const __m128i packed = _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(halves, halves), 0x08));
    if (count == kLanes) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
      return;
    }
    alignas(16) uint16_t lanes[kLanes];
    _mm_store_si128(reinterpret_cast<__m128i*>(lanes), packed);
    for (int l = 0; l < count; ++l) p[l].bits = lanes[l];
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

#else
// 16-byte vectors of the compiler's vector extensions: NEON registers on aarch64 (32 of them), SSE2
// on x86-64 (16). Multiply-add is a * b + c, fused where the target has FMA (-ffp-contract=fast).
#if defined(__aarch64__)
constexpr int kAccumulators = 24;
constexpr int kMaxTileRows = 6, kMaxTileCols = 6;
constexpr int kWeightAccumulators = 24, kMaxTapRows = 6, kMaxTapCols = 6;
#else
constexpr int kAccumulators = 12;
constexpr int kMaxTileRows = 4, kMaxTileCols = 4;
constexpr int kWeightAccumulators = 12, kMaxTapRows = 4, kMaxTapCols = 4;
#endif

template <typename T>
struct GenericVec {
  typedef T Reg __attribute__((vector_size(16)));
  static constexpr int kLanes = int(16 / sizeof(T));
  static Reg zero() { return Reg{}; }
  static Reg broadcast(T v) { return Reg{} + v; }
  static Reg load(const T* p) {
    Reg v;
    memcpy(&v, p, sizeof(v));
    return v;
  }
  static void store(T* p, Reg v) { memcpy(p, &v, sizeof(v)); }
  static Reg fma(Reg a, Reg b, Reg c) { return a * b + c; }
  static Reg add(Reg a, Reg b) { return a + b; }
  static Reg load_first(const T* p, int count) { return gather_first(p, 1, count); }
  static void store_first(T* p, Reg v, int count) {
    for (int l = 0; l < count; ++l) p[l] = v[l];
  }
  static Reg gather_first(const T* p, int stride, int count) {
    Reg v{};
    for (int l = 0; l < count; ++l) v[l] = p[int64_t(l) * stride];
    return v;
  }
};
template <>
struct Vec<double> : GenericVec<double> {};
template <>
struct Vec<float> : GenericVec<float> {
  using GenericVec<float>::load_first;
  using GenericVec<float>::gather_first;
  using GenericVec<float>::store_first;
  static Reg load_first(const BFloat16* p, int count) { return gather_first(p, 1, count); }
  static Reg gather_first(const BFloat16* p, int stride, int count) {
    Reg v{};
    for (int l = 0; l < count; ++l) v[l] = bf16_to_float(p[int64_t(l) * stride]);
    return v;
  }
  static void store_first(BFloat16* p, Reg v, int count) {
    for (int l = 0; l < count; ++l) p[l] = float_to_bf16(v[l]);
  }
};
#endif
