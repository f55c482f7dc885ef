"""Outputs of the apply apps (`qdgan.predict`, `qdgan.invert`): where they may go and how arrays are written.

Every output path is checked before any work starts (format, writable folder, not an input); the
files are then written through `physics.files.Staging` by the apps, so a failed run leaves no partial files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from qdgan.apply.inputs import InputError

__all__ = ["ARRAY_SUFFIXES", "as_paths", "check_output_paths", "check_writable", "write_arrays"]

ARRAY_SUFFIXES = (".npy", ".h5", ".hdf5")


def as_paths(value: Any) -> list[str]:
    """An `output` setting as a list of paths (null → none, one path → one)."""
    if value is None:
        return []
    return [str(value)] if isinstance(value, (str, os.PathLike)) else [str(v) for v in value]


def check_writable(paths: Sequence[str | os.PathLike[str] | None]) -> None:
    """Every output path must lie in (or below) a folder we may write to; checked before any work."""
    for p in paths:
        if not p:
            continue
        home = Path(p).absolute().parent
        while not home.exists():
            home = home.parent
        if not home.is_dir() or not os.access(home, os.W_OK | os.X_OK):
            raise InputError(f"output {p}: cannot write there ({home} is not a writable folder)")


def check_output_paths(paths: Sequence[str | os.PathLike[str]], inputs: Sequence[str]) -> list[Path]:
    """Output array files: .npy or .h5/.hdf5, none of them an input, all writable; checked before any
    work is done."""
    out = []
    sources = {Path(s).absolute() for s in inputs if s}
    for p in paths:
        path = Path(p)
        if path.suffix.lower() not in ARRAY_SUFFIXES:
            raise InputError(f"output={p}: unknown output format {path.suffix or '(no suffix)'!r}; "
                             f"expected one of {ARRAY_SUFFIXES}")
        if path.absolute() in sources:
            raise InputError(f"output={p} is also an input; choose another file name")
        if path.exists() and path.is_dir():
            raise InputError(f"output={p} is a folder; expected a file name")
        out.append(path)
    check_writable(out)
    return out


def write_arrays(path: Path, main: str, arrays: dict[str, np.ndarray], units: dict[str, str],
                 attrs: dict[str, Any], single: bool = False) -> None:
    """`.npy`: the array `main` alone, float32 ((H, W) if `single`); `.h5`: every array as a data set
    (maps as float32) with its `unit` attribute, plus `attrs` as file attributes."""
    if path.suffix.lower() == ".npy":
        arr = np.asarray(arrays[main], dtype=np.float32)
        np.save(path, arr[0] if single else arr)
        return
    with h5py.File(path, "w", locking=False) as f:
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            dset = f.create_dataset(name, data=arr.astype(np.float32) if arr.ndim == 3 else arr)
            if name in units:
                dset.attrs["unit"] = units[name]
        for key, value in attrs.items():
            f.attrs[key] = value if isinstance(value, (int, float, str)) else str(value)
