#include "itp/state.hpp"

#include <algorithm>
#include <cmath>

namespace itp {

const std::array<const char*, kNumFeatures> kFeatureNames = {
    "bandwidth_bps[0]", "bandwidth_bps[1]", "bandwidth_bps[2]", "bandwidth_bps[3]",
    "latency_s[0]",     "latency_s[1]",     "latency_s[2]",     "latency_s[3]",
    "congestion[0]",    "congestion[1]",    "congestion[2]",    "congestion[3]",
    "success_rate[0]",  "success_rate[1]",  "success_rate[2]",  "success_rate[3]",
    "queue_depth",      "task_size_bytes",  "priority",         "time_of_day_h",
};

int find_invalid_feature(const double* raw) noexcept {
  for (std::size_t i = 0; i < kNumFeatures; ++i) {
    const double x = raw[i];
    if (!std::isfinite(x) || x < 0.0) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

namespace {
inline float clamp01(double x) noexcept {
  return static_cast<float>(std::min(1.0, std::max(0.0, x)));
}
}  // namespace

double task_size_feature(double size_bytes) noexcept {
  return std::log2(std::max(size_bytes, 1.0)) / kTaskSizeLog2Scale;
}

float normalized_task_size(double size_bytes) noexcept { return clamp01(task_size_feature(size_bytes)); }

void normalize_state(const double* raw, float* out) noexcept {
  for (std::size_t i = 0; i < kNumStreams; ++i) {
    out[kBandwidthOffset + i] = clamp01(raw[kBandwidthOffset + i] / kBandwidthScaleBps);
    out[kLatencyOffset + i] = clamp01(raw[kLatencyOffset + i] / kLatencyScaleS);
    out[kCongestionOffset + i] = clamp01(raw[kCongestionOffset + i]);
    out[kSuccessRateOffset + i] = clamp01(raw[kSuccessRateOffset + i]);
  }
  out[kQueueDepthIndex] = clamp01(raw[kQueueDepthIndex] / kQueueDepthScale);
  out[kTaskSizeIndex] = normalized_task_size(raw[kTaskSizeIndex]);
  out[kPriorityIndex] = clamp01(raw[kPriorityIndex]);
  out[kTimeOfDayIndex] = clamp01(raw[kTimeOfDayIndex] / kHoursPerDay);
}

}  // namespace itp
