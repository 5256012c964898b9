// rxt-edge's own CPU kernel: the 4-bit weight-only products of the int4 scheme, AVX2.
//
// Why: a decode step is one activation row times every weight matrix. onnxruntime's MatMulNBits (4 bits, blocks
// of 32, accuracy level 4: activations quantized to int8 per block) spends ~2x the instructions this needs at
// M = 1 on AVX2: alpha-mini's products take it 5.1-6.2 ms a token on our 2 GHz EPYC, this kernel 4.5-5.9 (3.7-4.4
// in a bare C++ loop). Where the CPU has VNNI they are memory-bound and onnxruntime's kernel is as fast, so
// runtimes/native_kernels.py registers this one only without VNNI (library.cc reads its choice).
//
// rxt_edge.MatMulInt4(A, B, scales) and MatMulInt4Bias(A, B, scales, bias) -> Y, the functions the quantizer
// writes (export/matmul_kernel.py), whose bodies are that MatMulNBits (then the Add of the bias); the layout is
// MatMulNBits' own, read as stored:
//   A       float [..., K]          (M rows: the product of the leading dims)
//   B       uint8 [N, K / 32, 16]   per row n and block b, 32 4-bit values q; element 2j in the low nibble of
//                                   byte j, element 2j + 1 in the high one; weight = (q - 8) * scale
//   scales  float [N * K / 32]
//   bias    float [N] (MatMulInt4Bias: the Add after the product, taken in by the quantizer)
//   Y       float [..., N]
// Numbers: each block of 32 activations is quantized to int8 with its own scale (max |a| / 127, rounded to
// nearest), as MatMulNBits does at accuracy level 4: the outputs agree with it to float rounding.
// M > 1 (prompts): tiles of two weight rows by four activation rows, each unpacked weight used four times.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels.h"

namespace {

constexpr int64_t kBlock = 32;       // values per block (the function's block_size)
constexpr int64_t kBlobBytes = 16;   // bytes per block
constexpr int kDecodeRows = 4;       // weight rows sharing one pass over one activation row
constexpr int kPromptRows = 2;       // ... over a tile of four activation rows
constexpr int64_t kTaskRows = 64;    // weight rows per thread-pool task
constexpr int kPrefetchBytes = 384;  // how far ahead of a row's stream to prefetch

// The activations, quantized row by row. Per row and pair of blocks (b, b + 1), 64 bytes: the even elements of b
// and of b + 1, then their odd elements (the order of the low and high nibbles of 32 weight bytes); pair_scale:
// each block's scale four times (the lanes its sums land in); correction: 8 * scale * sum of the block's values.
struct QuantizedRows {
  int64_t blocks = 0, pairs = 0;
  std::vector<int8_t> values;
  std::vector<float> pair_scale, correction;

  void Quantize(const float* a, int64_t rows, int64_t k) {
    blocks = k / kBlock;
    pairs = (blocks + 1) / 2;
    values.assign(rows * pairs * 64, 0);
    pair_scale.assign(rows * pairs * 8, 0.f);
    correction.resize(rows * blocks);
    for (int64_t m = 0; m < rows; ++m)
      for (int64_t b = 0; b < blocks; ++b) QuantizeBlock(a + m * k + b * kBlock, m, b);
  }

  const int8_t* Values(int64_t m, int64_t pair) const { return values.data() + (m * pairs + pair) * 64; }
  const float* PairScale(int64_t m, int64_t pair) const { return pair_scale.data() + (m * pairs + pair) * 8; }
  const float* Correction(int64_t m) const { return correction.data() + m * blocks; }

 private:
  void QuantizeBlock(const float* x, int64_t m, int64_t b) {
    float top = 0.f;
    for (int64_t i = 0; i < kBlock; ++i) top = std::max(top, std::fabs(x[i]));
    const float scale = top / 127.f, inverse = top > 0.f ? 127.f / top : 0.f;
    int8_t* even = values.data() + (m * pairs + b / 2) * 64 + (b % 2) * 16;
    int sum = 0;
    for (int j = 0; j < 16; ++j) {
      const int e = static_cast<int>(std::nearbyint(x[2 * j] * inverse));
      const int o = static_cast<int>(std::nearbyint(x[2 * j + 1] * inverse));
      even[j] = static_cast<int8_t>(e);
      even[32 + j] = static_cast<int8_t>(o);
      sum += e + o;
    }
    std::fill_n(pair_scale.data() + (m * pairs + b / 2) * 8 + (b % 2) * 4, 4, scale);
    correction[m * blocks + b] = 8.f * scale * static_cast<float>(sum);
  }
};

inline float HorizontalSum(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
}

// Two blocks of one weight row, unpacked: the low nibbles (even elements) and high nibbles (odd elements) of
// blocks b and b + 1, and their weight scales in lanes 0-3 and 4-7.
struct PairWeights {
  __m256i lo, hi;
  __m256 scale;
};

inline PairWeights Unpack(const uint8_t* w, const float* scale) {
  const __m256i low = _mm256_set1_epi8(0x0F);
  const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  return {_mm256_and_si256(bytes, low), _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low),
          _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_broadcast_ss(scale)), _mm_broadcast_ss(scale + 1), 1)};
}

