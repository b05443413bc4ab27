// Tensor-core path of the CUDA masked cross-attention for float16 / bfloat16 (sm_80+), through
// the WMMA API (nvcuda::wmma, 16x16x16 tiles, fp32 accumulators). Same algorithm, masking and
// conventions as the CUDA-core kernels of masked_cross_attention_cuda.cuh (read that header
// first); only the products differ.
//
// WMMA fragments have an unspecified register layout, so every step that needs to know which row
// or column an element belongs to (online softmax, masking, the dQ atomics, the output) goes
// through shared memory: a warp stores its accumulator tile with store_matrix_sync, works on it
// with ordinary loads (lane = row * 2 + half, columns interleaved between the two lanes of a
// row), and feeds the next product from 16-bit tiles it wrote. P and dS are rounded to the input
// dtype before their products, as FlashAttention does; all sums are fp32.
//
// Forward: block = 4 warps, 64 queries (16 per warp) x 64-key tiles; per key tile each warp
//   S = Q K^T (16 x 64) -> smem -> online softmax -> P (16-bit) -> P V (16 x D) -> smem -> O regs.
// Backward: block = 4 warps, 64 keys (16 per warp) x 64-query tiles; per query tile each warp
//   S^T = K Q^T, dP^T = V dO^T (16 x 64) -> smem -> P^T, dS^T (16-bit, all warps' rows in one
//   64 x 64 tile) -> dV += P^T dO, dK += dS^T Q (fragments kept across query tiles) and
//   dQ (16 x D of the block's 64 keys) = dS K -> smem -> atomics.
// Shared-memory tiles: 16-bit rows padded by 8 elements, fp32 rows by 4 (16 bytes), every
// fragment pointer 32-byte aligned, every leading dimension a multiple of 16 bytes (WMMA rules).
//
// Included by masked_cross_attention_cuda.cu after <mma.h> and by the CPU emulation test after
// cuda_emu.h (which supplies an emulated nvcuda::wmma).

#pragma once

#include "masked_cross_attention_common_cuda.cuh"

