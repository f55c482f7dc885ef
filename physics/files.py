"""The project's one way to write a file that is either complete or absent.

A writer fills a hidden temporary file next to the target (same folder, so the rename stays on one
file system, with the target's suffix so format-by-suffix writers still work), the file is fsynced,
then renamed over the target (or hard-linked to it when the target must not exist yet) and the
folder is fsynced. A crash at any moment leaves the old file or the new one, never a torn one, and
the temporary name is recognisable (`is_temporary`) so the next run can clear it. `Staging` commits
a group of such files together (predict/invert outputs, a run's final files).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["Staging", "atomic_path", "atomic_write_bytes", "fsync_dir", "is_temporary", "temporary_files",
           "temporary_path"]

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