// One activation row's two blocks times those weights: lanes 0-3 block b's partial sums, 4-7 block b + 1's, scaled.
inline __m256 PairProduct(const PairWeights& w, const int8_t* a, const float* a_scale) {
  const __m256i a_even = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a));
  const __m256i a_odd = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 32));
  const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(w.lo, a_even), _mm256_maddubs_epi16(w.hi, a_odd));
  const __m256i sums = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(w.scale, _mm256_loadu_ps(a_scale)));
}

// R weight rows (from B, scales) times MT activation rows (from m0): y[m][r] for the tile, row stride N.
template <int R, int MT>
void Tile(const uint8_t* B, const float* scales, const float* bias, const QuantizedRows& a, int64_t m0, float* y,
          int64_t N) {
  const int64_t blocks = a.blocks, pairs = blocks / 2, row_bytes = blocks * kBlobBytes;
  const int8_t* values[MT];  // (row bases, hoisted: the loop only adds p)
  const float* a_scales[MT];
  __m256 acc[MT][R];
  for (int m = 0; m < MT; ++m) {
    values[m] = a.Values(m0 + m, 0);
    a_scales[m] = a.PairScale(m0 + m, 0);
    for (int r = 0; r < R; ++r) acc[m][r] = _mm256_setzero_ps();
  }
  for (int64_t p = 0; p < pairs; ++p)
    for (int r = 0; r < R; ++r) {
      const uint8_t* row = B + r * row_bytes + p * 2 * kBlobBytes;
      _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchBytes), _MM_HINT_T0);  // (a hint: never faults)
      const PairWeights w = Unpack(row, scales + r * blocks + p * 2);
      for (int m = 0; m < MT; ++m)
        acc[m][r] = _mm256_add_ps(acc[m][r], PairProduct(w, values[m] + p * 64, a_scales[m] + p * 8));
    }
  if (blocks % 2) {  // an odd last block: its weights padded with a zero block (scale 0)
    const int64_t p = pairs;
    for (int r = 0; r < R; ++r) {
      alignas(32) uint8_t padded[2 * kBlobBytes] = {};
      std::copy_n(B + r * row_bytes + p * 2 * kBlobBytes, kBlobBytes, padded);
      const float scale[2] = {scales[r * blocks + p * 2], 0.f};
      const PairWeights w = Unpack(padded, scale);
      for (int m = 0; m < MT; ++m)
        acc[m][r] = _mm256_add_ps(acc[m][r], PairProduct(w, values[m] + p * 64, a_scales[m] + p * 8));
    }
  }
  float dot[MT][R];  // (summed here, before any loop of run-time length: the accumulators stay in registers)
  for (int m = 0; m < MT; ++m)
    for (int r = 0; r < R; ++r) dot[m][r] = HorizontalSum(acc[m][r]);
  for (int m = 0; m < MT; ++m)
    for (int r = 0; r < R; ++r) {  // the zero point: minus sum_b scale[b] * 8 * a_scale[b] * sum(a_b)
      const float *s = scales + r * blocks, *c = a.Correction(m0 + m);
      __m256 v = _mm256_setzero_ps();
      int64_t b = 0;
      for (; b + 8 <= blocks; b += 8) v = _mm256_fmadd_ps(_mm256_loadu_ps(s + b), _mm256_loadu_ps(c + b), v);
      float zero_point = HorizontalSum(v);
      for (; b < blocks; ++b) zero_point += s[b] * c[b];
      y[(m0 + m) * N + r] = dot[m][r] - zero_point + (bias ? bias[r] : 0.f);
    }
}

// Rows of weights times activation rows [m0, m0 + MT): four weight rows at a time for one activation row (a decode
// step), two at a time for up to four (prompts: each unpacked weight serves every row of the tile).
struct Work {
  const uint8_t* B;
  const float *scales, *bias;  // bias: [N] or null
  int64_t M, N;
  const QuantizedRows* a;
  float* y;
};

