#include "itp/partitioner.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <functional>
#include <limits>
#include <utility>

namespace itp {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Ids hash once with the standard string hash; shards take the high bits so that the map inside a shard
// (which uses the low bits of the same hash) still sees well-spread values.
std::size_t hash_id(std::string_view id) noexcept { return std::hash<std::string_view>{}(id); }

}  // namespace

PartitionerCore::PartitionerCore(std::shared_ptr<DecisionEngine> engine, ExperienceRing* ring, double ttl_s)
    : engine_(std::move(engine)),
      ring_(ring),
      ttl_s_(ttl_s),
      serving_(std::make_shared<const Serving>()),
      earliest_created_s_(kInf) {}

void PartitionerCore::set_serving(std::shared_ptr<const Serving> serving) {
  std::atomic_store(&serving_, std::move(serving));
}

std::shared_ptr<const Serving> PartitionerCore::serving() const { return std::atomic_load(&serving_); }

std::size_t PartitionerCore::shard_of(std::string_view id) noexcept {
  return (hash_id(id) >> 40) % kShards;
}

bool PartitionerCore::is_pending(std::string_view id) const {
  const Shard& s = shards_[shard_of(id)];
  std::lock_guard<std::mutex> lock(s.mutex);
  // Heterogeneous lookup arrives only in C++20; one key copy here is cheaper than a second data structure.
  return s.map.find(std::string(id)) != s.map.end();
}

std::ptrdiff_t PartitionerCore::first_pending(const std::string_view* ids, std::size_t n) const {
  for (std::size_t k = 0; k < n; ++k) {
    if (is_pending(ids[k])) return static_cast<std::ptrdiff_t>(k);
  }
  return -1;
}

void PartitionerCore::count_decision(const Serving& serving, const DecisionOutput& out) noexcept {
  if (out.source != DecisionSource::kHeuristic) return;
  if (out.model_fault) nan_faults_.fetch_add(1, std::memory_order_relaxed);
  if (serving.model_wanted) fallbacks_.fetch_add(1, std::memory_order_relaxed);
}

void PartitionerCore::decide(const Serving& serving, const TaskInput& task, double hour, DecisionOutput& out) {
  StreamTransportParams params;
  engine_->snapshot(static_cast<double>(task.size_bytes), task.priority, hour, out.raw.data(), &params);
  engine_->decide_raw_with(out.raw.data(), task.size_bytes, serving.model.get(), nullptr, true, out, params.data());
  count_decision(serving, out);
}

void PartitionerCore::decide_many(const Serving& serving, const TaskInput* tasks, std::size_t n, double hour,
                                  DecisionOutput* out) {
  std::array<double, kNumFeatures> table{};
  StreamTransportParams params;
  engine_->snapshot_table(table.data(), &params);
  for (std::size_t k = 0; k < n; ++k) {
    DecisionOutput& d = out[k];
    std::copy(table.begin(), table.begin() + kTaskSizeIndex, d.raw.begin());
    d.raw[kTaskSizeIndex] = static_cast<double>(tasks[k].size_bytes);
    d.raw[kPriorityIndex] = tasks[k].priority;
    d.raw[kTimeOfDayIndex] = hour;
  }
  const FusedMlp* model = serving.model.get();
  if (model == nullptr || n < 2) {
    for (std::size_t k = 0; k < n; ++k) {
      engine_->decide_raw_with(out[k].raw.data(), tasks[k].size_bytes, model, nullptr, true, out[k], params.data());
      count_decision(serving, out[k]);
    }
    return;
  }
  // The network over the whole batch at once (forward_many: four states per weight pass, bit-identical
  // to one at a time), then each decision with its Q-values; exploration draws stay in task order.
  constexpr std::size_t kChunk = 64;
  std::array<float, kChunk * kNumFeatures> states{};
  std::array<float, kChunk * kNumActions> q{};
  for (std::size_t base = 0; base < n; base += kChunk) {
    const std::size_t m = std::min(kChunk, n - base);
    for (std::size_t k = 0; k < m; ++k) normalize_state(out[base + k].raw.data(), states.data() + k * kNumFeatures);
    model->forward_many(states.data(), m, q.data());
    for (std::size_t k = 0; k < m; ++k) {
      DecisionOutput& d = out[base + k];
      engine_->decide_raw_with(d.raw.data(), tasks[base + k].size_bytes, nullptr, q.data() + k * kNumActions, true,
                               d, params.data());
      count_decision(serving, d);
    }
  }
}

