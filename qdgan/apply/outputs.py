"""Outputs of the apply apps (`qdgan.predict`, `qdgan.invert`): where they may go and how arrays are written.

Every output path is checked before any work starts: format, writable folder, not an input, not inside
a data-set folder (a foreign .h5 there makes the set fail to open), not an existing file unless
`overwrite=true`. Files are written through `physics.files.Staging`, so a failed run leaves none;
arrays are preallocated in the staged files and filled chunk by chunk (`ArrayWriter`), so memory
stays bounded whatever the number of instances.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from physics.files import Staging
from physics.manifest import MANIFEST
from qdgan.apply import InputError

__all__ = ["ARRAY_SUFFIXES", "ArrayWriter", "as_paths", "check_outputs"]

ARRAY_SUFFIXES = (".npy", ".h5", ".hdf5")


def as_paths(value: Any) -> list[str]:
    """An `output` setting as a list of paths (null → none, one path → one)."""
    if value is None:
        return []
    return [str(value)] if isinstance(value, (str, os.PathLike)) else [str(v) for v in value]


def dataset_folder(path: Path) -> Path | None:
    """The data-set folder (one holding manifest.json) that `path` would lie in, if any."""
    for folder in Path(path).absolute().parents:
        if (folder / MANIFEST).is_file():
            return folder
    return None


def check_outputs(arrays: Sequence[str | os.PathLike[str]], files: Sequence[str | os.PathLike[str] | None],
                  inputs: Sequence[str], overwrite: bool, key: str = "output") -> list[Path]:
    """Check the array outputs (.npy or .h5/.hdf5) and the other output `files` (report, panels; None
    skipped) before any work; return the array paths. Refused: an input, a folder, a path inside a
    data set, an unwritable folder, and (unless `overwrite`) a file that exists."""
    out = []
    for p in arrays:
        path = Path(p)
        if path.suffix.lower() not in ARRAY_SUFFIXES:
            raise InputError(f"{key}={p}: unknown output format {path.suffix or '(no suffix)'!r}; "
                             f"expected one of {ARRAY_SUFFIXES}")
        out.append(path)
    sources = {Path(s).absolute() for s in inputs if s}
    for path in [*out, *(Path(f) for f in files if f)]:
        if path.absolute() in sources:
            raise InputError(f"{key}={path} is also an input; choose another file name")
        if path.is_dir():
            raise InputError(f"{key}={path} is a folder; expected a file name")
        if (ds := dataset_folder(path)) is not None:
            raise InputError(f"{key}={path} lies in the data-set folder {ds} (it holds {MANIFEST}): a foreign file "
                             "there makes the set fail to open; write somewhere else")
        if path.exists() and not overwrite:
            raise InputError(f"{key}={path} already exists; choose another name or set overwrite=true to replace it")
        home = path.absolute().parent
        while not home.exists():
            home = home.parent
        if not home.is_dir() or not os.access(home, os.W_OK | os.X_OK):
            raise InputError(f"{key}={path}: cannot write there ({home} is not a writable folder)")
    return out


class ArrayWriter:
    """Output array files preallocated in a `Staging` and filled by row ranges.

    `.npy`: the array `main` alone, float32 ((H, W) if `single`), filled through a memory map that is
    opened per write (its pages leave memory with it); `.h5`: every field as a data set with its
    `unit` attribute, plus `attrs` as file attributes. `fields`: name → (shape of one row, dtype).
    """

    def __init__(self, stage: Staging, paths: Sequence[Path], main: str, n: int,
                 fields: dict[str, tuple[tuple[int, ...], Any]], units: dict[str, str], attrs: dict[str, Any],
                 single: bool = False) -> None:
        self.main, self.single = main, single
        self._npy: list[Path] = []
        self._h5: list[h5py.File] = []
        try:
            for path in paths:
                tmp = stage.path(path)
                tmp.parent.mkdir(parents=True, exist_ok=True)
                if path.suffix.lower() == ".npy":
                    shape = fields[main][0] if single else (n, *fields[main][0])
                    np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape).flush()
                    self._npy.append(tmp)
                    continue
                f = h5py.File(tmp, "w", locking=False)
                self._h5.append(f)
                for name, (row, dtype) in fields.items():
                    dset = f.create_dataset(name, shape=(n, *row), dtype=dtype)
                    if name in units:
                        dset.attrs["unit"] = units[name]
                for key, value in attrs.items():
                    f.attrs[key] = value if isinstance(value, (int, float, str)) else str(value)
        except BaseException:
            self.close()
            raise

    def write(self, start: int, stop: int, arrays: dict[str, np.ndarray]) -> None:
        """Rows start:stop of every field (each array holds stop − start rows)."""
        for tmp in self._npy:
            mapped = np.load(tmp, mmap_mode="r+")
            if self.single:
                mapped[...] = arrays[self.main][0]
            else:
                mapped[start:stop] = arrays[self.main]
            mapped.flush()
            del mapped
        for f in self._h5:
            for name, arr in arrays.items():
                f[name][start:stop] = arr

    def close(self) -> None:
        for f in self._h5:
            f.close()
        self._h5 = []

    def __enter__(self) -> ArrayWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
