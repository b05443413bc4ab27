// Masked cross-modal attention: operator schemas (namespace `fsrf`) and the CPU kernels.
//
// out[b,h] = softmax(scale * q[b,h] @ k[b,h]^T over the keys j with key_mask[b,j]) @ v[b,h]
//
// The forward is a FlashAttention-style online softmax over key tiles: per (sample, head, query
// block) it never holds more than one Bq x Bk tile of scores, and saves only the per-row
// log-sum-exp for the backward, which recomputes the probabilities tile by tile. Masked keys are
// skipped, not filled with -inf: each sample's observed key indices are compacted once, so work
// scales with the number of observed keys and a sample with none costs nothing (its rows give
// out = 0, lse = +inf and zero gradients — FlashAttention's convention). Work is split over
// (batch x head [x query block]) with at::parallel_for; each (batch, head) pair's backward runs on
// one thread, so dK/dV need no atomics and results are deterministic.
//
// Accumulation is in float32 for float16/bfloat16/float32 inputs and float64 for float64.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define FSRF_MCA_X86 1
#endif

// The tile kernels pass 32-byte vectors between always-inlined internal helpers; GCC's note that
// this ABI differs without AVX concerns external calls only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

// Baseline-ISA copy of the tile kernels.
#define FSRF_MCA_NS fsrf_mca_base
#define FSRF_MCA_MR 3
#define FSRF_MCA_FMA_F(a, b, c) ((a) * (b) + (c))
#define FSRF_MCA_FMA_D(a, b, c) ((a) * (b) + (c))
#include "masked_cross_attention_tiles.h"
#undef FSRF_MCA_NS
#undef FSRF_MCA_MR
#undef FSRF_MCA_FMA_F
#undef FSRF_MCA_FMA_D

// AVX2+FMA copy, used when the CPU has them (checked at run time). Built with GCC's target
// pragma only; other compilers build just the baseline copy (vectorised for the baseline ISA).
#if defined(FSRF_MCA_X86) && defined(__GNUC__) && !defined(__clang__)
#define FSRF_MCA_HAVE_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FSRF_MCA_NS fsrf_mca_avx2
#define FSRF_MCA_MR 6
#define FSRF_MCA_FMA_F(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define FSRF_MCA_FMA_D(a, b, c) _mm256_fmadd_pd((a), (b), (c))
#include "masked_cross_attention_tiles.h"
#undef FSRF_MCA_NS
#undef FSRF_MCA_MR
#undef FSRF_MCA_FMA_F
#undef FSRF_MCA_FMA_D
#pragma GCC pop_options
#endif

