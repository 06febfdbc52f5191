"""Run Metal kernel bodies on Linux: a C++ shim, a grid-looping harness, a fake metal_kernel."""
