// Fused attention with explicit hyperbolic scores on Lorentz coordinates, for the CPU.
//
// For each (batch x head) slice b, query i and key j:
//   G_ij   = <qJ_i, k_j>                 (qJ = q with its space coordinates negated), float64
//   g - 1  = c G_ij - 1, recomputed as (c/2)(|dq_s - dk_s|^2 - (dq_0 - dk_0)^2) where the
//            product cancels (g - 1 <= 2^-24 c q_0 k_0), as poincare._fused.lorentz_cosh_minus_one
//   s_ij   = -beta_b f(d_ij) + mask_ij, d = acosh(g)/sqrt(c), f = d, d^2 or g - 1, in float32
//   o_i    = sum_j z_ij softmax_j(s_ij) v_j, z_ij = keep_ij / (1 - p) with dropout p (else 1)
// The forward pass walks key blocks with an online softmax and keeps o and the log-sum-exp per
// row; the backward pass recomputes each block's scores and applies the closed-form softmax
// gradient. Dropout draws keep_ij from a counter-based hash of (seed, slice, row, key), so the
// backward pass regenerates the forward pass's mask instead of storing it. No N x M matrix is
// held: a thread's working set is a few R x KB blocks. The values v (and o) are float or
// double: double ones (far-out points, whose Lorentz coordinates are huge) keep their sums and
// gradients in double. The products
// run in BLAS (the sgemm_/dgemm_ that libtorch_cpu exports), the pointwise work on ATen's
// vectorised types.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

extern "C" {
void sgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc);
void dgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b,
            const int* ldb, const double* beta, double* c, const int* ldc);
}

namespace {

using VecF = at::vec::Vectorized<float>;
constexpr int64_t R = 32;    // query rows per block
constexpr int64_t KB = 256;  // keys per block
constexpr double CLOSE = 5.9604644775390625e-08;  // 2^-24
constexpr float TINY = 1e-12f;
enum Score : int64_t { DISTANCE = 0, SQUARED = 1, COSH = 2 };


// Row-major C (m x n) = alpha op(A) op(B) + beta C, op(A) m x k, op(B) k x n.
template <typename T>
void mm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
        const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  const char opa = ta ? 'T' : 'N', opb = tb ? 'T' : 'N';
  const int im = static_cast<int>(m), in = static_cast<int>(n), ik = static_cast<int>(k);
  const int ila = static_cast<int>(lda), ilb = static_cast<int>(ldb), ilc = static_cast<int>(ldc);
  // column-major: C^T = op(B)^T op(A)^T
  if constexpr (std::is_same_v<T, float>) {
    sgemm_(&opb, &opa, &in, &im, &ik, &alpha, b, &ilb, a, &ila, &beta, c, &ilc);
  } else {
    dgemm_(&opb, &opa, &in, &im, &ik, &alpha, b, &ilb, a, &ila, &beta, c, &ilc);
  }
}

struct Args {
  const double* q;   // (BH, N, W) with space coordinates negated
  const double* k;   // (BH, M, W)
  const double* k0;  // (BH, M): the keys' time coordinates, contiguous
  const void* v;     // (BH, M, V): float or double (the value type V of the templates)
  const float* beta; // (BH)
  const float* mask; // additive, addressed by mask_base[b] + i * mask_sn + j * mask_sm, or null
  const int64_t* mask_base;
  int64_t mask_sn, mask_sm;
  int64_t bh, n, m, w, vd;
  double c;
  int64_t score;
  bool causal;
  float keep_scale;     // 1 / (1 - p), or 1 without dropout
  uint32_t threshold;   // a key is dropped where its hash is below p 2^32 (0: no dropout)
  uint64_t seed;
};

