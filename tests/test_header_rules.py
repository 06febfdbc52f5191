"""One test per validation rule: exception class and message, plus golden bytes."""

from __future__ import annotations

import contextlib
import gc
import json
import math
import struct

import mlx.core as mx
import pytest
from st_bytes import entry, raw_file, write_raw

import mlxload
from mlxload import errors
from mlxload.header import parse_header, read_header

F32_6 = struct.pack("<6f", 0, 1, 2, 3, 4, 5)


def check(tmp_path, header, data, exc, *fragments, **kw):
    path = write_raw(tmp_path / "bad.safetensors", header, data, **kw)
    with pytest.raises(exc) as info:
        read_header(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert isinstance(info.value, mlxload.SafetensorsError)
    assert isinstance(info.value, ValueError)
    return message


def test_file_too_small(tmp_path):
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"\x01\x02\x03")
    with pytest.raises(errors.FileTooSmallError, match=r"file is 3 bytes, shorter than"):
        read_header(path)


def test_header_larger_than_file(tmp_path):
    check(
        tmp_path,
        b"{}",
        b"",
        errors.HeaderLengthError,
        "header length 500",
        "10-byte file",
        declared_len=500,
    )


def test_header_over_limit(tmp_path):
    check(tmp_path, b"{}", b"", errors.HeaderTooLargeError, "100000000", declared_len=10**8 + 1)


def test_header_length_u64_max(tmp_path):
    check(tmp_path, b"{}", b"", errors.HeaderTooLargeError, str(2**64 - 1), declared_len=2**64 - 1)


def test_header_not_utf8(tmp_path):
    check(tmp_path, b'{"a\xff":1}', b"", errors.HeaderEncodingError, "not valid UTF-8", "byte 3")


def test_header_not_json(tmp_path):
    check(tmp_path, b'{"a": [1, 2}', b"", errors.HeaderJSONError, "not valid JSON")


@pytest.mark.parametrize("body", [b"[1, 2]", b'"x"', b"12", b" {}"])
def test_header_not_object(tmp_path, body):
    check(tmp_path, body, b"", errors.HeaderNotObjectError, "JSON object")


@pytest.mark.parametrize("value", [[1, 2], "F32", 3, None])
def test_entry_not_object(tmp_path, value):
    check(tmp_path, {"w": value}, b"", errors.TensorEntryError, "tensor 'w'", "must be an object")


@pytest.mark.parametrize("missing", ["dtype", "shape", "data_offsets"])
def test_entry_missing_field(tmp_path, missing):
    e = entry("F32", [6], 0, 24)
    del e[missing]
    check(tmp_path, {"w": e}, F32_6, errors.MissingFieldError, "tensor 'w'", f"lacks {missing}")


@pytest.mark.parametrize("dtype", ["F128", "f32", 7, None, ["F32"]])
def test_unknown_dtype(tmp_path, dtype):
    check(
        tmp_path,
        {"w": entry(dtype, [6], 0, 24)},
        F32_6,
        errors.UnknownDtypeError,
        "tensor 'w'",
        "unknown dtype",
        "BF16",
    )


@pytest.mark.parametrize(
    "shape", [[-1, 6], [2.0, 3], "6", [True, 6], [6, True], None, [[6]], "", {}, {"6": 6}]
)
def test_invalid_shape(tmp_path, shape):
    check(
        tmp_path,
        {"w": entry("F32", shape, 0, 24)},
        F32_6,
        errors.InvalidShapeError,
        "tensor 'w'",
        "non-negative integers",
    )


@pytest.mark.parametrize("shape", ["", {}])
def test_an_empty_string_or_object_is_not_a_scalar_shape(tmp_path, shape):
    """Like ``[]`` they hold no dims, so the size checks alone would take them for a scalar."""
    header = {"w": entry("F32", shape, 0, 4)}
    check(tmp_path, header, bytes(4), errors.InvalidShapeError, "tensor 'w'", "non-negative")


@pytest.mark.parametrize(
    "offsets",
    [[0], [0, 24, 48], [-1, 23], [24, 0], [0.0, 24], [False, 24], "0,24", "", [0, 2**64], None],
)
def test_invalid_offsets(tmp_path, offsets):
    header = {"w": {"dtype": "F32", "shape": [6], "data_offsets": offsets}}
    check(tmp_path, header, F32_6, errors.InvalidDataOffsetsError, "tensor 'w'", "data_offsets")