namespace fsrf {
namespace mca {

// The WMMA element type of c10::Half / c10::BFloat16 (same bits) and float <-> it.
#ifdef FSRF_CUDA_EMULATION
template <typename T>
using mma_t = T;
template <typename T>
FSRF_MCA_DEVICE T to_mma(float x) {
  return T(x);
}
#else
template <typename T>
struct MmaType;
template <>
struct MmaType<c10::Half> {
  using type = __half;
};
template <>
struct MmaType<c10::BFloat16> {
  using type = __nv_bfloat16;
};
template <typename T>
using mma_t = typename MmaType<T>::type;
template <typename T>
FSRF_MCA_DEVICE mma_t<T> to_mma(float x);
template <>
FSRF_MCA_DEVICE __half to_mma<c10::Half>(float x) {
  return __float2half_rn(x);
}
template <>
FSRF_MCA_DEVICE __nv_bfloat16 to_mma<c10::BFloat16>(float x) {
  return __float2bfloat16_rn(x);
}
#endif

// ROWS x D tile of 16-bit elements from a (T_total, Dh) matrix into shared memory (row stride
// LD elements), zeros outside the matrix, past Dh and on rows whose `valid` flag is 0. With
// `vec` (Dh % 8 == 0 and a 16-byte aligned source) eight elements move per 16-byte access.
template <int ROWS, int D, int LD, int NT>
FSRF_MCA_DEVICE void load_tile16(unsigned short* dst, const unsigned short* src, int row0, int nrows, int Dh,
                                 const float* valid, bool vec) {
  if (vec) {
    constexpr int C8 = D / 8;
    for (int e = threadIdx.x; e < ROWS * C8; e += NT) {
      const int r = e / C8, d0 = (e % C8) * 8;
      uint4 x = make_uint4(0u, 0u, 0u, 0u);
      if (row0 + r < nrows && d0 < Dh && (valid == nullptr || valid[r] != 0.f))
        x = *reinterpret_cast<const uint4*>(src + int64_t(row0 + r) * Dh + d0);
      *reinterpret_cast<uint4*>(dst + r * LD + d0) = x;
    }
  } else {
    for (int e = threadIdx.x; e < ROWS * D; e += NT) {
      const int r = e / D, d = e % D;
      unsigned short x = 0;
      if (row0 + r < nrows && d < Dh && (valid == nullptr || valid[r] != 0.f))
        x = src[int64_t(row0 + r) * Dh + d];
      dst[r * LD + d] = x;
    }
  }
}

template <int D>
struct WFwdCfg {
  static constexpr int BQ = 64, BK = 64, NT = 128, WARPS = 4;
  static constexpr int LDH = D + 8;  // 16-bit Q, K, V rows
  static constexpr int LDS = BK + 4; // fp32 rows of a warp's S tile
  static constexpr int LDP = BK + 8; // 16-bit rows of a warp's P tile
  static constexpr int LDO = D + 4;  // fp32 rows of a warp's PV tile
  static constexpr int OFF_Q = 0;
  static constexpr int OFF_K = OFF_Q + BQ * LDH * 2;
  static constexpr int OFF_V = OFF_K + BK * LDH * 2;
  static constexpr int OFF_S = OFF_V + BK * LDH * 2;
  static constexpr int OFF_P = OFF_S + WARPS * 16 * LDS * 4;
  static constexpr int OFF_O = OFF_P + WARPS * 16 * LDP * 2;
  static constexpr int OFF_VALID = OFF_O + WARPS * 16 * LDO * 4;
  static constexpr int SMEM_BYTES = OFF_VALID + BK * 4;
  static_assert(D % 32 == 0 && OFF_K % 32 == 0 && OFF_S % 32 == 0 && OFF_P % 32 == 0 && OFF_O % 32 == 0 &&
                    OFF_VALID % 32 == 0 && (16 * LDS * 4) % 32 == 0 && (16 * LDP * 2) % 32 == 0 &&
                    (16 * LDO * 4) % 32 == 0,
                "WMMA needs 32-byte aligned tiles");
};

template <int D>
struct WBwdCfg {
  static constexpr int BQ = 64, BK = 64, NT = 128, WARPS = 4;
  static constexpr bool CACHE_KV = D <= 64;  // keep K, V fragments in registers across query tiles
  static constexpr int LDH = D + 8;          // 16-bit K, V, Q, dO rows
  static constexpr int LDT = BQ + 4;         // fp32 rows of a warp's S^T / dP^T tiles
  static constexpr int LDP = BQ + 8;         // 16-bit rows of the block's P^T / dS^T tiles
  static constexpr int LDO = D + 4;          // fp32 rows of a warp's dQ (and final dK, dV) tile
  static constexpr int OFF_K = 0;
  static constexpr int OFF_V = OFF_K + BK * LDH * 2;
  static constexpr int OFF_Q = OFF_V + BK * LDH * 2;
  static constexpr int OFF_DO = OFF_Q + BQ * LDH * 2;
  static constexpr int OFF_ST = OFF_DO + BQ * LDH * 2;
  static constexpr int OFF_DPT = OFF_ST + WARPS * 16 * LDT * 4;
  static constexpr int OFF_PT = OFF_DPT + WARPS * 16 * LDT * 4;
  static constexpr int OFF_DST = OFF_PT + BK * LDP * 2;
  static constexpr int OFF_DQ = OFF_DST + BK * LDP * 2;
  static constexpr int OFF_LSE = OFF_DQ + WARPS * 16 * LDO * 4;
  static constexpr int OFF_DV = OFF_LSE + BQ * 4;
  static constexpr int OFF_VALID = OFF_DV + BQ * 4;
  static constexpr int SMEM_BYTES = OFF_VALID + BK * 4;
  static_assert(D % 32 == 0 && OFF_V % 32 == 0 && OFF_ST % 32 == 0 && OFF_PT % 32 == 0 && OFF_DST % 32 == 0 &&
                    OFF_DQ % 32 == 0 && (16 * LDT * 4) % 32 == 0 && (16 * LDP * 2) % 32 == 0 &&
                    (16 * LDO * 4) % 32 == 0,
                "WMMA needs 32-byte aligned tiles");
};

// The WMMA kernels exist for sm_80+ (bf16 fragments); for older targets their bodies are empty
// and the host never selects them (it checks the device's compute capability).
#if defined(FSRF_CUDA_EMULATION) || !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define FSRF_MCA_WMMA_BODY 1
#else
#define FSRF_MCA_WMMA_BODY 0
#endif

// ---------------------------------------------------------------------------------------------
// Forward: grid.x = B * H * ceil(Tq / 64), 128 threads.

template <typename T, int D>
__global__ void __launch_bounds__(128) mca_fwd_wmma_kernel(const FwdArgs<T, float> p, int vec) {
#if FSRF_MCA_WMMA_BODY
  namespace wmma = nvcuda::wmma;
  using C = WFwdCfg<D>;
  using M = mma_t<T>;
  constexpr int BQ = C::BQ, BK = C::BK, NT = C::NT, LDH = C::LDH, LDS = C::LDS, LDP = C::LDP, LDO = C::LDO;
  unsigned char* smem = dynamic_smem();
  M* sQ = reinterpret_cast<M*>(smem + C::OFF_Q);
  M* sK = reinterpret_cast<M*>(smem + C::OFF_K);
  M* sV = reinterpret_cast<M*>(smem + C::OFF_V);
  float* sValid = reinterpret_cast<float*>(smem + C::OFF_VALID);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int r = lane >> 1, h = lane & 1;  // this lane's row of the warp's 16, and column parity
  float* sS = reinterpret_cast<float*>(smem + C::OFF_S) + warp * 16 * LDS;
  M* sP = reinterpret_cast<M*>(smem + C::OFF_P) + warp * 16 * LDP;
  float* sO = reinterpret_cast<float*>(smem + C::OFF_O) + warp * 16 * LDO;

  const auto [bh, b, q0] = block_tile<BQ>(p.Tq, p.H);
  const auto* q = reinterpret_cast<const unsigned short*>(p.q) + int64_t(bh) * p.Tq * p.Dh;
  const auto* k = reinterpret_cast<const unsigned short*>(p.k) + int64_t(bh) * p.Tk * p.Dh;
  const auto* v = reinterpret_cast<const unsigned short*>(p.v) + int64_t(bh) * p.Tk * p.Dh;
  const bool* mask = sample_mask(p.mask, b, p.Tk);
  const float sl2 = p.scale * float(kLog2e);
  const float NEG_INF = -Num<float>::inf();

  load_tile16<BQ, D, LDH, NT>(reinterpret_cast<unsigned short*>(sQ), q, q0, p.Tq, p.Dh, nullptr, vec != 0);
  __syncthreads();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, M, wmma::row_major> qa[D / 16];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) wmma::load_matrix_sync(qa[kk], sQ + warp * 16 * LDH + kk * 16, LDH);