// A 32-bit mixing function (xor-shift-multiply rounds, full avalanche): the dropout hash.
inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// The 64-bit mix of splitmix64, for the key of one row of one slice.
inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// z_ij for keys j0..j0+kb of row i of slice b: 0 (dropped) or 1/(1-p), the same in both
// passes: hash(row key, j) with the row key a 64-bit mix of (seed, b, i).
void dropout_factors(const Args& a, int64_t b, int64_t i, int64_t j0, int64_t kb,
                     float* __restrict z) {
  const uint64_t row = mix64(a.seed ^ mix64(static_cast<uint64_t>(b) * 0x100000001b3ULL +
                                            static_cast<uint64_t>(i)));
  const uint32_t lo = static_cast<uint32_t>(row), hi = static_cast<uint32_t>(row >> 32);
  const uint32_t t = a.threshold;
  const float keep = a.keep_scale;
  for (int64_t jj = 0; jj < kb; ++jj) {
    const uint32_t h = mix32(lo ^ mix32(hi + static_cast<uint32_t>(j0 + jj)));
    z[jj] = h >= t ? keep : 0.0f;
  }
}

// Per-block buffers of one thread: the Gram entries (float64), and per element the score s
// (mask included), g - 1 as float (x), sinh(sqrt(c) d) (sh), the distance d (or g - 1 for the
// cosh score) and G in float (for the curvature's gradient).
struct Block {
  std::vector<double> gram, gm1;
  std::vector<float> s, x, sh, d, gf, z;
  Block()
      : gram(R * KB), gm1(KB), s(R * KB), x(R * KB), sh(R * KB), d(R * KB), gf(R * KB), z(KB) {}
};

// g - 1 (clamped at 0), sqrt(g - 1) (taken before the rounding to float: scaled by 2^100
// below 2^-60, so that a g - 1 below float's normal range keeps its distance) and G, in float.
void convert_block(const double* __restrict gm1, const double* __restrict gram,
                   float* __restrict root, float* __restrict x, float* __restrict gf,
                   int64_t kb) {
  for (int64_t jj = 0; jj < kb; ++jj) {
    const double g = gm1[jj] > 0.0 ? gm1[jj] : 0.0;
    const double up = g < 8.673617379884035e-19 ? 1.2676506002282294e+30 : 1.0;
    root[jj] = static_cast<float>(g * up);
    x[jj] = static_cast<float>(g);
    gf[jj] = static_cast<float>(gram[jj]);
  }
  for (int64_t jj = 0; jj < kb; ++jj) {
    const float down = x[jj] < 8.673617379884035e-19f ? 8.881784197001252e-16f : 1.0f;
    root[jj] = std::sqrt(root[jj]) * down;
  }
}

