// Device code of the CUDA masked cross-modal attention (fsrf::masked_cross_attention_fwd/bwd).
//
// Included by masked_cross_attention_cuda.cu (nvcc) and, for the CPU test of the kernel logic,
// by tests/cpp/cuda_emu/mca_emu.cpp (g++ with tests/cpp/cuda_emu/cuda_emu.h supplying threadIdx,
// __syncthreads, shuffles and atomics, each CUDA thread a user-level context). It therefore
// includes no torch or CUDA header itself and touches CUDA only through the built-ins both sides
// provide; the launch order of the kernels (forward(), backward() at the bottom) is shared with
// that test too. What the tensor-core kernels use as well (numerics, kernel arguments, the mask
// vote, the backward's row kernel) is in masked_cross_attention_common_cuda.cuh.
//
// Algorithm: FlashAttention-2 with a per-sample key mask.
//   forward   one block per (sample, head, query tile); loops over key tiles with an online
//             softmax in base 2 (scores times scale*log2(e), exp2), fp32 (fp64 for double)
//             accumulators. A key tile whose keys are all masked for this sample is skipped
//             (one block-wide vote, __syncthreads_or, before any K/V load); masked keys inside
//             a kept tile score -inf. A sample with no observed key never updates its
//             accumulators: output 0, lse = +inf (the FlashAttention convention).
//   backward  a row kernel Dvec_i = sum_d dO_i,d * O_i,d, then one block per (sample, head,
//             key tile) that keeps dK, dV of its keys in registers and loops over query tiles,
//             recomputing P = exp2(S*scale*log2e - lse*log2e) and adding dQ through atomics
//             into a zero-initialised fp32 (fp64) buffer. With lse = +inf, P = 0 and every
//             gradient of a fully masked sample is exactly 0. A fully masked key tile writes
//             zero dK/dV and returns at once.
//   Masked and out-of-range K/V/Q/dO elements are never read from memory: they enter shared
//   memory as 0, so a NaN stored under a masked key cannot leak into any output.
//
// Tiling: every matrix sits row-major in shared memory with rows padded by 4 elements, which
// puts consecutive rows in different 16-byte bank groups; each thread owns a TM x TN register
// micro-tile of the product and reads its operands as 4-wide vectors. Threads form an
// RG x 8 grid, 8 lanes of a warp sharing one row group, so row reductions of the softmax are
// three xor-shuffles. Three product shapes cover all seven GEMMs of forward and backward:
//   nt: C[m][n] += sum_k A[m][k] B[n][k]   (S = Q K^T, dP = dO V^T)
//   nn: C[m][n] += sum_k A[m][k] B[k][n]   (O += P V, dQ += dS K)
//   tn: C[m][n] += sum_k A[k][m] B[k][n]   (dV += P^T dO, dK += dS^T Q)
// These are CUDA-core (FMA) products; the tensor-core variant for float16/bfloat16 is in
// masked_cross_attention_wmma_cuda.cuh. See the .cu for the tile-size choice.

#pragma once

#include <cstdint>
#include <type_traits>

#include "masked_cross_attention_common_cuda.cuh"