  float o[D / 2];  // row r, columns 2j + h
#pragma unroll
  for (int j = 0; j < D / 2; ++j) o[j] = 0.f;
  float m = NEG_INF, l = 0.f;

  const int nkt = (p.Tk + BK - 1) / BK;
  for (int kt = 0; kt < nkt; ++kt) {
    const int k0 = kt * BK;
    __syncthreads();  // the previous tile's reads of sK, sV, sValid are done
    if (!vote_key_tile<BK>(sValid, mask, k0, p.Tk)) continue;
    load_tile16<BK, D, LDH, NT>(reinterpret_cast<unsigned short*>(sK), k, k0, p.Tk, p.Dh, sValid, vec != 0);
    load_tile16<BK, D, LDH, NT>(reinterpret_cast<unsigned short*>(sV), v, k0, p.Tk, p.Dh, sValid, vec != 0);
    __syncthreads();

    // S = Q K^T for this warp's 16 queries.
#pragma unroll
    for (int j = 0; j < BK / 16; ++j) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, M, wmma::col_major> kb;
        wmma::load_matrix_sync(kb, sK + j * 16 * LDH + kk * 16, LDH);
        wmma::mma_sync(acc, qa[kk], kb, acc);
      }
      wmma::store_matrix_sync(sS + j * 16, acc, LDS, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax of row r over columns 2c + h (the pair of lanes of a row covers all 64).
    float mx = NEG_INF;
#pragma unroll
    for (int c = 0; c < BK / 2; ++c) {
      const int col = 2 * c + h;
      const float s = sValid[col] != 0.f ? sS[r * LDS + col] * sl2 : NEG_INF;
      sS[r * LDS + col] = s;
      mx = fmaxf(mx, s);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m, mx);
    const float m_use = m_new == NEG_INF ? 0.f : m_new;
    const float alpha = exp2f(m - m_use);
    float rs = 0.f;
#pragma unroll
    for (int c = 0; c < BK / 2; ++c) {
      const int col = 2 * c + h;
      const float pv = exp2f(sS[r * LDS + col] - m_use);
      sP[r * LDP + col] = to_mma<T>(pv);
      rs += pv;
    }
    rs += __shfl_xor_sync(0xffffffffu, rs, 1);
    l = l * alpha + rs;
    m = m_new;
#pragma unroll
    for (int j = 0; j < D / 2; ++j) o[j] *= alpha;
    __syncwarp();

    // PV for this warp's rows, staged through sO.
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int kk = 0; kk < BK / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, M, wmma::row_major> pa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, M, wmma::row_major> vb;
        wmma::load_matrix_sync(pa, sP + kk * 16, LDP);
        wmma::load_matrix_sync(vb, sV + kk * 16 * LDH + n * 16, LDH);
        wmma::mma_sync(acc, pa, vb, acc);
      }
      wmma::store_matrix_sync(sO + n * 16, acc, LDO, wmma::mem_row_major);
    }
    __syncwarp();
#pragma unroll
    for (int j = 0; j < D / 2; ++j) o[j] += sO[r * LDO + 2 * j + h];
    __syncwarp();
  }

  const int row = q0 + warp * 16 + r;
  if (row < p.Tq) {
    const bool any = l > 0.f;
    const float inv = any ? 1.f / l : 0.f;
    T* out = p.out + (int64_t(bh) * p.Tq + row) * p.Dh;
#pragma unroll
    for (int j = 0; j < D / 2; ++j) {
      const int d = 2 * j + h;
      if (d < p.Dh) out[d] = from_acc<T>(o[j] * inv);
    }
    if (h == 0) p.lse[int64_t(bh) * p.Tq + row] = any ? m * float(kLn2) + logf(l) : Num<float>::inf();
  }