// The scores of rows i0..i0+r and keys j0..j0+kb of slice b (see Block). g - 1 is rounded to
// float once; sqrt(g - 1) is taken before that rounding (scaled by 2^100 below 2^-60), so that
// a g - 1 below float's normal range keeps its distance.
void block_scores(const Args& a, int64_t b, int64_t i0, int64_t r, int64_t j0, int64_t kb,
                  Block& blk) {
  const int64_t w = a.w;
  const double* q = a.q + (b * a.n + i0) * w;
  const double* k = a.k + (b * a.m + j0) * w;
  const double* k0 = a.k0 + b * a.m + j0;
  mm<double>(false, true, r, kb, w, 1.0, q, w, k, w, 0.0, blk.gram.data(), kb);
  const double c = a.c;
  const float beta = a.beta[b];
  const float inv_sc = static_cast<float>(1.0 / std::sqrt(c));
  const float* mrow = a.mask ? a.mask + a.mask_base[b] : nullptr;
  double* gm1 = blk.gm1.data();
  for (int64_t ii = 0; ii < r; ++ii) {
    const double* qi = q + ii * w;
    const double* gi = blk.gram.data() + ii * kb;
    float* xi = blk.x.data() + ii * kb;
    float* hi = blk.sh.data() + ii * kb;
    float* di = blk.d.data() + ii * kb;
    float* fi = blk.gf.data() + ii * kb;
    float* si = blk.s.data() + ii * kb;
    const double bound = CLOSE * c * qi[0];
    int64_t close = 0;
    for (int64_t jj = 0; jj < kb; ++jj) {
      const double g = c * gi[jj] - 1.0;
      gm1[jj] = g;
      close += g <= bound * k0[jj];
    }
    if (close) {
      // the close pairs from the coordinate differences (q holds qJ: q_s - k_s = -(qJ_s + k_s))
      for (int64_t jj = 0; jj < kb; ++jj) {
        if (gm1[jj] > bound * k0[jj]) continue;
        const double* kj = k + jj * w;
        const double t = qi[0] - kj[0];
        double acc = -t * t;
        for (int64_t l = 1; l < w; ++l) {
          const double u = qi[l] + kj[l];
          acc += u * u;
        }
        gm1[jj] = 0.5 * c * acc;
      }
    }
    convert_block(gm1, gi, hi, xi, fi, kb);
    int64_t j = 0;
    const VecF vb(-beta), vsc(inv_sc), two(2.0f);
    if (a.score == COSH) {
      for (; j + VecF::size() <= kb; j += VecF::size()) {
        VecF xv = VecF::loadu(xi + j);
        xv.store(di + j);
        (xv * vb).store(si + j);
      }
      for (; j < kb; ++j) {
        di[j] = xi[j];
        si[j] = -beta * xi[j];
      }
    } else {
      for (; j + VecF::size() <= kb; j += VecF::size()) {
        const VecF xv = VecF::loadu(xi + j);
        const VecF sh = VecF::loadu(hi + j) * (xv + two).sqrt();
        const VecF d = (xv + sh).log1p() * vsc;
        sh.store(hi + j);
        d.store(di + j);
        (a.score == SQUARED ? d * d * vb : d * vb).store(si + j);
      }
      for (; j < kb; ++j) {
        const float sh = hi[j] * std::sqrt(xi[j] + 2.0f);
        const float d = std::log1p(xi[j] + sh) * inv_sc;
        hi[j] = sh;
        di[j] = d;
        si[j] = -beta * (a.score == SQUARED ? d * d : d);
      }
    }
    if (mrow) {
      const float* mi = mrow + (i0 + ii) * a.mask_sn + j0 * a.mask_sm;
      if (a.mask_sm == 1) {
        for (int64_t jj = 0; jj < kb; ++jj) si[jj] += mi[jj];
      } else {
        for (int64_t jj = 0; jj < kb; ++jj) si[jj] += mi[jj * a.mask_sm];
      }
    }
    if (a.causal) {
      const int64_t first_forbidden = i0 + ii + 1 - j0;
      for (int64_t jj = std::max<int64_t>(0, first_forbidden); jj < kb; ++jj)
        si[jj] = -std::numeric_limits<float>::infinity();
    }
  }
}

// Pointers of the backward pass that do not depend on the value type.
struct Grads {
  const float* qf;   // (BH, N, W) qJ as float
  const float* kf;   // (BH, M, W) k as float
  const float* lse;  // (BH, N)
  float* gq;
  float* gk;
  double* gbeta;
  double* gc;
};

// The probabilities of a block (float, r x kb) as the value type's matrix: the block itself for
// float values, a double copy (buf) for double ones.
template <typename V>
const V* as_values(const float* s, int64_t n, std::vector<V>& buf) {
  if constexpr (std::is_same_v<V, float>) {
    return s;
  } else {
    if (static_cast<int64_t>(buf.size()) < n) buf.resize(n);
    for (int64_t t = 0; t < n; ++t) buf[t] = static_cast<V>(s[t]);
    return buf.data();
  }
}

