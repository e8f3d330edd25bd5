// Minimal fork-join parallelism for the CPU kernels: ParallelFor splits [0, n) into
// contiguous chunks, one per worker thread (the calling thread takes the first).
#pragma once
#include <algorithm>
#include <exception>
#include <functional>
#include <thread>
#include <vector>

namespace g2m {

int NumThreads();

// fn(begin, end) is called on disjoint ranges covering [0, n). `grain` is the smallest
// chunk worth a thread. Exceptions from any chunk are rethrown on the caller.
inline void ParallelFor(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn) {
  if (n == 0) return;
  size_t threads = static_cast<size_t>(NumThreads());
  if (grain == 0) grain = 1;
  threads = std::max<size_t>(1, std::min(threads, (n + grain - 1) / grain));
  if (threads == 1) {
    fn(0, n);
    return;
  }
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errs(threads);
  size_t chunk = (n + threads - 1) / threads;
  for (size_t t = 1; t < threads; ++t) {
    size_t b = t * chunk, e = std::min(n, b + chunk);
    if (b >= e) break;
    pool.emplace_back([&, t, b, e] {
      try {
        fn(b, e);
      } catch (...) {
        errs[t] = std::current_exception();
      }
    });
  }
  try {
    fn(0, std::min(n, chunk));
  } catch (...) {
    errs[0] = std::current_exception();
  }
  for (auto& th : pool) th.join();
  for (auto& e : errs)
    if (e) std::rethrow_exception(e);
}

}  // namespace g2m
