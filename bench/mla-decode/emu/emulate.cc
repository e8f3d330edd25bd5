// Runs native/cuda/decode_attn.cu (kernels, scheduler, LSE combine) through the CPU
// emulation in cuda_emu.h and checks it against a float64 reference: MLA and GQA, q_len
// 1 and 2, paged (shuffled pages, NaN in every slot past each length) and contiguous,
// lengths 0 and 1, few and many SMs (few and many splits), cp.async copies landing early
// or late. A development check that needs no GPU:
//
//   g++ -std=c++17 -O2 -pthread -DG2M_EMULATE -I bench/mla-decode/emu -I native/cuda \
//       bench/mla-decode/emu/emulate.cc -o /tmp/emulate && /tmp/emulate [SEED] [--only SUBSTR]
#include "../../../native/cuda/decode_attn.cu"

#include <random>

using namespace g2m::cudadec;

namespace {

uint16_t ToBf16(float f) { return __float2bfloat16_rn(f).bits; }
float FromBf16(uint16_t b) { return __bfloat162float({b}); }

struct Case {
  bool mla;
  int heads, kv_heads, q_len;
  std::vector<int> lens;
  bool paged;
  int sms;
  bool late;
  const char* kernel = nullptr;  // forced kernel instance (nullptr = default choice)
};

double RunCase(const Case& c, uint32_t seed, double* lse_err) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  const int batch = static_cast<int>(c.lens.size());
  const int dqk = c.mla ? 576 : 128, dv = c.mla ? 512 : 128;
  const int row_elems = c.mla ? dqk : c.kv_heads * dqk;  // elements per token row of K
  const int page = 64;
  Shape s;
  s.batch = batch;
  s.q_len = c.q_len;
  s.heads = c.heads;
  s.kv_heads = c.kv_heads;
  s.dqk = dqk;
  s.dv = dv;
  s.mla = c.mla;
  s.page_size = page;
  // layout
  const int max_len = *std::max_element(c.lens.begin(), c.lens.end());
  std::vector<int32_t> table;
  int64_t rows_total;
  if (c.paged) {
    s.max_blocks = std::max(1, (max_len + page - 1) / page) + 1;
    int pages = 3;
    for (int l : c.lens) pages += (l + page - 1) / page;
    std::vector<int> perm(pages);
    for (int i = 0; i < pages; ++i) perm[i] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
    table.assign(static_cast<size_t>(batch) * s.max_blocks, -1);
    int next = 0;
    for (int b = 0; b < batch; ++b)
      for (int p = 0; p < (c.lens[b] + page - 1) / page; ++p) table[b * s.max_blocks + p] = perm[next++];
    rows_total = static_cast<int64_t>(pages) * page;
  } else {
    s.seq_stride = max_len + 5;
    rows_total = static_cast<int64_t>(batch) * s.seq_stride;
  }
  auto row_of = [&](int b, int t) -> int64_t {
    return c.paged ? static_cast<int64_t>(table[b * s.max_blocks + t / page]) * page + t % page
                   : static_cast<int64_t>(b) * s.seq_stride + t;
  };
  const uint16_t kNaN = 0x7fc1;
  std::vector<uint16_t> k(rows_total * row_elems, kNaN), v;
  if (!c.mla) v.assign(rows_total * row_elems, kNaN);
  for (int b = 0; b < batch; ++b)
    for (int t = 0; t < c.lens[b]; ++t) {
      const int64_t r = row_of(b, t);
      for (int d = 0; d < row_elems; ++d) k[r * row_elems + d] = ToBf16(U(rng));
      if (!c.mla)
        for (int d = 0; d < row_elems; ++d) v[r * row_elems + d] = ToBf16(U(rng));
    }
  const int64_t qrows = static_cast<int64_t>(batch) * c.q_len * c.heads;
  const int da = c.mla ? dv : dqk, db = c.mla ? dqk - dv : 0;
  std::vector<uint16_t> qa(qrows * da), qb(std::max<int64_t>(1, qrows * db));
  for (auto& x : qa) x = ToBf16(U(rng));
  for (auto& x : qb) x = ToBf16(U(rng));
  const float scale = c.mla ? 0.1f : 1.f / std::sqrt(128.f);