Args make_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
               const at::Tensor& beta, double c, const c10::optional<at::Tensor>& mask,
               const c10::optional<at::Tensor>& mask_base, int64_t mask_sn, int64_t mask_sm,
               int64_t score, bool causal, double dropout_p, int64_t seed) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3, "q, k, v must be (BH, L, W)");
  TORCH_CHECK(q.scalar_type() == at::kDouble && k.scalar_type() == at::kDouble,
              "q and k must be float64");
  TORCH_CHECK(v.scalar_type() == at::kFloat || v.scalar_type() == at::kDouble,
              "v must be float32 or float64");
  TORCH_CHECK(beta.scalar_type() == at::kFloat, "beta must be float32");
  TORCH_CHECK(q.is_contiguous() && k.is_contiguous() && v.is_contiguous() && beta.is_contiguous(),
              "inputs must be contiguous");
  Args a{};
  a.q = q.data_ptr<double>();
  a.k = k.data_ptr<double>();
  a.v = v.data_ptr();
  a.beta = beta.data_ptr<float>();
  a.mask = nullptr;
  a.mask_base = nullptr;
  if (mask.has_value()) {
    TORCH_CHECK(mask->scalar_type() == at::kFloat && mask_base.has_value(), "bad mask");
    a.mask = mask->data_ptr<float>();
    a.mask_base = mask_base->data_ptr<int64_t>();
  }
  a.mask_sn = mask_sn;
  a.mask_sm = mask_sm;
  a.bh = q.size(0);
  a.n = q.size(1);
  a.m = k.size(1);
  a.w = q.size(2);
  a.vd = v.size(2);
  a.c = c;
  a.score = score;
  a.causal = causal;
  TORCH_CHECK(dropout_p >= 0.0 && dropout_p < 1.0, "dropout_p must be in [0, 1)");
  a.threshold = static_cast<uint32_t>(std::min(dropout_p * 4294967296.0, 4294967295.0));
  a.keep_scale = a.threshold ? static_cast<float>(1.0 / (1.0 - dropout_p)) : 1.0f;
  a.seed = static_cast<uint64_t>(seed);
  return a;
}

}  // namespace

// The passes for the value type V (float or double): defined below, instantiated by the
// operators' dispatch on the dtype of v.
template <typename V>
void forward_impl(const Args& a, V* po, float* pl);
template <typename V>
void backward_impl(const Args& a, const Grads& g, const V* go, const V* po, V* pgv);

std::vector<at::Tensor> forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& beta, double c,
                                const c10::optional<at::Tensor>& mask,
                                const c10::optional<at::Tensor>& mask_base, int64_t mask_sn,
                                int64_t mask_sm, int64_t score, bool causal, double dropout_p,
                                int64_t seed) {
  Args a = make_args(q, k, v, beta, c, mask, mask_base, mask_sn, mask_sm, score, causal,
                     dropout_p, seed);
  const at::Tensor k0 = k.select(2, 0).contiguous();
  a.k0 = k0.data_ptr<double>();
  at::Tensor out = at::empty({a.bh, a.n, a.vd}, v.options());
  at::Tensor lse = at::empty({a.bh, a.n}, beta.options());
  if (v.scalar_type() == at::kDouble) {
    forward_impl<double>(a, out.data_ptr<double>(), lse.data_ptr<float>());
  } else {
    forward_impl<float>(a, out.data_ptr<float>(), lse.data_ptr<float>());
  }
  return {out, lse};
}

