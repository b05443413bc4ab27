// Tile kernels of the CPU masked cross-attention: a small GEMM, the online-softmax update, the
// probability recomputation from the log-sum-exp and the softmax backward, on raw float/double
// buffers.
//
// This header has no include guard on purpose: masked_cross_attention.cpp includes it twice,
// once for the baseline ISA and once inside `#pragma GCC target("avx2,fma")`, each time in a
// different namespace (FSRF_MCA_NS) so the two copies never share a symbol; the faster one is
// picked at run time. Everything here has internal linkage and it includes nothing itself, so no
// inline function of another header gets compiled with AVX2 and then shared with baseline code.
// (setup.py compiles for the baseline ISA; this keeps the wheel portable and still fast.)
//
// Before including, define FSRF_MCA_NS (namespace name), FSRF_MCA_MR (micro-kernel rows) and
// FSRF_MCA_FMA_F / FSRF_MCA_FMA_D (vector fused multiply-add, or a*b+c).

namespace FSRF_MCA_NS {
namespace {

#define FSRF_INL inline __attribute__((always_inline))

// GCC/Clang vector extensions: 32-byte vectors, one AVX register or two SSE/NEON ones.
typedef float vf __attribute__((vector_size(32)));
typedef double vd __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));
typedef int64_t vl __attribute__((vector_size(32)));

template <typename T> struct VecOf;
template <> struct VecOf<float> { typedef vf type; typedef vi mask; static constexpr int W = 8; };
template <> struct VecOf<double> { typedef vd type; typedef vl mask; static constexpr int W = 4; };

template <typename V, typename T>
FSRF_INL V vload(const T* p) {
  V r;
  __builtin_memcpy(&r, p, sizeof(V));
  return r;
}
template <typename V, typename T>
FSRF_INL void vstore(T* p, V x) {
  __builtin_memcpy(p, &x, sizeof(V));
}
// Broadcast written as a full initializer list: compiles to one vbroadcastss/sd (`V{} + x` keeps
// a real addition, since 0 + -0 = +0, and a lane-by-lane loop becomes a chain of inserts).
FSRF_INL vf vbroadcast(float x) { return vf{x, x, x, x, x, x, x, x}; }
FSRF_INL vd vbroadcast(double x) { return vd{x, x, x, x}; }
template <typename V, typename T>
FSRF_INL V vsplat(T x) {
  return vbroadcast(x);
}
FSRF_INL vf vfma(vf a, vf b, vf c) { return FSRF_MCA_FMA_F(a, b, c); }
FSRF_INL vd vfma(vd a, vd b, vd c) { return FSRF_MCA_FMA_D(a, b, c); }

// Lane-wise max/min. GCC turns the vector conditional into vmaxps/vminps (same NaN rule);
// other compilers get a select through bit operations.
template <typename V>
FSRF_INL V vmax(V a, V b) {
#if defined(__GNUC__) && !defined(__clang__)
  return a > b ? a : b;
#else
  auto m = a > b;
  typedef decltype(m) M;
  return (V)((m & (M)a) | (~m & (M)b));
#endif
}
template <typename V>
FSRF_INL V vmin(V a, V b) {
#if defined(__GNUC__) && !defined(__clang__)
  return a < b ? a : b;
#else
  auto m = a < b;
  typedef decltype(m) M;
  return (V)((m & (M)a) | (~m & (M)b));
#endif
}

template <typename T, typename V>
FSRF_INL T hmax(V x) {
  T r = x[0];
  for (int i = 1; i < VecOf<T>::W; ++i) r = x[i] > r ? x[i] : r;
  return r;
}
template <typename T, typename V>
FSRF_INL T hsum(V x) {
  T r = x[0];
  for (int i = 1; i < VecOf<T>::W; ++i) r += x[i];
  return r;
}

