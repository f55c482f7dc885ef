"""physics.files: the one atomic-write helper (complete or absent, never torn; exclusive create)."""

from __future__ import annotations

import pytest

from physics.files import Staging, atomic_path, atomic_write_bytes, is_temporary, temporary_files, temporary_path


def test_atomic_write_replaces_and_exclusive_write_never_overwrites(tmp_path):
    target = tmp_path / "sub" / "m.json"
    assert atomic_write_bytes(target, b"one") and target.read_bytes() == b"one"
    assert atomic_write_bytes(target, b"two") and target.read_bytes() == b"two"
    assert atomic_write_bytes(target, b"three", exclusive=True) is False
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.json"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "shard.h5"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["shard.h5"]


def test_temporary_names_keep_the_suffix_and_are_recognised(tmp_path):
    tmp = temporary_path(tmp_path / "a" / "pred.npy")  # folder a/ does not exist yet: nearest existing one
    assert tmp.parent == tmp_path and tmp.suffix == ".npy" and is_temporary(tmp.name)
    assert is_temporary(".shard-000-100.h5.0123abcd.tmp")  # the names of earlier versions
    assert not is_temporary("shard-000-100.h5") and not is_temporary(".hidden")
    (tmp_path / ".x.h5.1.tmp").write_bytes(b"")
    (tmp_path / temporary_path(tmp_path / "x.h5").name).write_bytes(b"")
    (tmp_path / ".y.h5.2.tmp").write_bytes(b"")
    assert len(temporary_files(tmp_path, "x.h5")) == 2


def test_staging_commits_all_files_together(tmp_path):
    with Staging() as stage:
        stage.path(tmp_path / "a.npy").write_bytes(b"a")
        stage.path(tmp_path / "sub" / "b.json").write_text("{}")
        assert not (tmp_path / "a.npy").exists()
    assert (tmp_path / "a.npy").read_bytes() == b"a" and (tmp_path / "sub" / "b.json").read_text() == "{}"
    assert not [p for p in tmp_path.rglob("*") if is_temporary(p.name)]