namespace fsrf {
namespace mca {

// ---------------------------------------------------------------------------------------------
// Vector loads from shared memory.

// N contiguous shared-memory elements into registers with the widest aligned loads
// (N in {1, 2, 4, 8}; the pointer is aligned to N elements, at most 16 bytes for float4).
template <int N, typename acc_t>
FSRF_MCA_DEVICE void load_vec(const acc_t* p, acc_t (&r)[N]);

template <int N>
FSRF_MCA_DEVICE void load_vec_f(const float* p, float* r) {
  if constexpr (N % 4 == 0) {
#pragma unroll
    for (int i = 0; i < N; i += 4) {
      const float4 t = *reinterpret_cast<const float4*>(p + i);
      r[i] = t.x; r[i + 1] = t.y; r[i + 2] = t.z; r[i + 3] = t.w;
    }
  } else if constexpr (N == 2) {
    const float2 t = *reinterpret_cast<const float2*>(p);
    r[0] = t.x; r[1] = t.y;
  } else {
    static_assert(N == 1, "load_vec: N must be 1, 2 or a multiple of 4");
    r[0] = p[0];
  }
}
template <int N>
FSRF_MCA_DEVICE void load_vec_d(const double* p, double* r) {
  if constexpr (N % 2 == 0) {
#pragma unroll
    for (int i = 0; i < N; i += 2) {
      const double2 t = *reinterpret_cast<const double2*>(p + i);
      r[i] = t.x; r[i + 1] = t.y;
    }
  } else {
    static_assert(N == 1, "load_vec: N must be 1 or even");
    r[0] = p[0];
  }
}
template <int N, typename acc_t>
FSRF_MCA_DEVICE void load_vec(const acc_t* p, acc_t (&r)[N]) {
  if constexpr (sizeof(acc_t) == 4) {
    load_vec_f<N>(p, r);
  } else {
    load_vec_d<N>(p, r);
  }
}

// ---------------------------------------------------------------------------------------------
// Block-level register-tiled products over shared memory (see the header comment).
// Row/column sets of the calling thread's micro-tile:
//   "strided"  index i -> base + i * STEP        (STEP = number of row/column groups)
//   "chunked"  index j -> base * 4 + (j / 4) * 32 + j % 4  (8 column groups x 4 contiguous)
//   "packed"   index i -> base * TM + i          (contiguous, one vector load)

// C[i][j] += sum_k A[a0 + i*ASTEP][k] * B[b0 + j*BSTEP][k],  k in [0, KLEN)
template <typename acc_t, int TM, int TN, int KLEN, int LDA, int LDB, int ASTEP, int BSTEP>
FSRF_MCA_DEVICE void gemm_nt(acc_t (&c)[TM][TN], const acc_t* A, int a0, const acc_t* B, int b0) {
  static_assert(KLEN % 4 == 0, "gemm_nt: KLEN must be a multiple of 4");
#pragma unroll 2
  for (int k = 0; k < KLEN; k += 4) {
    acc_t a[TM][4], b[TN][4];
#pragma unroll
    for (int i = 0; i < TM; ++i) load_vec<4>(A + (a0 + i * ASTEP) * LDA + k, a[i]);
#pragma unroll
    for (int j = 0; j < TN; ++j) load_vec<4>(B + (b0 + j * BSTEP) * LDB + k, b[j]);
#pragma unroll
    for (int e = 0; e < 4; ++e)
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) c[i][j] += a[i][e] * b[j][e];
  }
}

// C[i][j] += sum_k A[a0 + i*ASTEP][k] * B[k][chunked(cg, j)],  k in [0, KLEN); TN = 4 * chunks
template <typename acc_t, int TM, int TN, int KLEN, int LDA, int LDB, int ASTEP>
FSRF_MCA_DEVICE void gemm_nn(acc_t (&c)[TM][TN], const acc_t* A, int a0, const acc_t* B, int cg) {
  static_assert(KLEN % 4 == 0 && TN % 4 == 0, "gemm_nn: KLEN and TN must be multiples of 4");
  constexpr int NCH = TN / 4;
#pragma unroll 2
  for (int k = 0; k < KLEN; k += 4) {
    acc_t a[TM][4];
#pragma unroll
    for (int i = 0; i < TM; ++i) load_vec<4>(A + (a0 + i * ASTEP) * LDA + k, a[i]);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      acc_t b[NCH][4];
#pragma unroll
      for (int ch = 0; ch < NCH; ++ch) load_vec<4>(B + (k + e) * LDB + cg * 4 + ch * 32, b[ch]);
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int ch = 0; ch < NCH; ++ch)
#pragma unroll
          for (int f = 0; f < 4; ++f) c[i][ch * 4 + f] += a[i][e] * b[ch][f];
    }
  }
}

