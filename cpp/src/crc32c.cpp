#include "itp/crc32c.hpp"

#include <array>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <nmmintrin.h>
#define ITP_CRC32C_X86 1
#endif

namespace itp {

namespace {

constexpr std::uint32_t kPoly = 0x82F63B78U;  // reflected Castagnoli polynomial

// tables[k][b]: CRC of byte b followed by k zero bytes (slicing-by-8).
using Tables = std::array<std::array<std::uint32_t, 256>, 8>;

constexpr Tables make_tables() {
  Tables t{};
  for (std::uint32_t b = 0; b < 256; ++b) {
    std::uint32_t c = b;
    for (int i = 0; i < 8; ++i) c = (c & 1U) ? (c >> 1) ^ kPoly : c >> 1;
    t[0][b] = c;
  }
  for (std::size_t k = 1; k < 8; ++k) {
    for (std::size_t b = 0; b < 256; ++b) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFFU];
  }
  return t;
}

constexpr Tables kTables = make_tables();

std::uint32_t portable_raw(const unsigned char* p, std::size_t n, std::uint32_t c) noexcept {
  while (n >= 8) {
    std::uint32_t lo = 0;
    std::uint32_t hi = 0;
    std::memcpy(&lo, p, 4);  // little-endian hosts (x86-64, AArch64); see the static_assert below
    std::memcpy(&hi, p + 4, 4);
    lo ^= c;
    c = kTables[7][lo & 0xFFU] ^ kTables[6][(lo >> 8) & 0xFFU] ^ kTables[5][(lo >> 16) & 0xFFU] ^
        kTables[4][lo >> 24] ^ kTables[3][hi & 0xFFU] ^ kTables[2][(hi >> 8) & 0xFFU] ^
        kTables[1][(hi >> 16) & 0xFFU] ^ kTables[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xFFU];
  return c;
}

#ifdef ITP_CRC32C_X86
// The CRC instruction has a 3-cycle latency and a 1-cycle throughput: one dependent stream runs at 8 bytes
// per 3 cycles. Three independent streams over consecutive blocks of kLong (then kShort) bytes keep the
// unit busy, and their CRCs are joined with the linearity of the raw CRC register:
//   raw(c, A B) = shift_|B|(raw(c, A)) ^ raw(0, B),
// where shift_n (the effect of n zero bytes) is a linear map on 32 bits, tabulated per input byte.
constexpr std::size_t kLong = 4096;
constexpr std::size_t kShort = 256;

__attribute__((target("sse4.2"))) std::uint32_t serial_raw(const unsigned char* p, std::size_t n,
                                                            std::uint32_t c) noexcept {
  std::uint64_t c64 = c;
  while (n >= 8) {
    std::uint64_t w = 0;
    std::memcpy(&w, p, 8);
    c64 = _mm_crc32_u64(c64, w);
    p += 8;
    n -= 8;
  }
  c = static_cast<std::uint32_t>(c64);
  while (n-- > 0) c = _mm_crc32_u8(c, *p++);
  return c;
}

// shift[k][b]: raw CRC register after `length` zero bytes, starting from byte b in byte position k.
struct ShiftTable {
  std::array<std::array<std::uint32_t, 256>, 4> t{};
  explicit ShiftTable(std::size_t length) {
    static const std::array<unsigned char, kLong> zeros{};
    for (std::size_t k = 0; k < 4; ++k) {
      for (std::uint32_t b = 0; b < 256; ++b) t[k][b] = serial_raw(zeros.data(), length, b << (8 * k));
    }
  }
  std::uint32_t operator()(std::uint32_t c) const noexcept {
    return t[0][c & 0xFFU] ^ t[1][(c >> 8) & 0xFFU] ^ t[2][(c >> 16) & 0xFFU] ^ t[3][c >> 24];
  }
};

template <std::size_t kBlock>
__attribute__((target("sse4.2"))) std::uint32_t three_way(const unsigned char*& p, std::size_t& n,
                                                           std::uint32_t c, const ShiftTable& shift) noexcept {
  while (n >= 3 * kBlock) {
    std::uint64_t a = c;
    std::uint64_t b = 0;
    std::uint64_t d = 0;
    for (std::size_t i = 0; i < kBlock; i += 8) {
      std::uint64_t wa = 0;
      std::uint64_t wb = 0;
      std::uint64_t wd = 0;
      std::memcpy(&wa, p + i, 8);
      std::memcpy(&wb, p + kBlock + i, 8);
      std::memcpy(&wd, p + 2 * kBlock + i, 8);
      a = _mm_crc32_u64(a, wa);
      b = _mm_crc32_u64(b, wb);
      d = _mm_crc32_u64(d, wd);
    }
    c = shift(static_cast<std::uint32_t>(a)) ^ static_cast<std::uint32_t>(b);
    c = shift(c) ^ static_cast<std::uint32_t>(d);
    p += 3 * kBlock;
    n -= 3 * kBlock;
  }
  return c;
}

__attribute__((target("sse4.2"))) std::uint32_t hardware_raw(const unsigned char* p, std::size_t n,
                                                              std::uint32_t c) noexcept {
  static const ShiftTable long_shift(kLong);
  static const ShiftTable short_shift(kShort);
  c = three_way<kLong>(p, n, c, long_shift);
  c = three_way<kShort>(p, n, c, short_shift);
  return serial_raw(p, n, c);
}

bool detect_hardware() noexcept { return __builtin_cpu_supports("sse4.2") != 0; }
#else
bool detect_hardware() noexcept { return false; }
#endif

}  // namespace

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "crc32c_portable assumes a little-endian host");

std::uint32_t crc32c_portable(const void* data, std::size_t size, std::uint32_t crc) noexcept {
  return ~portable_raw(static_cast<const unsigned char*>(data), size, ~crc);
}

bool crc32c_hardware() noexcept {
  static const bool has = detect_hardware();
  return has;
}

std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc) noexcept {
#ifdef ITP_CRC32C_X86
  if (crc32c_hardware()) return ~hardware_raw(static_cast<const unsigned char*>(data), size, ~crc);
#endif
  return crc32c_portable(data, size, crc);
}

}  // namespace itp