def test_size_overflow(tmp_path):
    check(
        tmp_path,
        {"w": entry("F32", [2**40, 2**40], 0, 24)},
        F32_6,
        errors.SizeOverflowError,
        "tensor 'w'",
        "overflows 64 bits",
    )


@pytest.mark.parametrize("dtype", ["U8", "F32"])
def test_a_size_that_wraps_past_64_bits_to_the_right_value_is_still_an_overflow(tmp_path, dtype):
    """3 * 6148914691236517206 is 2**64 + 2: in 64-bit arithmetic it wraps to 2 elements, which
    would match these offsets; the count must be exact."""
    size = 2 if dtype == "U8" else 8
    header = {
        "w": entry(dtype, [3, 6148914691236517206], 0, size),
        "b": entry("U8", [1], size, size + 1),
    }
    check(tmp_path, header, bytes(size + 1), errors.SizeOverflowError, "tensor 'w'", "overflows")


def test_size_mismatch(tmp_path):
    check(
        tmp_path,
        {"w": entry("F32", [2, 2], 0, 24)},
        F32_6,
        errors.TensorSizeMismatchError,
        "tensor 'w'",
        "needs 16 bytes",
        "span 24",
    )


@pytest.mark.parametrize("dtype,shape", [("F4", [3]), ("F6_E2M3", [5]), ("F6_E3M2", [1, 3])])
def test_sub_byte_not_whole_bytes(tmp_path, dtype, shape):
    check(
        tmp_path,
        {"w": entry(dtype, shape, 0, 2)},
        b"\0\0",
        errors.SubByteAlignmentError,
        "tensor 'w'",
        "whole byte",
    )


def test_offsets_gap(tmp_path):
    header = {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 12, 20)}
    check(
        tmp_path,
        header,
        bytes(20),
        errors.NonContiguousOffsetsError,
        "tensor 'b'",
        "a gap",
        "begin at 8",
    )


def test_offsets_overlap(tmp_path):
    header = {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}
    check(tmp_path, header, bytes(12), errors.NonContiguousOffsetsError, "tensor 'b'", "an overlap")


def test_offsets_not_from_zero(tmp_path):
    check(
        tmp_path,
        {"a": entry("F32", [2], 4, 12)},
        bytes(12),
        errors.NonContiguousOffsetsError,
        "tensor 'a'",
        "begin at 0",
    )


def test_data_shorter_than_header_says(tmp_path):
    check(
        tmp_path,
        {"w": entry("F32", [6], 0, 24)},
        F32_6[:20],
        errors.DataSizeMismatchError,
        "20 bytes, shorter than the 24",
        "truncated",
    )


def test_data_longer_than_header_says(tmp_path):
    check(
        tmp_path,
        {"w": entry("F32", [6], 0, 24)},
        F32_6 + b"junk",
        errors.DataSizeMismatchError,
        "28 bytes, longer than the 24",
    )


@pytest.mark.parametrize("metadata", [[1], "x", {"k": 1}, {"k": None}, {"k": ["v"]}])
def test_invalid_metadata(tmp_path, metadata):
    header = {"__metadata__": metadata, "w": entry("F32", [6], 0, 24)}
    check(tmp_path, header, F32_6, errors.InvalidMetadataError, "__metadata__")


# -- golden bytes -------------------------------------------------------------------------------


def test_golden_reference_serialization():
    """Bytes the reference library's own tests pin for one F32 tensor (1, 2, 3)."""
    header = b'{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}'
    blob = raw_file(header, F32_6)
    assert blob[:8] == bytes([64, 0, 0, 0, 0, 0, 0, 0])
    h = parse_header(blob[8 : 8 + 64], file_size=len(blob))
    info = h.tensors["attn.0"]
    assert (info.dtype, info.shape, info.begin, info.end, info.offset) == (
        "F32",
        (1, 2, 3),
        0,
        24,
        72,
    )
    assert h.metadata == {}


def test_golden_empty_with_padding():
    """The reference writer pads an empty header with spaces: ``{}`` + 6 spaces."""
    blob = bytes([8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32])
    h = parse_header(blob[8:], file_size=len(blob))
    assert h.tensors == {} and h.data_start == 16 and h.data_size == 0


