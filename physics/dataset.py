"""Read a data set written by `physics.generate`: `open_dataset(path)` → `Dataset`.

Opening checks the manifest, the shard set (none missing, none extra) and every shard's header
(readable, same identity, right shapes, checksums equal to the finalized manifest's); files that are
neither shards nor `*.h5` (the lock files `.lock-*` of running generate jobs) are ignored; arrays are
read lazily. A field view reads whole shard datasets per call, so a full pass over the paper's
5000 instances takes a fraction of a second. `Dataset.validate()` re-reads everything and checks
values: finiteness, ∫n = N per instance, indices, per-instance seeds, families and SHA-256 checksums.
Every set has a per-instance potential family (`ds.family`, codes into `ds.family_names`): stored in the
`family` field, or, in `paper` sets that have no such field, `paper` for every instance.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from physics import families
from physics.config import PhysicsConfig
from physics.files import is_temporary
from physics.instances import instance_seed
from physics.manifest import (
    MANIFEST,
    Identity,
    check_header,
    compare_entry,
    family_totals,
    load,
    shard_entry,
    shard_table,
)
from physics.shards import (
    ALL_FIELDS,
    FAMILY_FIELD,
    FIELDS,
    DatasetError,
    ShardHeader,
    checksum_problems,
    parse_name,
    read_header,
)

__all__ = ["Dataset", "DatasetError", "FieldView", "ValidationReport", "instance_seed", "open_dataset"]

CHARGE_RTOL = 1e-5
"""Relative tolerance of h²·Σn = N for float32 maps (float32 rounding gives ~1e-7)."""
_MAX_OPEN = 32
_MAX_LISTED = 20


def open_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Open the data set in directory `path`; DatasetError names the file and field of any problem."""
    directory = Path(path)
    manifest = load(directory)
    identity = Identity.from_dict(manifest["identity"], str(directory / MANIFEST))
    expected = {identity.shard_file(s): s for s in range(identity.n_shards)}
    names = sorted(os.listdir(directory))
    temporary = [n for n in names if is_temporary(n)]
    if temporary:
        warnings.warn(f"{directory}: ignoring {len(temporary)} temporary file(s) of writers that died or "
                      f"are still running, e.g. {temporary[:3]}", stacklevel=2)
    present = {n for n in names if parse_name(n) is not None or (n.endswith(".h5") and not is_temporary(n))}
    problems = [f"{directory / n}: unexpected shard file (not in the set described by {MANIFEST})"
                for n in sorted(present - set(expected))]
    missing = [n for n in expected if n not in present]
    if missing:
        problems.append(f"{directory}: {len(missing)} of {len(expected)} shard(s) missing: "
                        f"{', '.join(missing[:_MAX_LISTED])}{' ...' if len(missing) > _MAX_LISTED else ''}"
                        " (rerun physics.generate with the same config to complete the set)")
    _raise(problems)
    table = shard_table(manifest, identity, directory)
    headers = []
    for name, s in expected.items():
        try:
            header = read_header(directory / name)
        except DatasetError as err:
            problems.append(str(err))
            continue
        problems += check_header(header, identity, s)
        if table is not None:
            problems += compare_entry(table[s], shard_entry(header), directory)
        headers.append(header)
    _raise(problems)
    return Dataset(directory, manifest, identity, headers)


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of a successful `Dataset.validate()`."""

    n_instances: int
    n_shards: int
    seconds: float


class Dataset:
    """A complete data set: `len()`, field views (`ds.n0[...]`), config, manifest, `validate()`."""

    def __init__(self, directory: Path, manifest: dict[str, Any], identity: Identity,
                 headers: list[ShardHeader]) -> None:
        self.directory = directory
        self.manifest = manifest
        self.identity = identity
        self._headers = headers
        self._starts = np.array([h.start for h in headers], dtype=np.int64)
        self._files: OrderedDict[Path, h5py.File] = OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return self.identity.n_samples

    def __repr__(self) -> str:
        return f"Dataset({str(self.directory)!r}, n={len(self)}, shards={len(self._headers)})"

    @property
    def config(self) -> PhysicsConfig:
        """The physics configuration every instance was generated with."""
        return self.identity.physics

    @property
    def seed(self) -> int:
        """The set's base seed (instance seeds derive from it, see `instance_seed`)."""
        return self.identity.seed

    @property
    def finalized(self) -> bool:
        """Whether the manifest holds the shard table (checksums pinned by `manifest.finalize`)."""
        return self.manifest["shards"] is not None

    @property
    def code_versions(self) -> list[str]:
        """Distinct code versions that wrote the shards (more than one: mixed code, same config)."""
        return sorted({h.code_version for h in self._headers})

    @property
    def potential_spec(self) -> families.Spec:
        """The potential family spec the maps were drawn from (physics/families.py; `paper` for old sets)."""
        return self.identity.potential

    @property
    def family_names(self) -> tuple[str, ...]:
        """Family of each code of `family`: the manifest's table, or `families.FAMILIES` for paper sets."""
        return tuple(self.manifest.get("families", {}).get("names") or families.FAMILIES)

    @property
    def family(self) -> np.ndarray:
        """Each instance's potential family as a uint8 code into `family_names`, (n,)."""
        return self.read(FAMILY_FIELD, slice(None))

    @property
    def family_counts(self) -> dict[str, int]:
        """Instances per family present, in `family_names` order."""
        counts = np.bincount(self.family, minlength=len(self.family_names))
        return {name: int(c) for name, c in zip(self.family_names, counts, strict=False) if c}

    def __getitem__(self, field: str) -> FieldView:
        if field not in ALL_FIELDS:
            raise KeyError(f"unknown field {field!r}; fields: {list(ALL_FIELDS)}")
        return FieldView(self, field)

    potential = property(lambda self: self["potential"], doc="V (eV), (n, grid, grid) float32")
    n0 = property(lambda self: self["n0"], doc="non-interacting density (nm⁻²), (n, grid, grid) float32")
    n_int = property(lambda self: self["n_int"], doc="interacting density (nm⁻²), (n, grid, grid) float32")
    energy = property(lambda self: self["energy"], doc="many-body ground-state energy (eV), (n,) float64")
    energy_nonint = property(lambda self: self["energy_nonint"], doc="Σ lowest spin-orbital energies (eV)")
    instance_seeds = property(lambda self: self["seed"], doc="per-instance 64-bit seeds, (n,) uint64")

    def iter_shards(self, fields: Sequence[str] = tuple(FIELDS)) -> Iterator[dict[str, Any]]:
        """Whole shards in order as dicts of arrays plus 'start'/'stop': the streaming full pass.

        `family` may be asked for in any set (all `paper` where the shards have no such field)."""
        for header in self._headers:
            f = self._file(header.path)
            yield {"start": header.start, "stop": header.stop,
                   **{k: f[k][...] if self._stored(k) else self._empty(k, header.stop - header.start) for k in fields}}

    def validate(self) -> ValidationReport:
        """Re-read every shard and check dtypes, shapes, finiteness, h²·Σn = N, indices, seeds, checksums.

        Raises DatasetError listing every problem (file and field named); returns a report otherwise.
        """
        t0 = time.perf_counter()
        cfg, fields = self.config, tuple(self.identity.fields)
        problems: list[str] = []
        for header, shard in zip(self._headers, self.iter_shards(fields), strict=True):
            problems += _check_values(header, shard, cfg, self.seed, fields)
            if FAMILY_FIELD in fields:
                problems += self._check_families(header, shard[FAMILY_FIELD])
            if len(problems) > _MAX_LISTED:
                break
        recorded = self.manifest.get("families", {}).get("counts")
        if not problems and recorded is not None and recorded != family_totals(
                [{"family_counts": self.family_counts}], list(self.family_names)):
            problems.append(f"{self.directory / MANIFEST}: field 'families.counts' {recorded} differs from the "
                            f"instances' families {self.family_counts}")
        _raise(problems)
        return ValidationReport(len(self), len(self._headers), time.perf_counter() - t0)

    def _check_families(self, header: ShardHeader, codes: np.ndarray) -> list[str]:
        """Codes the set's spec can draw (`families.produces`), and counts equal to the shard's record."""
        names = self.family_names
        allowed = [names.index(f) for f in families.produces(self.identity.potential) if f in names]
        bad = np.flatnonzero(~np.isin(codes, allowed))
        if bad.size:
            return [f"{header.path}: field 'family' has code {codes[bad[0]]} at instance {header.start + bad[0]}, "
                    f"expected one of {allowed} ({[names[a] for a in allowed]})"]
        counts = np.bincount(codes, minlength=len(names))
        found = {names[c]: int(counts[c]) for c in np.flatnonzero(counts)}
        if header.family_counts != found:
            return [f"{header.path}: attribute 'family_counts' {header.family_counts} differs from field 'family' "
                    f"{found}"]
        return []

    def read(self, field: str, key: Any) -> np.ndarray:
        """Instances `key` (int, slice, integer array or boolean mask) of `field`."""
        n = len(self)
        if isinstance(key, (int, np.integer)):
            k = int(key) + n if key < 0 else int(key)
            if not 0 <= k < n:
                raise IndexError(f"index {key} out of range for {n} instances")
            return self._gather(field, np.array([k]))[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return self._read_range(field, start, max(start, stop))
            return self._gather(field, np.arange(start, stop, step))
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean mask has shape {idx.shape}, expected ({n},)")
            idx = np.flatnonzero(idx)
        if idx.dtype.kind not in "iu":
            raise IndexError(f"instances must be selected by int, slice, int array or mask, got {key!r}")
        idx = np.where(idx < 0, idx + n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"index out of range for {n} instances")
        return self._gather(field, idx.astype(np.int64))

    def _stored(self, field: str) -> bool:
        """Whether the shards hold `field` (not so: `family` in paper sets, where every instance is paper)."""
        return field in self.identity.fields

    def _empty(self, field: str, count: int) -> np.ndarray:
        """An array for `count` instances of `field`; for a field the shards do not hold, its implied value."""
        spec, grid = ALL_FIELDS[field], self.config.grid
        if not self._stored(field):
            return np.full(count, families.FAMILIES.index("paper"), dtype=spec.dtype)
        return np.empty((count, grid, grid) if spec.is_map else (count,), dtype=spec.dtype)

    def _read_range(self, field: str, start: int, stop: int) -> np.ndarray:
        out = self._empty(field, stop - start)
        if not self._stored(field):
            return out
        for header in self._headers:
            lo, hi = max(start, header.start), min(stop, header.stop)
            if lo < hi:
                self._file(header.path)[field].read_direct(
                    out, np.s_[lo - header.start:hi - header.start], np.s_[lo - start:hi - start])
        return out

    def _gather(self, field: str, idx: np.ndarray) -> np.ndarray:
        out = self._empty(field, idx.size)
        if not self._stored(field):
            return out
        shard_of = np.searchsorted(self._starts, idx, side="right") - 1
        for s in np.unique(shard_of):
            header = self._headers[s]
            where = np.flatnonzero(shard_of == s)
            local, inverse = np.unique(idx[where] - header.start, return_inverse=True)
            dset = self._file(header.path)[field]
            span = local[-1] - local[0] + 1
            block = dset[local[0]:local[-1] + 1][local - local[0]] if span <= 4 * local.size else dset[local]
            out[where] = block[inverse]
        return out

    def _file(self, path: Path) -> h5py.File:
        """An open handle from a small LRU cache (reopened after fork: h5py handles do not survive it)."""
        if self._pid != os.getpid():
            self._files, self._pid = OrderedDict(), os.getpid()
        f = self._files.pop(path, None)
        if f is None:
            try:
                f = h5py.File(path, "r", locking=False)
            except OSError as err:
                raise DatasetError(f"{path}: cannot open shard: {err}") from err
            if len(self._files) >= _MAX_OPEN:
                self._files.popitem(last=False)[1].close()
        self._files[path] = f
        return f

    def close(self) -> None:
        """Close the open shard files (views stay usable and reopen them on demand)."""
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_files"] = OrderedDict()
        return state


class FieldView:
    """Lazy view of one field: `view[k]`, `view[a:b]`, `view[[i, j]]`, `view[mask]`, `np.asarray(view)`."""

    def __init__(self, dataset: Dataset, field: str) -> None:
        self._dataset, self.field = dataset, field
        spec, grid = ALL_FIELDS[field], dataset.config.grid
        self.dtype = np.dtype(spec.dtype)
        self.unit = spec.unit
        self.shape = (len(dataset), grid, grid) if spec.is_map else (len(dataset),)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._dataset.read(self.field, key)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self._dataset.read(self.field, slice(None))
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"FieldView({self.field!r}, shape={self.shape}, dtype={self.dtype}, unit={self.unit!r})"


def _check_values(header: ShardHeader, shard: dict[str, Any], cfg: PhysicsConfig, seed: int,
                  fields: Sequence[str] = tuple(FIELDS)) -> list[str]:
    """Value-level problems of one shard's arrays (`fields`), each naming the file and field."""
    name, problems = header.path, []
    for field in fields:
        arr, spec = shard[field], ALL_FIELDS[field]
        if arr.dtype != np.dtype(spec.dtype):
            problems.append(f"{name}: field {field!r} has dtype {arr.dtype}, expected {spec.dtype}")
        problems += checksum_problems(header, {field: arr})
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = int(np.flatnonzero((~np.isfinite(arr.reshape(len(arr), -1))).any(axis=1))[0])
            problems.append(f"{name}: field {field!r} has non-finite values, first at instance "
                            f"{header.start + bad}")
    index = np.arange(header.start, header.stop)
    if not np.array_equal(shard["index"], index):
        problems.append(f"{name}: field 'index' is not {header.start}..{header.stop - 1}")
    seeds = np.array([instance_seed(seed, k) for k in index], dtype=np.uint64)
    if not np.array_equal(shard["seed"], seeds):
        problems.append(f"{name}: field 'seed' does not match instance_seed(seed={seed}, k)")
    for field in ("n0", "n_int"):
        charge = shard[field].sum(axis=(1, 2), dtype=np.float64) * cfg.h_nm**2
        bad = np.flatnonzero(~(np.abs(charge - cfg.n_electrons) <= CHARGE_RTOL * cfg.n_electrons))
        if bad.size:
            problems.append(f"{name}: field {field!r} integrates to {charge[bad[0]]:.7g} at instance "
                            f"{header.start + bad[0]}, expected N={cfg.n_electrons} "
                            f"({bad.size} instance(s) off)")
    return problems


def _raise(problems: list[str]) -> None:
    """Raise one DatasetError listing `problems` (one per line), if there are any."""
    if len(problems) == 1:
        raise DatasetError(problems[0])
    if problems:
        shown = problems[:_MAX_LISTED]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise DatasetError(f"{len(problems)} problems:\n  " + "\n  ".join(shown) + more)
