"""The writer's planning step: sizes, order, padded header, metadata, shard packing, report."""

from __future__ import annotations

import json

import pytest
from writer_fixtures import mixed_tensors, write_numpy_file, write_sharded

from mlxload.header import parse_header, read_header
from mlxload.writer import InvalidSizeError, MetadataConflictError, alignment_report, parse_size
from mlxload.writer.layout import PAGE_SIZE, build_header, place
from mlxload.writer.plan import plan_merge, plan_split, shard_name
from mlxload.writer.sources import merge_metadata, open_source


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5GB", 5 * 10**9),
        ("500MB", 500 * 10**6),
        ("1.5GiB", 3 * 2**29),
        ("64kib", 65536),
        (" 12 ", 12),
        (1234, 1234),
        ("0.5KB", 500),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "GB", "5XB", "-1GB", "0", 0, "1e3", True])
def test_parse_size_rejects(bad):
    with pytest.raises(InvalidSizeError, match="size"):
        parse_size(bad)


def test_a_size_under_one_byte_says_so():
    with pytest.raises(InvalidSizeError, match=r"^size must be at least 1 byte, got '0\.0'$"):
        parse_size("0.0")


@pytest.mark.parametrize("text", ["1.5", "0.5", "1024.25B"])
def test_fractional_bytes_are_refused_not_rounded(text):
    """--max-shard-size 1.5 became a 1-byte limit without a word."""
    with pytest.raises(InvalidSizeError, match=rf"^size '{text}' is not a whole number of bytes"):
        parse_size(text)


def test_order_is_descending_alignment_then_name_whatever_the_shard_order(tmp_path):
    a = open_source(write_sharded(tmp_path / "a", mixed_tensors(), 3))
    b = open_source(write_sharded(tmp_path / "b", dict(reversed(mixed_tensors().items())), 2))
    order_a = [p.name for p in place(a.tensors.values())]
    order_b = [p.name for p in place(b.tensors.values())]
    assert order_a == order_b
    assert order_a[0] == "model.pos"  # the only 8-byte dtype
    assert order_a[-1] == "model.layers.1.mask"  # the only 1-byte dtype
    assert order_a[1:4] == [
        "model.layers.0.attn.q.weight",
        "model.layers.0.norm.weight",
        "model.layers.1.attn.q.weight",
    ]


def test_header_is_space_padded_to_a_page_and_offsets_come_from_sources(tmp_path):
    source = open_source(write_sharded(tmp_path / "c", mixed_tensors(), 2))
    out = plan_merge(source, tmp_path / "m.safetensors").outputs[0]
    assert len(out.header) % PAGE_SIZE == 0
    n = int.from_bytes(out.header[:8], "little")
    assert n == len(out.header) - 8
    assert out.header.rstrip(b" ").endswith(b"}")
    header = parse_header(out.header[8:], file_size=out.size)
    assert header.metadata == {"format": "mlx"}
    for name, info in header.tensors.items():
        src = source.tensors[name]
        assert info.nbytes == src.nbytes
        assert info.offset % info.alignment == 0
    placed = {p.name: p for p in out.tensors}
    assert all(placed[n].src_offset == source.tensors[n].offset for n in placed)


def test_build_header_of_nothing_is_one_page():
    header = build_header([], {})
    assert len(header) == PAGE_SIZE
    assert header[8:].rstrip(b" ") == b"{}"


def test_metadata_merge_and_conflict(tmp_path):
    a = write_numpy_file(tmp_path / "a.safetensors", metadata={"format": "pt", "x": "1"})
    b = write_numpy_file(tmp_path / "b.safetensors", metadata={"format": "mlx", "y": "2"})
    headers = [read_header(a), read_header(b)]
    with pytest.raises(MetadataConflictError, match=r"'format'.*'pt' in a\.safetensors.*'mlx'"):
        merge_metadata(headers)
    assert merge_metadata(headers, "first") == {"format": "pt", "x": "1", "y": "2"}
    assert merge_metadata(headers, "last") == {"format": "mlx", "x": "1", "y": "2"}
    with pytest.raises(ValueError, match="on_conflict must be one of"):
        merge_metadata(headers, "newest")


def test_split_shards_respect_the_limit_header_included(tmp_path):
    source = open_source(write_sharded(tmp_path / "s", mixed_tensors(scale=40), 2))
    limit = PAGE_SIZE + 20_000
    plan = plan_split(source, tmp_path / "out", limit)
    assert len(plan.outputs) > 1
    sizes = [o.size for o in plan.outputs]
    biggest = max(t.nbytes for t in source.tensors.values())
    assert all(s <= limit or len(o.tensors) == 1 for s, o in zip(sizes, plan.outputs, strict=True))
    assert biggest > 20_000  # the bf16 embedding gets a shard of its own
    names = [o.path.name for o in plan.outputs]
    assert names == [shard_name(i, len(names)) for i in range(1, len(names) + 1)]
    assert shard_name(2, 7) == "model-00002-of-00007.safetensors"
    assert shard_name(1, 1) == "model.safetensors"
    seen = [p.name for o in plan.outputs for p in o.tensors]
    assert sorted(seen) == sorted(source.tensors)


def test_alignment_report_is_exact_for_hand_built_headers(tmp_path):
    # The header is padded so the data section starts at 8 + 504 = 512.
    path = tmp_path / "hand.safetensors"
    header = {
        "a": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},  # 512: ok (1 byte)
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [3, 11]},  # 515: misaligned
        "c": {"dtype": "F16", "shape": [1], "data_offsets": [11, 13]},  # 523: misaligned
        "d": {"dtype": "I8", "shape": [3], "data_offsets": [13, 16]},  # 525: ok
        "e": {"dtype": "U64", "shape": [1], "data_offsets": [16, 24]},  # 528: ok
    }
    raw = json.dumps(header, separators=(",", ":")).encode()
    assert len(raw) <= 504
    raw += b" " * (504 - len(raw))
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(24))
    report = alignment_report(path)
    ready = {t.name: t.zero_copy_ready for t in report.tensors}
    assert ready == {"a": True, "b": False, "c": False, "d": True, "e": True}
    assert report.copy_bytes == 10
    assert report.total_bytes == 24
    assert report.copy_percent == pytest.approx(100 * 10 / 24)
    assert report.verdict() == "42% of bytes need a copy — run `mlxload align`"


def test_alignment_report_verdicts(tmp_path):
    src = write_sharded(tmp_path / "v", mixed_tensors(), 2)
    report = alignment_report(src)
    assert not report.ready and report.misaligned
    assert report.verdict().endswith("of bytes need a copy — run `mlxload align`")
    ref = alignment_report(write_numpy_file(tmp_path / "ref.safetensors"))
    assert ref.ready
    assert ref.verdict() == "zero-copy ready: 100% of bytes"
