"""Atomic writes: the final name only ever holds a complete file."""

from __future__ import annotations

import json

import pytest

from open_videoprism.atomic import atomic_path, write_json, write_jsonl, write_text


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.md"
    write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_temporary_keeps_the_suffix_and_the_folder_is_created(tmp_path):
    path = tmp_path / "a" / "b" / "feats.npz"
    with atomic_path(path, fsync=True) as tmp:
        assert tmp.parent == path.parent and tmp.suffix == ".npz" and not path.exists()
        tmp.write_bytes(b"x")
    assert path.read_bytes() == b"x"


def test_json_helpers_round_trip(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]}, sort_keys=True)
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [1, 2], "b": 1}
    write_jsonl(tmp_path / "m.jsonl", [{"i": 0}, {"i": 1}])
    assert [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()] == [{"i": 0}, {"i": 1}]