def test_golden_metadata_only():
    body = b'{"__metadata__":{"framework":"pt"}}     '
    blob = struct.pack("<Q", len(body)) + body
    h = parse_header(body, file_size=len(blob))
    assert h.metadata == {"framework": "pt"} and h.tensors == {}


def test_null_metadata_accepted(tmp_path):
    """mx.save_safetensors writes ``"__metadata__": null`` when given no metadata."""
    path = tmp_path / "m.safetensors"
    mx.save_safetensors(str(path), {"x": mx.zeros((2,))})
    assert b'"__metadata__":null' in path.read_bytes()[:200]
    assert read_header(path).metadata == {}


def test_tensors_listed_in_offset_order(tmp_path):
    header = {"z": entry("U8", [2], 0, 2), "a": entry("U8", [3], 2, 5), "m": entry("U8", [1], 5, 6)}
    path = write_raw(tmp_path / "o.safetensors", header, b"abcdef")
    assert list(read_header(path).tensors) == ["z", "a", "m"]
    with mlxload.safe_open(path) as f:
        assert f.keys() == ["z", "a", "m"]
        assert bytes(memoryview(f.get_tensor("a"))) == b"cde"


def test_zero_copy_readiness_is_exact(tmp_path):
    """Absolute offset % element size decides readiness; padding pins the data start."""
    header = {
        "a": entry("U8", [3], 0, 3),
        "b": entry("F32", [1], 3, 7),
        "c": entry("I8", [1], 7, 8),
    }
    for data_mod, expected in [(1, [True, True, True]), (2, [True, False, True])]:
        body = padded_body(header, data_start_mod4=data_mod)
        path = write_raw(tmp_path / f"a{data_mod}.safetensors", body, bytes(8))
        tensors = read_header(path).tensors
        start = 8 + len(body)
        assert [t.offset for t in tensors.values()] == [start, start + 3, start + 7]
        assert [t.zero_copy_ready for t in tensors.values()] == expected


def padded_body(header: dict, *, data_start_mod4: int) -> bytes:
    """Header JSON followed by spaces so that ``(8 + len) % 4 == data_start_mod4``."""
    import orjson

    body = orjson.dumps(header)
    while (8 + len(body)) % 4 != data_start_mod4:
        body += b" "
    return body


# -- where a lenient JSON parser would accept what the reference refuses ------------------------


@pytest.mark.parametrize("field", ["dtype", "shape", "data_offsets"])
def test_duplicate_field_in_an_entry(tmp_path, field):
    values = {"dtype": '"F32"', "shape": "[6]", "data_offsets": "[0,24]"}
    body = ",".join(f'"{k}":{v}' for k, v in values.items())
    header = f'{{"w":{{{body},"{field}":{values[field]}}}}}'.encode()
    check(tmp_path, header, F32_6, errors.DuplicateFieldError, "tensor 'w'", f"field '{field}'",
          "2 times")  # fmt: skip


def test_duplicate_metadata(tmp_path):
    header = b'{"__metadata__":{"a":"1"},"__metadata__":{"b":"2"},'
    header += b'"w":{"dtype":"F32","shape":[6],"data_offsets":[0,24]}}'
    check(tmp_path, header, F32_6, errors.DuplicateFieldError, "2 __metadata__")


def test_duplicate_tensor_names_keep_the_last_like_the_reference(tmp_path):
    header = b'{"w":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},'
    header += b'"w":{"dtype":"F32","shape":[6],"data_offsets":[0,24]}}'
    path = write_raw(tmp_path / "d.safetensors", header, F32_6)
    assert read_header(path).tensors["w"].dtype == "F32"


@pytest.mark.parametrize("shape", ["[4294967296,4294967296,0]", "[18446744073709551615,2,0]"])
def test_size_overflow_before_a_zero_dim_is_an_error(tmp_path, shape):
    """The reference multiplies dims left to right with overflow checks; a later 0 does not
    excuse an overflow on the way."""
    header = f'{{"w":{{"dtype":"F32","shape":{shape},"data_offsets":[0,0]}}}}'.encode()
    check(tmp_path, header, b"", errors.SizeOverflowError, "tensor 'w'", "overflows 64 bits")


