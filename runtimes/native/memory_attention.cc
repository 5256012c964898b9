// rxt-edge's own CPU kernel: the memory cross-attention over int8 STM keys and values, one op.
//
// Why: onnxruntime runs this attention (graph-contract.md, "The int8 memory K/V") as DynamicQuantizeMatMul,
// Softmax, DynamicQuantizeMatMul. Its int8 GEMM packs the keys and values (graph inputs, not constants) again
// on every call, so a token's 1 MB of STM K/V at alpha-mini costs as much time as ~10 MB of weights. This
// kernel reads them as they are stored, once, with 16-bit integer products (AVX2 `madd`).
//
// rxt_edge.MemoryAttentionInt8(query, key, key_scale, value, value_scale) -> heads, the function the
// quantizer writes (export/memory_kernel.py); without this library onnxruntime runs the function's body:
//   query        float [B, ..., h * g * hd]  viewed as [B, R, h, hd] (R query rows per K/V head)
//   key          int8  [B, h, hd, S]         one float scale per slot:    key_scale   [S]
//   value        int8  [B, h, S, hd]         one float scale per channel: value_scale [hd]
//   heads        float [B, R, h, hd] = softmax(q . K) V   (the query arrives scaled by 1/sqrt(hd))
// Numbers: a query row is quantized to 14 bits (one scale per row), probabilities to 11 bits, products are
// summed in int32; both are finer than onnxruntime's 8-bit dynamic quantization of the same path.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernels.h"

namespace {

constexpr float kQueryLevels = 16383.f;  // |q| * 128 * hd stays in int32 up to hd = 1024
constexpr float kProbLevels = 2047.f;    // 2047 * 128 * 2 per pair, summed over kSlotChunk slots: in int32
constexpr int64_t kSlotChunk = 4096;
constexpr int kRowBlock = 4;             // query rows sharing one pass over the keys / values

struct Shapes {
  int64_t batch, heads, head_dim, slots, rows;
};

inline __m256 Exp(__m256 x) {  // e^x for x <= 0: 2^(x log2 e), the fraction by a degree-5 polynomial
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.f));
  const __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(1.44269504f));
  const __m256 whole = _mm256_floor_ps(t), f = _mm256_sub_ps(t, whole);
  __m256 p = _mm256_set1_ps(1.8775767e-3f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(8.9893397e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5826318e-2f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4015361e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9315308e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.9999994e-1f));
  const __m256i exponent = _mm256_slli_epi32(_mm256_cvtps_epi32(whole), 23);
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), exponent));
}