template <int MT>
void Span(const Work& w, int64_t m0, int64_t first, int64_t end) {
  constexpr int R = MT == 1 ? kDecodeRows : kPromptRows;
  const int64_t blocks = w.a->blocks, row_bytes = blocks * kBlobBytes;
  auto tile = [&](auto rows, int64_t n) {
    constexpr int kTile = decltype(rows)::value;
    Tile<kTile, MT>(w.B + n * row_bytes, w.scales + n * blocks, w.bias ? w.bias + n : nullptr, *w.a, m0, w.y + n,
                    w.N);
  };
  int64_t n = first;
  for (; n + R <= end; n += R) tile(std::integral_constant<int, R>{}, n);
  for (; n < end; ++n) tile(std::integral_constant<int, 1>{}, n);
}

// One task: kTaskRows weight rows (they stay in cache) times every activation row, four rows at a time.
void RowTask(void* data, size_t task) {
  const Work& w = *static_cast<const Work*>(data);
  const int64_t first = static_cast<int64_t>(task) * kTaskRows, end = std::min(w.N, first + kTaskRows);
  int64_t m = 0;
  for (; m + 4 <= w.M; m += 4) Span<4>(w, m, first, end);
  const int64_t left = w.M - m;
  if (left == 3) Span<3>(w, m, first, end);
  if (left == 2) Span<2>(w, m, first, end);
  if (left == 1) Span<1>(w, m, first, end);
}

Ort::Status Fail(const std::string& why) {
  return Ort::Status(("MatMulInt4: " + why).c_str(), ORT_INVALID_ARGUMENT);
}

struct MatMulInt4 {
  int64_t K = 0, N = 0;

  MatMulInt4(const OrtApi* /*api*/, const OrtKernelInfo* info) {
    Ort::ConstKernelInfo node(info);
    K = node.GetAttribute<int64_t>("K");
    N = node.GetAttribute<int64_t>("N");
  }

  Ort::Status Compute(OrtKernelContext* context, const Ort::Custom::Tensor<float>& A,
                      const Ort::Custom::Tensor<uint8_t>& B, const Ort::Custom::Tensor<float>& scales,
                      std::optional<const Ort::Custom::Tensor<float>*> bias, Ort::Custom::Tensor<float>& Y) {
    const auto as = A.Shape(), bs = B.Shape();
    if (K <= 0 || K % kBlock != 0 || N <= 0) return Fail("the node's K must be a positive multiple of 32, N > 0");
    if (as.empty() || as.back() != K) return Fail("A's last dimension must be K = " + std::to_string(K));
    const int64_t blocks = K / kBlock;
    if (bs.size() != 3 || bs[0] != N || bs[1] != blocks || bs[2] != kBlobBytes)
      return Fail("B must be uint8 [N, K / 32, 16] for the node's K and N");
    if (scales.NumberOfElement() != N * blocks) return Fail("scales must hold N * K / 32 values");
    if (bias && (*bias)->NumberOfElement() != N) return Fail("bias must hold N values");
    std::vector<int64_t> ys(as.begin(), as.end());
    ys.back() = N;
    const int64_t M = A.NumberOfElement() / K;
    float* y = Y.Allocate(ys);
    if (M == 0) return Ort::Status{nullptr};
    thread_local QuantizedRows rows;
    rows.Quantize(A.Data(), M, K);
    Work w{B.Data(), scales.Data(), bias ? (*bias)->Data() : nullptr, M, N, &rows, y};
    const size_t tasks = static_cast<size_t>((N + kTaskRows - 1) / kTaskRows);
    Ort::KernelContext(context).ParallelFor(RowTask, tasks, 0, &w);
    return Ort::Status{nullptr};
  }
};

}  // namespace

Ort::Custom::OrtLiteCustomOp* MatMulInt4Op() {
  static std::unique_ptr<Ort::Custom::OrtLiteCustomOp> op{
      Ort::Custom::CreateLiteCustomOp<MatMulInt4>("MatMulInt4", "CPUExecutionProvider")};
  return op.get();
}

Ort::Custom::OrtLiteCustomOp* MatMulInt4BiasOp() {  // the same kernel, called with the bias
  static std::unique_ptr<Ort::Custom::OrtLiteCustomOp> op{
      Ort::Custom::CreateLiteCustomOp<MatMulInt4>("MatMulInt4Bias", "CPUExecutionProvider")};
  return op.get();
}
