// CUDA kernels of fsrf::masked_cross_attention_fwd / _bwd (schemas in masked_cross_attention.cpp).
//
//   fwd(q (B,H,Tq,Dh), k (B,H,Tk,Dh), v (B,H,Tk,Dh), key_mask bool (B,Tk) or None, scale)
//       -> out (B,H,Tq,Dh) in q's dtype, lse float32 (B,H,Tq) (natural log; +inf on rows of a
//          sample with no observed key, whose output is 0)
//   bwd(grad_out, q, k, v, key_mask, out, lse, scale) -> grad_q, grad_k, grad_v
//
// float32, float64, float16 and bfloat16; accumulation in float32 (float64 for float64). Head
// dims 1..128 (rounded up to 32, 64 or 128 inside the kernel; padding lanes hold zeros, so odd
// sizes such as 33 cost as much as the next width). Two kernel families, both FlashAttention-2
// style with the same masking conventions:
//   * CUDA-core kernels (masked_cross_attention_cuda.cuh): every dtype, every GPU;
//   * tensor-core kernels (masked_cross_attention_wmma_cuda.cuh, WMMA 16x16x16): float16 and
//     bfloat16 on sm_80+ when their tiles fit in shared memory (all head dims on A100/H100).
//     FSRF_CUDA_ATTENTION=simt in the environment selects the CUDA-core kernels instead.
// The device code and its launch order live in those headers (what both families use in
// masked_cross_attention_common_cuda.cuh), shared with the CPU emulation test
// (tests/cpp/cuda_emu), which runs them on host threads.
//
// Tile sizes. The model's attention (MSA shape B=32, H=8, T=50, Dh=32) has one 64-row tile per
// (sample, head): the forward grid is B*H = 256 blocks and the backward grid 256 blocks, about
// two blocks per SM on a 132-SM H100, every SM busy. Smaller tiles would add blocks but each
// block's work is then too small to cover its load latency, and 64 wastes at most 14 padded rows
// here. Long sequences (T = 1024) give B*H*16 blocks. CUDA-core 64x64 tiles need up to 170 KB of
// shared memory (backward, Dh = 128): where the device offers less per block (sm_80: 163 KB,
// sm_86/89: 99 KB) and for float64 those kernels use 32x32 tiles. The tensor-core kernels use
// 64x64 tiles (up to 157 KB) and fall back to the CUDA-core ones where these do not fit.
//
// Determinism: the forward is deterministic. The backward adds each key tile's dQ share with
// atomics; with Tk <= one key tile (64 keys; 32 for float64 or narrow-memory GPUs) each dQ
// element gets a single addition onto zero and the result is bitwise reproducible. With more key
// tiles the order of additions varies, results differ in the last bits between runs, and
// torch.use_deterministic_algorithms(True) raises (warn_only=True: warns) through
// at::globalContext().alertNotDeterministic.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <utility>

#include "masked_cross_attention_cuda.cuh"
#include "masked_cross_attention_wmma_cuda.cuh"

namespace fsrf {
namespace mca {
namespace {

// Queried once per (attribute, device), so that after the first call an op makes no runtime API
// call but its launches (CUDA-graph capture safe).
int device_attribute(cudaDeviceAttr attr, int device) {
  static std::mutex mu;
  static std::map<std::pair<int, int>, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(int(attr), device);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int v = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&v, attr, device));
  cache[key] = v;
  return v;
}

// Largest dynamic shared memory one block may use on `device` (the opt-in limit).
int smem_limit(int device) { return device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, device); }

int compute_major(int device) { return device_attribute(cudaDevAttrComputeCapabilityMajor, device); }

// Launches `kernel` on the current stream; raises the dynamic shared memory limit of the kernel
// once per (kernel, device) when it needs more than the default 48 KB.
struct Launcher {
  int device;
  cudaStream_t stream;

  template <typename K, typename... A>
  void operator()(K kernel, dim3 grid, dim3 block, int smem, const A&... args) const {
    if (grid.x == 0) return;
    if (smem > 48 * 1024) {
      static std::mutex mu;
      static std::set<std::pair<const void*, int>> raised;
      std::lock_guard<std::mutex> lock(mu);
      const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), device);
      if (raised.find(key) == raised.end()) {
        C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        raised.insert(key);
      }
    }
    kernel<<<grid, block, size_t(smem), stream>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

