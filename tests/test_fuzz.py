"""Property-based fuzzing: any mutation of a valid file ends in success or a SafetensorsError,
quickly — never a crash, a MemoryError, a hang, or another exception type."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import mlx.core as mx
import numpy as np
import safetensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlxload
from mlxload.header import read_header

_DIR = Path(tempfile.mkdtemp(prefix="mlxload-fuzz-"))


def _valid_file() -> bytes:
    path = _DIR / "seed.safetensors"
    if not path.exists():
        mx.save_safetensors(
            str(path),
            {
                "a": mx.arange(6, dtype=mx.float32).reshape(2, 3),
                "b": mx.array([1, 2, 3], dtype=mx.int8),
                "c": mx.ones((2, 2), dtype=mx.bfloat16),
            },
            metadata={"format": "mlx"},
        )
    return path.read_bytes()


SEED = _valid_file()
(HEADER_LEN,) = struct.unpack("<Q", SEED[:8])
HEADER = json.loads(SEED[8 : 8 + HEADER_LEN])


def _load_all(data: bytes) -> None:
    path = _DIR / "case.safetensors"
    path.write_bytes(data)
    try:
        header = read_header(path)
    except mlxload.SafetensorsError:
        return
    # We accepted it, so the reference library must accept it too ("at least as strict").
    with safetensors.safe_open(str(path), "numpy") as ref:
        assert sorted(ref.keys()) == sorted(header.tensors)
    loaded = mlxload.load_file(path)
    assert list(loaded) == list(header.tensors)
    for name, info in header.tensors.items():
        assert loaded[name].nbytes == info.nbytes


FUZZ = settings(
    max_examples=150,
    deadline=1000,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(SEED) - 1), st.integers(0, 255)), max_size=8))
def test_byte_flips(flips):
    data = bytearray(SEED)
    for pos, value in flips:
        data[pos] = value
    _load_all(bytes(data))


@FUZZ
@given(st.integers(0, len(SEED)), st.binary(max_size=64))
def test_truncate_or_extend(cut, tail):
    _load_all(SEED[:cut] + tail)


@FUZZ
@given(st.integers(0, 2**64 - 1))
def test_any_length_prefix(n):
    _load_all(struct.pack("<Q", n) + SEED[8:])


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["F32", "BF16", "I8", "F4", "F6_E2M3", "F8_E4M3", "C64", "BOOL"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)


@FUZZ
@given(
    st.sampled_from(["a", "b", "c", "__metadata__", "new"]),
    st.sampled_from(["dtype", "shape", "data_offsets", None]),
    _json_values,
    st.integers(0, 16),
)
def test_header_field_mutations(tensor, field, value, extra_data):
    header = json.loads(json.dumps(HEADER))
    if field is None or tensor == "__metadata__" or tensor not in header:
        header[tensor] = value
    else:
        header[tensor][field] = value
    body = json.dumps(header).encode()
    data = SEED[8 + HEADER_LEN :] + bytes(extra_data)
    _load_all(struct.pack("<Q", len(body)) + body + data)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["F32", "F16", "U8", "F4", "F6_E3M2", "I64"]),
            st.lists(st.integers(0, 5), max_size=3),
            st.integers(0, 64),
            st.integers(0, 64),
        ),
        max_size=4,
    ),
    st.integers(0, 128),
)
def test_random_headers(entries, data_len):
    header = {
        f"t{i}": {"dtype": d, "shape": s, "data_offsets": [b, e]}
        for i, (d, s, b, e) in enumerate(entries)
    }
    body = json.dumps(header).encode()
    _load_all(struct.pack("<Q", len(body)) + body + bytes(np.arange(data_len, dtype=np.uint8)))