// C[i][j] += sum_k A[k][a0 * TM + i] * B[k][chunked(cg, j)],  k in [0, KLEN)
template <typename acc_t, int TM, int TN, int KLEN, int LDA, int LDB>
FSRF_MCA_DEVICE void gemm_tn(acc_t (&c)[TM][TN], const acc_t* A, int a0, const acc_t* B, int cg) {
  static_assert(TN % 4 == 0, "gemm_tn: TN must be a multiple of 4");
  constexpr int NCH = TN / 4;
#pragma unroll 4
  for (int k = 0; k < KLEN; ++k) {
    acc_t a[TM];
    load_vec<TM>(A + k * LDA + a0 * TM, a);
    acc_t b[NCH][4];
#pragma unroll
    for (int ch = 0; ch < NCH; ++ch) load_vec<4>(B + k * LDB + cg * 4 + ch * 32, b[ch]);
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int ch = 0; ch < NCH; ++ch)
#pragma unroll
        for (int f = 0; f < 4; ++f) c[i][ch * 4 + f] += a[i] * b[ch][f];
  }
}

template <typename acc_t, int TM, int TN>
FSRF_MCA_DEVICE void zero(acc_t (&c)[TM][TN]) {
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) c[i][j] = acc_t(0);
}

// Reductions over the 8 lanes of a row group (lanes 8g .. 8g+7 of a warp).
template <typename acc_t>
FSRF_MCA_DEVICE acc_t group8_max(acc_t x) {
#pragma unroll
  for (int off = 1; off < 8; off <<= 1) x = Num<acc_t>::max(x, __shfl_xor_sync(0xffffffffu, x, off));
  return x;
}
template <typename acc_t>
FSRF_MCA_DEVICE acc_t group8_sum(acc_t x) {
#pragma unroll
  for (int off = 1; off < 8; off <<= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// ---------------------------------------------------------------------------------------------
// Tile configurations. D is the head dimension rounded up to 32, 64 or 128 (padding columns
// hold zeros). BT is the query and key tile (64, or 32 where shared memory is short).

constexpr int kGroups = 8;  // column groups per row group: 8 lanes of a warp

template <typename acc_t, int D, int BT>
struct FwdCfg {
  // 256 threads for the widest 64-row tile: it needs 116 KB of shared memory, so only one block
  // fits on an SM and 8 warps hide latency better than 4 (and halve the registers per thread).
  static constexpr int BQ = BT, BK = BT, NT = (D == 128 && BT == 64) ? 256 : 128;
  static constexpr int MIN_BLOCKS = 1;
  static constexpr int RG = NT / kGroups;  // 16 or 32 row groups
  static constexpr int TM = BQ / RG;       // query rows per thread (strided by RG)
  static constexpr int TN = BK / kGroups;  // key columns per thread (strided by 8)
  static constexpr int TD = D / kGroups;   // output columns per thread (chunked)
  static constexpr int LDH = D + 4;        // row stride of Q, K, V tiles
  static constexpr int LDP = BK + 4;       // row stride of the P tile
  static constexpr int SMEM_ELEMS = BQ * LDH + 2 * BK * LDH + BQ * LDP + BK;
  static constexpr int SMEM_BYTES = ((SMEM_ELEMS * int(sizeof(acc_t)) + 15) / 16) * 16;
  static_assert(D % 32 == 0 && TM >= 1 && BQ % RG == 0 && BK % kGroups == 0, "bad forward tile");
  static_assert(NT >= BK, "one thread per key of a tile for the mask vote");
};

template <typename acc_t, int D, int BT>
struct BwdCfg {
  static constexpr int BQ = BT, BK = BT, NT = BT == 64 ? 256 : 128;
  // Two 256-thread blocks per SM where two fit in shared memory (D <= 64: <= 104 KB each):
  // caps registers at 128 per thread.
  static constexpr int MIN_BLOCKS = (BT == 64 && D <= 64 && sizeof(acc_t) == 4) ? 2 : 1;
  static constexpr int RG = NT / kGroups;  // 32 or 16 row groups
  static constexpr int TMQ = BQ / RG;      // query rows per thread in S/dP/dQ (strided by RG)
  static constexpr int TNK = BK / kGroups; // key columns per thread in S/dP (strided by 8)
  static constexpr int TMK = BK / RG;      // key rows per thread in dK/dV (packed)
  static constexpr int TD = D / kGroups;   // head-dim columns per thread (chunked)
  static constexpr int LDH = D + 4;
  static constexpr int LDP = BK + 4;
  static constexpr int SMEM_ELEMS = 2 * BK * LDH + 2 * BQ * LDH + 2 * BQ * LDP + 2 * BQ + BK;
  static constexpr int SMEM_BYTES = ((SMEM_ELEMS * int(sizeof(acc_t)) + 15) / 16) * 16;
  static_assert(D % 32 == 0 && TMQ >= 1 && TMK >= 1 && BQ % RG == 0 && BK % RG == 0, "bad backward tile");
  static_assert(TMK == 1 || TMK == 2 || TMK == 4, "packed key rows are read as one vector");
  static_assert(NT >= BK, "one thread per key of a tile for the mask vote");
};

// Copies a rows x D tile of a (T_total, Dh) matrix into shared memory (row stride LD), with
// zeros for rows >= nrows, columns >= Dh, and rows whose `valid` flag is 0 (when given).
template <typename T, typename acc_t, int ROWS, int D, int LD, int NT>
FSRF_MCA_DEVICE void load_tile(acc_t* dst, const T* src, int row0, int nrows, int Dh,
                               const acc_t* valid) {
  for (int e = threadIdx.x; e < ROWS * D; e += NT) {
    const int r = e / D, d = e % D;
    acc_t x = acc_t(0);
    if (row0 + r < nrows && d < Dh && (valid == nullptr || valid[r] != acc_t(0)))
      x = to_acc<acc_t>(src[int64_t(row0 + r) * Dh + d]);
    dst[r * LD + d] = x;
  }
}

// ---------------------------------------------------------------------------------------------
// Forward: grid.x = B * H * ceil(Tq / BQ), block = NT threads.

template <typename T, typename acc_t, int D, int BT>
__global__ void __launch_bounds__(FwdCfg<acc_t, D, BT>::NT, FwdCfg<acc_t, D, BT>::MIN_BLOCKS)
mca_fwd_kernel(const FwdArgs<T, acc_t> p) {
  using C = FwdCfg<acc_t, D, BT>;
  constexpr int BQ = C::BQ, BK = C::BK, NT = C::NT, RG = C::RG, TM = C::TM, TN = C::TN,
                TD = C::TD, LDH = C::LDH, LDP = C::LDP;
  acc_t* sQ = reinterpret_cast<acc_t*>(dynamic_smem());
  acc_t* sK = sQ + BQ * LDH;
  acc_t* sV = sK + BK * LDH;
  acc_t* sP = sV + BK * LDH;
  acc_t* sValid = sP + BQ * LDP;

  const int tid = threadIdx.x, lane = tid & 31;
  const int cg = lane & 7, rg = (tid >> 5) * 4 + (lane >> 3);
  const auto [bh, b, q0] = block_tile<BQ>(p.Tq, p.H);
  const T* q = p.q + int64_t(bh) * p.Tq * p.Dh;
  const T* k = p.k + int64_t(bh) * p.Tk * p.Dh;
  const T* v = p.v + int64_t(bh) * p.Tk * p.Dh;
  const bool* mask = sample_mask(p.mask, b, p.Tk);
  const acc_t sl2 = p.scale * acc_t(kLog2e);
  const acc_t NEG_INF = -Num<acc_t>::inf();

  load_tile<T, acc_t, BQ, D, LDH, NT>(sQ, q, q0, p.Tq, p.Dh, nullptr);

  acc_t o[TM][TD], m[TM], l[TM];
  zero(o);
#pragma unroll
  for (int i = 0; i < TM; ++i) { m[i] = NEG_INF; l[i] = acc_t(0); }

  const int nkt = (p.Tk + BK - 1) / BK;
  for (int kt = 0; kt < nkt; ++kt) {
    const int k0 = kt * BK;
    __syncthreads();  // the previous tile's reads of sK, sV, sP, sValid are done
    if (!vote_key_tile<BK>(sValid, mask, k0, p.Tk)) continue;
    load_tile<T, acc_t, BK, D, LDH, NT>(sK, k, k0, p.Tk, p.Dh, sValid);
    load_tile<T, acc_t, BK, D, LDH, NT>(sV, v, k0, p.Tk, p.Dh, sValid);
    __syncthreads();

    acc_t s[TM][TN];
    zero(s);
    gemm_nt<acc_t, TM, TN, D, LDH, LDH, RG, kGroups>(s, sQ, rg, sK, cg);

    // Online softmax in base 2. Rows of this thread: rg + i*RG; columns: cg + j*8.
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      acc_t mx = NEG_INF;
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        s[i][j] = sValid[cg + j * kGroups] != acc_t(0) ? s[i][j] * sl2 : NEG_INF;
        mx = Num<acc_t>::max(mx, s[i][j]);
      }
      mx = group8_max(mx);
      const acc_t m_new = Num<acc_t>::max(m[i], mx);
      // A row with no finite score yet keeps a reference point of 0, so that no -inf - -inf
      // is evaluated; its probabilities are exp2(-inf) = 0 either way.
      const acc_t m_use = m_new == NEG_INF ? acc_t(0) : m_new;
      const acc_t alpha = Num<acc_t>::exp2(m[i] - m_use);
      acc_t rs = acc_t(0);
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const acc_t pij = Num<acc_t>::exp2(s[i][j] - m_use);
        sP[(rg + i * RG) * LDP + cg + j * kGroups] = pij;
        rs += pij;
      }
      l[i] = l[i] * alpha + group8_sum(rs);
      m[i] = m_new;
#pragma unroll
      for (int d = 0; d < TD; ++d) o[i][d] *= alpha;
    }
    __syncthreads();
    gemm_nn<acc_t, TM, TD, BK, LDP, LDH, RG>(o, sP, rg, sV, cg);
  }

  float* lse = p.lse + int64_t(bh) * p.Tq;
  T* out = p.out + int64_t(bh) * p.Tq * p.Dh;
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int r = q0 + rg + i * RG;
    if (r >= p.Tq) continue;
    const bool any = l[i] > acc_t(0);
    const acc_t inv = any ? acc_t(1) / l[i] : acc_t(0);
