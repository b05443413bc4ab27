// Runs the CUDA masked cross-attention kernels (csrc/masked_cross_attention_cuda.cuh and
// csrc/masked_cross_attention_wmma_cuda.cuh) under the host emulation of cuda_emu.h, for
// tests/test_masked_cross_attention_cuda.py.
//
// Usage: mca_emu DIR. DIR/meta.txt holds
//   B H Tq Tk Dh dtype scale has_mask smem_limit order seed kernel
// (dtype one of f32 f64 f16 bf16; order 0/1/2 = ascending/descending/random thread order; kernel
// simt = the CUDA-core kernels, wmma = the tensor-core kernels, f16/bf16 only), and
// DIR/{q,k,v,dout}.bin (raw little-endian elements of dtype, contiguous), DIR/mask.bin (B*Tk
// bytes, when has_mask). Writes DIR/{out,dq,dk,dv}.bin in dtype and DIR/lse.bin (float32), and
// prints the tile sizes it used. Outputs start poisoned (NaN / all-ones bits), so an element the
// kernels never write shows up in the comparison.
#include "cuda_emu.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#define FSRF_MCA_DEVICE inline
#include "masked_cross_attention_cuda.cuh"
#include "masked_cross_attention_wmma_cuda.cuh"

#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

using namespace fsrf::mca;

template <typename X>
static std::vector<X> read_bin(const std::string& path, size_t n) {
  std::vector<X> v(n);
  std::ifstream f(path, std::ios::binary);
  if (!f) cuda_emu::fail("cannot open " + path);
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(n * sizeof(X)));
  if (size_t(f.gcount()) != n * sizeof(X)) cuda_emu::fail("short file " + path);
  return v;
}
template <typename X>
static void write_bin(const std::string& path, const std::vector<X>& v) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * sizeof(X)));
}

struct Meta {
  int B, H, Tq, Tk, Dh;
  std::string dtype;
  double scale;
  int has_mask, smem_limit, order, seed;
  std::string kernel;
};

template <typename T, typename acc_t>
static void run(const std::string& dir, const Meta& m) {
  const size_t nq = size_t(m.B) * m.H * m.Tq * m.Dh, nk = size_t(m.B) * m.H * m.Tk * m.Dh;
  const size_t rows = size_t(m.B) * m.H * m.Tq;
  auto q = read_bin<T>(dir + "/q.bin", nq), k = read_bin<T>(dir + "/k.bin", nk),
       v = read_bin<T>(dir + "/v.bin", nk), dout = read_bin<T>(dir + "/dout.bin", nq);
  std::vector<unsigned char> maskb;
  if (m.has_mask) maskb = read_bin<unsigned char>(dir + "/mask.bin", size_t(m.B) * m.Tk);
  std::unique_ptr<bool[]> mask;
  if (m.has_mask) {
    mask.reset(new bool[maskb.size()]);
    for (size_t i = 0; i < maskb.size(); ++i) mask[i] = maskb[i] != 0;
  }
  T poison;
  std::memset(&poison, 0xff, sizeof(T));
  std::vector<T> out(nq, poison), dk(nk, poison), dv(nk, poison), dq(nq, poison);
  std::vector<float> lse(rows, std::nanf(""));
  std::vector<acc_t> dvec(rows, acc_t(std::nan(""))), dq_acc(nq, acc_t(0));

  auto launch = [&](auto kernel, dim3 grid, dim3 block, int smem, const auto&... args) {
    if (smem > m.smem_limit) cuda_emu::fail("kernel asks for more shared memory than the limit");
    std::printf("launch grid=%u block=%u smem=%d\n", grid.x, block.x, smem);
    cuda_emu::launch(kernel, grid, block, size_t(smem), args...);
  };
  const bool wmma = m.kernel == "wmma";
  if (wmma && !std::is_same_v<acc_t, float>) cuda_emu::fail("the tensor-core kernels take float16/bfloat16");
  // Same rule as the .cu: 16-byte accesses when Dh % 8 == 0 (vectors are 16-byte aligned here).
  const bool vec = m.Dh % 8 == 0;
  dispatch_head_dim(m.Dh, [&](auto dc) {
    constexpr int D = decltype(dc)::value;
    FwdArgs<T, acc_t> fa{q.data(), k.data(), v.data(), mask.get(), out.data(), lse.data(),
                         m.B, m.H, m.Tq, m.Tk, m.Dh, acc_t(m.scale)};
    std::printf("D=%d fwd_tile=%d bwd_tile=%d key_tiles=%d\n", D, pick_tile<FwdCfg, acc_t, D>(m.smem_limit),
                pick_tile<BwdCfg, acc_t, D>(m.smem_limit), backward_key_tiles<acc_t, D>(m.Tk, m.smem_limit));
    BwdArgs<T, acc_t> ba{dout.data(), q.data(), k.data(), v.data(), mask.get(), out.data(), lse.data(),
                         dvec.data(), dq_acc.data(), dk.data(), dv.data(),
                         m.B, m.H, m.Tq, m.Tk, m.Dh, acc_t(m.scale)};
    if constexpr (std::is_same_v<acc_t, float> && !std::is_same_v<T, float>) {
      if (wmma) {
        std::printf("kernel=wmma vec=%d\n", int(vec));
        forward_wmma<T, D>(fa, vec, launch);
        backward_wmma<T, D>(ba, vec, launch);
        return;
      }
    }
    std::printf("kernel=simt\n");
    forward<T, acc_t, D>(fa, m.smem_limit, launch);
    backward<T, acc_t, D>(ba, m.smem_limit, launch);
  });
  for (size_t i = 0; i < nq; ++i) dq[i] = from_acc<T>(dq_acc[i]);
  write_bin(dir + "/out.bin", out);
  write_bin(dir + "/lse.bin", lse);
  write_bin(dir + "/dq.bin", dq);
  write_bin(dir + "/dk.bin", dk);
  write_bin(dir + "/dv.bin", dv);
  std::printf("block barriers: %lld\n", cuda_emu::S().barriers);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  std::ifstream f(dir + "/meta.txt");
  Meta m;
  if (!(f >> m.B >> m.H >> m.Tq >> m.Tk >> m.Dh >> m.dtype >> m.scale >> m.has_mask >> m.smem_limit >>
        m.order >> m.seed >> m.kernel)) {
    std::fprintf(stderr, "bad meta.txt\n");
    return 2;
  }
  if (m.Dh < 1 || m.Dh > kMaxHeadDim) {
    std::fprintf(stderr, "Dh out of range\n");
    return 2;
  }
  cuda_emu::S().order = m.order;
  cuda_emu::S().rng.seed(unsigned(m.seed));
  if (m.dtype == "f32") run<float, float>(dir, m);
  else if (m.dtype == "f64") run<double, double>(dir, m);
  else if (m.dtype == "f16") run<c10::Half, float>(dir, m);
  else if (m.dtype == "bf16") run<c10::BFloat16, float>(dir, m);
  else {
    std::fprintf(stderr, "bad dtype\n");
    return 2;
  }
  return 0;
}