inline __m256i Widen16(const int8_t* p) {  // 16 int8 -> 16 int16
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// madd over interleaved pairs leaves lanes in the order {0-3, 8-11} (lo) and {4-7, 12-15} (hi): put 0-15 back.
inline void Store16(float* out, __m256i lo, __m256i hi, __m256 scale0, __m256 scale1) {
  const __m256 a = _mm256_cvtepi32_ps(_mm256_permute2x128_si256(lo, hi, 0x20));
  const __m256 b = _mm256_cvtepi32_ps(_mm256_permute2x128_si256(lo, hi, 0x31));
  _mm256_storeu_ps(out, _mm256_mul_ps(a, scale0));
  _mm256_storeu_ps(out + 8, _mm256_mul_ps(b, scale1));
}

inline void Store16(float* out, __m256 lo, __m256 hi, __m256 scale0, __m256 scale1) {  // the same, float sums
  _mm256_storeu_ps(out, _mm256_mul_ps(_mm256_permute2f128_ps(lo, hi, 0x20), scale0));
  _mm256_storeu_ps(out + 8, _mm256_mul_ps(_mm256_permute2f128_ps(lo, hi, 0x31), scale1));
}

inline __m256i PairAt(const int16_t* x) {  // x[0], x[1] as one int32 lane, broadcast: madd's other operand
  int32_t pair;
  std::memcpy(&pair, x, sizeof pair);
  return _mm256_set1_epi32(pair);
}

template <int N, int G>
inline void Zero(__m256i (&lo_acc)[N][G], __m256i (&hi_acc)[N][G]) {
  for (int r = 0; r < N; ++r)
    for (int g = 0; g < G; ++g) lo_acc[r][g] = hi_acc[r][g] = _mm256_setzero_si256();
}

// acc[r] += x * w_r[0] + y * w_r[1] lane by lane, for 16 G int8 of x and of y and N int16 pairs w_r = w + r
// w_stride: x and y interleaved to (x[i], y[i]) int16 pairs, one `madd` a pair; lanes in Store16's order.
template <int N, int G>
inline void AddPairProducts(const int8_t* x, const int8_t* y, const int16_t* w, int64_t w_stride,
                            __m256i (&lo_acc)[N][G], __m256i (&hi_acc)[N][G]) {
  __m256i lo[G], hi[G];
  for (int g = 0; g < G; ++g) {
    const __m256i a = Widen16(x + 16 * g), b = Widen16(y + 16 * g);
    lo[g] = _mm256_unpacklo_epi16(a, b);
    hi[g] = _mm256_unpackhi_epi16(a, b);
  }
  for (int r = 0; r < N; ++r) {
    const __m256i pair = PairAt(w + r * w_stride);
    for (int g = 0; g < G; ++g) {
      lo_acc[r][g] = _mm256_add_epi32(lo_acc[r][g], _mm256_madd_epi16(lo[g], pair));
      hi_acc[r][g] = _mm256_add_epi32(hi_acc[r][g], _mm256_madd_epi16(hi[g], pair));
    }
  }
}

// scores[r][s] = q_r . K[:, s] * key_scale[s] * q_scale[r] for N rows of one head, s in [begin, end) (a
// multiple of 16 G); K is [hd, S]. 16 G slots a pass: (K[c, s], K[c+1, s]) pairs against (q[c], q[c+1]).
template <int N, int G>
void ScoreBlocks(const int16_t* q, const float* q_scale, const int8_t* key, const float* key_scale,
                 const Shapes& d, int64_t begin, int64_t end, float* scores) {
  const int64_t S = d.slots, hd = d.head_dim;
  for (int64_t s = begin; s < end; s += 16 * G) {
    __m256i lo_acc[N][G], hi_acc[N][G];
    Zero(lo_acc, hi_acc);
    for (int64_t c = 0; c < hd; c += 2)  // rows c and c + 1 of K against (q[c], q[c + 1])
      AddPairProducts<N, G>(key + c * S + s, key + (c + 1) * S + s, q + c, hd, lo_acc, hi_acc);
    for (int g = 0; g < G; ++g) {
      const float* ks = key_scale + s + 16 * g;
      const __m256 k0 = _mm256_loadu_ps(ks), k1 = _mm256_loadu_ps(ks + 8);
      for (int r = 0; r < N; ++r) {
        const __m256 qs = _mm256_set1_ps(q_scale[r]);
        Store16(scores + r * S + s + 16 * g, lo_acc[r][g], hi_acc[r][g], _mm256_mul_ps(k0, qs),
                _mm256_mul_ps(k1, qs));
      }
    }
  }
}

template <int N>
void Scores(const int16_t* q, const float* q_scale, const int8_t* key, const float* key_scale, const Shapes& d,
            float* scores) {
  const int64_t S = d.slots, hd = d.head_dim, wide = N <= 2 ? S - S % 32 : 0, vector_slots = S - S % 16;
  ScoreBlocks<N, 2>(q, q_scale, key, key_scale, d, 0, wide, scores);  // two rows fit 32 slots in registers
  ScoreBlocks<N, 1>(q, q_scale, key, key_scale, d, wide, vector_slots, scores);
  for (int64_t s = vector_slots; s < S; ++s) {  // the slots past the last 16
    for (int r = 0; r < N; ++r) {
      int32_t acc = 0;
      for (int64_t c = 0; c < hd; ++c) acc += q[r * hd + c] * key[c * S + s];
      scores[r * S + s] = static_cast<float>(acc) * q_scale[r] * key_scale[s];
    }
  }
}

// scores -> e^(x - max) in place, then to kProbLevels steps in p (S rounded up to even, the last one 0); returns
// the float sum of e^(x - max) times kProbLevels, which divides the value sums.
float Probabilities(float* x, int64_t S, int16_t* p) {
  const int64_t vector_slots = S - S % 8;
  float top = -INFINITY;
  __m256 m = _mm256_set1_ps(-INFINITY);
  for (int64_t s = 0; s < vector_slots; s += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + s));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  for (float v : lanes) top = std::max(top, v);
  for (int64_t s = vector_slots; s < S; ++s) top = std::max(top, x[s]);
  const __m256 vt = _mm256_set1_ps(top), levels = _mm256_set1_ps(kProbLevels);
  __m256 sum = _mm256_setzero_ps();
  for (int64_t s = 0; s < vector_slots; s += 8) {
    const __m256 e = Exp(_mm256_sub_ps(_mm256_loadu_ps(x + s), vt));
    sum = _mm256_add_ps(sum, e);
    const __m256i i32 = _mm256_cvtps_epi32(_mm256_mul_ps(e, levels));  // 8 x int32 in [0, 2047]
    const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + s), i16);
  }
  _mm256_store_ps(lanes, sum);
  float total = 0.f;
  for (float v : lanes) total += v;
  for (int64_t s = vector_slots; s < S; ++s) {
    const float e = std::exp(x[s] - top);
    total += e;
    p[s] = static_cast<int16_t>(std::lrintf(e * kProbLevels));
  }
  if (S % 2) p[S] = 0;
  return total * kProbLevels;
}

