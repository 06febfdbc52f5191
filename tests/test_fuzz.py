"""Property-based fuzzing: any mutation of a valid file ends in success or a SafetensorsError,
quickly — never a crash, a MemoryError, a hang, or another exception type."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import safetensors
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import mlxload
from mlxload.header import read_header


def _valid_file() -> bytes:
    """The file every test mutates, written in memory (the strategies need its size at import,
    and a folder made then was never removed)."""
    buffer = io.BytesIO()
    mx.save_safetensors(
        buffer,
        {
            "a": mx.arange(6, dtype=mx.float32).reshape(2, 3),
            "b": mx.array([1, 2, 3], dtype=mx.int8),
            "c": mx.ones((2, 2), dtype=mx.bfloat16),
        },
        metadata={"format": "mlx"},
    )
    return buffer.getvalue()


_NUMPY_DTYPES = {"F16", "F32", "F64", "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "BOOL"}

SEED = _valid_file()
(HEADER_LEN,) = struct.unpack("<Q", SEED[:8])
HEADER = json.loads(SEED[8 : 8 + HEADER_LEN])


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file each input is written to (module-scoped: Hypothesis runs many per test)."""
    return tmp_path_factory.mktemp("fuzz") / "case.safetensors"


def _load_all(path: Path, data: bytes) -> bool:
    """Check one input; True when it was accepted (and its bytes compared), False when refused."""
    path.write_bytes(data)
    try:
        header = read_header(path)
    except mlxload.SafetensorsError:
        return False
    # We accepted it, so the reference library must accept it too ("at least as strict"), and
    # every tensor must hold exactly its bytes of the file, as the reference reads them.
    loaded = mlxload.load_file(path)
    assert list(loaded) == list(header.tensors)
    with safetensors.safe_open(str(path), "numpy") as ref:
        assert sorted(ref.keys()) == sorted(header.tensors)
        for name, info in header.tensors.items():
            ours = np.array(mx.view(loaded[name], mx.uint8)).tobytes() if info.nbytes else b""
            assert ours == data[info.offset : info.offset + info.nbytes], name
            if info.dtype in _NUMPY_DTYPES:  # (numpy has no bfloat16 or sub-byte floats)
                assert ref.get_tensor(name).tobytes() == ours, name
    return True


FUZZ = settings(
    max_examples=150,
    deadline=1000,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(SEED) - 1), st.integers(0, 255)), max_size=8))
@example([])
@example([(len(SEED) - 1, 0x7F), (8 + HEADER_LEN, 0x80)])  # tensor bytes: still a valid file
def test_byte_flips(case, flips):
    data = bytearray(SEED)
    for pos, value in flips:
        data[pos] = value
    _load_all(case, bytes(data))


@FUZZ
@given(st.integers(0, len(SEED)), st.binary(max_size=64))
@example(len(SEED), b"")
def test_truncate_or_extend(case, cut, tail):
    _load_all(case, SEED[:cut] + tail)


@FUZZ
@given(st.integers(0, 2**64 - 1))
@example(HEADER_LEN)
def test_any_length_prefix(case, n):
    _load_all(case, struct.pack("<Q", n) + SEED[8:])


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
@example("a", "shape", [3, 2], 0)  # same element count: still valid
@example("__metadata__", None, {"k": "v"}, 0)
def test_header_field_mutations(case, tensor, field, value, extra_data):
    header = json.loads(json.dumps(HEADER))
    if field is None or tensor == "__metadata__" or tensor not in header:
        header[tensor] = value
    else:
        header[tensor][field] = value
    body = json.dumps(header).encode()
    data = SEED[8 + HEADER_LEN :] + bytes(extra_data)
    _load_all(case, struct.pack("<Q", len(body)) + body + data)


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
@example([("U8", [4], 0, 4), ("F16", [2, 1], 4, 8)], 8)
def test_random_headers(case, entries, data_len):
    header = {
        f"t{i}": {"dtype": d, "shape": s, "data_offsets": [b, e]}
        for i, (d, s, b, e) in enumerate(entries)
    }
    body = json.dumps(header).encode()
    data = bytes(np.arange(data_len, dtype=np.uint8))
    _load_all(case, struct.pack("<Q", len(body)) + body + data)


def test_valid_inputs_are_accepted_and_compared_byte_for_byte(case):
    # The fuzzers above mostly produce refusals; these prove the comparison path runs.
    data = SEED[8 + HEADER_LEN :]
    assert _load_all(case, SEED)
    assert _load_all(case, SEED[:-1] + b"\x7f")  # another tensor byte
    header = json.loads(json.dumps(HEADER))
    header["a"]["shape"] = [3, 2]
    body = json.dumps(header).encode()
    assert _load_all(case, struct.pack("<Q", len(body)) + body + data)
    header = {"x": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}
    body = json.dumps(header).encode()
    assert _load_all(case, struct.pack("<Q", len(body)) + body + b"\x01\x02\x03\x04")
    assert not _load_all(case, SEED[:-1])  # one byte short: refused