void check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const std::optional<at::Tensor>& key_mask) {
  TORCH_CHECK(q.is_cuda() && k.is_cuda() && v.is_cuda(), op, ": q, k and v must be CUDA tensors");
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op,
              ": q, k, v must be 4-D (B, H, T, Dh); got q ", q.sizes(), ", k ", k.sizes(), ", v ", v.sizes());
  TORCH_CHECK(k.sizes() == v.sizes(), op, ": k and v must have the same shape; got ", k.sizes(), " and ",
              v.sizes());
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3), op,
              ": q ", q.sizes(), " and k ", k.sizes(), " must agree in B, H and Dh");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), op,
              ": q, k, v must share a dtype; got ", q.scalar_type(), ", ", k.scalar_type(), ", ",
              v.scalar_type());
  TORCH_CHECK(q.device() == k.device() && q.device() == v.device(), op, ": q, k, v must be on one device");
  const auto st = q.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16, op,
              ": dtype must be float32, float64, float16 or bfloat16; got ", st);
  TORCH_CHECK(q.size(3) >= 1 && q.size(3) <= kMaxHeadDim, op, ": head dim must be in [1, ", kMaxHeadDim,
              "] for the CUDA kernels; got ", q.size(3));
  TORCH_CHECK(q.size(2) < (int64_t(1) << 31) && k.size(2) < (int64_t(1) << 31), op, ": sequence too long");
  if (key_mask.has_value() && key_mask->defined()) {
    const auto& m = *key_mask;
    TORCH_CHECK(m.scalar_type() == at::kBool, op, ": key_mask must be bool; got ", m.scalar_type());
    TORCH_CHECK(m.dim() == 2 && m.size(0) == k.size(0) && m.size(1) == k.size(2), op,
                ": key_mask must have shape (B, Tk) = (", k.size(0), ", ", k.size(2), "); got ", m.sizes());
    TORCH_CHECK(m.device() == q.device(), op, ": key_mask must be on q's device ", q.device(), "; got ",
                m.device());
  }
}

const bool* mask_ptr(const std::optional<at::Tensor>& key_mask, at::Tensor& holder) {
  if (!key_mask.has_value() || !key_mask->defined()) return nullptr;
  holder = key_mask->contiguous();
  return holder.data_ptr<bool>();
}

int64_t blocks_for(int64_t B, int64_t H, int64_t T, int tile) { return B * H * ((T + tile - 1) / tile); }

// FSRF_CUDA_ATTENTION=simt forces the CUDA-core kernels for float16/bfloat16 too (read once).
bool simt_forced() {
  static const bool forced = [] {
    const char* e = std::getenv("FSRF_CUDA_ATTENTION");
    return e != nullptr && std::string(e) == "simt";
  }();
  return forced;
}

// The dtypes the tensor-core kernels take; only for these are those kernels instantiated.
template <typename scalar_t>
constexpr bool wmma_dtype = std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>;

// Tensor cores for float16/bfloat16 on sm_80+ when the tiles fit in shared memory.
template <typename scalar_t, int D>
bool use_tensor_cores(int device, int limit, int smem_bytes) {
  return wmma_dtype<scalar_t> && !simt_forced() && compute_major(device) >= 8 && smem_bytes <= limit;
}