// out[r][c] = sum_s p[r][s] V[s, c] * value_scale[c] / norm[r] for N rows of one head, 16 G channels from c0;
// V is [S, hd]. Two slots a pass: (V[s, c], V[s+1, c]) pairs against (p[s], p[s+1]).
template <int N, int G>
void ValueBlock(const int16_t* p, int64_t p_stride, const float* norm, const int8_t* value,
                const float* value_scale, const Shapes& d, int64_t c0, float* out, int64_t out_stride) {
  const int64_t S = d.slots, hd = d.head_dim;
  const int8_t zeros[32] = {};
  __m256 lo_total[N][G], hi_total[N][G];
  for (int r = 0; r < N; ++r)
    for (int g = 0; g < G; ++g) lo_total[r][g] = hi_total[r][g] = _mm256_setzero_ps();
  for (int64_t s0 = 0; s0 < S; s0 += kSlotChunk) {  // int32 sums per chunk, then float
    const int64_t end = std::min(S, s0 + kSlotChunk);
    __m256i lo_acc[N][G], hi_acc[N][G];
    Zero(lo_acc, hi_acc);
    for (int64_t s = s0; s < end; s += 2) {  // rows s and s + 1 of V against (p[s], p[s + 1])
      const int8_t* row = value + s * hd + c0;
      const int8_t* next = s + 1 < S ? row + hd : zeros;  // an odd S: p there is 0
      AddPairProducts<N, G>(row, next, p + s, p_stride, lo_acc, hi_acc);
    }
    for (int r = 0; r < N; ++r)
      for (int g = 0; g < G; ++g) {
        lo_total[r][g] = _mm256_add_ps(lo_total[r][g], _mm256_cvtepi32_ps(lo_acc[r][g]));
        hi_total[r][g] = _mm256_add_ps(hi_total[r][g], _mm256_cvtepi32_ps(hi_acc[r][g]));
      }
  }
  for (int g = 0; g < G; ++g) {
    const float* vs = value_scale + c0 + 16 * g;
    const __m256 v0 = _mm256_loadu_ps(vs), v1 = _mm256_loadu_ps(vs + 8);
    for (int r = 0; r < N; ++r) {
      const __m256 inv = _mm256_set1_ps(1.f / norm[r]);
      Store16(out + r * out_stride + c0 + 16 * g, lo_total[r][g], hi_total[r][g], _mm256_mul_ps(v0, inv),
              _mm256_mul_ps(v1, inv));
    }
  }
}

