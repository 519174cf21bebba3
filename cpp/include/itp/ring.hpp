// Bounded lock-free multi-producer single-consumer ring of fixed-size transition records (pybind-free,
// header-only, so native producers such as the partitioner push without Python).
//
// Protocol (sequence-number cells, after Vyukov's bounded queue, specialised to one consumer):
//   tail_  next position to claim (producers, CAS)       pushed  == tail_
//   head_  next position to read  (consumer only)        drained == head_
//   cell[pos & mask].seq == pos + 1  <=>  the record for position pos is published.
// A producer loads head_ (acquire), computes free = head_ + C - tail_, claims k = min(n, free) positions
// with one CAS on tail_, writes the k records and publishes each with seq = pos + 1 (release). The consumer
// reads cells in order while seq == pos + 1 (acquire), copies them out and stores head_ (release) after
// every chunk, which is what frees those cells for producers: a producer never writes a cell the consumer
// has not released, and the consumer never reads a cell before its producer has published it.
//
// Guarantees:
//   - try_push / push_many never lock, never block, never overwrite: when the ring is full they return
//     (false / fewer than asked) and add every record they could not place to `dropped`. A retried record
//     that is rejected again is counted again.
//   - Records from one producer thread are drained in the order that thread pushed them (FIFO per producer;
//     across producers, the order of their claims).
//   - The CAS retry loop is lock-free (some producer always progresses). A producer preempted between its
//     claim and its publish makes the consumer stop at that cell until it is published (nothing is lost).
//   - One consumer at a time: drain() takes consumer_mutex_, which producers never touch, so concurrent
//     drains are serialised rather than corrupting the ring.
//   - size_approx() = tail_ - head_, read without a lock: it may count claimed but unpublished records
//     and is stale as soon as it returns.
//
// Layout: tail_, head_ and dropped_ sit on separate 64-byte cache lines, and every cell is 64-byte aligned
// (192 bytes), so producers writing neighbouring cells do not false-share.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <limits>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "itp/actions.hpp"
#include "itp/guard_verdicts.hpp"
#include "itp/state.hpp"

namespace itp {

// One transition (s, a, r, s', done), the behaviour policy's probability of the action and the guard's
// verdicts, 180 bytes of plain data.
struct TransitionRecord {
  std::array<float, kNumFeatures> state;       // normalised state, 20 floats
  std::int32_t action;                         // 0..14
  float reward;                                // finite
  std::array<float, kNumFeatures> next_state;  // normalised next state, 20 floats
  std::uint8_t done;                           // 0 or 1
  // Probability in (0, 1] the behaviour policy gave `action` (off-policy corrections); 1 means
  // deterministic (greedy or heuristic decisions); NaN means unknown (a producer that pushed none): the
  // off-policy gate must not use the row, where a made-up 1 would weight it as a deterministic choice.
  float propensity = std::numeric_limits<float>::quiet_NaN();
  // The guard's verdicts when the action was chosen (itp/guard_verdicts.hpp); -1: none.
  std::int32_t guard_verdicts = kNoGuardVerdicts;
};
static_assert(std::is_trivially_copyable_v<TransitionRecord>, "records are copied as bytes");
static_assert(sizeof(TransitionRecord) == 180, "the record fills 180 of the cell's 192 bytes");

// True when every float is finite, 0 <= action < 15, done is 0 or 1 and propensity in (0, 1] or NaN
// (unknown). O(41).
inline bool is_valid_record(const TransitionRecord& r) noexcept {
  bool ok = r.action >= 0 && r.action < kNumActions && r.done <= 1 && std::isfinite(r.reward) &&
            (std::isnan(r.propensity) || (r.propensity > 0.0F && r.propensity <= 1.0F)) &&
            valid_guard_verdicts(r.guard_verdicts);
  for (std::size_t i = 0; i < kNumFeatures; ++i) {
    ok = ok && std::isfinite(r.state[i]) && std::isfinite(r.next_state[i]);
  }
  return ok;
}

class ExperienceRing {
 public:
  static constexpr std::size_t kCacheLine = 64;
  // 2^22 cells (768 MiB, committed and zeroed at construction): the largest ring accepted. A ring only
  // has to absorb bursts between drains; 2^16 is plenty for the learner.
  static constexpr std::size_t kMaxCapacity = std::size_t{1} << 22;
  // The consumer publishes head_ (frees cells) after at most this many records.
  static constexpr std::size_t kDrainChunk = 256;

  // min_capacity: 1..kMaxCapacity records, rounded up to a power of two (at least 2).
  // Throws std::invalid_argument out of range, std::bad_alloc when memory runs out.
  explicit ExperienceRing(std::size_t min_capacity)
      : capacity_(checked_capacity(min_capacity)), mask_(capacity_ - 1), cells_(capacity_),
        scratch_(kDrainChunk) {}

  ExperienceRing(const ExperienceRing&) = delete;
  ExperienceRing& operator=(const ExperienceRing&) = delete;