template <typename V>
void forward_impl(const Args& a, V* po, float* pl) {
  const V* pv = static_cast<const V*>(a.v);
  const int64_t nblocks = (a.n + R - 1) / R;
  constexpr float NEG_INF = -std::numeric_limits<float>::infinity();
  at::parallel_for(0, a.bh * nblocks, 1, [&](int64_t begin, int64_t end) {
    Block blk;
    std::vector<V> acc(R * a.vd), pbuf;
    std::vector<float> mx(R), l(R);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / nblocks, i0 = (task % nblocks) * R;
      const int64_t r = std::min(R, a.n - i0);
      const int64_t jmax = a.causal ? std::min(a.m, i0 + r) : a.m;
      std::fill(acc.begin(), acc.end(), V(0));
      std::fill(mx.begin(), mx.end(), NEG_INF);
      std::fill(l.begin(), l.end(), 0.0f);
      for (int64_t j0 = 0; j0 < jmax; j0 += KB) {
        const int64_t kb = std::min(KB, jmax - j0);
        block_scores(a, b, i0, r, j0, kb, blk);
        for (int64_t ii = 0; ii < r; ++ii) {
          float* si = blk.s.data() + ii * kb;
          float top = mx[ii];
          {
            int64_t jj = 0;
            VecF vm(top);
            for (; jj + VecF::size() <= kb; jj += VecF::size())
              vm = at::vec::maximum(vm, VecF::loadu(si + jj));
            float lanes[VecF::size()];
            vm.store(lanes);
            for (int64_t z = 0; z < VecF::size(); ++z) top = std::max(top, lanes[z]);
            for (; jj < kb; ++jj) top = std::max(top, si[jj]);
          }
          if (top == NEG_INF) {
            std::fill(si, si + kb, 0.0f);
            continue;
          }
          const float scale = std::exp(mx[ii] - top);  // 0 on the first finite block
          mx[ii] = top;
          V* ai = acc.data() + ii * a.vd;
          for (int64_t t = 0; t < a.vd; ++t) ai[t] *= scale;
          int64_t jj = 0;
          VecF total(0.0f);
          const VecF vt(top);
          for (; jj + VecF::size() <= kb; jj += VecF::size()) {
            const VecF p = (VecF::loadu(si + jj) - vt).exp_u20();
            p.store(si + jj);
            total = total + p;
          }
          float lanes[VecF::size()];
          total.store(lanes);
          float tsum = 0.0f;
          for (int64_t z = 0; z < VecF::size(); ++z) tsum += lanes[z];
          for (; jj < kb; ++jj) {
            si[jj] = std::exp(si[jj] - top);
            tsum += si[jj];
          }
          l[ii] = l[ii] * scale + tsum;
          if (a.threshold) {  // dropout: the sums take z p, the normaliser every p
            float* z = blk.z.data();
            dropout_factors(a, b, i0 + ii, j0, kb, z);
            for (int64_t t = 0; t < kb; ++t) si[t] *= z[t];
          }
        }
        mm<V>(false, false, r, a.vd, kb, V(1), as_values<V>(blk.s.data(), r * kb, pbuf), kb,
              pv + (b * a.m + j0) * a.vd, a.vd, V(1), acc.data(), a.vd);
      }
      for (int64_t ii = 0; ii < r; ++ii) {
        V* oi = po + (b * a.n + i0 + ii) * a.vd;
        const V* ai = acc.data() + ii * a.vd;
        if (l[ii] > 0.0f) {
          const V inv = V(1) / static_cast<V>(l[ii]);
          for (int64_t t = 0; t < a.vd; ++t) oi[t] = ai[t] * inv;
          pl[b * a.n + i0 + ii] = mx[ii] + std::log(l[ii]);
        } else {  // every key masked: zero sums, and zero weights in the backward pass
          for (int64_t t = 0; t < a.vd; ++t) oi[t] = V(0);
          pl[b * a.n + i0 + ii] = std::numeric_limits<float>::infinity();
        }
      }
    }
  });
}

// Gradients of sum(grad_out * o) in q (that is, in qJ), k, v (float32), and per slice in beta
// and c (float64). The products use float copies of q and k. With dropout (o = sum z p v):
// dV = (z P)^T dO, ds = p (z dP - <dO, o>).
std::vector<at::Tensor> backward(const at::Tensor& grad_out, const at::Tensor& q,
                                 const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& beta, double c,
                                 const c10::optional<at::Tensor>& mask,
                                 const c10::optional<at::Tensor>& mask_base, int64_t mask_sn,
                                 int64_t mask_sm, int64_t score, bool causal, double dropout_p,
                                 int64_t seed, const at::Tensor& out, const at::Tensor& lse) {
  Args a = make_args(q, k, v, beta, c, mask, mask_base, mask_sn, mask_sm, score, causal,
                     dropout_p, seed);
  TORCH_CHECK(grad_out.is_contiguous() && out.is_contiguous() && lse.is_contiguous(),
              "grad_out, out, lse must be contiguous");
  const at::Tensor k0 = k.select(2, 0).contiguous();
  a.k0 = k0.data_ptr<double>();
  TORCH_CHECK(grad_out.scalar_type() == v.scalar_type() && out.scalar_type() == v.scalar_type(),
              "grad_out and out must have the dtype of v");
  const at::Tensor qf = q.to(at::kFloat), kf = k.to(at::kFloat);
  at::Tensor gq = at::zeros({a.bh, a.n, a.w}, beta.options());
  at::Tensor gk = at::zeros({a.bh, a.m, a.w}, beta.options());
  at::Tensor gv = at::zeros({a.bh, a.m, a.vd}, v.options());
  at::Tensor gbeta = at::zeros({a.bh}, q.options());
  at::Tensor gc = at::zeros({a.bh}, q.options());
  Grads g{qf.data_ptr<float>(), kf.data_ptr<float>(), lse.data_ptr<float>(),
          gq.data_ptr<float>(), gk.data_ptr<float>(), gbeta.data_ptr<double>(),
          gc.data_ptr<double>()};
  if (v.scalar_type() == at::kDouble) {
    backward_impl<double>(a, g, grad_out.data_ptr<double>(), out.data_ptr<double>(),
                          gv.data_ptr<double>());
  } else {
    backward_impl<float>(a, g, grad_out.data_ptr<float>(), out.data_ptr<float>(),
                         gv.data_ptr<float>());
  }
  const float cf = static_cast<float>(c);
  return {gq.mul_(cf), gk.mul_(cf), gv, gbeta, gc};
}

