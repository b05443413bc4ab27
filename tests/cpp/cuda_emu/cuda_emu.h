// A small host emulation of the CUDA execution model, enough to run fsrf's CUDA kernels on a CPU
// for testing (this project's CI machines have no GPU).
//
// Every CUDA thread of a block is a user-level context (ucontext) on one OS thread. A scheduler
// runs them until each reaches a synchronisation point (__syncthreads, __syncthreads_or,
// __shfl_xor_sync, __syncwarp) and releases a barrier once every thread it covers is waiting.
// The emulation is strict where CUDA is undefined, so such bugs fail loudly here instead of
// silently hanging or racing on a GPU:
//   * a block barrier reached while some threads of the block have exited, or a mix of
//     different barriers, is reported as divergence; a barrier nobody can complete as deadlock;
//   * threads run in a chosen order between barriers (ascending, descending or random), so a
//     missing barrier changes results between orders; shared memory starts filled with 0xff
//     bytes (NaN for float/double) so a read of a slot nobody wrote shows as NaN.
// Warp shuffles need all 32 lanes, as __shfl_xor_sync(0xffffffff, ...) does on a GPU.
// Blocks run one after another; atomics are plain read-modify-writes (one OS thread).
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#define FSRF_CUDA_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) double2 {
  double x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

namespace cuda_emu {

enum class Wait { None, Block, BlockOr, Warp, Shfl };

struct Thread {
  ucontext_t ctx;
  std::vector<char> stack;
  bool done = false;
  Wait wait = Wait::None;
  double val = 0;  // shuffle value or vote predicate
  int arg = 0;     // shuffle xor mask
  double result = 0;
};

struct State {
  std::vector<Thread> th;
  ucontext_t sched;
  unsigned cur = 0;
  dim3 blockIdx, blockDim, gridDim;
  std::vector<unsigned char> smem;
  std::function<void()> body;
  int order = 0;  // 0 ascending, 1 descending, 2 random
  std::mt19937 rng{12345};
  long long barriers = 0;
};

inline State& S() {
  static State s;
  return s;
}

[[noreturn]] inline void fail(const std::string& msg) {
  std::fprintf(stderr, "cuda_emu: %s (block %u,%u,%u)\n", msg.c_str(), S().blockIdx.x, S().blockIdx.y,
               S().blockIdx.z);
  std::exit(3);
}

inline void wait_on(Wait w) {
  State& s = S();
  s.th[s.cur].wait = w;
  swapcontext(&s.th[s.cur].ctx, &s.sched);
}

inline uint3 thread_idx() { return uint3{S().cur, 0u, 0u}; }
// Dynamic shared memory, 128-byte aligned like the kernels' extern __shared__ __align__(128).
inline unsigned char* dynamic_smem() {
  const uintptr_t base = reinterpret_cast<uintptr_t>(S().smem.data());
  return S().smem.data() + ((128 - base % 128) % 128);
}

inline void entry() {
  State& s = S();
  s.body();
  s.th[s.cur].done = true;
  // returning switches to uc_link, the scheduler
}

// Releases whatever barrier is complete; false when nothing can proceed.
inline bool release() {
  State& s = S();
  const unsigned n = unsigned(s.th.size());
  unsigned n_done = 0, n_block = 0, n_or = 0;
  for (auto& t : s.th) {
    n_done += t.done;
    n_block += !t.done && t.wait == Wait::Block;
    n_or += !t.done && t.wait == Wait::BlockOr;
  }
  bool progressed = false;
  // Warp-level operations first: each warp whose 32 lanes all wait on the same warp operation.
  for (unsigned w0 = 0; w0 < n; w0 += 32) {
    const unsigned w1 = std::min(n, w0 + 32);
    Wait kind = s.th[w0].wait;
    if (kind != Wait::Warp && kind != Wait::Shfl) continue;
    bool all = true;
    for (unsigned t = w0; t < w1; ++t) all &= !s.th[t].done && s.th[t].wait == kind;
    if (!all) continue;
    if (w1 - w0 != 32) fail("warp operation in a partial warp");
    for (unsigned t = w0; t < w1; ++t) {
      if (kind == Wait::Shfl) {
        const unsigned src = w0 + ((t - w0) ^ unsigned(s.th[t].arg));
        s.th[t].result = s.th[src].val;
      }
    }
    for (unsigned t = w0; t < w1; ++t) s.th[t].wait = Wait::None;
    progressed = true;
  }
  if (progressed) return true;
  if (n_block + n_or > 0) {
    if (n_done > 0) fail("__syncthreads reached while other threads of the block have exited");
    if (n_block + n_or != n) return false;  // others still waiting on warp operations: deadlock
    if (n_block && n_or) fail("threads wait on different block barriers (__syncthreads vs __syncthreads_or)");
    double any = 0;
    for (auto& t : s.th) any = any || t.val != 0;
    for (auto& t : s.th) {
      t.result = any;
      t.wait = Wait::None;
    }
    ++s.barriers;
    return true;
  }
  return false;
}

inline void run_block(unsigned nthreads) {
  State& s = S();
  s.th.resize(nthreads);
  for (unsigned t = 0; t < nthreads; ++t) {
    Thread& th = s.th[t];
    th.done = false;
    th.wait = Wait::None;
    th.val = th.result = 0;
    th.stack.resize(1 << 18);
    getcontext(&th.ctx);
    th.ctx.uc_stack.ss_sp = th.stack.data();
    th.ctx.uc_stack.ss_size = th.stack.size();
    th.ctx.uc_link = &s.sched;
    makecontext(&th.ctx, entry, 0);
  }
  std::vector<unsigned> order(nthreads);
  for (;;) {
    std::iota(order.begin(), order.end(), 0u);
    if (s.order == 1) std::reverse(order.begin(), order.end());
    if (s.order == 2) std::shuffle(order.begin(), order.end(), s.rng);
    bool ran = false;
    for (unsigned t : order) {
      if (s.th[t].done || s.th[t].wait != Wait::None) continue;
      s.cur = t;
      ran = true;
      swapcontext(&s.sched, &s.th[t].ctx);
    }
    if (ran) continue;
    bool all_done = true;
    for (auto& t : s.th) all_done &= t.done;
    if (all_done) return;
    if (!release()) {
      unsigned nd = 0, nb = 0, nw = 0;
      for (auto& t : s.th) {
        nd += t.done;
        nb += !t.done && (t.wait == Wait::Block || t.wait == Wait::BlockOr);
        nw += !t.done && (t.wait == Wait::Warp || t.wait == Wait::Shfl);
      }
      fail("deadlock: " + std::to_string(nd) + " threads exited, " + std::to_string(nb) +
           " at a block barrier, " + std::to_string(nw) + " at a warp operation");
    }
  }
}

// kernel<<<grid, block, smem>>>(args...), blocks in order, each block's threads cooperatively.
template <class K, class... A>
void launch(K kernel, dim3 grid, dim3 block, size_t smem_bytes, const A&... args) {
  State& s = S();
  if (block.y != 1 || block.z != 1) fail("only 1-D blocks are emulated");
  s.gridDim = grid;
  s.blockDim = block;
  s.body = [&]() { kernel(args...); };
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        s.blockIdx = dim3(x, y, z);
        s.smem.assign(smem_bytes + 128, 0xff);
        run_block(block.x);
      }
}

}  // namespace cuda_emu