#endif
}

// ---------------------------------------------------------------------------------------------
// Backward main kernel: grid.x = B * H * ceil(Tk / 64), 128 threads (after the row kernel of
// masked_cross_attention_common_cuda.cuh).

template <typename T, int D>
__global__ void __launch_bounds__(128) mca_bwd_wmma_kernel(const BwdArgs<T, float> p, int vec) {
#if FSRF_MCA_WMMA_BODY
  namespace wmma = nvcuda::wmma;
  using C = WBwdCfg<D>;
  using M = mma_t<T>;
  using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, M, wmma::row_major>;
  using FragAc = wmma::fragment<wmma::matrix_a, 16, 16, 16, M, wmma::col_major>;
  using FragBr = wmma::fragment<wmma::matrix_b, 16, 16, 16, M, wmma::row_major>;
  using FragBc = wmma::fragment<wmma::matrix_b, 16, 16, 16, M, wmma::col_major>;
  using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;
  constexpr int BQ = C::BQ, BK = C::BK, NT = C::NT, LDH = C::LDH, LDT = C::LDT, LDP = C::LDP, LDO = C::LDO;
  unsigned char* smem = dynamic_smem();
  M* sK = reinterpret_cast<M*>(smem + C::OFF_K);
  M* sV = reinterpret_cast<M*>(smem + C::OFF_V);
  M* sQ = reinterpret_cast<M*>(smem + C::OFF_Q);
  M* sdO = reinterpret_cast<M*>(smem + C::OFF_DO);
  M* sPt = reinterpret_cast<M*>(smem + C::OFF_PT);
  M* sdSt = reinterpret_cast<M*>(smem + C::OFF_DST);
  float* sLse = reinterpret_cast<float*>(smem + C::OFF_LSE);
  float* sDv = reinterpret_cast<float*>(smem + C::OFF_DV);
  float* sValid = reinterpret_cast<float*>(smem + C::OFF_VALID);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int r = lane >> 1, h = lane & 1;
  float* sSt = reinterpret_cast<float*>(smem + C::OFF_ST) + warp * 16 * LDT;
  float* sdPt = reinterpret_cast<float*>(smem + C::OFF_DPT) + warp * 16 * LDT;
  float* sW = reinterpret_cast<float*>(smem + C::OFF_DQ) + warp * 16 * LDO;

  const auto [bh, b, k0] = block_tile<BK>(p.Tk, p.H);
  const int64_t qoff = int64_t(bh) * p.Tq * p.Dh, koff = int64_t(bh) * p.Tk * p.Dh;
  const bool* mask = sample_mask(p.mask, b, p.Tk);
  const float sl2 = p.scale * float(kLog2e);
  T* dk = p.dk + koff;
  T* dv = p.dv + koff;

  if (!vote_key_tile<BK>(sValid, mask, k0, p.Tk)) {
    zero_key_tile_grads<T, float, BK, NT>(dk, dv, k0, p.Tk, p.Dh);
    return;
  }
  load_tile16<BK, D, LDH, NT>(reinterpret_cast<unsigned short*>(sK),
                              reinterpret_cast<const unsigned short*>(p.k) + koff, k0, p.Tk, p.Dh, sValid, vec != 0);
  load_tile16<BK, D, LDH, NT>(reinterpret_cast<unsigned short*>(sV),
                              reinterpret_cast<const unsigned short*>(p.v) + koff, k0, p.Tk, p.Dh, sValid, vec != 0);
  __syncthreads();

  // This warp's 16 keys as A operands (K rows, V rows), kept when registers allow.
  FragA ka[C::CACHE_KV ? D / 16 : 1], va[C::CACHE_KV ? D / 16 : 1];
  if constexpr (C::CACHE_KV) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      wmma::load_matrix_sync(ka[kk], sK + warp * 16 * LDH + kk * 16, LDH);
      wmma::load_matrix_sync(va[kk], sV + warp * 16 * LDH + kk * 16, LDH);
    }
  }
  FragC dkf[D / 16], dvf[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; ++n) {
    wmma::fill_fragment(dkf[n], 0.f);
    wmma::fill_fragment(dvf[n], 0.f);
  }
  const float* lse = p.lse + int64_t(bh) * p.Tq;
  const float* dvec = p.dvec + int64_t(bh) * p.Tq;
  float* dq = p.dq_acc + qoff;
  const float my_valid = sValid[warp * 16 + r];

  const int nqt = (p.Tq + BQ - 1) / BQ;
  for (int qt = 0; qt < nqt; ++qt) {
    const int q0 = qt * BQ;
    __syncthreads();  // the previous query tile's reads of sQ, sdO, sPt, sdSt, sLse, sDv are done
    load_tile16<BQ, D, LDH, NT>(reinterpret_cast<unsigned short*>(sQ),
                                reinterpret_cast<const unsigned short*>(p.q) + qoff, q0, p.Tq, p.Dh, nullptr, vec != 0);
    load_tile16<BQ, D, LDH, NT>(reinterpret_cast<unsigned short*>(sdO),
                                reinterpret_cast<const unsigned short*>(p.dout) + qoff, q0, p.Tq, p.Dh, nullptr,
                                vec != 0);
    for (int i = tid; i < BQ; i += NT) {
      // Rows past Tq: lse = +inf gives P = 0, so their zero Q/dO rows add nothing.
      const bool in = q0 + i < p.Tq;
      sLse[i] = in ? lse[q0 + i] * float(kLog2e) : Num<float>::inf();
      sDv[i] = in ? dvec[q0 + i] : 0.f;
    }
    __syncthreads();

    // S^T = K Q^T and dP^T = V dO^T for this warp's 16 keys x 64 queries.
#pragma unroll
    for (int j = 0; j < BQ / 16; ++j) {
      FragC sacc, pacc;
      wmma::fill_fragment(sacc, 0.f);
      wmma::fill_fragment(pacc, 0.f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        FragBc qb, ob;
        wmma::load_matrix_sync(qb, sQ + j * 16 * LDH + kk * 16, LDH);
        wmma::load_matrix_sync(ob, sdO + j * 16 * LDH + kk * 16, LDH);
        if constexpr (C::CACHE_KV) {
          wmma::mma_sync(sacc, ka[kk], qb, sacc);
          wmma::mma_sync(pacc, va[kk], ob, pacc);
        } else {
          FragA a;
          wmma::load_matrix_sync(a, sK + warp * 16 * LDH + kk * 16, LDH);
          wmma::mma_sync(sacc, a, qb, sacc);
          wmma::load_matrix_sync(a, sV + warp * 16 * LDH + kk * 16, LDH);
          wmma::mma_sync(pacc, a, ob, pacc);
        }
      }
      wmma::store_matrix_sync(sSt + j * 16, sacc, LDT, wmma::mem_row_major);
      wmma::store_matrix_sync(sdPt + j * 16, pacc, LDT, wmma::mem_row_major);
    }
    __syncwarp();

    // P^T = exp2(S^T * scale * log2e - lse * log2e) on observed keys, dS^T = P^T (dP^T - Dvec) * scale.
#pragma unroll 4
    for (int c = 0; c < BQ / 2; ++c) {
      const int col = 2 * c + h;  // query within the tile
      const float pv = my_valid != 0.f ? exp2f(sSt[r * LDT + col] * sl2 - sLse[col]) : 0.f;
      const float ds = pv * (sdPt[r * LDT + col] - sDv[col]) * p.scale;
      sPt[(warp * 16 + r) * LDP + col] = to_mma<T>(pv);
      sdSt[(warp * 16 + r) * LDP + col] = to_mma<T>(ds);
    }
    __syncthreads();  // dQ below reads every warp's dS^T rows

    // dV += P^T dO, dK += dS^T Q for this warp's keys.
#pragma unroll
    for (int kk = 0; kk < BQ / 16; ++kk) {
      FragA pa, sa;
      wmma::load_matrix_sync(pa, sPt + warp * 16 * LDP + kk * 16, LDP);
      wmma::load_matrix_sync(sa, sdSt + warp * 16 * LDP + kk * 16, LDP);
#pragma unroll
      for (int n = 0; n < D / 16; ++n) {
        FragBr ob, qb;
        wmma::load_matrix_sync(ob, sdO + kk * 16 * LDH + n * 16, LDH);
        wmma::load_matrix_sync(qb, sQ + kk * 16 * LDH + n * 16, LDH);
        wmma::mma_sync(dvf[n], pa, ob, dvf[n]);
        wmma::mma_sync(dkf[n], sa, qb, dkf[n]);
      }
    }

    // dQ rows q0 + 16*warp .. +15 from the block's 64 keys: dS (column-major view of dS^T) x K.
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      FragC acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int kk = 0; kk < BK / 16; ++kk) {
        FragAc sa;
        FragBr kb;
        wmma::load_matrix_sync(sa, sdSt + kk * 16 * LDP + warp * 16, LDP);
        wmma::load_matrix_sync(kb, sK + kk * 16 * LDH + n * 16, LDH);
        wmma::mma_sync(acc, sa, kb, acc);
      }
      wmma::store_matrix_sync(sW + n * 16, acc, LDO, wmma::mem_row_major);
    }
    __syncwarp();
    {
      const int row = q0 + warp * 16 + r;
      if (row < p.Tq) {
#pragma unroll 4
        for (int j = 0; j < D / 2; ++j) {
          const int d = 2 * j + h;
          if (d < p.Dh) atomicAdd(dq + int64_t(row) * p.Dh + d, sW[r * LDO + d]);
        }
      }
    }
    __syncwarp();
  }

  // dK, dV of this warp's keys, staged through sW.
  const int krow = k0 + warp * 16 + r;
