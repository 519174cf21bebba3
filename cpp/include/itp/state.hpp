// State layout and normalisation: the single source of truth for the 20 model inputs.
//
// Raw state (float64, caller units) -> normalised state (float32, every feature in [0, 1]):
//
//   index  feature             raw unit          normalisation
//   0-3    bandwidth[i]        bits per second   x / 1e9            (1 Gbit/s -> 1)
//   4-7    latency[i]          seconds (RTT)     x / 0.1            (100 ms -> 1)
//   8-11   congestion[i]       fraction 0..1     x
//   12-15  success_rate[i]     fraction 0..1     x
//   16     queue_depth         tasks             x / 100
//   17     task_size           bytes             log2(max(x, 1)) / 40   (1 B -> 0, 1 TiB -> 1)
//   18     priority            fraction 0..1     x
//   19     time_of_day         hours [0, 24)     x / 24
//
// Every normalised feature is clamped into [0, 1]. The task size uses a log scale so that 64 KiB (0.40),
// 1 MiB (0.50), 100 MiB (0.66) and 4 GiB (0.80) stay clearly apart; a linear scale would squash every
// task below a gigabyte into the same few thousandths.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace itp {

inline constexpr std::size_t kNumStreams = 4;
inline constexpr std::size_t kNumFeatures = 20;
// Bumped whenever the feature order, count or any scale changes; copied into model metadata.
inline constexpr int kStateLayoutVersion = 1;

inline constexpr double kBandwidthScaleBps = 1e9;
inline constexpr double kLatencyScaleS = 0.1;
inline constexpr double kQueueDepthScale = 100.0;
inline constexpr double kTaskSizeLog2Scale = 40.0;
inline constexpr double kHoursPerDay = 24.0;

// Feature offsets inside the 20-vector (raw and normalised share the layout).
inline constexpr std::size_t kBandwidthOffset = 0;
inline constexpr std::size_t kLatencyOffset = 4;
inline constexpr std::size_t kCongestionOffset = 8;
inline constexpr std::size_t kSuccessRateOffset = 12;
inline constexpr std::size_t kQueueDepthIndex = 16;
inline constexpr std::size_t kTaskSizeIndex = 17;
inline constexpr std::size_t kPriorityIndex = 18;
inline constexpr std::size_t kTimeOfDayIndex = 19;

// Human-readable names, used in error messages ("bandwidth_bps[2] = nan").
extern const std::array<const char*, kNumFeatures> kFeatureNames;

// Returns the index of the first raw feature that is NaN, infinite or negative, or -1 if all are valid.
// O(20), no allocation, thread-safe.
int find_invalid_feature(const double* raw) noexcept;

// Normalises one validated raw state (20 doubles) into 20 floats in [0, 1]. Precondition:
// find_invalid_feature(raw) == -1. O(20), no allocation, thread-safe.
void normalize_state(const double* raw, float* out) noexcept;

// Maps a task size in bytes to its [0, 1] feature (see table above).
double task_size_feature(double size_bytes) noexcept;
// The state's float32 task-size column for a task of size_bytes: task_size_feature clamped to [0, 1].
// normalize_state writes exactly this; the exploration size limit compares against it.
float normalized_task_size(double size_bytes) noexcept;

}  // namespace itp