@pytest.mark.parametrize("in_offset_order", [True, False])
def test_sizes_no_file_can_have_are_checked_as_the_reference_does(in_offset_order):
    """parse_header takes any file_size: past 2**61 bytes a tensor's bit count can pass 64
    bits (the reference refuses that), and past 2**63 offsets don't fit numpy's int64 (an
    OverflowError escaped)."""
    size = 2**61 - 1  # bytes, and so bits, just fit: five of them run past 2**63
    tensors = {f"t{i}": entry("U8", [size], i * size, (i + 1) * size) for i in range(5)}
    order = list(tensors) if in_offset_order else ["t4", "t0", "t1", "t2", "t3"]
    raw = json.dumps({name: tensors[name] for name in order}).encode()
    header = parse_header(raw, file_size=8 + len(raw) + 5 * size)
    assert list(header.tensors) == ["t0", "t1", "t2", "t3", "t4"]
    too_big = json.dumps({"t": entry("U8", [2**61], 0, 2**61)}).encode()
    with pytest.raises(
        errors.SizeOverflowError, match="tensor 't': shape \\[2305843009213693952\\]"
    ):
        parse_header(too_big, file_size=8 + len(too_big) + 2**61)


def test_zero_dim_first_does_not_overflow(tmp_path):
    header = b'{"w":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}}'
    path = write_raw(tmp_path / "z.safetensors", header, b"")
    assert read_header(path).tensors["w"].nbytes == 0


@pytest.mark.parametrize(
    ("first", "error", "words"),
    [
        ("5", errors.TensorEntryError, "entry must be an object"),
        ('{"dtype":"XX","shape":[6],"data_offsets":[0,24]}', errors.UnknownDtypeError, "'XX'"),
        ('{"dtype":"F32","shape":[6]}', errors.MissingFieldError, "lacks data_offsets"),
    ],
)
def test_an_earlier_entry_of_a_repeated_name_is_still_checked(tmp_path, first, error, words):
    """The reference parses (and rejects) every entry before the last one wins."""
    header = f'{{"w":{first},"w":{{"dtype":"F32","shape":[6],"data_offsets":[0,24]}}}}'
    check(tmp_path, header.encode(), F32_6, error, "tensor 'w'", words)


@pytest.mark.parametrize(
    "first",
    [
        '{"dtype":"F32","shape":[3],"data_offsets":[0,24]}',
        '{"dtype":"F32","shape":[6],"data_offsets":[24,0]}',
    ],
)
def test_an_earlier_entry_of_a_repeated_name_is_checked_for_types_only(tmp_path, first):
    """Like the reference: sizes and offset order only matter for the entry that is kept."""
    header = f'{{"w":{first},"w":{{"dtype":"F32","shape":[6],"data_offsets":[0,24]}}}}'
    path = write_raw(tmp_path / "d.safetensors", header.encode(), F32_6)
    assert read_header(path).tensors["w"].shape == (6,)


@pytest.mark.parametrize("depth,ok", [(125, True), (126, False)])
def test_nesting_limit_matches_the_reference(tmp_path, depth, ok):
    nested = "[" * depth + "]" * depth
    header = f'{{"w":{{"dtype":"F32","shape":[6],"data_offsets":[0,24],"z":{nested}}}}}'
    path = write_raw(tmp_path / "n.safetensors", header.encode(), F32_6)
    if ok:
        assert list(read_header(path).tensors) == ["w"]
    else:
        with pytest.raises(errors.NestingTooDeepError, match="128 levels deep; the limit is 127"):
            read_header(path)


@pytest.mark.parametrize(
    "entry,exc",
    [
        ('"shape":[-0],"data_offsets":[0,0]', errors.InvalidShapeError),
        ('"shape":[0],"data_offsets":[-0,0]', errors.InvalidDataOffsetsError),
    ],
)
def test_negative_zero_is_not_an_unsigned_integer(tmp_path, entry, exc):
    check(tmp_path, f'{{"w":{{"dtype":"F32",{entry}}}}}'.encode(), b"", exc, "tensor 'w'")


def test_unknown_fields_are_ignored_like_the_reference(tmp_path):
    header = b'{"w":{"dtype":"F32","shape":[6],"data_offsets":[0,24],"note":{"x":-0,"x":1}}}'
    path = write_raw(tmp_path / "u.safetensors", header, F32_6)
    assert read_header(path).tensors["w"].shape == (6,)


def _reference_refuses(path) -> bool:
    import safetensors

    try:
        with safetensors.safe_open(str(path), "numpy"):
            return False
    except Exception:
        return True


