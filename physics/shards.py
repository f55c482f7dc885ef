"""On-disk shard format of a data set: names, fields, checksums, atomic writes, header reads.

A shard is one HDF5 file `shard-<start>-<stop>.h5` holding instances [start, stop) of the set.
It is written under a hidden temporary name, fsynced and renamed, so a file with a shard name is
always complete; the rename is the shard's only commit point. Every dataset carries a SHA-256 of
its content, computed from the arrays in memory before writing, so later corruption is detected
(`rehash` re-reads a shard and compares).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from physics.files import atomic_path

__all__ = [
    "ALL_FIELDS",
    "FAMILY_FIELD",
    "FIELDS",
    "FORMAT",
    "OPTIONAL_FIELDS",
    "SPIN_FIELD",
    "DatasetError",
    "Field",
    "ShardHeader",
    "checksum_problems",
    "digest",
    "parse_name",
    "read_header",
    "rehash",
    "shard_name",
    "shard_range",
    "write_shard",
]

FORMAT = "qdgan-dataset/1"
"""Format tag stored in the manifest and in every shard; bump it when the layout changes."""


class DatasetError(Exception):
    """A data set on disk is missing, incomplete, corrupted or inconsistent; the message names the
    file and the field."""


@dataclass(frozen=True)
class Field:
    """One per-instance array: dtype on disk, whether it is a (grid, grid) map, unit."""

    dtype: str
    is_map: bool
    unit: str


FIELDS: dict[str, Field] = {
    "potential": Field("float32", True, "eV"),
    "n0": Field("float32", True, "nm^-2"),
    "n_int": Field("float32", True, "nm^-2"),
    "energy": Field("float64", False, "eV"),
    "energy_nonint": Field("float64", False, "eV"),
    "index": Field("int64", False, ""),
    "seed": Field("uint64", False, ""),
}
"""Required in every shard. Maps are float32 (7 significant digits, ample for images and ∫n = N to 1e-6);
energies float64; `index` is the instance's position k in the set, `seed` its own 64-bit seed (see generate.py)."""

FAMILY_FIELD = "family"
SPIN_FIELD = "spin"
OPTIONAL_FIELDS: dict[str, Field] = {FAMILY_FIELD: Field("uint8", False, ""), SPIN_FIELD: Field("float32", False, "")}
"""Written only where the set's identity asks for them: `family`, each instance's potential family as a code
into the manifest's family table, in sets of any family but `paper` (absent: every instance is `paper`, so the
paper's shards keep exactly their fields); `spin`, the total spin S of each ground state (0, ½, 1, …, exact in
float32; physics.ci), in sets of N ≠ 2 electrons (absent: N = 2, whose ground states are singlets, S = 0, so
every N = 2 set keeps exactly its fields and hashes). Which fields a set must have: `manifest.Identity.fields`."""
ALL_FIELDS: dict[str, Field] = {**FIELDS, **OPTIONAL_FIELDS}

_NAME = re.compile(r"^shard-(\d+)-(\d+)\.h5$")


def shard_name(start: int, stop: int) -> str:
    """File name of the shard holding instances [start, stop)."""
    return f"shard-{start:09d}-{stop:09d}.h5"


def shard_range(shard: int, shard_size: int, n_samples: int) -> tuple[int, int]:
    """Instance range [start, stop) of shard number `shard`."""
    start = shard * shard_size
    return start, min(start + shard_size, n_samples)


def parse_name(name: str) -> tuple[int, int] | None:
    """(start, stop) encoded in a shard file name, or None if `name` is not a shard name."""
    match = _NAME.match(name)
    return (int(match[1]), int(match[2])) if match else None