#define threadIdx (cuda_emu::thread_idx())
#define blockIdx (cuda_emu::S().blockIdx)
#define blockDim (cuda_emu::S().blockDim)
#define gridDim (cuda_emu::S().gridDim)

inline void __syncthreads() { cuda_emu::wait_on(cuda_emu::Wait::Block); }
inline int __syncthreads_or(int pred) {
  auto& s = cuda_emu::S();
  s.th[s.cur].val = pred != 0;
  cuda_emu::wait_on(cuda_emu::Wait::BlockOr);
  return s.th[s.cur].result != 0;
}
inline void __syncwarp(unsigned = 0xffffffffu) { cuda_emu::wait_on(cuda_emu::Wait::Warp); }
template <typename V>
inline V __shfl_xor_sync(unsigned mask, V v, int lane_mask) {
  auto& s = cuda_emu::S();
  if (mask != 0xffffffffu) cuda_emu::fail("only full-warp shuffles are emulated");
  s.th[s.cur].val = double(v);
  s.th[s.cur].arg = lane_mask;
  cuda_emu::wait_on(cuda_emu::Wait::Shfl);
  return V(s.th[s.cur].result);
}
inline float atomicAdd(float* p, float v) {
  float old = *p;
  *p = old + v;
  return old;
}
inline double atomicAdd(double* p, double v) {
  double old = *p;
  *p = old + v;
  return old;
}
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline double __longlong_as_double(long long i) {
  double d;
  std::memcpy(&d, &i, 8);
  return d;
}

// ---------------------------------------------------------------------------------------------
// nvcuda::wmma, 16x16x16 only. Each emulated lane holds the whole fragment (elements in logical
// row-major order of the fragment's matrix), which keeps element-wise use layout-agnostic as on
// the GPU. store_matrix_sync writes, per lane, only the elements e with e % 32 == lane, so a
// read of another lane's part without a __syncwarp in between shows up under a reordered
// thread schedule. Alignment rules of the CUDA guide are enforced: 256-bit aligned pointers,
// leading dimensions a multiple of 16 bytes.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static constexpr int num_elements = 256;
  T x[256];
};

inline void check_ptr(const void* p, unsigned ldm, size_t elem) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) cuda_emu::fail("wmma: pointer not 256-bit aligned");
  if ((ldm * elem) % 16 != 0) cuda_emu::fail("wmma: ldm not a multiple of 16 bytes");
}

template <class Use, class T, class Layout>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  static_assert(!std::is_same_v<Use, accumulator>, "accumulator loads take a layout_t");
  check_ptr(p, ldm, sizeof(T));
  // matrix_a is M x K (rows i, columns k), matrix_b is K x N; both stored logically row-major.
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j)
      f.x[i * 16 + j] = std::is_same_v<Layout, row_major> ? p[i * ldm + j] : p[i + j * ldm];
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm, layout_t l) {
  check_ptr(p, ldm, 4);
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) f.x[i * 16 + j] = l == mem_row_major ? p[i * ldm + j] : p[i + j * ldm];
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t l) {
  check_ptr(p, ldm, 4);
  const unsigned lane = cuda_emu::S().cur % 32;
  for (int e = int(lane); e < 256; e += 32) {
    const int i = e / 16, j = e % 16;
    (l == mem_row_major ? p[i * ldm + j] : p[i + j * ldm]) = f.x[e];
  }
}
template <class Use, class T, class Layout>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, const T& v) {
  for (auto& e : f.x) e = v;
}
template <class T, class LA, class LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  float out[256];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      float s = c.x[i * 16 + j];
      for (int k = 0; k < 16; ++k) s += float(a.x[i * 16 + k]) * float(b.x[k * 16 + j]);
      out[i * 16 + j] = s;
    }
  std::memcpy(d.x, out, sizeof(out));
}
}  // namespace wmma
}  // namespace nvcuda