@pytest.mark.parametrize("first", ["1", "null", "[]", '{"x":"y"}'])
def test_every_value_of_a_repeated_metadata_key_must_be_a_string(tmp_path, first):
    """The reference type-checks a repeated key's earlier values too (the last one wins)."""
    header = f'{{"__metadata__":{{"a":{first},"a":"2"}}}}'.encode()
    check(tmp_path, header, b"", errors.InvalidMetadataError, "__metadata__['a'] must be a string")
    assert _reference_refuses(tmp_path / "bad.safetensors")


@pytest.mark.parametrize(
    ("fields", "exc"),
    [
        ('"shape":[0,18446744073709551616],"data_offsets":[0,0]', errors.InvalidShapeError),
        ('"shape":[0,10000000000000000000000],"data_offsets":[0,0]', errors.InvalidShapeError),
        ('"shape":[0],"data_offsets":[0,18446744073709551616]', errors.InvalidDataOffsetsError),
    ],
)
def test_integers_past_64_bits_are_refused_on_the_exact_parse_too(tmp_path, fields, exc):
    """A ':' in a name sends the header through the stdlib parser, which reads integers
    exactly; the reference reads one past 64 bits as a float, and refuses it."""
    header = f'{{"a:b":{{"dtype":"U8",{fields}}}}}'.encode()
    check(tmp_path, header, b"", exc, "tensor 'a:b'")
    assert _reference_refuses(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("dims", [["18446744073709551615"] * 50_000, ["2"] * 300_000])
def test_a_shape_of_very_many_dims_is_refused_at_the_first_overflow(tmp_path, dims):
    """Multiplying such a shape out (as prod() does) took 26 s for the first; the reference
    stops at the first overflow. Bad input must end in an error within a second."""
    import time

    header = f'{{"t":{{"dtype":"U8","shape":[{",".join(dims)}],"data_offsets":[0,1]}}}}'
    start = time.perf_counter()
    check(tmp_path, header.encode(), b"\0", errors.SizeOverflowError, "overflows 64 bits")
    assert time.perf_counter() - start < 1.0


def test_a_long_valid_shape_is_accepted(tmp_path):
    header = b'{"t":{"dtype":"U8","shape":[' + b",".join([b"1"] * 100) + b'],"data_offsets":[0,1]}}'
    path = write_raw(tmp_path / "long.safetensors", header, b"\7")
    assert read_header(path).tensors["t"].shape == (1,) * 100


def test_colons_and_minus_zero_in_names_need_no_second_parse(tmp_path, monkeypatch):
    """Counted inside the parsed strings, they prove nothing is repeated: the slow stdlib
    parse (seconds for a big header) is only for headers that may repeat a key."""
    from mlxload import header as header_module

    def no_reparse(path, text):
        raise AssertionError("parsed twice")

    body = '{"__metadata__":{"k:-0":"v:-0"},"a:b-0":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}'
    path = write_raw(tmp_path / "c.safetensors", (body + "}").encode(), b"\7")
    with monkeypatch.context() as m:
        m.setattr(header_module, "_strict_reparse", no_reparse)
        header = read_header(path)
    assert list(header.tensors) == ["a:b-0"] and header.metadata == {"k:-0": "v:-0"}
    repeated = body[:-1] + ',"dtype":"U8"}}'
    check(tmp_path, repeated.encode(), b"\7", errors.DuplicateFieldError, "field 'dtype'")
    negative_zero = body.replace("[0,1]", "[-0,1]") + "}"
    check(tmp_path, negative_zero.encode(), b"\7", errors.InvalidDataOffsetsError, "'a:b-0'")


@pytest.mark.parametrize("depth,ok", [(125, True), (126, False)])
def test_nesting_limit_counts_objects_too(tmp_path, depth, ok):
    nested = '{"a":' * depth + "1" + "}" * depth
    header = f'{{"w":{{"dtype":"F32","shape":[6],"data_offsets":[0,24],"z":{nested}}}}}'
    path = write_raw(tmp_path / "n.safetensors", header.encode(), F32_6)
    assert _reference_refuses(path) is not ok
    if ok:
        assert list(read_header(path).tensors) == ["w"]
    else:
        with pytest.raises(errors.NestingTooDeepError, match="128 levels deep; the limit is 127"):
            read_header(path)


_V = '"dtype":"U8","shape":[0],"data_offsets":[0,0]'


@pytest.mark.parametrize(
    ("header", "exc"),
    [
        ('{"a":{"dtype":"U8","shape":[0],"shape":[0],"data_offsets":[0,0]},"__metadata__":'
         '{"dtype":":"}}', errors.DuplicateFieldError),
        ('{"a":{"dtype":"U8","shape":[-0],"data_offsets":[0,0]},"__metadata__":{"dtype":"-0"}}',
         errors.InvalidShapeError),
        ('{"a":{' + _V + '},"__metadata__":{"dtype":1,"dtype":":"}}', errors.InvalidMetadataError),
        ('{"a":{' + _V + ',"x":' + "[" * 200 + "]" * 200 + '},"__metadata__":{"dtype":":"}}',
         errors.NestingTooDeepError),
        ('{"a":{"dtype":"U8","shape":"bad","data_offsets":[0,0]},"a":{' + _V + '},'
         '"__metadata__":{"dtype":"::::"}}', errors.InvalidShapeError),
    ],
    ids=["repeated-field", "minus-zero", "repeated-meta-key", "deep", "repeated-name"],
)  # fmt: skip
def test_a_metadata_key_named_dtype_hides_nothing(tmp_path, header, exc):
    """Its value was counted twice (as metadata and as a 'dtype'), so its ':' or '-0' made up
    for a repeated key's colon or a -0 number, and the exact parse was skipped."""
    check(tmp_path, header.encode(), b"", exc)
    assert _reference_refuses(tmp_path / "bad.safetensors")


def test_zero_size_tensors_at_one_offset_keep_their_json_order_on_both_paths():
    """An unstable sort put them in an order that depended on numpy's sorting routine, and
    differed from the slow path's (a 65-dim shape of 1s takes that one)."""
    entries = [("z2", [0], 1, 1), ("a", [1], 0, 1), ("z0", [0], 0, 0), ("z1", [0], 0, 0)]
    for extra in ([], [1] * 65):  # the fast path, then the slow one
        header = {n: entry("U8", shape + extra, b, e) for n, shape, b, e in entries}
        raw = json.dumps(header).encode()
        assert list(parse_header(raw, file_size=8 + len(raw) + 1).tensors) == [
            "z0",
            "z1",
            "a",
            "z2",
        ], extra


@pytest.mark.parametrize("collector_on", [True, False])
@pytest.mark.parametrize(
    "header", [{"a": entry("U8", [2], 0, 2)}, {"a": entry("U8", [3], 0, 2)}, b"{not json"]
)
def test_parsing_leaves_the_garbage_collector_as_it_found_it(header, collector_on):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    was_on = gc.isenabled()
    (gc.enable if collector_on else gc.disable)()
    try:
        with contextlib.suppress(errors.SafetensorsError):
            parse_header(raw, file_size=8 + len(raw) + 2)
        assert gc.isenabled() is collector_on
    finally:
        (gc.enable if was_on else gc.disable)()


@pytest.mark.parametrize("in_offset_order", [True, False])
def test_an_open_header_leaves_few_objects_for_the_garbage_collector(in_offset_order):
    """A list per shape (or the parsed JSON) kept alive would be thousands of objects that every
    later collection walks again."""
    n = 2000
    order = range(n) if in_offset_order else [(i * 7) % n for i in range(n)]
    header = {f"t{i}": entry("F16", [2, 3], 12 * k, 12 * (k + 1)) for i, k in enumerate(order)}
    raw = json.dumps(header).encode()
    gc.collect()
    before = len(gc.get_objects())
    parsed = parse_header(raw, file_size=8 + len(raw) + 12 * n)
    assert len(gc.get_objects()) - before < 50
    assert parsed.tensors["t7"].shape == (2, 3)


def test_shapes_of_every_length_read_back_from_the_fast_path():
    shapes = [[], [0], [2, 3], [5], [1, 1, 2], []]
    header, begin = {}, 0
    for i, shape in enumerate(shapes):
        size = 4 * math.prod(shape)
        header[f"t{i}"] = entry("F32", shape, begin, begin + size)
        begin += size
    raw = json.dumps(header).encode()
    tensors = parse_header(raw, file_size=8 + len(raw) + begin).tensors
    assert [tensors[f"t{i}"].shape for i in range(len(shapes))] == [tuple(s) for s in shapes]