namespace fsrf {
namespace {

// Tile sizes: a Bq x Bk float score tile (64 x 256 x 4 B = 64 KiB) plus the operand panels
// stay in a core's L2. On the benchmark shapes, Bq in 32..128 and Bk in 256..512 measured within
// noise of each other; override with -DFSRF_MCA_BLOCK_Q/-DFSRF_MCA_BLOCK_K (Bk a multiple of 16).
#ifndef FSRF_MCA_BLOCK_Q
#define FSRF_MCA_BLOCK_Q 64
#endif
#ifndef FSRF_MCA_BLOCK_K
#define FSRF_MCA_BLOCK_K 256
#endif
constexpr int64_t kBlockQ = FSRF_MCA_BLOCK_Q;
constexpr int64_t kBlockK = FSRF_MCA_BLOCK_K;
// Smallest amount of work (multiply-adds) worth handing to another thread: waking an OpenMP
// team costs microseconds, far more than a tiny attention problem.
constexpr int64_t kMinWorkPerChunk = int64_t(1) << 16;

int64_t grain_for(int64_t work_per_task) {
  return std::max<int64_t>(1, kMinWorkPerChunk / std::max<int64_t>(1, work_per_task));
}

int64_t mean_observed(const std::vector<int64_t>& count) {
  int64_t s = 0;
  for (int64_t c : count) s += c;
  return count.empty() ? 0 : s / static_cast<int64_t>(count.size());
}

template <typename T>
struct TileKernels {
  // C (=|+=) A * B with B packed in column panels (see masked_cross_attention_tiles.h).
  void (*gemm)(int64_t, int64_t, int64_t, const T*, int64_t, int64_t, const T*, int64_t, T*, int64_t, bool);
  void (*softmax_update)(T*, int64_t, int64_t, int64_t, T, T*, T*, T*, int64_t, int64_t, bool);
  void (*probs_from_lse)(T*, int64_t, int64_t, int64_t, T, const T*, T*);
  void (*softmax_bwd)(const T*, T*, int64_t, int64_t, int64_t, const T*, T);
};

template <typename T>
TileKernels<T> make_kernels(bool avx2) {
#ifdef FSRF_MCA_HAVE_AVX2
  if (avx2) {
    return {&fsrf_mca_avx2::gemm<T>, &fsrf_mca_avx2::softmax_update<T>,
            &fsrf_mca_avx2::probs_from_lse<T>, &fsrf_mca_avx2::softmax_bwd<T>};
  }
#endif
  (void)avx2;
  return {&fsrf_mca_base::gemm<T>, &fsrf_mca_base::softmax_update<T>, &fsrf_mca_base::probs_from_lse<T>,
          &fsrf_mca_base::softmax_bwd<T>};
}

// Whether the AVX2+FMA tile kernels run. FSRF_CPU_BASELINE=1 forces the baseline copy (read once),
// so that it can be tested on machines that have AVX2.
bool cpu_has_avx2() {
#ifdef FSRF_MCA_HAVE_AVX2
  static const bool has = [] {
    const char* env = std::getenv("FSRF_CPU_BASELINE");
    if (env != nullptr && std::string(env) == "1") return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

std::string cpu_kernel_isa() { return cpu_has_avx2() ? "avx2" : "baseline"; }

template <typename T>
const TileKernels<T>& kernels() {
  static const TileKernels<T> k = make_kernels<T>(cpu_has_avx2());
  return k;
}

// Observed keys per sample, compacted once per call (the mask is (B, Tk), shared by all heads).
struct KeyIndex {
  std::vector<int64_t> count;   // observed keys of sample b
  std::vector<int64_t> offset;  // start of sample b's indices in idx
  std::vector<int64_t> idx;     // observed key positions, ascending
  bool all_observed(int64_t b, int64_t Tk) const { return count[b] == Tk; }
};

KeyIndex build_key_index(const c10::optional<at::Tensor>& mask, int64_t B, int64_t Tk) {
  KeyIndex ki;
  ki.count.assign(B, Tk);
  ki.offset.assign(B, 0);
  if (!mask.has_value()) return ki;
  at::Tensor m = mask->contiguous();
  const bool* mp = m.data_ptr<bool>();
  ki.idx.reserve(B * Tk);
  for (int64_t b = 0; b < B; ++b) {
    ki.offset[b] = static_cast<int64_t>(ki.idx.size());
    for (int64_t j = 0; j < Tk; ++j)
      if (mp[b * Tk + j]) ki.idx.push_back(j);
    ki.count[b] = static_cast<int64_t>(ki.idx.size()) - ki.offset[b];
  }
  return ki;
}

template <typename I, typename T>
inline T to_acc(I x) { return static_cast<T>(x); }

// Row `r` of the compacted key list of sample b (the identity when all keys are observed).
inline int64_t key_row(const KeyIndex& ki, int64_t b, int64_t r, bool all) {
  return all ? r : ki.idx[ki.offset[b] + r];
}

// Width of the GEMM's B panels: two 32-byte vectors (16 floats / 8 doubles), for both ISA copies.
template <typename T>
constexpr int64_t panel_width() { return 2 * static_cast<int64_t>(32 / sizeof(T)); }

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// B = X (rows x cols), X's row r at row(r): panels over columns, each `rows` deep.
// Size round_up(cols, NR) * rows; panel stride rows * NR.
template <typename I, typename T, typename Row>
void pack_rows(Row row, int64_t rows, int64_t cols, T* dst) {
  constexpr int64_t NR = panel_width<T>();
  for (int64_t p = 0; p * NR < cols; ++p) {
    T* d = dst + p * rows * NR;
    const int64_t c0 = p * NR, nc = std::min(NR, cols - c0);
    for (int64_t r = 0; r < rows; ++r) {
      const I* s = row(r) + c0;
      int64_t j = 0;
      for (; j < nc; ++j) d[r * NR + j] = static_cast<T>(s[j]);
      for (; j < NR; ++j) d[r * NR + j] = T(0);
    }
  }
}

// B = X^T for X (rows x cols): panels over X's rows, each `cols` deep.
// Size round_up(rows, NR) * cols; panel stride cols * NR.
template <typename I, typename T, typename Row>
void pack_transposed(Row row, int64_t rows, int64_t cols, T* dst) {
  constexpr int64_t NR = panel_width<T>();
  for (int64_t p = 0; p * NR < rows; ++p) {
    T* d = dst + p * cols * NR;
    for (int64_t j = 0; j < NR; ++j) {
      const int64_t r = p * NR + j;
      if (r < rows) {
        const I* s = row(r);
        for (int64_t c = 0; c < cols; ++c) d[c * NR + j] = static_cast<T>(s[c]);
      } else {
        for (int64_t c = 0; c < cols; ++c) d[c * NR + j] = T(0);
      }
    }
  }
}

template <typename I, typename T>
void convert(const I* src, int64_t count, T* dst) {
  for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<T>(src[i]);
}

template <typename T>
T* grow(std::vector<T>& buf, int64_t size) {
  if (static_cast<int64_t>(buf.size()) < size) buf.resize(size);
  return buf.data();
}

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const c10::optional<at::Tensor>& key_mask, const char* op) {
  TORCH_CHECK(q.dim() == 4, op, ": q must be (B, H, Tq, Dh); got ", q.sizes());
  TORCH_CHECK(k.dim() == 4, op, ": k must be (B, H, Tk, Dh); got ", k.sizes());
  TORCH_CHECK(v.dim() == 4, op, ": v must be (B, H, Tk, Dh); got ", v.sizes());
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == q.size(3), op,
              ": k must be (B, H, Tk, Dh) = (", q.size(0), ", ", q.size(1), ", Tk, ", q.size(3), "); got ",
              k.sizes());
  TORCH_CHECK(v.sizes() == k.sizes(), op, ": v must have the shape of k ", k.sizes(), "; got ", v.sizes());
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), op,
              ": q, k, v must share a dtype; got ", q.scalar_type(), ", ", k.scalar_type(), ", ",
              v.scalar_type());
  TORCH_CHECK(at::isFloatingType(q.scalar_type()), op, ": q must be floating point; got ", q.scalar_type());
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(), op,
              ": the CPU kernel needs CPU tensors");
  if (key_mask.has_value()) {
    const at::Tensor& m = *key_mask;
    TORCH_CHECK(m.scalar_type() == at::kBool, op, ": key_mask must be bool; got ", m.scalar_type());
    TORCH_CHECK(m.dim() == 2 && m.size(0) == q.size(0) && m.size(1) == k.size(2), op,
                ": key_mask must be (B, Tk) = (", q.size(0), ", ", k.size(2), "); got ", m.sizes());
    TORCH_CHECK(m.device().is_cpu(), op, ": key_mask must be a CPU tensor");
  }
}