template <typename V>
void backward_impl(const Args& a, const Grads& g, const V* go, const V* po, V* pgv) {
  const float* pl = g.lse;
  const float* pqf = g.qf;
  const float* pkf = g.kf;
  float* pgq = g.gq;
  float* pgk = g.gk;
  double* pgb = g.gbeta;
  double* pgc = g.gc;
  const V* pv = static_cast<const V*>(a.v);
  const double c = a.c;
  const int64_t score = a.score;
  const float sc = static_cast<float>(std::sqrt(c));
  const float cf = static_cast<float>(c);
  // slices in parallel: each owns its key and value gradients
  at::parallel_for(0, a.bh, 1, [&](int64_t begin, int64_t end) {
    Block blk;
    std::vector<float> dp(R * KB), dd(R);
    std::vector<V> dpv, pbuf;
    for (int64_t b = begin; b < end; ++b) {
      double beta_acc = 0.0, c_acc = 0.0;
      const float beta_b = a.beta[b];
      const VecF vnb(-beta_b), vsc(sc), vtiny(TINY), vzero(0.0f), vone(1.0f);
      // ds/dg = -beta f'(d) dd/dg; ds/dc at fixed g = beta f / (2c) (distance), beta f / c
      // (squared), 0 (cosh)
      const VecF dist_k(-beta_b / sc), sq_k(-beta_b * 2.0f / cf);
      const VecF dc_k(score == DISTANCE ? beta_b / (2.0f * cf) : beta_b / cf);
      for (int64_t i0 = 0; i0 < a.n; i0 += R) {
        const int64_t r = std::min(R, a.n - i0);
        const int64_t jmax = a.causal ? std::min(a.m, i0 + r) : a.m;
        const V* gob = go + (b * a.n + i0) * a.vd;
        for (int64_t ii = 0; ii < r; ++ii) {
          const V* u = gob + ii * a.vd;
          const V* o = po + (b * a.n + i0 + ii) * a.vd;
          double t = 0.0;
          for (int64_t z = 0; z < a.vd; ++z) t += static_cast<double>(u[z]) * o[z];
          dd[ii] = static_cast<float>(t);
        }
        for (int64_t j0 = 0; j0 < jmax; j0 += KB) {
          const int64_t kb = std::min(KB, jmax - j0);
          block_scores(a, b, i0, r, j0, kb, blk);
          const V* vb = pv + (b * a.m + j0) * a.vd;
          // dP = dO V^T (in the value type, then as float)
          if constexpr (std::is_same_v<V, float>) {
            mm<float>(false, true, r, kb, a.vd, 1.0f, gob, a.vd, vb, a.vd, 0.0f, dp.data(), kb);
          } else {
            dpv.resize(r * kb);
            mm<V>(false, true, r, kb, a.vd, V(1), gob, a.vd, vb, a.vd, V(0), dpv.data(), kb);
            for (int64_t t = 0; t < r * kb; ++t) dp[t] = static_cast<float>(dpv[t]);
          }
          for (int64_t ii = 0; ii < r; ++ii) {
            const float lrow = pl[b * a.n + i0 + ii];
            float* si = blk.s.data() + ii * kb;
            float* pi = dp.data() + ii * kb;
            const float* xi = blk.x.data() + ii * kb;
            const float* hi = blk.sh.data() + ii * kb;
            const float* di = blk.d.data() + ii * kb;
            const float* fi = blk.gf.data() + ii * kb;
            if (std::isinf(lrow)) {  // a row whose keys are all masked: no gradient
              std::fill(si, si + kb, 0.0f);
              std::fill(pi, pi + kb, 0.0f);
              continue;
            }
            const VecF vl(lrow), vdd(dd[ii]);
            VecF bsum(0.0f), csum(0.0f);
            int64_t jj = 0;
            const float* zi = blk.z.data();
            if (a.threshold) dropout_factors(a, b, i0 + ii, j0, kb, blk.z.data());
            auto step = [&](const VecF& sv, const VecF& dpv, const VecF& xv, const VecF& hv,
                            const VecF& dv, const VecF& gv, const VecF& zv, VecF& p_out,
                            VecF& gbar_out) {
              const VecF p0 = (sv - vl).exp_u20();
              const VecF p = a.threshold ? p0 * zv : p0;  // z p: the weight of v_j in o_i
              const VecF ds = a.threshold ? p0 * (zv * dpv - vdd) : p0 * (dpv - vdd);
              VecF f, dsdg;
              if (score == COSH) {
                f = xv;
                dsdg = vnb;
              } else if (score == SQUARED) {
                f = dv * dv;
                const VecF ratio = VecF::blendv(vone, (dv * vsc) / at::vec::maximum(hv, vtiny),
                                                hv > vtiny);
                dsdg = sq_k * ratio;
              } else {
                f = dv;
                dsdg = VecF::blendv(vzero, dist_k / at::vec::maximum(hv, vtiny),
                                    xv > VecF(2.0f * TINY * TINY));
              }
              const VecF gbar = ds * dsdg;
              bsum = bsum - ds * f;
              csum = csum + gbar * gv;
              if (score != COSH) csum = csum + ds * dc_k * f;
              p_out = p;
              gbar_out = gbar;
            };
            for (; jj + VecF::size() <= kb; jj += VecF::size()) {
              VecF p, gbar;
              step(VecF::loadu(si + jj), VecF::loadu(pi + jj), VecF::loadu(xi + jj),
                   VecF::loadu(hi + jj), VecF::loadu(di + jj), VecF::loadu(fi + jj),
                   a.threshold ? VecF::loadu(zi + jj) : vone, p, gbar);
              p.store(si + jj);
              gbar.store(pi + jj);
            }
            if (jj < kb) {  // the tail through padded copies (weight 0 beyond the block)
              const int64_t rest = kb - jj;
              float ts[VecF::size()], tp[VecF::size()], tx[VecF::size()], th[VecF::size()],
                  td[VecF::size()], tf[VecF::size()], tz[VecF::size()];
              for (int64_t z = 0; z < VecF::size(); ++z) {
                const bool in = z < rest;
                ts[z] = in ? si[jj + z] : -std::numeric_limits<float>::infinity();
                tp[z] = in ? pi[jj + z] : 0.0f;
                tx[z] = in ? xi[jj + z] : 0.0f;
                th[z] = in ? hi[jj + z] : 0.0f;
                td[z] = in ? di[jj + z] : 0.0f;
                tf[z] = in ? fi[jj + z] : 0.0f;
                tz[z] = in && a.threshold ? zi[jj + z] : 1.0f;
              }
              VecF p, gbar;
              step(VecF::loadu(ts), VecF::loadu(tp), VecF::loadu(tx), VecF::loadu(th),
                   VecF::loadu(td), VecF::loadu(tf), VecF::loadu(tz), p, gbar);
              p.store(ts);
              gbar.store(tp);
              for (int64_t z = 0; z < rest; ++z) {
                si[jj + z] = ts[z];
                pi[jj + z] = tp[z];
              }
            }
            float lanes[VecF::size()];
            bsum.store(lanes);
            for (int64_t z = 0; z < VecF::size(); ++z) beta_acc += lanes[z];
            csum.store(lanes);
            for (int64_t z = 0; z < VecF::size(); ++z) c_acc += lanes[z];
          }
          // dV += P^T dO ; d(qJ) += dG K ; dK += dG^T qJ  (the factor c comes at the end)
          mm<V>(true, false, kb, a.vd, r, V(1), as_values<V>(blk.s.data(), r * kb, pbuf), kb,
                gob, a.vd, V(1), pgv + (b * a.m + j0) * a.vd, a.vd);
          mm<float>(false, false, r, a.w, kb, 1.0f, dp.data(), kb, pkf + (b * a.m + j0) * a.w,
                    a.w, 1.0f, pgq + (b * a.n + i0) * a.w, a.w);
          mm<float>(true, false, kb, a.w, r, 1.0f, dp.data(), kb, pqf + (b * a.n + i0) * a.w,
                    a.w, 1.0f, pgk + (b * a.m + j0) * a.w, a.w);
        }
      }
      pgb[b] = beta_acc;
      pgc[b] = c_acc;
    }
  });
}

