// Device code common to both kernel families of the CUDA masked cross-attention: the CUDA-core
// kernels (masked_cross_attention_cuda.cuh) and the tensor-core kernels
// (masked_cross_attention_wmma_cuda.cuh). The two must agree on the masking and zero-gradient
// conventions and on the arguments the host passes, so what encodes those is written once:
// numeric helpers and element conversions, the kernel arguments, the block's place in the grid,
// the per-tile key-mask vote, the zero gradients of a fully masked key tile, and the row kernel
// that starts every backward.
//
// Compiled by nvcc and, for the CPU test of the kernel logic, by g++ with
// tests/cpp/cuda_emu/cuda_emu.h supplying threadIdx, __syncthreads and the other built-ins: it
// includes no torch or CUDA header and uses CUDA only through what both sides provide.

#pragma once

#include <cstdint>

namespace fsrf {
namespace mca {

#ifndef FSRF_MCA_DEVICE
#define FSRF_MCA_DEVICE __device__ __forceinline__
#endif

// ---------------------------------------------------------------------------------------------
// Numeric helpers (float and double accumulators).

template <typename acc_t>
struct Num;

template <>
struct Num<float> {
  static FSRF_MCA_DEVICE float exp2(float x) { return exp2f(x); }
  static FSRF_MCA_DEVICE float log(float x) { return logf(x); }
  static FSRF_MCA_DEVICE float max(float a, float b) { return fmaxf(a, b); }
  static FSRF_MCA_DEVICE float inf() { return __int_as_float(0x7f800000); }
};

template <>
struct Num<double> {
  static FSRF_MCA_DEVICE double exp2(double x) { return ::exp2(x); }
  static FSRF_MCA_DEVICE double log(double x) { return ::log(x); }
  static FSRF_MCA_DEVICE double max(double a, double b) { return fmax(a, b); }
  static FSRF_MCA_DEVICE double inf() { return __longlong_as_double(0x7ff0000000000000LL); }
};

constexpr double kLog2e = 1.4426950408889634;
constexpr double kLn2 = 0.6931471805599453;

// Element conversions: T is float, double, c10::Half or c10::BFloat16 (both convert through
// float on host and device).
template <typename acc_t, typename T>
FSRF_MCA_DEVICE acc_t to_acc(T x) {
  return static_cast<acc_t>(static_cast<float>(x));
}
template <>
FSRF_MCA_DEVICE double to_acc<double, double>(double x) {
  return x;
}
template <typename T, typename acc_t>
FSRF_MCA_DEVICE T from_acc(acc_t x) {
  return T(static_cast<float>(x));
}
template <>
FSRF_MCA_DEVICE double from_acc<double, double>(double x) {
  return x;
}

FSRF_MCA_DEVICE unsigned char* dynamic_smem() {
#ifdef FSRF_CUDA_EMULATION
  return cuda_emu::dynamic_smem();
#else
  // 128-byte alignment: the tensor-core path needs 32-byte aligned tiles (the kernels declare no
  // static shared memory, so the dynamic block starts at the window's base anyway).
  extern __shared__ __align__(128) unsigned char fsrf_mca_smem[];
  return fsrf_mca_smem;
#endif
}

// ---------------------------------------------------------------------------------------------
// Kernel arguments. Tensors are contiguous: q/out (B,H,Tq,Dh), k/v (B,H,Tk,Dh), mask (B,Tk)
// or null, lse/dvec (B,H,Tq).

template <typename T, typename acc_t>
struct FwdArgs {
  const T* q;
  const T* k;
  const T* v;
  const bool* mask;
  T* out;
  float* lse;
  int B, H, Tq, Tk, Dh;
  acc_t scale;
};

template <typename T, typename acc_t>
struct BwdArgs {
  const T* dout;
  const T* q;
  const T* k;
  const T* v;
  const bool* mask;
  const T* out;
  const float* lse;
  acc_t* dvec;    // (B,H,Tq) scratch, written by the row kernel
  acc_t* dq_acc;  // (B,H,Tq,Dh), zero on entry; the .cu converts it to grad_q's dtype
  T* dk;
  T* dv;
  int B, H, Tq, Tk, Dh;
  acc_t scale;
};

// ---------------------------------------------------------------------------------------------
// Block-level pieces of the tiled kernels.

// What this block works on, in a grid of B * H * ceil(T / TILE) blocks with the tile index
// varying fastest (the grids the launch functions size).
struct BlockTile {
  int bh;  // sample * H + head: index of the (sample, head) slice of q, k, v, out, lse
  int b;   // sample: row of the key mask
  int t0;  // first query (forward) or key (backward) row of the tile
};

template <int TILE>
FSRF_MCA_DEVICE BlockTile block_tile(int T, int H) {
  const int nt = (T + TILE - 1) / TILE;
  const int t = int(blockIdx.x % unsigned(nt));
  const int bh = int(blockIdx.x / unsigned(nt));
  return {bh, bh / H, t * TILE};
}

// The key-mask row of sample b, or null (every key observed) without a mask.
FSRF_MCA_DEVICE const bool* sample_mask(const bool* mask, int b, int Tk) {
  return mask ? mask + int64_t(b) * Tk : nullptr;
}

// Flags in valid[0 .. BK) which keys of the tile at k0 exist and are observed (1) or not (0),
// thread i flagging key k0 + i, and returns whether any is: the caller skips a tile with none
// before loading its K/V. One block-wide vote, so every thread of the block calls it, and
// valid[] is complete for all of them once it returns.
template <int BK, typename V>
FSRF_MCA_DEVICE bool vote_key_tile(V* valid, const bool* mask, int k0, int Tk) {
  const int tid = threadIdx.x;
  int ok = 0;
  if (tid < BK) {
    ok = (k0 + tid < Tk) && (mask == nullptr || mask[k0 + tid]);
    valid[tid] = ok ? V(1) : V(0);
  }
  return __syncthreads_or(ok) != 0;
}

// dK = dV = 0 for a key tile with no observed key: its keys get no gradient and add nothing
// to dQ, so the block has nothing else to write.
template <typename T, typename acc_t, int BK, int NT>
FSRF_MCA_DEVICE void zero_key_tile_grads(T* dk, T* dv, int k0, int Tk, int Dh) {
  for (int e = threadIdx.x; e < BK * Dh; e += NT) {
    const int r = e / Dh, d = e % Dh;
    if (k0 + r < Tk) {
      dk[int64_t(k0 + r) * Dh + d] = from_acc<T>(acc_t(0));
      dv[int64_t(k0 + r) * Dh + d] = from_acc<T>(acc_t(0));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward, step 1 of both families: dvec[row] = sum_d dout[row][d] * out[row][d]; one warp per
// row, 8 rows per 256-thread block.

template <typename T, typename acc_t>
__global__ void __launch_bounds__(256) mca_bwd_dvec_kernel(const BwdArgs<T, acc_t> p) {
  const int64_t rows = int64_t(p.B) * p.H * p.Tq;
  const int64_t row = int64_t(blockIdx.x) * 8 + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;  // whole warps leave together: the shuffles below stay full-warp
  const T* a = p.dout + row * p.Dh;
  const T* o = p.out + row * p.Dh;
  acc_t s = acc_t(0);
  for (int d = lane; d < p.Dh; d += 32) s += to_acc<acc_t>(a[d]) * to_acc<acc_t>(o[d]);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (lane == 0) p.dvec[row] = s;
}

// `launch(kernel, grid, block, smem_bytes, args)` as in the launch order of either family.
template <typename T, typename acc_t, class Launch>
void launch_bwd_dvec(const BwdArgs<T, acc_t>& a, Launch&& launch) {
  const int64_t rows = int64_t(a.B) * a.H * a.Tq;
  launch(mca_bwd_dvec_kernel<T, acc_t>, dim3(unsigned((rows + 7) / 8)), dim3(256), 0, a);
}

}  // namespace mca
}  // namespace fsrf