  s.kernel = c.kernel ? c.kernel : "";
  g2m_emu::g_sm_count = c.sms;
  g2m_emu::g_late_copies = c.late;
  Plan plan;
  std::string err = MakePlan(s, c.lens.data(), &plan);
  if (!err.empty()) {
    std::fprintf(stderr, "MakePlan: %s\n", err.c_str());
    std::exit(1);
  }
  std::vector<uint16_t> out(qrows * dv, kNaN);  // poison
  std::vector<float> lse(qrows, std::nanf(""));
  Tensors t;
  t.qa = qa.data();
  t.qb = qb.data();
  t.k = k.data();
  t.v = c.mla ? nullptr : v.data();
  t.block_table = c.paged ? table.data() : nullptr;
  t.out = out.data();
  t.lse = lse.data();
  err = Run(s, plan, t, scale);
  if (!err.empty()) {
    std::fprintf(stderr, "Run: %s\n", err.c_str());
    std::exit(1);
  }
  // float64 reference
  const int group = c.heads / c.kv_heads;
  double num = 0, den = 0, lmax = 0;
  for (int b = 0; b < batch; ++b)
    for (int i = 0; i < c.q_len; ++i)
      for (int h = 0; h < c.heads; ++h) {
        const int64_t row = (static_cast<int64_t>(b) * c.q_len + i) * c.heads + h;
        const int n = std::max(0, c.lens[b] - c.q_len + 1 + i);
        const int kvh = h / group;
        std::vector<double> o(dv, 0.0);
        double ref_lse = -INFINITY;
        if (n > 0) {
          std::vector<double> sc(n);
          double mx = -INFINITY;
          for (int tk = 0; tk < n; ++tk) {
            const int64_t r = row_of(b, tk);
            double acc = 0;
            for (int d = 0; d < dqk; ++d) {
              const double q = d < da ? FromBf16(qa[row * da + d]) : FromBf16(qb[row * db + d - da]);
              acc += q * FromBf16(k[r * row_elems + (c.mla ? 0 : kvh * dqk) + d]);
            }
            sc[tk] = acc * scale;
            mx = std::max(mx, sc[tk]);
          }
          double sum = 0;
          for (auto& x : sc) sum += (x = std::exp(x - mx));
          ref_lse = mx + std::log(sum);
          for (int tk = 0; tk < n; ++tk) {
            const int64_t r = row_of(b, tk);
            const uint16_t* vr = c.mla ? &k[r * row_elems] : &v[r * row_elems + kvh * dv];
            for (int d = 0; d < dv; ++d) o[d] += sc[tk] / sum * FromBf16(vr[d]);
          }
        }
        for (int d = 0; d < dv; ++d) {
          const double got = FromBf16(out[row * dv + d]);
          if (!std::isfinite(got)) {
            std::fprintf(stderr, "non-finite output at row %lld col %d (len %d, n %d)\n", (long long)row, d, c.lens[b], n);
            return INFINITY;
          }
          num += (got - o[d]) * (got - o[d]);
          den += o[d] * o[d];
        }
        if (n == 0) {
          if (lse[row] != -INFINITY) lmax = INFINITY;
        } else {
          lmax = std::max(lmax, std::fabs(static_cast<double>(lse[row]) - ref_lse));
          if (!std::isfinite(lse[row])) lmax = INFINITY;
        }
      }
  *lse_err = lmax;
  std::printf("  plan: kernel %s, parts %d, segments %d, slots %d, max splits %d\n", plan.kernel.c_str(), plan.num_parts,
              plan.num_segments, plan.num_slots, plan.max_splits);
  FreePlan(&plan);
  return std::sqrt(num / std::max(den, 1e-300));
}

}  // namespace