void PartitionerCore::fill_pending(PendingDecision& p, const DecisionOutput& d, std::uint8_t arm,
                                   const std::string* version, double now_s) {
  p.raw = d.raw;
  p.state = d.state;
  p.chunk_bytes = d.split.chunk_bytes;
  p.expected_time_s = d.split.expected_time_s;
  p.confidence = d.confidence;
  p.propensity = d.propensity;
  p.guard_verdicts = d.guard_verdicts;
  p.created_s = now_s;
  p.action = d.action;
  p.source = static_cast<std::uint8_t>(d.source);
  p.arm = arm;
  p.has_model_version = version != nullptr;
  if (version != nullptr) p.model_version = *version;
}

void PartitionerCore::lower_earliest(double created_s) noexcept {
  double cur = earliest_created_s_.load(std::memory_order_relaxed);
  while (created_s < cur &&
         !earliest_created_s_.compare_exchange_weak(cur, created_s, std::memory_order_relaxed)) {
  }
}

std::size_t PartitionerCore::expire_locked(Shard& shard, double cutoff_s) {
  std::size_t n = 0;
  while (!shard.order.empty()) {
    const std::string* key = shard.order.front();
    auto it = shard.map.find(*key);
    if (it->second.decision.created_s > cutoff_s) break;
    shard.order.pop_front();
    shard.map.erase(it);
    ++n;
  }
  return n;
}

std::size_t PartitionerCore::expire_all(double now_s) {
  std::lock_guard<std::mutex> sweep(sweep_mutex_);
  // Reset the bound first: an insertion racing with the sweep lowers it again with its own time.
  earliest_created_s_.store(kInf, std::memory_order_relaxed);
  const double cutoff = now_s - ttl_s_;
  std::size_t n = 0;
  double earliest = kInf;
  for (Shard& s : shards_) {
    std::lock_guard<std::mutex> lock(s.mutex);
    n += expire_locked(s, cutoff);
    if (!s.order.empty()) {
      earliest = std::min(earliest, s.map.find(*s.order.front())->second.decision.created_s);
    }
  }
  lower_earliest(earliest);
  if (n > 0) expired_.fetch_add(n, std::memory_order_relaxed);
  return n;
}

void PartitionerCore::maybe_expire(double now_s) {
  if (earliest_created_s_.load(std::memory_order_relaxed) <= now_s - ttl_s_) expire_all(now_s);
}

std::uint64_t PartitionerCore::insert(std::string_view id, const DecisionOutput& d, std::uint8_t arm,
                                      const std::string* version, double now_s) {
  maybe_expire(now_s);
  Shard& s = shards_[shard_of(id)];
  std::uint64_t token = 0;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    auto [it, inserted] = s.map.try_emplace(std::string(id));
    if (!inserted) return 0;
    token = next_token_.fetch_add(1, std::memory_order_relaxed);
    fill_pending(it->second.decision, d, arm, version, now_s);
    it->second.decision.token = token;
    it->second.order_it = s.order.insert(s.order.end(), &it->first);
  }
  lower_earliest(now_s);
  by_source_[static_cast<std::size_t>(d.source)].fetch_add(1, std::memory_order_relaxed);
  return token;
}

