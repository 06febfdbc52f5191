// Just enough of the Metal Shading Language for kernel bodies to compile as C++17.
// Build with -ffp-contract=off: Metal keeps separate statements separately rounded.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#define device
#define constant
#define thread
#define threadgroup

typedef unsigned int uint;
typedef unsigned short ushort;
typedef unsigned char uchar;

struct uint2 {
  uint x, y;
};
struct uint3 {
  uint x, y, z;
};

// half arithmetic: every operation rounds to half. A wrapper (not bare _Float16 math) so
// that GCC's excess precision can't keep an intermediate in float.
struct half_t {
  _Float16 v;
  half_t() = default;
  half_t(float f) : v(static_cast<_Float16>(f)) {}
  explicit half_t(double f) : v(static_cast<_Float16>(static_cast<float>(f))) {}
  explicit half_t(int i) : v(static_cast<_Float16>(static_cast<float>(i))) {}
  explicit half_t(uint i) : v(static_cast<_Float16>(static_cast<float>(i))) {}
  operator float() const { return static_cast<float>(v); }
};
inline half_t operator+(half_t a, half_t b) { return half_t(float(a) + float(b)); }
inline half_t operator-(half_t a, half_t b) { return half_t(float(a) - float(b)); }
inline half_t operator*(half_t a, half_t b) { return half_t(float(a) * float(b)); }
inline half_t operator/(half_t a, half_t b) { return half_t(float(a) / float(b)); }
typedef half_t half;
typedef half_t float16_t;

// bfloat16 with round-to-nearest-even from float and quiet NaNs, as MLX's bf16 type.
struct bfloat16_t {
  uint16_t bits;
  bfloat16_t() = default;
  bfloat16_t(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof(u));
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      bits = static_cast<uint16_t>((u >> 16) | 0x40u);
    } else {
      bits = static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
  }
  explicit bfloat16_t(half_t h) : bfloat16_t(float(h)) {}
  explicit bfloat16_t(int i) : bfloat16_t(static_cast<float>(i)) {}
  explicit bfloat16_t(uint i) : bfloat16_t(static_cast<float>(i)) {}
  operator float() const {
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof(f));
    return f;
  }
};
inline bfloat16_t operator+(bfloat16_t a, bfloat16_t b) { return bfloat16_t(float(a) + float(b)); }
inline bfloat16_t operator-(bfloat16_t a, bfloat16_t b) { return bfloat16_t(float(a) - float(b)); }
inline bfloat16_t operator*(bfloat16_t a, bfloat16_t b) { return bfloat16_t(float(a) * float(b)); }
inline bfloat16_t operator/(bfloat16_t a, bfloat16_t b) { return bfloat16_t(float(a) / float(b)); }
typedef bfloat16_t bfloat;

// The metal:: functions kernel headers use. fma rounds once: exactly for float; for half the
// double fma is exact unless the operands' exponents span ~40 binades (never for ordinary
// scales and biases), then rounds once to half.
namespace metal {
inline float fma(float a, float b, float c) { return std::fma(a, b, c); }
inline half_t fma(half_t a, half_t b, half_t c) {
  half_t r;
  r.v = static_cast<_Float16>(std::fma(double(float(a)), double(float(b)), double(float(c))));
  return r;
}
}  // namespace metal