  std::size_t capacity() const noexcept { return capacity_; }
  std::uint64_t pushed() const noexcept { return tail_.load(std::memory_order_acquire); }
  std::uint64_t drained() const noexcept { return head_.load(std::memory_order_acquire); }
  std::uint64_t dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }
  // Records claimed but not yet drained; approximate under concurrency (see header comment).
  std::size_t size_approx() const noexcept {
    const std::uint64_t head = head_.load(std::memory_order_acquire);
    const std::uint64_t tail = tail_.load(std::memory_order_acquire);
    return tail > head ? static_cast<std::size_t>(std::min<std::uint64_t>(tail - head, capacity_)) : 0;
  }

  // Pushes one record; false (and dropped += 1) when full. Lock-free, never blocks. Precondition:
  // is_valid_record(record) (the Python bindings check it; drain_into re-checks).
  bool try_push(const TransitionRecord& record) noexcept {
    return push_with(1, [&record](std::size_t, TransitionRecord& cell) { cell = record; }) == 1;
  }

  // Pushes records[0..n) in order until the ring is full; returns how many were pushed and adds the rest
  // to dropped. Claims all free cells it needs with one CAS. Lock-free, never blocks.
  std::size_t push_many(const TransitionRecord* records, std::size_t n) noexcept {
    return push_with(n, [records](std::size_t k, TransitionRecord& cell) { cell = records[k]; });
  }

  // Like push_many, but fill(k, cell) writes record k straight into its claimed cell (no staging copy).
  // fill must not throw.
  template <typename Fill>
  std::size_t push_with(std::size_t n, Fill&& fill) noexcept {
    if (n == 0) return 0;
    std::uint64_t pos = tail_.load(std::memory_order_relaxed);
    std::size_t k = 0;
    for (;;) {
      const std::uint64_t head = head_.load(std::memory_order_acquire);
      // pos <= true tail <= head + capacity, so this never underflows; a stale pos only fails the CAS.
      const std::uint64_t free_cells = head + capacity_ - pos;
      if (free_cells == 0) {
        dropped_.fetch_add(n, std::memory_order_relaxed);
        return 0;
      }
      k = static_cast<std::size_t>(std::min<std::uint64_t>(n, free_cells));
      if (tail_.compare_exchange_weak(pos, pos + k, std::memory_order_relaxed,
                                      std::memory_order_relaxed)) {
        break;
      }
    }
    for (std::size_t j = 0; j < k; ++j) {
      Cell& cell = cells_[(pos + j) & mask_];
      fill(j, cell.record);
      cell.seq.store(pos + j + 1, std::memory_order_release);
    }
    if (k < n) dropped_.fetch_add(n - k, std::memory_order_relaxed);
    return k;
  }

  // Single consumer: moves up to max_records published records, oldest first, to sink(records, count)
  // in chunks of at most kDrainChunk (the cells are freed before the sink runs). Returns how many were
  // moved; stops early at the first unpublished cell. sink must not throw. Serialised by consumer_mutex_.
  template <typename Sink>
  std::size_t drain(std::size_t max_records, Sink&& sink) {
    std::lock_guard<std::mutex> lock(consumer_mutex_);
    std::uint64_t pos = head_.load(std::memory_order_relaxed);
    std::size_t moved = 0;
    while (moved < max_records) {
      const std::size_t limit = std::min(kDrainChunk, max_records - moved);
      std::size_t k = 0;
      while (k < limit) {
        const Cell& cell = cells_[pos & mask_];
        if (cell.seq.load(std::memory_order_acquire) != pos + 1) break;
        scratch_[k++] = cell.record;
        ++pos;
      }
      if (k == 0) break;
      head_.store(pos, std::memory_order_release);
      sink(static_cast<const TransitionRecord*>(scratch_.data()), k);
      moved += k;
      if (k < limit) break;
    }
    return moved;
  }

  // drain() into a caller array of at least max_records records.
  std::size_t drain_to(TransitionRecord* out, std::size_t max_records) {
    std::size_t offset = 0;
    return drain(max_records, [&](const TransitionRecord* records, std::size_t count) {
      std::copy(records, records + count, out + offset);
      offset += count;
    });
  }

 private:
  struct alignas(kCacheLine) Cell {
    std::atomic<std::uint64_t> seq{0};
    TransitionRecord record{};
  };
  static_assert(sizeof(Cell) == 3 * kCacheLine, "a cell is 192 bytes: seq + padding + record");

  static std::size_t checked_capacity(std::size_t n) {
    if (n < 1 || n > kMaxCapacity) {
      throw std::invalid_argument("capacity must be in 1.." + std::to_string(kMaxCapacity) + ", got " +
                                  std::to_string(n));
    }
    std::size_t c = 2;
    while (c < n) c <<= 1;
    return c;
  }

  const std::size_t capacity_;
  const std::size_t mask_;
  std::vector<Cell> cells_;
  alignas(kCacheLine) std::atomic<std::uint64_t> tail_{0};
  alignas(kCacheLine) std::atomic<std::uint64_t> head_{0};
  alignas(kCacheLine) std::atomic<std::uint64_t> dropped_{0};
  alignas(kCacheLine) std::mutex consumer_mutex_;
  std::vector<TransitionRecord> scratch_;  // consumer-only, guarded by consumer_mutex_
};

}  // namespace itp