std::ptrdiff_t PartitionerCore::insert_many(const std::string_view* ids, const DecisionOutput* d,
                                            const std::uint8_t* arms, const std::string* version, std::size_t n,
                                            double now_s, std::uint64_t* tokens) {
  maybe_expire(now_s);
  // Every shard locked in index order (no deadlock with other batches; single calls hold one lock), so
  // the check and the insertion are one atomic step.
  std::array<std::unique_lock<std::mutex>, kShards> locks;
  for (std::size_t i = 0; i < kShards; ++i) locks[i] = std::unique_lock<std::mutex>(shards_[i].mutex);
  std::vector<std::size_t> shard_index(n);
  for (std::size_t k = 0; k < n; ++k) {
    shard_index[k] = shard_of(ids[k]);
    const Shard& s = shards_[shard_index[k]];
    if (s.map.find(std::string(ids[k])) != s.map.end()) return static_cast<std::ptrdiff_t>(k);
  }
  const std::uint64_t first_token = next_token_.fetch_add(n, std::memory_order_relaxed);
  std::array<std::uint64_t, 3> counts{};
  for (std::size_t k = 0; k < n; ++k) {
    Shard& s = shards_[shard_index[k]];
    auto [it, inserted] = s.map.try_emplace(std::string(ids[k]));
    (void)inserted;  // checked above under the same locks, and the caller's ids are distinct
    fill_pending(it->second.decision, d[k], arms[k], version, now_s);
    tokens[k] = first_token + k;
    it->second.decision.token = tokens[k];
    it->second.order_it = s.order.insert(s.order.end(), &it->first);
    ++counts[static_cast<std::size_t>(d[k].source)];
  }
  for (auto& l : locks) l.unlock();
  if (n > 0) lower_earliest(now_s);
  for (std::size_t i = 0; i < 3; ++i) {
    if (counts[i] > 0) by_source_[i].fetch_add(counts[i], std::memory_order_relaxed);
  }
  return -1;
}

double PartitionerCore::finish(const PendingDecision& p, const OutcomeInput& o, double hour, bool& pushed) {
  const double reward = reward_terms(p.raw.data(), p.chunk_bytes.data(), p.expected_time_s, o.throughput_bps,
                                     o.latency_s, o.success, o.retransmissions, weights_)
                            .total;
  {
    std::lock_guard<std::mutex> lock(stats_mutex_);
    ++stats_.reported;
    stats_.successes += o.success ? 1 : 0;
    stats_.reward_sum += reward;
    ++stats_.arm_count[p.arm];
    stats_.arm_reward[p.arm] += reward;
  }
  TransitionRecord rec{};
  rec.state = p.state;
  rec.action = p.action;
  rec.reward = static_cast<float>(reward);
  std::array<double, kNumFeatures> now_raw{};
  engine_->snapshot(p.raw[kTaskSizeIndex], p.raw[kPriorityIndex], hour, now_raw.data());
  normalize_state(now_raw.data(), rec.next_state.data());
  rec.done = 0;
  // As float32, never rounded to 0 (a tiny exploration share stays a valid, positive propensity).
  rec.propensity = std::max(static_cast<float>(p.propensity), std::numeric_limits<float>::min());
  rec.guard_verdicts = p.guard_verdicts;
  pushed = ring_ != nullptr && ring_->try_push(rec);
  return reward;
}

ReportResult PartitionerCore::report(std::string_view id, std::uint64_t token, const OutcomeInput& outcome,
                                     double hour) {
  ReportResult r;
  PendingDecision& p = r.decision;
  {
    Shard& s = shards_[shard_of(id)];
    std::lock_guard<std::mutex> lock(s.mutex);
    auto it = s.map.find(std::string(id));
    if (it == s.map.end()) {
      r.status = ReportStatus::kUnknown;
      return r;
    }
    if (token != kAnyToken && it->second.decision.token != token) {
      r.status = ReportStatus::kWrongDecision;
      return r;
    }
    p = std::move(it->second.decision);
    s.order.erase(it->second.order_it);
    s.map.erase(it);
  }
  r.status = ReportStatus::kOk;
  r.reward = finish(p, outcome, hour, r.pushed);
  return r;
}