def digest(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and C-order bytes (hex); the per-field shard checksum."""
    arr = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def write_shard(directory: Path, start: int, stop: int, arrays: Mapping[str, np.ndarray],
                attrs: Mapping[str, Any]) -> Path:
    """Write instances [start, stop) atomically as `directory/shard_name(start, stop)`.

    `arrays` holds every field of FIELDS, and those of OPTIONAL_FIELDS the set has, with leading length
    stop − start; they are cast to the on-disk dtype, checksummed, written under a temporary name, fsynced
    and renamed. `attrs` (identity JSON, code version, family counts) are stored as file attributes next to
    the checksums.
    """
    n = stop - start
    data = {}
    for name, spec in ALL_FIELDS.items():
        if name not in FIELDS and name not in arrays:
            continue
        arr = np.ascontiguousarray(arrays[name], dtype=spec.dtype)
        if arr.shape[:1] != (n,):
            raise ValueError(f"field {name!r} has {arr.shape[:1]} instances, expected {n}")
        data[name] = arr
    final = directory / shard_name(start, stop)
    with atomic_path(final) as tmp, h5py.File(tmp, "w", locking=False) as f:
        for name, arr in data.items():
            dset = f.create_dataset(name, data=arr)
            dset.attrs["unit"] = ALL_FIELDS[name].unit
        f.attrs["format"] = FORMAT
        f.attrs["start"] = start
        f.attrs["stop"] = stop
        f.attrs["sha256"] = json.dumps({k: digest(v) for k, v in data.items()}, sort_keys=True)
        for key, value in attrs.items():
            f.attrs[key] = value
    return final


@dataclass(frozen=True)
class ShardHeader:
    """What a shard says about itself without reading its arrays (`shapes`/`dtypes`: every field present)."""

    path: Path
    start: int
    stop: int
    identity: dict[str, Any]
    code_version: str
    sha256: dict[str, str]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    family_counts: dict[str, int] | None = None  # instances per potential family, where the set records them


def read_header(path: Path) -> ShardHeader:
    """Read a shard's attributes and dataset shapes; DatasetError names the file and what is wrong.

    Catches truncated or otherwise unreadable HDF5 files, missing required fields and missing attributes;
    whether an optional field must be there depends on the set (`manifest.check_header`).
    """
    try:
        with h5py.File(path, "r", locking=False) as f:
            missing = sorted(set(FIELDS) - set(f.keys()))
            if missing:
                raise DatasetError(f"{path}: shard lacks field(s) {missing}")
            attrs = dict(f.attrs)
            present = [k for k in ALL_FIELDS if k in f]
            shapes = {k: tuple(f[k].shape) for k in present}
            dtypes = {k: f[k].dtype.name for k in present}
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        raise DatasetError(f"{path}: not a readable HDF5 shard (truncated or corrupted?): {err}") from err
    for key in ("format", "start", "stop", "identity", "code_version", "sha256"):
        if key not in attrs:
            raise DatasetError(f"{path}: shard lacks attribute {key!r} (not written by physics.generate?)")
    if attrs["format"] != FORMAT:
        raise DatasetError(f"{path}: attribute 'format' is {attrs['format']!r}, expected {FORMAT!r}")
    try:
        identity = json.loads(attrs["identity"])
        sha = json.loads(attrs["sha256"])
        counts = json.loads(attrs["family_counts"]) if "family_counts" in attrs else None
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{path}: attribute 'identity', 'sha256' or 'family_counts' is not valid JSON: "
                           f"{err}") from err
    return ShardHeader(path, int(attrs["start"]), int(attrs["stop"]), identity,
                       str(attrs["code_version"]), sha, shapes, dtypes, counts)


def checksum_problems(header: ShardHeader, arrays: Mapping[str, np.ndarray]) -> list[str]:
    """Fields of `arrays` (a shard's content) whose SHA-256 differs from the one in its header."""
    return [f"{header.path}: checksum mismatch in field {field!r} (sha256 of the data differs from the one "
            "recorded when the shard was written): corrupted shard"
            for field, arr in arrays.items() if digest(arr) != header.sha256.get(field)]


def rehash(header: ShardHeader) -> list[str]:
    """Re-read every field present in the shard `header` describes and compare its SHA-256 with the header's.

    One field in memory at a time; an unreadable dataset raises DatasetError naming the file.
    """
    problems = []
    try:
        with h5py.File(header.path, "r", locking=False) as f:
            for field in header.shapes:
                problems += checksum_problems(header, {field: f[field][...]})
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        raise DatasetError(f"{header.path}: cannot read the shard's arrays (truncated or corrupted?): {err}") from err
    return problems