template <int N>
void Values(const int16_t* p, int64_t p_stride, const float* norm, const int8_t* value, const float* value_scale,
            const Shapes& d, float* out, int64_t out_stride) {
  const int64_t hd = d.head_dim, wide = N <= 2 ? hd - hd % 32 : 0;
  for (int64_t c = 0; c < wide; c += 32)  // two rows fit 32 channels in registers
    ValueBlock<N, 2>(p, p_stride, norm, value, value_scale, d, c, out, out_stride);
  for (int64_t c = wide; c < hd; c += 16)
    ValueBlock<N, 1>(p, p_stride, norm, value, value_scale, d, c, out, out_stride);
}

// N query rows of one head through scores, probabilities and values.
template <int N>
void Rows(const int16_t* q, const float* q_scale, const int8_t* key, const float* key_scale, const int8_t* value,
          const float* value_scale, const Shapes& d, float* scores, int16_t* p, float* out, int64_t out_stride) {
  const int64_t S = d.slots, p_stride = S + S % 2;
  float norm[N];
  Scores<N>(q, q_scale, key, key_scale, d, scores);
  for (int r = 0; r < N; ++r) norm[r] = Probabilities(scores + r * S, S, p + r * p_stride);
  Values<N>(p, p_stride, norm, value, value_scale, d, out, out_stride);
}

struct Work {
  Shapes d;
  const float *query, *key_scale, *value_scale;
  const int8_t *key, *value;
  float* out;
};

// One (batch, K/V head): every query row of it, kRowBlock rows at a time.
void Head(void* data, size_t task) {
  const Work& w = *static_cast<const Work*>(data);
  const Shapes& d = w.d;
  const int64_t b = static_cast<int64_t>(task) / d.heads, h = static_cast<int64_t>(task) % d.heads;
  const int64_t hd = d.head_dim, S = d.slots, row_stride = d.heads * hd;
  const int8_t* key = w.key + (b * d.heads + h) * hd * S;
  const int8_t* value = w.value + (b * d.heads + h) * S * hd;
  thread_local std::vector<float> scores;
  thread_local std::vector<int16_t> q16, p16;
  scores.resize(kRowBlock * S);
  p16.resize(kRowBlock * (S + 1));
  q16.resize(kRowBlock * hd);
  float q_scale[kRowBlock];
  for (int64_t r0 = 0; r0 < d.rows; r0 += kRowBlock) {
    const int n = static_cast<int>(std::min<int64_t>(kRowBlock, d.rows - r0));
    for (int r = 0; r < n; ++r) {  // quantize each query row: one scale, kQueryLevels steps
      const float* q = w.query + ((b * d.rows + r0 + r) * d.heads + h) * hd;
      float top = 0.f;
      for (int64_t c = 0; c < hd; ++c) top = std::max(top, std::fabs(q[c]));
      const float step = top > 0.f ? top / kQueryLevels : 1.f;
      q_scale[r] = step;
      for (int64_t c = 0; c < hd; ++c) q16[r * hd + c] = static_cast<int16_t>(std::lrintf(q[c] / step));
    }
    float* out = w.out + ((b * d.rows + r0) * d.heads + h) * hd;
    const auto rows = n == 4 ? Rows<4> : n == 3 ? Rows<3> : n == 2 ? Rows<2> : Rows<1>;
    rows(q16.data(), q_scale, key, w.key_scale, value, w.value_scale, d, scores.data(), p16.data(), out, row_stride);
  }
}