std::ptrdiff_t PartitionerCore::report_many(const std::string_view* ids, const std::uint64_t* tokens,
                                            const OutcomeInput* outcomes, std::size_t n, double hour,
                                            ReportResult* results) {
  {
    std::array<std::unique_lock<std::mutex>, kShards> locks;
    for (std::size_t i = 0; i < kShards; ++i) locks[i] = std::unique_lock<std::mutex>(shards_[i].mutex);
    std::vector<std::unordered_map<std::string, Entry>::iterator> found(n);
    for (std::size_t k = 0; k < n; ++k) {
      Shard& s = shards_[shard_of(ids[k])];
      auto it = s.map.find(std::string(ids[k]));
      if (it == s.map.end() || (tokens[k] != kAnyToken && it->second.decision.token != tokens[k])) {
        results[k].status = it == s.map.end() ? ReportStatus::kUnknown : ReportStatus::kWrongDecision;
        return static_cast<std::ptrdiff_t>(k);
      }
      found[k] = it;
    }
    for (std::size_t k = 0; k < n; ++k) {
      Shard& s = shards_[shard_of(ids[k])];
      results[k].decision = std::move(found[k]->second.decision);
      s.order.erase(found[k]->second.order_it);
      s.map.erase(found[k]);
    }
  }
  for (std::size_t k = 0; k < n; ++k) {
    results[k].status = ReportStatus::kOk;
    results[k].reward = finish(results[k].decision, outcomes[k], hour, results[k].pushed);
  }
  return -1;
}

std::vector<std::string> PartitionerCore::pending_ids() const {
  std::vector<std::string> ids;
  for (const Shard& s : shards_) {
    std::lock_guard<std::mutex> lock(s.mutex);
    for (const auto& kv : s.map) ids.push_back(kv.first);
  }
  return ids;
}

std::size_t PartitionerCore::outstanding() const {
  std::size_t n = 0;
  for (const Shard& s : shards_) {
    std::lock_guard<std::mutex> lock(s.mutex);
    n += s.map.size();
  }
  return n;
}

std::array<std::uint64_t, 3> PartitionerCore::decisions_by_source() const noexcept {
  return {by_source_[0].load(std::memory_order_relaxed), by_source_[1].load(std::memory_order_relaxed),
          by_source_[2].load(std::memory_order_relaxed)};
}

OutcomeStats PartitionerCore::outcome_stats() const {
  std::lock_guard<std::mutex> lock(stats_mutex_);
  return stats_;
}

double local_hour_now() noexcept {
  // The UTC offset changes (DST) only at quarter-hour boundaries in every time zone in use, so one
  // localtime_r per quarter hour (it takes the libc time-zone lock) serves every call in between.
  static std::atomic<long long> cached_quarter{-1};
  static std::atomic<long long> cached_offset_s{0};
  const auto now = std::chrono::system_clock::now();
  const double now_s = std::chrono::duration<double>(now.time_since_epoch()).count();
  const auto quarter = static_cast<long long>(std::floor(now_s / 900.0));
  // Quarter first (acquire), then the offset stored before it was published.
  const bool fresh = cached_quarter.load(std::memory_order_acquire) == quarter;
  long long offset = cached_offset_s.load(std::memory_order_relaxed);
  if (!fresh) {
    const std::time_t t = static_cast<std::time_t>(now_s);
    std::tm local{};
    localtime_r(&t, &local);
    offset = static_cast<long long>(local.tm_gmtoff);
    cached_offset_s.store(offset, std::memory_order_relaxed);
    cached_quarter.store(quarter, std::memory_order_release);
  }
  const double day_s = std::fmod(now_s + static_cast<double>(offset), 86400.0);
  const double hour = (day_s < 0.0 ? day_s + 86400.0 : day_s) / 3600.0;
  return hour < 24.0 ? hour : 0.0;
}

double monotonic_now_s() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

}  // namespace itp