// The scores s_ij (mask included) of every pair, (BH, N, M): what the forward pass computes
// block by block, for tests against the exact scores.
at::Tensor scores(const at::Tensor& q, const at::Tensor& k, const at::Tensor& beta, double c,
                  int64_t score) {
  const at::Tensor v = at::zeros({k.size(0), k.size(1), 1}, beta.options());
  Args a = make_args(q, k, v, beta, c, c10::nullopt, c10::nullopt, 0, 0, score, false, 0.0, 0);
  const at::Tensor k0 = k.select(2, 0).contiguous();
  a.k0 = k0.data_ptr<double>();
  at::Tensor s = at::empty({a.bh, a.n, a.m}, beta.options());
  float* ps = s.data_ptr<float>();
  Block blk;
  for (int64_t b = 0; b < a.bh; ++b)
    for (int64_t i0 = 0; i0 < a.n; i0 += R)
      for (int64_t j0 = 0; j0 < a.m; j0 += KB) {
        const int64_t r = std::min(R, a.n - i0), kb = std::min(KB, a.m - j0);
        block_scores(a, b, i0, r, j0, kb, blk);
        for (int64_t ii = 0; ii < r; ++ii)
          std::copy(blk.s.data() + ii * kb, blk.s.data() + (ii + 1) * kb,
                    ps + (b * a.n + i0 + ii) * a.m + j0);
      }
  return s;
}

