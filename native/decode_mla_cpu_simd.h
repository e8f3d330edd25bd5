// The vector micro-kernels of the CPU MLA decode (native/decode_mla_cpu.cc), written once
// for every instruction set. No include guard: decode_mla_cpu_x86.h includes this file once
// per instruction set, inside that set's `#pragma GCC target` region and namespace, after
// defining there:
//   G2M_MM(op)               the set's intrinsic of that name (_mm256_op, _mm512_op)
//   V                        the float vector
//   Reduce(v)                the sum of the lanes
//   Broadcast(p)             *p in every lane
//   WidenU16(p)              one vector's worth of uint16 zero-extended to int32
//   Mask, Underflow(x, lo), ZeroUnderflow(mask, y)   Exp's cut-off below lo
//   Floor(v)
//   kScoreRows, kScoreCols   query rows x tokens of a score block
//   kPVRows, kPVVecs         query rows x output vectors of a P.V block
// and with <cmath>, <cstddef>, <cstdint>, <type_traits> and LoadScalar() in scope.
// Every value here stays in its own set's registers: nothing passes a vector across sets.

using VI = decltype(WidenU16(nullptr));  // the int32 vector
constexpr int kLanes = sizeof(V) / sizeof(float);

inline V Zero() { return G2M_MM(setzero_ps)(); }
inline V Set1(float a) { return G2M_MM(set1_ps)(a); }
inline V Load(const float* p) { return G2M_MM(loadu_ps)(p); }
inline void Store(float* p, V v) { G2M_MM(storeu_ps)(p, v); }
inline V AsFloat(VI i) { return __builtin_bit_cast(V, i); }
inline V Load(const uint16_t* p) { return AsFloat(G2M_MM(slli_epi32)(WidenU16(p), 16)); }  // bf16 bits
inline V Add(V a, V b) { return G2M_MM(add_ps)(a, b); }
inline V Sub(V a, V b) { return G2M_MM(sub_ps)(a, b); }
inline V Mul(V a, V b) { return G2M_MM(mul_ps)(a, b); }
inline V Max(V a, V b) { return G2M_MM(max_ps)(a, b); }
inline V Fma(V a, V b, V c) { return G2M_MM(fmadd_ps)(a, b, c); }    // a * b + c
inline V Fnma(V a, V b, V c) { return G2M_MM(fnmadd_ps)(a, b, c); }  // c - a * b

// exp(x) for x <= 0 (Cephes-style range reduction + degree-6 polynomial, ~1 ulp);
// arguments below -87.3 give 0 (NaN ones: as the set's Underflow says).
inline V Exp(V x) {
  const V lo = Set1(-87.3f);
  const Mask cut = Underflow(x, lo);
  x = Max(x, lo);
  const V fx = Floor(Fma(x, Set1(1.44269504088896341f), Set1(0.5f)));
  x = Fnma(fx, Set1(0.693359375f), x);
  x = Fnma(fx, Set1(-2.12194440e-4f), x);
  V y = Set1(1.9875691500e-4f);
  y = Fma(y, x, Set1(1.3981999507e-3f));
  y = Fma(y, x, Set1(8.3334519073e-3f));
  y = Fma(y, x, Set1(4.1665795894e-2f));
  y = Fma(y, x, Set1(1.6666665459e-1f));
  y = Fma(y, x, Set1(5.0000001201e-1f));
  y = Fma(y, Mul(x, x), Add(x, Set1(1.f)));
  const VI e = G2M_MM(slli_epi32)(G2M_MM(add_epi32)(G2M_MM(cvtps_epi32)(fx), G2M_MM(set1_epi32)(127)), 23);
  return ZeroUnderflow(cut, Mul(y, AsFloat(e)));
}

// Calls f(i, std::integral_constant<int, B>()) for i = 0, B, 2B, ... while i + B <= n, then
// once more with the remainder n % B as the block size (if not 0), so that every block
// size is a compile-time constant. These helpers and their lambdas are always inlined, so
// that the block kernels are called straight from Kernels::Scores / PV and constant
// propagation still sees the fixed strides (ldS = ldP = kChunk) there.
template <int B, class F>
__attribute__((always_inline)) inline void RemainderBlock(int left, int i, F& f) {
  if constexpr (B > 0) {
    if (left == B)
      f(i, std::integral_constant<int, B>());
    else
      RemainderBlock<B - 1>(left, i, f);
  }
}
template <int B, class F>
__attribute__((always_inline)) inline void ForBlocks(int n, F&& f) {
  int i = 0;
  for (; i + B <= n; i += B) f(i, std::integral_constant<int, B>());
  RemainderBlock<B - 1>(n - i, i, f);
}