// The same attention in plain float loops, for head dims the vector code does not take (not a multiple of 16).
void HeadScalar(void* data, size_t task) {
  const Work& w = *static_cast<const Work*>(data);
  const Shapes& d = w.d;
  const int64_t b = static_cast<int64_t>(task) / d.heads, h = static_cast<int64_t>(task) % d.heads;
  const int64_t hd = d.head_dim, S = d.slots;
  const int8_t* key = w.key + (b * d.heads + h) * hd * S;
  const int8_t* value = w.value + (b * d.heads + h) * S * hd;
  thread_local std::vector<float> e;
  e.resize(S);
  for (int64_t r = 0; r < d.rows; ++r) {
    const float* q = w.query + ((b * d.rows + r) * d.heads + h) * hd;
    float top = -INFINITY, sum = 0.f;
    for (int64_t s = 0; s < S; ++s) {
      float acc = 0.f;
      for (int64_t c = 0; c < hd; ++c) acc += q[c] * key[c * S + s];
      e[s] = acc * w.key_scale[s];
      top = std::max(top, e[s]);
    }
    for (int64_t s = 0; s < S; ++s) sum += (e[s] = std::exp(e[s] - top));
    float* out = w.out + ((b * d.rows + r) * d.heads + h) * hd;
    for (int64_t c = 0; c < hd; ++c) {
      float acc = 0.f;
      for (int64_t s = 0; s < S; ++s) acc += e[s] * value[s * hd + c];
      out[c] = acc * w.value_scale[c] / sum;
    }
  }
}

Ort::Status Fail(const std::string& why) {
  return Ort::Status(("MemoryAttentionInt8: " + why).c_str(), ORT_INVALID_ARGUMENT);
}

Ort::Status MemoryAttentionInt8(OrtKernelContext* context, const Ort::Custom::Tensor<float>& query,
                                const Ort::Custom::Tensor<int8_t>& key, const Ort::Custom::Tensor<float>& key_scale,
                                const Ort::Custom::Tensor<int8_t>& value,
                                const Ort::Custom::Tensor<float>& value_scale, Ort::Custom::Tensor<float>& heads) {
  const auto ks = key.Shape(), vs = value.Shape();
  if (ks.size() != 4 || vs.size() != 4) return Fail("key and value must be 4-D ([B, h, hd, S], [B, h, S, hd])");
  Shapes d{ks[0], ks[1], ks[2], ks[3], 0};
  if (vs[0] != d.batch || vs[1] != d.heads || vs[2] != d.slots || vs[3] != d.head_dim)
    return Fail("value must be [B, h, S, hd] for key [B, h, hd, S]");
  if (key_scale.NumberOfElement() != d.slots || value_scale.NumberOfElement() != d.head_dim)
    return Fail("key_scale needs one scale per slot and value_scale one per channel");
  const int64_t per_row = d.batch * d.heads * d.head_dim;
  if (per_row == 0 || query.NumberOfElement() % per_row != 0)
    return Fail("the query's size is not a whole number of [B, h, hd] rows");
  d.rows = query.NumberOfElement() / per_row;
  const auto qs = query.Shape();
  if (qs.empty() || qs[0] != d.batch) return Fail("the query's batch differs from the keys'");
  Work w{d, query.Data(), key_scale.Data(), value_scale.Data(), key.Data(), value.Data(),
         heads.Allocate({d.batch, d.rows, d.heads, d.head_dim})};
  if (d.rows == 0 || d.slots == 0) {
    std::fill(w.out, w.out + d.batch * d.rows * d.heads * d.head_dim, 0.f);
    return Ort::Status{nullptr};
  }
  const auto head = d.head_dim % 16 == 0 ? Head : HeadScalar;
  Ort::KernelContext(context).ParallelFor(head, static_cast<size_t>(d.batch * d.heads), 0, &w);
  return Ort::Status{nullptr};
}

}  // namespace

Ort::Custom::OrtLiteCustomOp* MemoryAttentionInt8Op() {
  static std::unique_ptr<Ort::Custom::OrtLiteCustomOp> op{
      Ort::Custom::CreateLiteCustomOp("MemoryAttentionInt8", "CPUExecutionProvider", MemoryAttentionInt8)};
  return op.get();
}
