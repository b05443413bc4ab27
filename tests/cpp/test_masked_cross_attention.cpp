// C++ test of fsrf::masked_cross_attention_{fwd,bwd} through the dispatcher, against a naive
// double-precision computation written with plain loops (independent of the kernel's tiling,
// online softmax and saved log-sum-exp). Run by ctest; exits non-zero on the first failure.

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
    ++failures;
  }
}

std::vector<double> to_vec(const at::Tensor& t) {
  at::Tensor c = t.to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(a[i] - b[i]);
    if (!(d <= m)) m = d;  // NaN propagates as a failure
  }
  return m;
}

struct Naive {
  std::vector<double> out, dq, dk, dv;
};

// Softmax attention and its gradients, one (sample, head, query) at a time, over observed keys.
Naive naive(const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
            const std::vector<bool>& mask, const std::vector<double>& dout, int64_t B, int64_t H, int64_t Tq,
            int64_t Tk, int64_t D, double scale) {
  Naive r;
  r.out.assign(B * H * Tq * D, 0.0);
  r.dq.assign(B * H * Tq * D, 0.0);
  r.dk.assign(B * H * Tk * D, 0.0);
  r.dv.assign(B * H * Tk * D, 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t qo = ((b * H + h) * Tq + i) * D;
        std::vector<double> s(Tk, 0.0), p(Tk, 0.0), dp(Tk, 0.0);
        double mx = -std::numeric_limits<double>::infinity();
        bool any = false;
        for (int64_t j = 0; j < Tk; ++j) {
          if (!mask[b * Tk + j]) continue;
          any = true;
          const int64_t ko = ((b * H + h) * Tk + j) * D;
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += q[qo + d] * k[ko + d];
          s[j] = dot * scale;
          mx = std::max(mx, s[j]);
        }
        if (!any) continue;  // fully masked row: out = 0, grads = 0
        double z = 0;
        for (int64_t j = 0; j < Tk; ++j)
          if (mask[b * Tk + j]) z += std::exp(s[j] - mx);
        double pdp = 0;
        for (int64_t j = 0; j < Tk; ++j) {
          if (!mask[b * Tk + j]) continue;
          const int64_t vo = ((b * H + h) * Tk + j) * D;
          p[j] = std::exp(s[j] - mx) / z;
          for (int64_t d = 0; d < D; ++d) {
            r.out[qo + d] += p[j] * v[vo + d];
            dp[j] += dout[qo + d] * v[vo + d];
            r.dv[vo + d] += p[j] * dout[qo + d];
          }
          pdp += p[j] * dp[j];
        }
        for (int64_t j = 0; j < Tk; ++j) {
          if (!mask[b * Tk + j]) continue;
          const int64_t ko = ((b * H + h) * Tk + j) * D;
          const double ds = p[j] * (dp[j] - pdp) * scale;
          for (int64_t d = 0; d < D; ++d) {
            r.dq[qo + d] += ds * k[ko + d];
            r.dk[ko + d] += ds * q[qo + d];
          }
        }
      }
  return r;
}

void run_case(at::ScalarType dtype, int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D, bool with_mask,
              double tol) {
  static auto fwd = c10::Dispatcher::singleton()
                        .findSchemaOrThrow("fsrf::masked_cross_attention_fwd", "")
                        .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                  const at::Tensor&, const std::optional<at::Tensor>&,
                                                                  double)>();
  static auto bwd = c10::Dispatcher::singleton()
                        .findSchemaOrThrow("fsrf::masked_cross_attention_bwd", "")
                        .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                            const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&, double)>();
  const std::string name = std::string(c10::toString(dtype)) + " B" + std::to_string(B) + " H" + std::to_string(H) +
                           " Tq" + std::to_string(Tq) + " Tk" + std::to_string(Tk) + " D" + std::to_string(D) +
                           (with_mask ? " masked" : " unmasked");
  const auto opt = at::TensorOptions().dtype(dtype);
  at::Tensor q = at::randn({B, H, Tq, D}, opt), k = at::randn({B, H, Tk, D}, opt), v = at::randn({B, H, Tk, D}, opt);
  at::Tensor dout = at::randn({B, H, Tq, D}, opt);
  std::vector<bool> mask(B * Tk, true);
  std::optional<at::Tensor> mask_t;
  if (with_mask) {
    at::Tensor m = at::rand({B, Tk}) > 0.4;
    m.select(0, 0).fill_(false);  // sample 0: the whole key modality is missing
    mask_t = m;
    auto mv = to_vec(m);
    for (int64_t i = 0; i < B * Tk; ++i) mask[i] = mv[i] != 0.0;
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  Naive ref = naive(to_vec(q), to_vec(k), to_vec(v), mask, to_vec(dout), B, H, Tq, Tk, D, scale);

  auto [out, lse] = fwd.call(q, k, v, mask_t, scale);
  expect(out.scalar_type() == dtype && out.sizes() == q.sizes(), name + ": out dtype/shape");
  expect(lse.scalar_type() == at::kFloat && lse.dim() == 3, name + ": lse is float32 (B,H,Tq)");
  const double e_out = max_abs_diff(to_vec(out), ref.out);
  expect(e_out <= tol, name + ": forward max error " + std::to_string(e_out));
  if (with_mask) {
    expect(out.select(0, 0).abs().max().item<double>() == 0.0, name + ": fully masked sample gives out = 0");
    expect(lse.select(0, 0).isinf().all().item<bool>() && (lse.select(0, 0) > 0).all().item<bool>(),
           name + ": fully masked sample gives lse = +inf");
  }
  auto [dq, dk, dv] = bwd.call(dout, q, k, v, mask_t, out, lse, scale);
  const double e_dq = max_abs_diff(to_vec(dq), ref.dq);
  const double e_dk = max_abs_diff(to_vec(dk), ref.dk);
  const double e_dv = max_abs_diff(to_vec(dv), ref.dv);
  expect(e_dq <= 4 * tol, name + ": dq max error " + std::to_string(e_dq));
  expect(e_dk <= 4 * tol, name + ": dk max error " + std::to_string(e_dk));
  expect(e_dv <= 4 * tol, name + ": dv max error " + std::to_string(e_dv));
  if (with_mask) {
    expect(dq.select(0, 0).abs().max().item<double>() == 0.0, name + ": fully masked sample gives dq = 0");
  }
  std::printf("%-45s out %.1e  dq %.1e  dk %.1e  dv %.1e\n", name.c_str(), e_out, e_dq, e_dk, e_dv);
}

}  // namespace

int main() {
  at::manual_seed(0);
  for (bool masked : {true, false}) {
    run_case(at::kDouble, 3, 2, 5, 7, 8, masked, 1e-12);
    run_case(at::kDouble, 2, 1, 70, 300, 13, masked, 1e-12);  // several query and key tiles
    run_case(at::kFloat, 3, 2, 33, 1, 16, masked, 1e-5);      // Tk = 1
    run_case(at::kFloat, 2, 2, 65, 257, 64, masked, 2e-5);
  }
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("all masked_cross_attention checks passed\n");
  return 0;
}