bool aligned16(std::initializer_list<const at::Tensor*> ts) {
  for (const at::Tensor* t : ts)
    if (reinterpret_cast<uintptr_t>(t->data_ptr()) % 16 != 0) return false;
  return true;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> masked_cross_attention_fwd_cuda(const at::Tensor& q_, const at::Tensor& k_,
                                                                   const at::Tensor& v_,
                                                                   const std::optional<at::Tensor>& key_mask,
                                                                   double scale) {
  check_inputs("masked_cross_attention_fwd", q_, k_, v_, key_mask);
  const c10::cuda::CUDAGuard guard(q_.device());
  const at::Tensor q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous();
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), Dh = q.size(3);
  at::Tensor out = at::empty_like(q);
  at::Tensor lse = at::empty({B, H, Tq}, q.options().dtype(at::kFloat));
  if (out.numel() == 0) return {out, lse.fill_(std::numeric_limits<float>::infinity())};
  if (Tk == 0) return {out.zero_(), lse.fill_(std::numeric_limits<float>::infinity())};
  at::Tensor mask_holder;
  const bool* mask = mask_ptr(key_mask, mask_holder);
  const int device = q.get_device();
  const Launcher launch{device, c10::cuda::getCurrentCUDAStream(device).stream()};
  const int limit = smem_limit(device);
  TORCH_CHECK(blocks_for(B, H, Tq, 32) < (int64_t(1) << 31), "masked_cross_attention_fwd: too many blocks");

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "masked_cross_attention_fwd", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const FwdArgs<scalar_t, acc_t> a{q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                                     mask, out.data_ptr<scalar_t>(), lse.data_ptr<float>(),
                                     int(B), int(H), int(Tq), int(Tk), int(Dh), acc_t(scale)};
    dispatch_head_dim(int(Dh), [&](auto dc) {
      constexpr int D = decltype(dc)::value;
      if constexpr (wmma_dtype<scalar_t>) {
        if (use_tensor_cores<scalar_t, D>(device, limit, wmma_fwd_smem<D>())) {
          forward_wmma<scalar_t, D>(a, Dh % 8 == 0 && aligned16({&q, &k, &v}), launch);
          return;
        }
      }
      const int need = smem_needed<FwdCfg, acc_t, D>(limit);
      TORCH_CHECK(need <= limit, "masked_cross_attention_fwd: this GPU offers ", limit,
                  " bytes of shared memory per block; the kernel needs ", need);
      forward<scalar_t, acc_t, D>(a, limit, launch);
    });
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_cross_attention_bwd_cuda(
    const at::Tensor& grad_out_, const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_,
    const std::optional<at::Tensor>& key_mask, const at::Tensor& out_, const at::Tensor& lse_, double scale) {
  check_inputs("masked_cross_attention_bwd", q_, k_, v_, key_mask);
  TORCH_CHECK(grad_out_.sizes() == q_.sizes() && out_.sizes() == q_.sizes(),
              "masked_cross_attention_bwd: grad_out and out must have q's shape ", q_.sizes(), "; got ",
              grad_out_.sizes(), " and ", out_.sizes());
  TORCH_CHECK(grad_out_.scalar_type() == q_.scalar_type() && out_.scalar_type() == q_.scalar_type(),
              "masked_cross_attention_bwd: grad_out and out must have q's dtype ", q_.scalar_type());
  TORCH_CHECK(lse_.scalar_type() == at::kFloat && lse_.dim() == 3 && lse_.size(0) == q_.size(0) &&
                  lse_.size(1) == q_.size(1) && lse_.size(2) == q_.size(2),
              "masked_cross_attention_bwd: lse must be float32 of shape (B, H, Tq); got ", lse_.scalar_type(),
              " ", lse_.sizes());
  TORCH_CHECK(grad_out_.device() == q_.device() && out_.device() == q_.device() && lse_.device() == q_.device(),
              "masked_cross_attention_bwd: all tensors must be on ", q_.device());
  const c10::cuda::CUDAGuard guard(q_.device());
  const at::Tensor q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous();
  const at::Tensor dout = grad_out_.contiguous(), out = out_.contiguous(), lse = lse_.contiguous();
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), Dh = q.size(3);
  const bool dbl = q.scalar_type() == at::kDouble;
  const auto acc_dtype = dbl ? at::kDouble : at::kFloat;
  // dQ is summed over key tiles in float32 (float64); float32/float64 inputs sum in place.
  at::Tensor dq_acc = at::zeros(q.sizes(), q.options().dtype(acc_dtype));
  at::Tensor dk = at::empty_like(k), dv = at::empty_like(v);
  if (q.numel() == 0 || k.numel() == 0) {
    return {dq_acc.to(q.scalar_type()), dk.zero_(), dv.zero_()};
  }
  at::Tensor dvec = at::empty({B, H, Tq}, q.options().dtype(acc_dtype));
  at::Tensor mask_holder;
  const bool* mask = mask_ptr(key_mask, mask_holder);
  const int device = q.get_device();
  const Launcher launch{device, c10::cuda::getCurrentCUDAStream(device).stream()};
  const int limit = smem_limit(device);
  TORCH_CHECK(blocks_for(B, H, Tk, 32) < (int64_t(1) << 31) && B * H * Tq / 8 < (int64_t(1) << 31),
              "masked_cross_attention_bwd: too many blocks");

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "masked_cross_attention_bwd", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const BwdArgs<scalar_t, acc_t> a{dout.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(),
                                     v.data_ptr<scalar_t>(), mask, out.data_ptr<scalar_t>(), lse.data_ptr<float>(),
                                     dvec.data_ptr<acc_t>(), dq_acc.data_ptr<acc_t>(), dk.data_ptr<scalar_t>(),
                                     dv.data_ptr<scalar_t>(), int(B), int(H), int(Tq), int(Tk), int(Dh),
                                     acc_t(scale)};
    dispatch_head_dim(int(Dh), [&](auto dc) {
      constexpr int D = decltype(dc)::value;
      bool tensor_cores = false;
      if constexpr (wmma_dtype<scalar_t>) {
        tensor_cores = use_tensor_cores<scalar_t, D>(device, limit, wmma_bwd_smem<D>());
      }
      const int need = tensor_cores ? wmma_bwd_smem<D>() : smem_needed<BwdCfg, acc_t, D>(limit);
      TORCH_CHECK(need <= limit, "masked_cross_attention_bwd: this GPU offers ", limit,
                  " bytes of shared memory per block; the kernel needs ", need);
      const int key_tiles = tensor_cores ? int((Tk + 63) / 64) : backward_key_tiles<acc_t, D>(int(Tk), limit);
      if (key_tiles > 1) {
        at::globalContext().alertNotDeterministic(
            "masked_cross_attention_bwd (CUDA) with more than one key tile: dQ is summed with atomics");
      }
      if constexpr (wmma_dtype<scalar_t>) {
        if (tensor_cores) {
          backward_wmma<scalar_t, D>(a, Dh % 8 == 0 && aligned16({&q, &k, &v, &dout}), launch);
          return;
        }
      }
      backward<scalar_t, acc_t, D>(a, limit, launch);
    });
  });
  at::Tensor dq = q.scalar_type() == acc_dtype ? dq_acc : dq_acc.to(q.scalar_type());
  return {dq, dk, dv};
}

TORCH_LIBRARY_IMPL(fsrf, CUDA, m) {
  m.impl("masked_cross_attention_fwd", &masked_cross_attention_fwd_cuda);
  m.impl("masked_cross_attention_bwd", &masked_cross_attention_bwd_cuda);
}

}  // namespace mca
}  // namespace fsrf
