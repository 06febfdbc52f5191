// Header of affine_dequantize.metal (mx.fast.metal_kernel's `header=`).
// mlxload_fma(a, b, c): a * b + c with a single rounding in the operands' type. Metal has fma
// for float and half; other types (bfloat16) go through float, then round once more.
inline float mlxload_fma(float a, float b, float c) {
  return metal::fma(a, b, c);
}
inline half mlxload_fma(half a, half b, half c) {
  return metal::fma(a, b, c);
}
template <typename X>
inline X mlxload_fma(X a, X b, X c) {
  return X(metal::fma(float(a), float(b), float(c)));
}
