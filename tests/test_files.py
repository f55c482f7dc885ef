"""physics.files: the one atomic-write helper (complete or absent, never torn; exclusive create)."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import pytest

from physics.files import (
    LockError,
    Staging,
    atomic_path,
    atomic_write_bytes,
    dir_lock,
    is_temporary,
    temporary_files,
    temporary_path,
)


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


def test_dir_lock_refuses_a_second_holder_and_releases(tmp_path):
    with dir_lock(tmp_path, what="run directory") as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(LockError, match=rf"run directory {tmp_path} is in use by pid {os.getpid()} on host"):
            with dir_lock(tmp_path, what="run directory"):
                pass
    assert not path.exists()
    with dir_lock(tmp_path):  # free again
        pass


def test_dir_lock_takes_over_from_a_dead_process_but_not_from_another_host(tmp_path, caplog):
    dead_pid = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no process can have it
    lock = tmp_path / ".lock"
    lock.write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname(), "since": "earlier"}))
    with caplog.at_level(logging.WARNING), dir_lock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"took over the lock left by pid {dead_pid}" in caplog.text
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere.cluster", "since": "earlier"}))
    with pytest.raises(LockError, match=r"pid 1 on host elsewhere\.cluster .* delete the lock file"):
        with dir_lock(tmp_path):
            pass
    assert json.loads(lock.read_text())["host"] == "elsewhere.cluster"  # left as it was