// ------------------------------------------------------------------------------------------------
// Forward
// ------------------------------------------------------------------------------------------------

template <typename I, typename T>
void forward_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const KeyIndex& ki,
                  T scale, at::Tensor& out, at::Tensor& lse) {
  constexpr bool same = std::is_same<I, T>::value;
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Dh = q.size(3), Tk = k.size(2);
  const I* qp = q.data_ptr<I>();
  const I* kp = k.data_ptr<I>();
  const I* vp = v.data_ptr<I>();
  I* op = out.data_ptr<I>();
  float* lp = lse.data_ptr<float>();
  const TileKernels<T>& K = kernels<T>();
  const int64_t nqb = (Tq + kBlockQ - 1) / kBlockQ;

  // Tasks are (pair, query block): the forward has no reduction across query blocks, so this
  // keeps both cores busy even when B*H is small. A thread's tasks are contiguous, so the
  // gathered keys/values of a pair are built once per thread and reused across its blocks.
  const int64_t grain = grain_for(2 * std::min(kBlockQ, Tq) * mean_observed(ki.count) * Dh);
  at::parallel_for(0, B * H * nqb, grain, [&](int64_t begin, int64_t end) {
    constexpr int64_t NR = panel_width<T>();
    std::vector<T> kt_buf, v_buf, q_buf, s_buf, acc_buf, m_buf, l_buf;
    int64_t cached_pair = -1;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t pair = t / nqb, qb = t % nqb, b = pair / H;
      const int64_t i0 = qb * kBlockQ, bq = std::min(kBlockQ, Tq - i0);
      const int64_t n = ki.count[b];
      I* o = op + (pair * Tq + i0) * Dh;
      float* lrow = lp + pair * Tq + i0;
      if (n == 0) {
        // No observed key: output 0, lse = +inf so a recomputed exp(s - lse) is exactly 0.
        std::fill(o, o + bq * Dh, I(0));
        std::fill(lrow, lrow + bq, std::numeric_limits<float>::infinity());
        continue;
      }
      const bool all = ki.all_observed(b, Tk);
      if (pair != cached_pair) {
        const I* kpair = kp + pair * Tk * Dh;
        const I* vpair = vp + pair * Tk * Dh;
        auto krow = [&](int64_t r) { return kpair + key_row(ki, b, r, all) * Dh; };
        auto vrow = [&](int64_t r) { return vpair + key_row(ki, b, r, all) * Dh; };
        pack_transposed<I, T>(krow, n, Dh, grow(kt_buf, round_up(n, NR) * Dh));
        pack_rows<I, T>(vrow, n, Dh, grow(v_buf, round_up(Dh, NR) * n));
        cached_pair = pair;
      }
      const T* KTp = kt_buf.data();  // panels over keys, stride Dh * NR
      const T* Vp = v_buf.data();    // panels over head dims, stride n * NR
      const T* qblk;
      if (same) {
        qblk = reinterpret_cast<const T*>(qp + (pair * Tq + i0) * Dh);
      } else {
        T* qb_ = grow(q_buf, bq * Dh);
        convert<I, T>(qp + (pair * Tq + i0) * Dh, bq * Dh, qb_);
        qblk = qb_;
      }
      T* s = grow(s_buf, kBlockQ * std::min(kBlockK, n));
      T* acc = grow(acc_buf, kBlockQ * Dh);
      T* m = grow(m_buf, kBlockQ);
      T* l = grow(l_buf, kBlockQ);
      for (int64_t j0 = 0; j0 < n; j0 += kBlockK) {
        const int64_t bk = std::min(kBlockK, n - j0);
        const bool first = j0 == 0;
        K.gemm(bq, bk, Dh, qblk, Dh, 1, KTp + (j0 / NR) * Dh * NR, Dh * NR, s, bk, false);  // S = Q K^T
        K.softmax_update(s, bq, bk, bk, scale, m, l, acc, Dh, Dh, first);
        K.gemm(bq, Dh, bk, s, bk, 1, Vp + j0 * NR, n * NR, acc, Dh, !first);  // acc += P V
      }
      for (int64_t i = 0; i < bq; ++i) {
        const T inv = T(1) / l[i];
        for (int64_t d = 0; d < Dh; ++d) o[i * Dh + d] = static_cast<I>(acc[i * Dh + d] * inv);
        lrow[i] = static_cast<float>(m[i] + std::log(l[i]));
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> masked_cross_attention_fwd_cpu(const at::Tensor& q_, const at::Tensor& k_,
                                                                  const at::Tensor& v_,
                                                                  const c10::optional<at::Tensor>& key_mask,
                                                                  double scale) {
  check_inputs(q_, k_, v_, key_mask, "fsrf::masked_cross_attention_fwd");
  const at::Tensor q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous();
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2);
  at::Tensor out = at::empty(q.sizes(), q.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor lse = at::empty({B, H, Tq}, q.options().dtype(at::kFloat));
  if (out.numel() == 0 && lse.numel() == 0) return {out, lse};
  const KeyIndex ki = build_key_index(key_mask, B, Tk);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "masked_cross_attention_fwd", [&] {
    using acc_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;
    forward_impl<scalar_t, acc_t>(q, k, v, ki, static_cast<acc_t>(scale), out, lse);
  });
  return {out, lse};
}

// ------------------------------------------------------------------------------------------------
// Backward (recomputes P from the saved log-sum-exp, FlashAttention-2 style)
//   P = exp(scale*QK^T - lse), dV = P^T dO, dP = dO V^T, dS = P*(dP - rowsum(dO*O)),
//   dQ = scale*dS K, dK = scale*dS^T Q.
// ------------------------------------------------------------------------------------------------

template <typename I, typename T>
void backward_impl(const at::Tensor& go, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& out, const at::Tensor& lse, const KeyIndex& ki, T scale, at::Tensor& gq,
                   at::Tensor& gk, at::Tensor& gv) {
  constexpr bool same = std::is_same<I, T>::value;
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Dh = q.size(3), Tk = k.size(2);
  const I* gop = go.data_ptr<I>();
  const I* qp = q.data_ptr<I>();
  const I* kp = k.data_ptr<I>();
  const I* vp = v.data_ptr<I>();
  const I* op = out.data_ptr<I>();
  const float* lp = lse.data_ptr<float>();
  I* gqp = gq.data_ptr<I>();
  I* gkp = gk.data_ptr<I>();
  I* gvp = gv.data_ptr<I>();
  const TileKernels<T>& K = kernels<T>();

  const int64_t grain = grain_for(5 * Tq * mean_observed(ki.count) * Dh);
  at::parallel_for(0, B * H, grain, [&](int64_t begin, int64_t end) {
    constexpr int64_t NR = panel_width<T>();
    std::vector<T> q_buf, do_buf, d_buf, qp_buf, dop_buf, kp_buf, kt_buf, vt_buf, dq_buf, dk_buf, dv_buf, p_buf,
        dp_buf, lse_buf, sum_buf;
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t b = pair / H;
      const int64_t n = ki.count[b];
      I* gqo = gqp + pair * Tq * Dh;
      I* gko = gkp + pair * Tk * Dh;
      I* gvo = gvp + pair * Tk * Dh;
      if (n == 0 || Tq == 0) {
        std::fill(gqo, gqo + Tq * Dh, I(0));
        std::fill(gko, gko + Tk * Dh, I(0));
        std::fill(gvo, gvo + Tk * Dh, I(0));
        continue;
      }
      const bool all = ki.all_observed(b, Tk);
      const I* qpair = qp + pair * Tq * Dh;
      const I* gopair = gop + pair * Tq * Dh;
      const I* kpair = kp + pair * Tk * Dh;
      const I* vpair = vp + pair * Tk * Dh;
      // Row-major Q and dO (A operands).
      const T *Q, *dO;
      if (same) {
        Q = reinterpret_cast<const T*>(qpair);
        dO = reinterpret_cast<const T*>(gopair);
      } else {
        T* qb = grow(q_buf, Tq * Dh);
        convert<I, T>(qpair, Tq * Dh, qb);
        T* db = grow(do_buf, Tq * Dh);
        convert<I, T>(gopair, Tq * Dh, db);
        Q = qb;
        dO = db;
      }
      // Packed B operands: Q, dO, K (panels over head dims); K^T, V^T (panels over keys).
      auto qrow = [&](int64_t r) { return qpair + r * Dh; };
      auto dorow = [&](int64_t r) { return gopair + r * Dh; };
      auto krow = [&](int64_t r) { return kpair + key_row(ki, b, r, all) * Dh; };
      auto vrow = [&](int64_t r) { return vpair + key_row(ki, b, r, all) * Dh; };
      T* Qp = grow(qp_buf, round_up(Dh, NR) * Tq);
      pack_rows<I, T>(qrow, Tq, Dh, Qp);
      T* dOp = grow(dop_buf, round_up(Dh, NR) * Tq);
      pack_rows<I, T>(dorow, Tq, Dh, dOp);
      T* Kp = grow(kp_buf, round_up(Dh, NR) * n);
      pack_rows<I, T>(krow, n, Dh, Kp);
      T* KTp = grow(kt_buf, round_up(n, NR) * Dh);
      pack_transposed<I, T>(krow, n, Dh, KTp);
      T* VTp = grow(vt_buf, round_up(n, NR) * Dh);
      pack_transposed<I, T>(vrow, n, Dh, VTp);
      // D_i = rowsum(dO_i * O_i) = sum_j P_ij dP_ij, the softmax-backward correction term.
      T* D = grow(d_buf, Tq);
      const I* o = op + pair * Tq * Dh;
      for (int64_t i = 0; i < Tq; ++i) {
        T acc = 0;
        for (int64_t d = 0; d < Dh; ++d) acc += dO[i * Dh + d] * static_cast<T>(o[i * Dh + d]);
        D[i] = acc;
      }
      // Accumulators: written straight into the outputs when no conversion/scatter is needed.
      T* dQ = same ? reinterpret_cast<T*>(gqo) : grow(dq_buf, Tq * Dh);
      T* dK = (same && all) ? reinterpret_cast<T*>(gko) : grow(dk_buf, n * Dh);
      T* dV = (same && all) ? reinterpret_cast<T*>(gvo) : grow(dv_buf, n * Dh);
      std::fill(dQ, dQ + Tq * Dh, T(0));
      std::fill(dK, dK + n * Dh, T(0));
      std::fill(dV, dV + n * Dh, T(0));
      T* P = grow(p_buf, kBlockQ * std::min(kBlockK, n));
      T* dP = grow(dp_buf, kBlockQ * std::min(kBlockK, n));
      T* L = grow(lse_buf, Tq);
      for (int64_t i = 0; i < Tq; ++i) L[i] = static_cast<T>(lp[pair * Tq + i]);
      if (std::is_same<T, double>::value) {
        // The saved lse is float32 (the contract shared with the CUDA kernels); in float64 that
        // would leave a ~1e-7 relative error in every recomputed P. One extra pass measures each
        // row's sum of exp(s - lse) and folds its log back in, restoring float64 accuracy.
        T* rs = grow(sum_buf, Tq);
        std::fill(rs, rs + Tq, T(0));
        for (int64_t j0 = 0; j0 < n; j0 += kBlockK) {
          const int64_t bk = std::min(kBlockK, n - j0);
          for (int64_t i0 = 0; i0 < Tq; i0 += kBlockQ) {
            const int64_t bq = std::min(kBlockQ, Tq - i0);
            K.gemm(bq, bk, Dh, Q + i0 * Dh, Dh, 1, KTp + (j0 / NR) * Dh * NR, Dh * NR, P, bk, false);
            K.probs_from_lse(P, bq, bk, bk, scale, L + i0, rs + i0);
          }
        }
        for (int64_t i = 0; i < Tq; ++i) L[i] += std::log(rs[i]);
      }
      for (int64_t j0 = 0; j0 < n; j0 += kBlockK) {
        const int64_t bk = std::min(kBlockK, n - j0);
        const T* KTj = KTp + (j0 / NR) * Dh * NR;
        const T* VTj = VTp + (j0 / NR) * Dh * NR;
        for (int64_t i0 = 0; i0 < Tq; i0 += kBlockQ) {
          const int64_t bq = std::min(kBlockQ, Tq - i0);
          K.gemm(bq, bk, Dh, Q + i0 * Dh, Dh, 1, KTj, Dh * NR, P, bk, false);             // S = Q K^T
          K.probs_from_lse(P, bq, bk, bk, scale, L + i0, nullptr);                         // P
          K.gemm(bk, Dh, bq, P, 1, bk, dOp + i0 * NR, Tq * NR, dV + j0 * Dh, Dh, true);   // dV += P^T dO
          K.gemm(bq, bk, Dh, dO + i0 * Dh, Dh, 1, VTj, Dh * NR, dP, bk, false);           // dP = dO V^T
          K.softmax_bwd(P, dP, bq, bk, bk, D + i0, scale);                                 // dS * scale
          K.gemm(bq, Dh, bk, dP, bk, 1, Kp + j0 * NR, n * NR, dQ + i0 * Dh, Dh, true);    // dQ += dS K
          K.gemm(bk, Dh, bq, dP, 1, bk, Qp + i0 * NR, Tq * NR, dK + j0 * Dh, Dh, true);   // dK += dS^T Q
        }
      }
      if (!same) {
        for (int64_t i = 0; i < Tq * Dh; ++i) gqo[i] = static_cast<I>(dQ[i]);
      }
      if (!(same && all)) {
        // Scatter the compacted key gradients back; masked keys get exactly 0.
        std::fill(gko, gko + Tk * Dh, I(0));
        std::fill(gvo, gvo + Tk * Dh, I(0));
        for (int64_t r = 0; r < n; ++r) {
          const int64_t j = key_row(ki, b, r, all);
          for (int64_t d = 0; d < Dh; ++d) {
            gko[j * Dh + d] = static_cast<I>(dK[r * Dh + d]);
            gvo[j * Dh + d] = static_cast<I>(dV[r * Dh + d]);
          }
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_cross_attention_bwd_cpu(
    const at::Tensor& grad_out_, const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_,
    const c10::optional<at::Tensor>& key_mask, const at::Tensor& out_, const at::Tensor& lse_, double scale) {
  const char* op = "fsrf::masked_cross_attention_bwd";
  check_inputs(q_, k_, v_, key_mask, op);
  TORCH_CHECK(grad_out_.sizes() == q_.sizes() && grad_out_.scalar_type() == q_.scalar_type(), op,
              ": grad_out must match q (", q_.sizes(), ", ", q_.scalar_type(), "); got ", grad_out_.sizes(), ", ",
              grad_out_.scalar_type());
  TORCH_CHECK(out_.sizes() == q_.sizes() && out_.scalar_type() == q_.scalar_type(), op,
              ": out must match q (", q_.sizes(), ", ", q_.scalar_type(), "); got ", out_.sizes(), ", ",
              out_.scalar_type());
  TORCH_CHECK(lse_.dim() == 3 && lse_.size(0) == q_.size(0) && lse_.size(1) == q_.size(1) &&
                  lse_.size(2) == q_.size(2) && lse_.scalar_type() == at::kFloat,
              op, ": lse must be float32 (B, H, Tq); got ", lse_.sizes(), ", ", lse_.scalar_type());
  const at::Tensor go = grad_out_.contiguous(), q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous(),
                   out = out_.contiguous(), lse = lse_.contiguous();
  at::Tensor gq = at::empty(q.sizes(), q.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor gk = at::empty(k.sizes(), k.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor gv = at::empty(v.sizes(), v.options().memory_format(at::MemoryFormat::Contiguous));
  if (gq.numel() + gk.numel() == 0) return {gq, gk, gv};
  const KeyIndex ki = build_key_index(key_mask, q.size(0), k.size(2));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "masked_cross_attention_bwd", [&] {
    using acc_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;
    backward_impl<scalar_t, acc_t>(go, q, k, v, out, lse, ki, static_cast<acc_t>(scale), gq, gk, gv);
  });
  return {gq, gk, gv};
}

}  // namespace
}  // namespace fsrf

// Operator contract, shared with the CUDA kernels (csrc/masked_cross_attention_cuda.cu registers
// TORCH_LIBRARY_IMPL(fsrf, CUDA, m) for the same two schemas):
//   masked_cross_attention_fwd(q, k, v, key_mask?, scale) -> (out, lse)
//     q (B,H,Tq,Dh), k/v (B,H,Tk,Dh), one floating dtype; key_mask bool (B,Tk), True = observed,
//     None = all observed. out: dtype of q, contiguous (B,H,Tq,Dh). lse: float32 (B,H,Tq), the
//     natural-log log-sum-exp of the scaled scores over observed keys; +inf on rows without any
//     observed key, whose out is 0. Inputs may be non-contiguous.
//   masked_cross_attention_bwd(grad_out, q, k, v, key_mask?, out, lse, scale) -> (dq, dk, dv)
//     recomputes the probabilities as exp(scale*q.k - lse) (0 where lse = +inf); grads are
//     contiguous, in the inputs' dtype; masked keys and fully masked rows get exactly 0.
// Python (fsrf/ops/masked_cross_attention.py) adds register_fake for both ops and
// register_autograd on the forward (its backward calls the bwd op).
TORCH_LIBRARY(fsrf, m) {
  m.def("masked_cross_attention_fwd(Tensor q, Tensor k, Tensor v, Tensor? key_mask, float scale) -> (Tensor, Tensor)");
  m.def("masked_cross_attention_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor? key_mask, Tensor out, "
        "Tensor lse, float scale) -> (Tensor, Tensor, Tensor)");
  // Diagnostic, not part of the contract: which copy of the CPU tile kernels runs ("avx2" or
  // "baseline"; FSRF_CPU_BASELINE=1 forces the latter).
  m.def("_masked_cross_attention_cpu_isa() -> str", &fsrf::cpu_kernel_isa);
}

TORCH_LIBRARY_IMPL(fsrf, CPU, m) {
  m.impl("masked_cross_attention_fwd", &fsrf::masked_cross_attention_fwd_cpu);
  m.impl("masked_cross_attention_bwd", &fsrf::masked_cross_attention_bwd_cpu);
}