// S[r][t] = Q[r] . K_t for an RB x TB block (kScoreRows x kScoreCols accumulators).
template <int RB, int TB, typename CT>
inline void ScoreBlock(int D, const float* Q, const CT* const* rows, float* S, int ldS) {
  V acc[RB][TB];
  for (int i = 0; i < RB; ++i)
    for (int j = 0; j < TB; ++j) acc[i][j] = Zero();
  const int Dv = D & ~(kLanes - 1);
  for (int d = 0; d < Dv; d += kLanes) {
    V k[TB];
    for (int j = 0; j < TB; ++j) k[j] = Load(rows[j] + d);
    for (int i = 0; i < RB; ++i) {
      const V q = Load(Q + static_cast<size_t>(i) * D + d);
      for (int j = 0; j < TB; ++j) acc[i][j] = Fma(q, k[j], acc[i][j]);
    }
  }
  for (int i = 0; i < RB; ++i)
    for (int j = 0; j < TB; ++j) {
      float s = Reduce(acc[i][j]);
      for (int d = Dv; d < D; ++d) s += Q[static_cast<size_t>(i) * D + d] * LoadScalar(rows[j], d);
      S[i * ldS + j] = s;
    }
}

// O[r][d0 : d0 + kLanes * DB] += sum_t P[r][t] V_t[d0 : ...] for an RB-row block
// (kPVRows x kPVVecs accumulators, which with the value vectors and the broadcast fill
// the register file).
template <int RB, int DB, typename CT>
inline void PVBlock(int n, int dl, int d0, const float* P, int ldP, const CT* const* rows, float* O) {
  V acc[RB][DB];
  for (int i = 0; i < RB; ++i)
    for (int j = 0; j < DB; ++j) acc[i][j] = Load(O + static_cast<size_t>(i) * dl + d0 + kLanes * j);
  for (int t = 0; t < n; ++t) {
    V v[DB];
    for (int j = 0; j < DB; ++j) v[j] = Load(rows[t] + d0 + kLanes * j);
    for (int i = 0; i < RB; ++i) {
      const V p = Broadcast(P + i * ldP + t);
      for (int j = 0; j < DB; ++j) acc[i][j] = Fma(p, v[j], acc[i][j]);
    }
  }
  for (int i = 0; i < RB; ++i)
    for (int j = 0; j < DB; ++j) Store(O + static_cast<size_t>(i) * dl + d0 + kLanes * j, acc[i][j]);
}

template <int RB, typename CT>
inline void PVRows(int n, int dl, const float* P, int ldP, const CT* const* rows, float* O) {
  int d = 0;
  for (; d + kLanes * kPVVecs <= dl; d += kLanes * kPVVecs) PVBlock<RB, kPVVecs>(n, dl, d, P, ldP, rows, O);
  for (; d + kLanes <= dl; d += kLanes) PVBlock<RB, 1>(n, dl, d, P, ldP, rows, O);
  for (; d < dl; ++d)
    for (int i = 0; i < RB; ++i) {
      float acc = O[static_cast<size_t>(i) * dl + d];
      for (int t = 0; t < n; ++t) acc += P[i * ldP + t] * LoadScalar(rows[t], d);
      O[static_cast<size_t>(i) * dl + d] = acc;
    }
}

template <int RB, typename CT>
inline void ScoreRows(int n, int D, const float* Q, const CT* const* rows, float* S, int ldS) {
  ForBlocks<kScoreCols>(n, [&](int t, auto tb) __attribute__((always_inline)) {
    ScoreBlock<RB, decltype(tb)::value>(D, Q, rows + t, S + t, ldS);
  });
}

struct Kernels {
  template <typename CT>
  static void Scores(int R, int n, int D, const float* Q, const CT* const* rows, float* S, int ldS) {
    ForBlocks<kScoreRows>(R, [&](int r, auto rb) __attribute__((always_inline)) {
      ScoreRows<decltype(rb)::value>(n, D, Q + static_cast<size_t>(r) * D, rows, S + r * ldS, ldS);
    });
  }
  template <typename CT>
  static void PV(int R, int n, int dl, const float* P, int ldP, const CT* const* rows, float* O) {
    ForBlocks<kPVRows>(R, [&](int r, auto rb) __attribute__((always_inline)) {
      PVRows<decltype(rb)::value>(n, dl, P + r * ldP, ldP, rows, O + static_cast<size_t>(r) * dl);
    });
  }
  // x[i] = exp(x[i] - m) for i < n
  static void ExpShift(float* x, int n, float m) {
    const V mv = Set1(m);
    int i = 0;
    for (; i + kLanes <= n; i += kLanes) Store(x + i, Exp(Sub(Load(x + i), mv)));
    for (; i < n; ++i) x[i] = std::exp(x[i] - m);
  }
  static void Scale(float* o, int n, float a) {
    const V av = Set1(a);
    int i = 0;
    for (; i + kLanes <= n; i += kLanes) Store(o + i, Mul(Load(o + i), av));
    for (; i < n; ++i) o[i] *= a;
  }
};