// e^x for float lanes, x <= 88. Callers pass x <= ~0 (scores minus the row maximum or the
// log-sum-exp), so only underflow needs care.
// Cody-Waite reduction x = n ln2 + r with |r| <= ln2/2, the classic degree-5 minimax polynomial
// for e^r (about 1 ulp), and 2^n assembled in the exponent bits. Lanes below -87 are flushed to
// 0: that is under float resolution relative to the row maximum's weight of 1.
FSRF_INL vf vexp(vf x) {
  const vf lo = vsplat<vf>(-87.0f);
  const vi under = x < lo;
  x = vmax(x, lo);
  const vf magic = vsplat<vf>(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const vf t = vfma(x, vsplat<vf>(1.44269504088896341f), magic);
  const vf n = t - magic;
  const vi ni = (vi)t - (vi)magic;
  vf r = vfma(n, vsplat<vf>(-0.693359375f), x);
  r = vfma(n, vsplat<vf>(2.12194440e-4f), r);
  vf y = vsplat<vf>(1.9875691500e-4f);
  y = vfma(y, r, vsplat<vf>(1.3981999507e-3f));
  y = vfma(y, r, vsplat<vf>(8.3334519073e-3f));
  y = vfma(y, r, vsplat<vf>(4.1665795894e-2f));
  y = vfma(y, r, vsplat<vf>(1.6666665459e-1f));
  y = vfma(y, r, vsplat<vf>(5.0000001201e-1f));
  y = vfma(y, r * r, r + 1.0f);
  const vi pow2 = (ni + 127) << 23;
  const vf res = y * (vf)pow2;
  return (vf)(~under & (vi)res);
}

// ---------------------------------------------------------------------------------------------
// GEMM: C[M x N] (=|+=) A[M x K] * B[K x N].
// A is addressed with arbitrary strides, so transposed operands (P^T, dS^T) need no copy.
// B is packed in column panels of NR = 2 vectors: panel p holds columns [p*NR, p*NR + NR) as K
// contiguous rows of NR values (zero-padded past N), and starts at Bp + p * panel_stride. Reading a
// panel is then one contiguous stream that stays in L1 while every row block of A passes by,
// instead of K rows a large power-of-two stride apart that all fall into the same cache sets.
// ---------------------------------------------------------------------------------------------

template <typename T, int MR>
FSRF_INL void micro(int64_t K, const T* A, int64_t a_rs, int64_t a_cs, const T* Bp, T* C, int64_t ldc,
                    bool accumulate) {
  typedef typename VecOf<T>::type V;
  constexpr int W = VecOf<T>::W;
  V c[MR][2];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    c[i][0] = accumulate ? vload<V>(C + i * ldc) : V{};
    c[i][1] = accumulate ? vload<V>(C + i * ldc + W) : V{};
  }
  for (int64_t k = 0; k < K; ++k) {
    const V b0 = vload<V>(Bp + k * 2 * W);
    const V b1 = vload<V>(Bp + k * 2 * W + W);
    const T* a = A + k * a_cs;
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const V ai = vsplat<V>(a[i * a_rs]);
      c[i][0] = vfma(ai, b0, c[i][0]);
      c[i][1] = vfma(ai, b1, c[i][1]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    vstore(C + i * ldc, c[i][0]);
    vstore(C + i * ldc + W, c[i][1]);
  }
}

template <typename T>
FSRF_INL void micro_rows(int mr, int64_t K, const T* A, int64_t a_rs, int64_t a_cs, const T* Bp, T* C,
                         int64_t ldc, bool acc) {
  // A partial row block goes to a fully unrolled kernel of exactly that many rows.
  switch (mr) {
    case 1: micro<T, 1>(K, A, a_rs, a_cs, Bp, C, ldc, acc); break;
    case 2: micro<T, 2>(K, A, a_rs, a_cs, Bp, C, ldc, acc); break;
    case 3: micro<T, 3>(K, A, a_rs, a_cs, Bp, C, ldc, acc); break;
#if FSRF_MCA_MR > 3
    case 4: micro<T, 4>(K, A, a_rs, a_cs, Bp, C, ldc, acc); break;
    case 5: micro<T, 5>(K, A, a_rs, a_cs, Bp, C, ldc, acc); break;
    case 6: micro<T, 6>(K, A, a_rs, a_cs, Bp, C, ldc, acc); break;
#endif
    default: break;
  }
}

template <typename T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t a_rs, int64_t a_cs, const T* Bp,
          int64_t panel_stride, T* C, int64_t ldc, bool accumulate) {
  constexpr int NR = 2 * VecOf<T>::W;
  constexpr int MR = FSRF_MCA_MR;
  for (int64_t j0 = 0; j0 < N; j0 += NR) {
    const T* bp = Bp + (j0 / NR) * panel_stride;
    const int64_t nr = N - j0 < NR ? N - j0 : NR;
    if (nr == NR) {
      int64_t i0 = 0;
      for (; i0 + MR <= M; i0 += MR)
        micro<T, MR>(K, A + i0 * a_rs, a_rs, a_cs, bp, C + i0 * ldc + j0, ldc, accumulate);
      if (i0 < M) micro_rows<T>(int(M - i0), K, A + i0 * a_rs, a_rs, a_cs, bp, C + i0 * ldc + j0, ldc, accumulate);
    } else {
      // Last, partial panel (zero-padded in Bp): compute full-width rows into a scratch tile.
      T tmp[MR * NR];
      for (int64_t i0 = 0; i0 < M; i0 += MR) {
        const int mr = int(M - i0 < MR ? M - i0 : MR);
        for (int i = 0; i < mr; ++i)
          for (int j = 0; j < NR; ++j) tmp[i * NR + j] = (accumulate && j < nr) ? C[(i0 + i) * ldc + j0 + j] : T(0);
        micro_rows<T>(mr, K, A + i0 * a_rs, a_rs, a_cs, bp, tmp, NR, true);
        for (int i = 0; i < mr; ++i)
          for (int j = 0; j < nr; ++j) C[(i0 + i) * ldc + j0 + j] = tmp[i * NR + j];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Softmax pieces. Rows are `cols` long with leading dimension `ld`.
// ---------------------------------------------------------------------------------------------

// max_j s[j] * scale, without writing the scaled scores back (the exp pass applies the scale).
template <typename T>
FSRF_INL T scaled_max(const T* s, int64_t cols, T scale) {
  typedef typename VecOf<T>::type V;
  constexpr int W = VecOf<T>::W;
  const V vs = vsplat<V>(scale);
  T mx = -__builtin_inf();
  int64_t j = 0;
  if (cols >= W) {
    V vm = vsplat<V>(T(-__builtin_inf()));
    for (; j + W <= cols; j += W) vm = vmax(vm, vload<V>(s + j) * vs);
    mx = hmax<T>(vm);
  }
  for (; j < cols; ++j) {
    const T x = s[j] * scale;
    mx = x > mx ? x : mx;
  }
  return mx;
}

// s <- exp(s * mul - sub) in place; returns the row sum.
FSRF_INL float exp_row(float* s, int64_t cols, float mul, float sub) {
  constexpr int W = 8;
  const vf vm = vsplat<vf>(mul), vsub = vsplat<vf>(sub);
  vf acc = {};
  int64_t j = 0;
  for (; j + W <= cols; j += W) {
    vf e = vexp(vfma(vload<vf>(s + j), vm, -vsub));
    vstore(s + j, e);
    acc += e;
  }
  float sum = hsum<float>(acc);
  if (j < cols) {
    // Tail through a padded vector so every probability comes from the same exp.
    float tmp[W];
    int64_t r = cols - j;
    for (int64_t t = 0; t < W; ++t) tmp[t] = t < r ? s[j + t] : 0.0f;
    vf e = vexp(vfma(vload<vf>(tmp), vm, -vsub));
    vstore(tmp, e);
    for (int64_t t = 0; t < r; ++t) {
      s[j + t] = tmp[t];
      sum += tmp[t];
    }
  }
  return sum;
}

FSRF_INL double exp_row(double* s, int64_t cols, double mul, double sub) {
  // Float64 is the accuracy/testing path: use the library exp.
  double sum = 0;
  for (int64_t j = 0; j < cols; ++j) {
    s[j] = __builtin_exp(s[j] * mul - sub);
    sum += s[j];
  }
  return sum;
}

// One key tile of the online softmax for `rows` query rows: updates the running maximum m (of the
// scaled scores) and normaliser l, rescales the output accumulator rows by
// exp(m_old - m_new) (unless `first`), and leaves P = exp(scale * s - m_new) in place of the raw scores.
template <typename T>
void softmax_update(T* S, int64_t rows, int64_t cols, int64_t ld, T scale, T* m, T* l, T* acc,
                    int64_t ldacc, int64_t dh, bool first) {
  for (int64_t i = 0; i < rows; ++i) {
    T* s = S + i * ld;
    T mx = scaled_max<T>(s, cols, scale);
    if (!first && m[i] > mx) mx = m[i];
    T sum = exp_row(s, cols, scale, mx);
    if (first) {
      l[i] = sum;
    } else {
      const T alpha = __builtin_exp(m[i] - mx);  // m[i] is finite after the first tile
      l[i] = l[i] * alpha + sum;
      if (alpha != T(1)) {
        T* a = acc + i * ldacc;
        for (int64_t d = 0; d < dh; ++d) a[d] *= alpha;
      }
    }
    m[i] = mx;
  }
}

// P = exp(S * scale - lse) in place (the backward's recomputation of the forward's weights).
// Returns nothing; `rowsum` (if not null) receives each row's sum of P.
template <typename T>
void probs_from_lse(T* S, int64_t rows, int64_t cols, int64_t ld, T scale, const T* lse, T* rowsum) {
  for (int64_t i = 0; i < rows; ++i) {
    const T sum = exp_row(S + i * ld, cols, scale, lse[i]);
    if (rowsum) rowsum[i] += sum;
  }
}

// dP <- P * (dP - D) * scale in place: the softmax backward, with the score scale folded in.
template <typename T>
void softmax_bwd(const T* P, T* dP, int64_t rows, int64_t cols, int64_t ld, const T* D, T scale) {
  typedef typename VecOf<T>::type V;
  constexpr int W = VecOf<T>::W;
  const V vs = vsplat<V>(scale);
  for (int64_t i = 0; i < rows; ++i) {
    const T* p = P + i * ld;
    T* g = dP + i * ld;
    const V vd_ = vsplat<V>(D[i]);
    int64_t j = 0;
    for (; j + W <= cols; j += W)
      vstore(g + j, vload<V>(p + j) * (vload<V>(g + j) - vd_) * vs);
    for (; j < cols; ++j) g[j] = p[j] * (g[j] - D[i]) * scale;
  }
}

#undef FSRF_INL

}  // namespace
}  // namespace FSRF_MCA_NS