#pragma unroll
    for (int j = 0; j < TD; ++j) {
      const int d = cg * 4 + (j / 4) * 32 + j % 4;
      if (d < p.Dh) out[int64_t(r) * p.Dh + d] = from_acc<T>(o[i][j] * inv);
    }
    if (cg == 0)
      lse[r] = any ? float(m[i] * acc_t(kLn2) + Num<acc_t>::log(l[i])) : Num<float>::inf();
  }
}

// ---------------------------------------------------------------------------------------------
// Backward (after the row kernel of masked_cross_attention_common_cuda.cuh):
// grid.x = B * H * ceil(Tk / BK), block = NT threads.

template <typename T, typename acc_t, int D, int BT>
__global__ void __launch_bounds__(BwdCfg<acc_t, D, BT>::NT, BwdCfg<acc_t, D, BT>::MIN_BLOCKS)
mca_bwd_kernel(const BwdArgs<T, acc_t> p) {
  using C = BwdCfg<acc_t, D, BT>;
  constexpr int BQ = C::BQ, BK = C::BK, NT = C::NT, RG = C::RG, TMQ = C::TMQ, TNK = C::TNK,
                TMK = C::TMK, TD = C::TD, LDH = C::LDH, LDP = C::LDP;
  acc_t* sK = reinterpret_cast<acc_t*>(dynamic_smem());
  acc_t* sV = sK + BK * LDH;
  acc_t* sQ = sV + BK * LDH;
  acc_t* sdO = sQ + BQ * LDH;
  acc_t* sP = sdO + BQ * LDH;
  acc_t* sdS = sP + BQ * LDP;
  acc_t* sLse = sdS + BQ * LDP;  // lse * log2(e), +inf for rows past Tq
  acc_t* sDv = sLse + BQ;
  acc_t* sValid = sDv + BQ;

  const int tid = threadIdx.x, lane = tid & 31;
  const int cg = lane & 7, rg = (tid >> 5) * 4 + (lane >> 3);
  const auto [bh, b, k0] = block_tile<BK>(p.Tk, p.H);
  const int64_t qoff = int64_t(bh) * p.Tq * p.Dh, koff = int64_t(bh) * p.Tk * p.Dh;
  const bool* mask = sample_mask(p.mask, b, p.Tk);
  const acc_t sl2 = p.scale * acc_t(kLog2e);
  T* dk = p.dk + koff;
  T* dv = p.dv + koff;

  if (!vote_key_tile<BK>(sValid, mask, k0, p.Tk)) {
    zero_key_tile_grads<T, acc_t, BK, NT>(dk, dv, k0, p.Tk, p.Dh);
    return;
  }
  load_tile<T, acc_t, BK, D, LDH, NT>(sK, p.k + koff, k0, p.Tk, p.Dh, sValid);
  load_tile<T, acc_t, BK, D, LDH, NT>(sV, p.v + koff, k0, p.Tk, p.Dh, sValid);

  acc_t dkr[TMK][TD], dvr[TMK][TD];
  zero(dkr);
  zero(dvr);
  const float* lse = p.lse + int64_t(bh) * p.Tq;
  const acc_t* dvec = p.dvec + int64_t(bh) * p.Tq;
  acc_t* dq = p.dq_acc + qoff;

  const int nqt = (p.Tq + BQ - 1) / BQ;
  for (int qt = 0; qt < nqt; ++qt) {
    const int q0 = qt * BQ;
    __syncthreads();  // previous tile's reads of sQ, sdO, sP, sdS, sLse, sDv are done
    load_tile<T, acc_t, BQ, D, LDH, NT>(sQ, p.q + qoff, q0, p.Tq, p.Dh, nullptr);
    load_tile<T, acc_t, BQ, D, LDH, NT>(sdO, p.dout + qoff, q0, p.Tq, p.Dh, nullptr);
    for (int r = tid; r < BQ; r += NT) {
      // Rows past Tq get lse = +inf, hence P = 0: their zero Q/dO rows then contribute nothing
      // (with lse = 0 they would have P = 1 against the zero scores and pollute dV).
      const bool in = q0 + r < p.Tq;
      sLse[r] = in ? acc_t(lse[q0 + r]) * acc_t(kLog2e) : Num<acc_t>::inf();
      sDv[r] = in ? dvec[q0 + r] : acc_t(0);
    }
    __syncthreads();

    {
      acc_t s[TMQ][TNK], dp[TMQ][TNK];
      zero(s);
      zero(dp);
      gemm_nt<acc_t, TMQ, TNK, D, LDH, LDH, RG, kGroups>(s, sQ, rg, sK, cg);
      gemm_nt<acc_t, TMQ, TNK, D, LDH, LDH, RG, kGroups>(dp, sdO, rg, sV, cg);
#pragma unroll
      for (int i = 0; i < TMQ; ++i) {
        const int r = rg + i * RG;
        const acc_t lr = sLse[r], dr = sDv[r];
#pragma unroll
        for (int j = 0; j < TNK; ++j) {
          const int c = cg + j * kGroups;
          // exp2(-inf) = 0 covers masked keys and fully masked rows (lse = +inf).
          const acc_t pij = sValid[c] != acc_t(0) ? Num<acc_t>::exp2(s[i][j] * sl2 - lr) : acc_t(0);
          sP[r * LDP + c] = pij;
          sdS[r * LDP + c] = pij * (dp[i][j] - dr) * p.scale;  // dS already carries the scale
        }
      }
    }
    __syncthreads();

    gemm_tn<acc_t, TMK, TD, BQ, LDP, LDH>(dvr, sP, rg, sdO, cg);
    gemm_tn<acc_t, TMK, TD, BQ, LDP, LDH>(dkr, sdS, rg, sQ, cg);

    acc_t dqr[TMQ][TD];
    zero(dqr);
    gemm_nn<acc_t, TMQ, TD, BK, LDP, LDH, RG>(dqr, sdS, rg, sK, cg);
#pragma unroll
    for (int i = 0; i < TMQ; ++i) {
      const int r = q0 + rg + i * RG;
      if (r >= p.Tq) continue;
#pragma unroll
      for (int j = 0; j < TD; ++j) {
        const int d = cg * 4 + (j / 4) * 32 + j % 4;
        if (d < p.Dh) atomicAdd(dq + int64_t(r) * p.Dh + d, dqr[i][j]);
      }
    }
  }

#pragma unroll
  for (int i = 0; i < TMK; ++i) {
    const int r = k0 + rg * TMK + i;
    if (r >= p.Tk) continue;
#pragma unroll
    for (int j = 0; j < TD; ++j) {
      const int d = cg * 4 + (j / 4) * 32 + j % 4;
      if (d < p.Dh) {
        dk[int64_t(r) * p.Dh + d] = from_acc<T>(dkr[i][j]);
        dv[int64_t(r) * p.Dh + d] = from_acc<T>(dvr[i][j]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Launch order, shared by the CUDA wrapper and the CPU emulation test. `launch(kernel, grid,
// block, smem_bytes, args)` launches one kernel (and checks the launch); `smem_limit` is the
// largest dynamic shared memory a block may ask for on the device.

// Rounds the head dimension up to a compiled width; 0 when it is too large.
inline int padded_head_dim(int Dh) {
  return Dh <= 32 ? 32 : Dh <= 64 ? 64 : Dh <= 128 ? 128 : 0;
}
constexpr int kMaxHeadDim = 128;

template <class F>
void dispatch_head_dim(int Dh, F&& f) {
  switch (padded_head_dim(Dh)) {
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    default: f(std::integral_constant<int, 128>{}); break;
  }
}

// Tile edge for this head dim and device: 64 when the tile fits (all of them on sm_90 for float),
// else 32 (double, and the widest heads on GPUs with 100 KB or 164 KB per block).
template <template <typename, int, int> class Cfg, typename acc_t, int D>
int pick_tile(int smem_limit) {
  if (sizeof(acc_t) == 4 && Cfg<acc_t, D, 64>::SMEM_BYTES <= smem_limit) return 64;
  return 32;
}
template <template <typename, int, int> class Cfg, typename acc_t, int D>
int smem_needed(int smem_limit) {
  return pick_tile<Cfg, acc_t, D>(smem_limit) == 64 ? Cfg<acc_t, D, 64>::SMEM_BYTES
                                                    : Cfg<acc_t, D, 32>::SMEM_BYTES;
}

// Calls f with pick_tile's choice as a compile-time constant. float64 always takes 32, and
// testing that at compile time keeps its 64-tiles from being instantiated at all.
template <template <typename, int, int> class Cfg, typename acc_t, int D, class F>
void dispatch_tile(int smem_limit, F&& f) {
  if constexpr (sizeof(acc_t) == 4) {
    if (pick_tile<Cfg, acc_t, D>(smem_limit) == 64) return f(std::integral_constant<int, 64>{});
  }
  f(std::integral_constant<int, 32>{});
}

template <typename T, typename acc_t, int D, class Launch>
void forward(const FwdArgs<T, acc_t>& a, int smem_limit, Launch&& launch) {
  dispatch_tile<FwdCfg, acc_t, D>(smem_limit, [&](auto bt) {
    constexpr int BT = decltype(bt)::value;
    using C = FwdCfg<acc_t, D, BT>;
    const int64_t blocks = int64_t(a.B) * a.H * ((a.Tq + C::BQ - 1) / C::BQ);
    launch(mca_fwd_kernel<T, acc_t, D, BT>, dim3(unsigned(blocks)), dim3(C::NT), C::SMEM_BYTES, a);
  });
}

template <typename T, typename acc_t, int D, class Launch>
void backward(const BwdArgs<T, acc_t>& a, int smem_limit, Launch&& launch) {
  launch_bwd_dvec(a, launch);
  dispatch_tile<BwdCfg, acc_t, D>(smem_limit, [&](auto bt) {
    constexpr int BT = decltype(bt)::value;
    using C = BwdCfg<acc_t, D, BT>;
    const int64_t blocks = int64_t(a.B) * a.H * ((a.Tk + C::BK - 1) / C::BK);
    launch(mca_bwd_kernel<T, acc_t, D, BT>, dim3(unsigned(blocks)), dim3(C::NT), C::SMEM_BYTES, a);
  });
}

// Key tiles of the backward: more than one means several blocks add into the same dQ element
// (atomics, run-to-run rounding differences); one means each dQ element has one writer.
template <typename acc_t, int D>
int backward_key_tiles(int Tk, int smem_limit) {
  const int bt = pick_tile<BwdCfg, acc_t, D>(smem_limit);
  return (Tk + bt - 1) / bt;
}

}  // namespace mca
}  // namespace fsrf
