// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every chunk the transfer engine
// moves (itp.transfer: CHUNK_END carries it).
//
// Why CRC-32C and not zlib's CRC-32: both detect every burst error up to 32 bits and every odd number of
// bit errors in a chunk, but x86-64 (SSE4.2) and ARMv8 compute CRC-32C in hardware. On the development VM
// zlib.crc32 ran at about 1.6 GB/s, a third of the CPU of a loopback transfer; the SSE4.2 loop here runs
// at several GB/s. Same conventions as zlib.crc32: initial value 0, chaining crc32c(b, crc32c(a)) ==
// crc32c(a + b), check value crc32c("123456789") == 0xE3069283 (RFC 3720, B.4).
#pragma once

#include <cstddef>
#include <cstdint>

namespace itp {

// CRC-32C of `size` bytes at `data`, continuing from `crc` (0 to start). Uses the SSE4.2 instruction
// when the CPU has it (checked once), else slicing-by-8 tables; both give identical results. Thread-safe,
// no allocation.
std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc = 0) noexcept;

// The table-driven path alone (tests compare it with the hardware path).
std::uint32_t crc32c_portable(const void* data, std::size_t size, std::uint32_t crc = 0) noexcept;

// True when crc32c() uses the CPU's CRC-32C instruction.
bool crc32c_hardware() noexcept;

}  // namespace itp