// Schedule check for the benchmark shapes on a 132-SM device: parts never exceed the
// resident blocks, and the per-part cost (tiles + 2 per piece) is balanced.
int CheckPlans() {
  g2m_emu::g_sm_count = 132;
  int bad = 0;
  std::mt19937 rng(5);
  for (int mla = 1; mla >= 0; --mla)
    for (int batch : {1, 16, 64, 128})
      for (int sk : {1024, 4096, 8192, 32768})
        for (int heads : mla ? std::vector<int>{16, 32, 128} : std::vector<int>{32})
          for (int q_len : {1, 2})
            for (int varied = 0; varied < 2; ++varied) {
              Shape s;
              s.batch = batch;
              s.q_len = q_len;
              s.heads = heads;
              s.kv_heads = mla ? 1 : 8;
              s.dqk = mla ? 576 : 128;
              s.dv = mla ? 512 : 128;
              s.mla = mla;
              s.seq_stride = 80000;
              std::vector<int> lens(batch, sk);
              std::normal_distribution<double> N(sk, sk / 2.0);
              if (varied)
                for (auto& l : lens) l = std::max(q_len, static_cast<int>(std::lround(N(rng))));
              Plan p;
              std::string e = MakePlan(s, lens.data(), &p);
              if (!e.empty()) {
                std::printf("MakePlan: %s\n", e.c_str());
                return 1;
              }
              const int resident = 132 * p.ctas_per_sm / (s.kv_heads * p.m_blocks);
              const int* off = static_cast<const int*>(p.d_part_offsets);
              const int4* sg = static_cast<const int4*>(p.d_segments);
              long mx = 0, mn = 1L << 60, tot = 0;
              std::vector<long> covered(batch, 0);
              for (int i = 0; i < p.num_parts; ++i) {
                long c = 0;
                for (int j = off[i]; j < off[i + 1]; ++j) {
                  c += (sg[j].z - sg[j].y + 31) / 32 + 2;
                  covered[sg[j].x] += sg[j].z - sg[j].y;
                }
                mx = std::max(mx, c);
                mn = std::min(mn, c);
                tot += c;
              }
              bool ok = p.num_parts <= std::max(1, resident) && off[p.num_parts] == p.num_segments;
              for (int b2 = 0; b2 < batch; ++b2) ok = ok && covered[b2] == lens[b2];
              const double imb = p.num_parts ? mx / (static_cast<double>(tot) / p.num_parts) : 1.0;
              const double mean = p.num_parts ? static_cast<double>(tot) / p.num_parts : 0.0;
              if (!ok || (mean >= 16 && imb > 1.15)) {  // small parts quantize to whole tiles
                ++bad;
                std::printf("%s b%d sk%d h%d q%d %s: parts %d (resident %d) max/mean cost %.2f%s\n", mla ? "MLA" : "GQA",
                            batch, sk, heads, q_len, varied ? "varied" : "fixed", p.num_parts, resident, imb,
                            ok ? "" : " COVERAGE/COUNT FAIL");
              }
              FreePlan(&p);
            }
  std::printf("plan check: %s (%d flagged)\n", bad ? "FLAGGED" : "ok", bad);
  return bad ? 1 : 0;
}

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--plans") return CheckPlans();
  const uint32_t seed = argc > 1 && std::string(argv[1]) != "--only" ? static_cast<uint32_t>(std::atoi(argv[1]))
                                                                      : static_cast<uint32_t>(time(nullptr));
  std::printf("seed %u\n", seed);
  std::vector<Case> cases = {
      {true, 16, 1, 1, {0, 1, 77, 300}, true, 4, false},
      {true, 16, 1, 1, {0, 1, 77, 300}, true, 132, true},
      {true, 16, 1, 2, {1, 2, 65, 130}, false, 6, true},
      {true, 32, 1, 1, {5, 0, 200, 33}, true, 132, false},
      {true, 32, 1, 2, {1, 150, 31, 33}, true, 8, true},
      {true, 128, 1, 1, {0, 1, 100}, false, 16, false},
      {true, 128, 1, 2, {2, 64}, true, 132, true},
      {false, 32, 8, 1, {0, 1, 140, 300}, true, 4, true},
      {false, 32, 8, 2, {1, 2, 90, 64}, false, 132, false},
      {false, 16, 2, 2, {3, 200}, true, 8, true},
      {false, 64, 1, 1, {129, 1}, true, 132, false},
      {true, 16, 1, 1, {0, 0}, true, 4, false},
      // every MLA instance on 16, 32 and 64+ rows (a smaller block than the rows runs
      // several blocks per part)
      {true, 32, 1, 1, {0, 170, 64, 1}, false, 132, true, "mla576x512.m16"},
      {true, 16, 1, 2, {1, 2, 100, 40}, true, 6, false, "mla576x512.m16"},
      {true, 32, 1, 1, {3, 1, 200, 0}, true, 8, true, "mla576x512.m32.w8"},
      {true, 16, 1, 2, {1, 2, 100, 40}, true, 132, false, "mla576x512.m32.w8"},
      {true, 32, 1, 1, {3, 1, 200, 0}, true, 8, false, "mla576x512.m32.w16"},
      {true, 16, 1, 2, {1, 2, 100, 40}, false, 132, true, "mla576x512.m32.w16"},
      {true, 128, 1, 1, {0, 1, 90}, true, 132, true, "mla576x512.m32.w16"},
      {true, 32, 1, 2, {1, 2, 120}, true, 5, false, "mla576x512.m64.w16"},
      {true, 128, 1, 1, {0, 1, 90}, false, 132, true, "mla576x512.m64.w16"},
      {true, 32, 1, 2, {1, 2, 120}, true, 5, true, "mla576x512.m64.w8"},
      {true, 16, 1, 1, {0, 1, 77, 300}, true, 132, true, "mla576x512.m64.w8"},
      // overlapped tile schedule: one tile, two tiles, many tiles, split or not
      {true, 32, 1, 1, {3, 1, 200, 0, 40, 64}, true, 8, true, "mla576x512.m32.w8.ov"},
      {true, 16, 1, 2, {1, 2, 300, 33}, false, 132, false, "mla576x512.m32.w8.ov"},
      {true, 32, 1, 1, {3, 1, 200, 0, 40, 64}, true, 8, false, "mla576x512.m32.w16.ov"},
      {true, 16, 1, 2, {1, 2, 300, 33}, true, 132, true, "mla576x512.m32.w16.ov"},
      {true, 32, 1, 2, {1, 2, 250, 64}, true, 5, true, "mla576x512.m64.w8.ov"},
      {true, 128, 1, 1, {0, 1, 90}, false, 132, false, "mla576x512.m64.w8.ov"},
  };
  // Bulk-copy (TMA) instances on every shape class: 16 / 32 / 64 / 128 rows, q_len 1 and 2
  // (causal), paged and contiguous, lengths 0 and 1, partial last tiles, lengths on page
  // boundaries, many tiles per segment (more than the stages) and several segments per
  // part (few SMs: the stage ring and its phases carry over from one segment to the
  // next), copies landing at issue or only when waited for.
  for (const char* k : {"mla576x512.m32.tma", "mla576x512.m32.w16.tma", "mla576x512.m64.tma", "mla576x512.m32.tma.ov",
                        "mla576x512.m16.tma", "mla576x512.m32.tma.p", "mla576x512.m32.tma.p5"}) {
    cases.push_back({true, 32, 1, 1, {0, 1, 333, 64, 97}, true, 4, true, k});
    cases.push_back({true, 32, 1, 1, {5, 0, 200, 33, 1000}, false, 132, false, k});
    cases.push_back({true, 32, 1, 1, {700, 3, 128, 65}, true, 2, false, k});
    cases.push_back({true, 16, 1, 2, {1, 2, 300, 33}, true, 6, false, k});
    cases.push_back({true, 16, 1, 2, {2, 129, 64}, false, 132, true, k});
    cases.push_back({true, 16, 1, 1, {0, 1, 77, 300}, true, 8, true, k});
    cases.push_back({true, 32, 1, 2, {1, 2, 250, 64}, true, 5, true, k});
    cases.push_back({true, 128, 1, 1, {0, 1, 90}, false, 132, false, k});
  }
  // --only SUBSTR: just the cases whose forced kernel name contains SUBSTR
  const char* only = nullptr;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--only") only = argv[i + 1];
  if (only != nullptr)
    cases.erase(std::remove_if(cases.begin(), cases.end(),
                               [&](const Case& c) { return c.kernel == nullptr || !std::strstr(c.kernel, only); }),
                cases.end());
  int failed = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    std::printf("case %zu: %s heads %d/%d q_len %d %s sms %d copies %s%s%s lens", i, c.mla ? "MLA" : "GQA", c.heads,
                c.kv_heads, c.q_len, c.paged ? "paged" : "contiguous", c.sms, c.late ? "late" : "early",
                c.kernel ? " kernel " : "", c.kernel ? c.kernel : "");
    for (int l : c.lens) std::printf(" %d", l);
    std::printf("\n");
    double lse_err = 0;
    const double rel = RunCase(c, seed + 977 * static_cast<uint32_t>(i), &lse_err);
    const bool ok = rel < 1e-2 && lse_err < 1e-3;
    std::printf("  rel %.3e  lse %.3e  %s\n", rel, lse_err, ok ? "ok" : "FAIL");
    failed += !ok;
  }
  std::printf("%s (%d failed), mma calls %ld\n", failed ? "FAILED" : "all ok", failed, g2m_emu::g_mma_count.load());
  return failed ? 1 : 0;
}