// The dropout factors z_ij (0 or 1/(1-p)) of every pair, (BH, N, M): the mask both passes
// regenerate, for tests against an unfused reference.
at::Tensor dropout_mask(int64_t bh, int64_t n, int64_t m, double dropout_p, int64_t seed) {
  const at::Tensor q = at::zeros({bh, 1, 1}, at::kDouble);
  const at::Tensor v = at::zeros({bh, 1, 1}, at::kFloat), beta = at::zeros({bh}, at::kFloat);
  Args a = make_args(q, q, v, beta, 1.0, c10::nullopt, c10::nullopt, 0, 0, 0, false, dropout_p,
                     seed);
  at::Tensor z = at::ones({bh, n, m}, at::kFloat);
  if (!a.threshold) return z;
  float* pz = z.data_ptr<float>();
  for (int64_t b = 0; b < bh; ++b)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j0 = 0; j0 < m; j0 += KB)
        dropout_factors(a, b, i, j0, std::min(KB, m - j0), pz + (b * n + i) * m + j0);
  return z;
}

// Registered as plain operators of a private namespace (no Python binding to compile); the
// public custom operators of poincare.nn._kernel call them.
TORCH_LIBRARY(poincare_kernels, m) {
  m.def("forward", &forward);
  m.def("backward", &backward);
  m.def("scores", &scores);
  m.def("dropout_mask", &dropout_mask);
}
