"""Work-file names beside outputs: short names keep their readable form; long ones stay under
the 255-byte file-name limit, valid UTF-8, distinct and stable."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from mlxload.work_names import work_path


def test_a_short_name_is_dot_name_dot_kind():
    assert work_path(Path("d/model.safetensors"), "lock") == Path(
        "d/.model.safetensors.mlxload-lock"
    )


@pytest.mark.parametrize("char", ["m", "é", "模"], ids=["1-byte", "2-byte", "3-byte"])
@pytest.mark.parametrize("kind", ["partial", "journal", "lock", "tmp"])
def test_a_long_name_is_cut_on_a_character_and_hashed(char, kind):
    stem = char * (240 // len(char.encode()))
    final = Path("d") / f"{stem}.safetensors"
    assert len(final.name.encode()) > 240  # the plain work name would be over 255 bytes
    got = work_path(final, kind)
    encoded = got.name.encode("utf-8")  # raises on a character cut in half
    assert got.parent == Path("d") and len(encoded) <= 255
    assert got.name.startswith("." + char * 10) and got.name.endswith(f".mlxload-{kind}")
    assert work_path(final, kind) == got  # the same on every run: resuming finds it
    other = final.with_name(f"{stem}.other.safetensors")  # same first 200+ bytes
    assert work_path(other, kind) != got


def test_hub_snapshot_links_of_long_names_use_short_enough_temporaries(tmp_path):
    from mlxload.hub.cache import RepoCache

    cache = RepoCache(tmp_path, "org/name")
    blob = cache.blob("ab" * 32)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"{}")
    name = "c" * 245 + ".json"  # 250 bytes: ".NAME.<uuid>.tmp" would be 265
    link = cache.link("0" * 40, name, "ab" * 32)
    assert link.read_bytes() == b"{}" and link.name == name
    assert sorted(p.name for p in link.parent.iterdir()) == [name]


@pytest.mark.skipif(sys.platform == "darwin", reason="APFS takes only UTF-8 file names")
def test_an_output_name_that_is_not_utf8_is_written(tmp_path):
    import mlx.core as mx

    from mlxload import load_file
    from mlxload.writer import merge

    src = tmp_path / "a.safetensors"
    mx.save_safetensors(str(src), {"x": mx.ones(4)})
    out = tmp_path / os.fsdecode(b"\xff.safetensors")  # a Latin-1 name on a UTF-8 system
    merge(src, out)
    assert mx.array_equal(load_file(out)["x"], mx.ones(4)).item()  # mx.load can't open it
