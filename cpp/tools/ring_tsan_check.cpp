// ThreadSanitizer check of the lock-free ExperienceRing and its drain into PrioritizedReplay, without
// Python (an uninstrumented interpreter would hide or invent races). Not part of the extension build.
//
// From the repository root (one command line):
//   g++ -std=c++17 -O1 -g -fsanitize=thread -Icpp/include cpp/tools/ring_tsan_check.cpp
//       cpp/src/replay.cpp cpp/src/sum_tree.cpp cpp/src/state.cpp cpp/src/actions.cpp
//       -o /tmp/ring_tsan_check -lpthread && /tmp/ring_tsan_check
//
// 8 producers push 200,000 records each into a 1024-cell ring (even threads one try_push per record,
// odd threads push_many of 16, retrying whatever did not fit) while one consumer drains in chunks of 512
// and stores every chunk in a replay buffer. Each record carries (producer, sequence): the consumer checks
// that every record arrives exactly once and in its producer's order. Exit status 0 when all arrived in
// order, the counters agree and the replay buffer's invariants hold; TSan reports any data race.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <thread>
#include <vector>

#include "itp/replay.hpp"
#include "itp/ring.hpp"

namespace {

constexpr std::size_t kProducers = 8;
constexpr std::size_t kPerProducer = 200000;

itp::TransitionRecord make_record(std::size_t producer, std::size_t seq) {
  itp::TransitionRecord r{};
  r.action = static_cast<std::int32_t>(producer % itp::kNumActions);
  r.state[0] = static_cast<float>(seq & 0xFFFF);  // exact in float32
  r.state[1] = static_cast<float>(seq >> 16);
  r.state[2] = static_cast<float>(producer);
  return r;
}

}  // namespace

int main() {
  itp::ExperienceRing ring(1024);
  itp::ReplayConfig config;
  config.capacity = 4096;
  itp::PrioritizedReplay replay(config);
  std::atomic<bool> go{false};
  std::vector<std::thread> producers;
  for (std::size_t t = 0; t < kProducers; ++t) {
    producers.emplace_back([&ring, &go, t] {
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      std::vector<itp::TransitionRecord> batch(16);
      std::size_t seq = 0;
      while (seq < kPerProducer) {
        if (t % 2 == 0) {
          if (ring.try_push(make_record(t, seq))) ++seq;
        } else {
          const std::size_t k = std::min<std::size_t>(batch.size(), kPerProducer - seq);
          for (std::size_t j = 0; j < k; ++j) batch[j] = make_record(t, seq + j);
          seq += ring.push_many(batch.data(), k);
        }
      }
    });
  }
  std::vector<std::size_t> next(kProducers, 0);
  std::vector<itp::TransitionRecord> out(512);
  std::size_t received = 0;
  std::size_t out_of_order = 0;
  go.store(true, std::memory_order_release);
  while (received < kProducers * kPerProducer) {
    const std::size_t m = ring.drain_to(out.data(), out.size());
    for (std::size_t k = 0; k < m; ++k) {
      const auto t = static_cast<std::size_t>(out[k].state[2]);
      const auto seq = static_cast<std::size_t>(out[k].state[0]) + (static_cast<std::size_t>(out[k].state[1]) << 16);
      if (t >= kProducers || next[t] != seq) {
        ++out_of_order;
      } else {
        ++next[t];
      }
    }
    replay.add_records(out.data(), m);
    received += m;
    if (m == 0) std::this_thread::yield();
  }
  for (auto& p : producers) p.join();
  const bool ok = out_of_order == 0 && ring.pushed() == received && ring.drained() == received &&
                  replay.rejected_records() == 0 && replay.check_invariants();
  std::printf("received %zu, out of order %zu, pushed %llu, drained %llu, dropped (retried) %llu: %s\n", received,
              out_of_order, static_cast<unsigned long long>(ring.pushed()),
              static_cast<unsigned long long>(ring.drained()), static_cast<unsigned long long>(ring.dropped()),
              ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
