// Affine dequantization of MLX's packed layout: a body for mx.fast.metal_kernel.
//
// MLX generates the signature. Inputs: w (uint32, packed), scales, biases; output: out.
// Template parameters:
//   T           output type
//   S           type of the multiply (the scales' type)
//   A           type of the add (the result type of scales and biases)
//   BITS        1, 2, 3, 4, 5, 6 or 8
//   GROUP_SIZE  32, 64 or 128
//   FUSED       false: q * scale rounded to S, then + bias rounded to A (two statements, so
//               nothing can fuse them; what MLX's CPU dequantize does). true: one fma, one
//               rounding (what MLX's GPU kernel's `scale * d + bias` becomes if its compiler
//               contracts it). mlxload probes once which one equals mx.dequantize here.
// Each row is one little-endian bit stream: value j sits at bits [j*BITS, (j+1)*BITS).
// One thread writes 8 consecutive values of a row. 8 values start on a byte boundary and
// groups are multiples of 8, so the 8 share one scale and one bias.
// Dispatch: x = row length / 8, y = number of rows (all leading dimensions), z = 1.
// mlxload_fma comes from affine_dequantize.h (the kernel's header).
// Keep to the subset tests/metal_emulator/shim.h can express.

uint pack = thread_position_in_grid.x;
uint row = thread_position_in_grid.y;
uint words = uint(w_shape[w_ndim - 1]);
uint row_len = words * 32 / BITS;
if (pack * 8 >= row_len) {
  return;
}
size_t first = size_t(row) * row_len + size_t(pack) * 8;
size_t group = first / GROUP_SIZE;
S scale = scales[group];
A bias = A(biases[group]);
size_t row_word = size_t(row) * words;
uint bit = pack * 8 * BITS;
for (int j = 0; j < 8; j++) {
  uint word = bit >> 5;
  uint shift = bit & 31;
  uint v = w[row_word + word] >> shift;
  if (shift + BITS > 32) {
    // The value straddles two words (3, 5 and 6 bits only).
    v |= w[row_word + word + 1] << (32 - shift);
  }
  uint q = v & ((1u << BITS) - 1u);
  if (FUSED) {
    out[first + j] = T(mlxload_fma(A(S(float(q))), A(scale), bias));
  } else {
    S qs = S(float(q)) * scale;
    out[first + j] = T(A(qs) + bias);
  }
  bit += BITS;
}
