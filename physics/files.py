"""The project's one way to write a file that is either complete or absent.

A writer fills a hidden temporary file next to the target (same folder, so the rename stays on one
file system, with the target's suffix so format-by-suffix writers still work), the file is fsynced,
then renamed over the target (or hard-linked to it when the target must not exist yet) and the
folder is fsynced. A crash at any moment leaves the old file or the new one, never a torn one, and
the temporary name is recognisable (`is_temporary`) so the next run can clear it. `Staging` commits
a group of such files together (predict/invert outputs, a run's final files). `dir_lock` keeps a second
process out of a folder that one is writing (a run dir, a data set's shard range).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["LockError", "Staging", "atomic_path", "atomic_write_bytes", "dir_lock", "fsync_dir", "is_temporary",
           "temporary_files", "temporary_path"]

log = logging.getLogger(__name__)

_TAG = ".tmp"


def temporary_path(final: str | os.PathLike[str]) -> Path:
    """A fresh hidden name `.<name>.<random>.tmp<suffix>` next to `final` (in its nearest existing folder)."""
    final = Path(final).absolute()
    home = final.parent
    while not home.exists():
        home = home.parent
    return home / f".{final.name}.{uuid.uuid4().hex[:16]}{_TAG}{final.suffix}"


def is_temporary(name: str) -> bool:
    """True for the hidden names files are written under before their rename."""
    return name.startswith(".") and (name.endswith(_TAG) or f"{_TAG}." in name)


def temporary_files(directory: Path, final_name: str) -> list[Path]:
    """Leftover temporary files of `final_name` in `directory` (from writers that died)."""
    return sorted(p for p in Path(directory).glob(f".{final_name}.*") if is_temporary(p.name))


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (no-op where directories cannot be fsynced)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _commit(tmp: Path, final: Path, exclusive: bool) -> bool:
    """fsync `tmp` and move it to `final` (rename; with `exclusive` a hard link that fails if `final`
    exists, falling back to O_EXCL creation where links are unsupported). False: `final` existed."""
    _fsync_file(tmp)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not exclusive:
            os.replace(tmp, final)
        else:
            try:
                os.link(tmp, final)
            except FileExistsError:
                return False
            except OSError:  # no hard links on this file system
                try:
                    fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "wb") as f:
                    f.write(tmp.read_bytes())
                    f.flush()
                    os.fsync(f.fileno())
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(final.parent)
    return True


@contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """`with atomic_path(p) as tmp: write(tmp)` — `p` appears complete when the block ends, or not at
    all (the temporary file is deleted if the block raises)."""
    final = Path(final).absolute()
    tmp = temporary_path(final)
    try:
        yield tmp
        _commit(tmp, final, exclusive=False)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes, exclusive: bool = False) -> bool:
    """Write `data` to `final` atomically; with `exclusive`, only if `final` does not exist yet (atomic
    create-if-absent, also on NFS). Returns False when `exclusive` and another writer was first."""
    final = Path(final).absolute()
    tmp = temporary_path(final)
    try:
        tmp.write_bytes(data)
        return _commit(tmp, final, exclusive)
    finally:
        tmp.unlink(missing_ok=True)


class Staging:
    """Files written under temporary names and renamed into place together.

    `path(final)` gives the temporary path to write; `commit()` fsyncs and renames every file;
    `discard()` (or leaving the `with` block with an exception) deletes them. Nothing with a final
    name exists before `commit()`.
    """

    def __init__(self) -> None:
        self._files: dict[Path, Path] = {}

    def path(self, final: str | os.PathLike[str]) -> Path:
        final = Path(final).absolute()
        if final not in self._files:
            self._files[final] = temporary_path(final)
        return self._files[final]

    @property
    def finals(self) -> list[Path]:
        """Final paths of the files staged so far."""
        return list(self._files)

    def commit(self) -> list[Path]:
        for final, tmp in self._files.items():
            _commit(tmp, final, exclusive=False)
        done, self._files = list(self._files), {}
        return done

    def discard(self) -> None:
        for tmp in self._files.values():
            tmp.unlink(missing_ok=True)
        self._files = {}

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


class LockError(RuntimeError):
    """Another live process holds the lock; the message names it (pid, host, since when) and the lock file."""


def _process_start(pid: int) -> str | None:
    """Start time of `pid` in clock ticks since boot (/proc), to tell a reused pid; None where unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the process that wrote `holder` (pid, start time) still runs on this host."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    start = _process_start(pid)
    return start is None or holder.get("start") in (None, start)


def _holder_text(holder: dict[str, Any], path: Path) -> str:
    return (f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('since')} "
            f"({' '.join(holder.get('argv', []))[:120]}; lock file {path})")


@contextmanager
def dir_lock(directory: str | os.PathLike[str], name: str = ".lock", what: str = "directory") -> Iterator[Path]:
    """Hold `directory/name` while the block runs: a file created exclusively (atomic, also on NFS) that
    names this process (pid, process start time, host). A second process gets LockError naming the holder.
    A lock left by a dead process of this host (pid gone, or reused by another process) is taken over with
    a warning; one held on another host is refused, since its process cannot be checked from here."""
    path = Path(directory) / name
    me = {"pid": os.getpid(), "start": _process_start(os.getpid()), "host": socket.gethostname(),
          "since": datetime.now(timezone.utc).isoformat(timespec="seconds"), "argv": list(sys.argv)}
    data = json.dumps(me).encode()
    for _ in range(5):
        if atomic_write_bytes(path, data, exclusive=True):
            break
        try:
            raw = path.read_bytes()
            holder = json.loads(raw)
        except FileNotFoundError:
            continue  # released meanwhile
        except (OSError, ValueError):
            time.sleep(0.2)  # a writer without hard links may still be filling it
            raw, holder = path.read_bytes(), {}
        if holder.get("host") != me["host"]:
            raise LockError(f"{what} {path.parent} is in use by {_holder_text(holder, path)}; if that job has "
                            "ended, delete the lock file")
        if _alive(holder):
            raise LockError(f"{what} {path.parent} is in use by {_holder_text(holder, path)}")
        stale = path.with_name(f"{name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, stale)
        except FileNotFoundError:
            continue
        if stale.read_bytes() != raw:  # another process took it over first: put its fresh lock back
            with contextlib.suppress(FileExistsError):
                os.link(stale, path)
            stale.unlink()
            continue
        stale.unlink()
        log.warning("%s %s: took over the lock left by %s, which is no longer running", what, path.parent,
                    _holder_text(holder, path))
    else:
        raise LockError(f"{what} {path.parent}: could not take the lock {path} (contended)")
    try:
        yield path
    finally:
        try:
            if path.read_bytes() == data:
                path.unlink()
        except FileNotFoundError:
            pass