#pragma unroll
  for (int which = 0; which < 2; ++which) {
#pragma unroll
    for (int n = 0; n < D / 16; ++n)
      wmma::store_matrix_sync(sW + n * 16, which == 0 ? dkf[n] : dvf[n], LDO, wmma::mem_row_major);
    __syncwarp();
    if (krow < p.Tk) {
      T* dst = (which == 0 ? dk : dv) + int64_t(krow) * p.Dh;
#pragma unroll 4
      for (int j = 0; j < D / 2; ++j) {
        const int d = 2 * j + h;
        if (d < p.Dh) dst[d] = from_acc<T>(sW[r * LDO + d]);
      }
    }
    __syncwarp();
  }
#endif
}

// ---------------------------------------------------------------------------------------------
// Launch order of the tensor-core path (T is c10::Half or c10::BFloat16). `vec`: Dh % 8 == 0 and
// every input 16-byte aligned.

template <int D>
constexpr int wmma_fwd_smem() {
  return WFwdCfg<D>::SMEM_BYTES;
}
template <int D>
constexpr int wmma_bwd_smem() {
  return WBwdCfg<D>::SMEM_BYTES;
}

template <typename T, int D, class Launch>
void forward_wmma(const FwdArgs<T, float>& a, bool vec, Launch&& launch) {
  using C = WFwdCfg<D>;
  const int64_t blocks = int64_t(a.B) * a.H * ((a.Tq + C::BQ - 1) / C::BQ);
  launch(mca_fwd_wmma_kernel<T, D>, dim3(unsigned(blocks)), dim3(C::NT), C::SMEM_BYTES, a, int(vec));
}

template <typename T, int D, class Launch>
void backward_wmma(const BwdArgs<T, float>& a, bool vec, Launch&& launch) {
  launch_bwd_dvec(a, launch);
  using C = WBwdCfg<D>;
  const int64_t blocks = int64_t(a.B) * a.H * ((a.Tk + C::BK - 1) / C::BK);
  launch(mca_bwd_wmma_kernel<T, D>, dim3(unsigned(blocks)), dim3(C::NT), C::SMEM_BYTES, a, int(vec));
}

}  // namespace mca
}  // namespace fsrf
