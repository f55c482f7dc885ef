"""`data.path`: one data-set folder, or a list of them read as one set (numpy + physics only).

A list is read in its order and concatenated; the one split (`scaling.split_indices`) runs over the
concatenation, so instance i of the second set is row len(first) + i. The sets must share their physics:
their identities may differ only in the fields of `MAY_DIFFER`; each instance keeps its potential family
(`Sets.family`) and its electron count N (`Sets.electrons`). Sets that hold the same potentials row by row (one
seed, size and potential spec: the N = 1…4 sets of issue 11) are split by potential instead (`split`), so no
test potential is trained on with another N. A list is read, never generated: each set is made first by its own
physics.generate. A single string is exactly one set: same rows, same arrays, same messages as before lists existed.
`data.extra_train` sets follow `data.path`'s and only add training rows (`Sets.split`): the split of `data.path` stays
what it is without them, so validation and test instances stay the same (data scale, issue 12).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from physics import families
from physics.config import PhysicsConfig, describe, diff
from physics.dataset import Dataset, open_dataset
from physics.manifest import MANIFEST
from qdgan.scaling import SPLITS, split_indices

__all__ = ["MAY_DIFFER", "WITH_N", "Sets", "allowed_text", "as_paths", "complete", "differences", "generate_command",
           "is_list", "open_sets", "physics_of", "require_complete", "split_rows",
           "split_selection"]

MAY_DIFFER = ("potential", "physics.n_electrons", "physics.n_orbitals")
"""Identity fields (dotted prefixes of `physics.*` and `potential.*`) in which the sets of one `data.path` list
may differ: the potential family (with its parameters) and N, which every instance keeps (`Sets.family`,
`Sets.electrons`); and, between sets of different N only, n_orbitals, the ED basis each N is converged in (16
orbitals for N ≤ 3, 20 for N = 4 meet one criterion, docs/physics.md "n_orbitals for N = 3 and 4": the targets
are converged ground states either way). A set that differs in anything else (grid, box, ε_r, ...) is refused,
naming the fields."""
WITH_N = ("physics.n_orbitals",)
"""The fields of `MAY_DIFFER` that may differ only together with N."""


def is_list(value: Any) -> bool:
    """Whether `data.path` is a list of sets (a plain or OmegaConf list), not one folder."""
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def as_paths(value: Any) -> list[Path]:
    """`data.path` as folders in order; ValueError (one line) for an empty list, a non-string entry or a
    folder listed twice."""
    if not is_list(value):
        return [Path(value)]
    entries = list(value)
    if not entries or not all(isinstance(e, str) and e for e in entries):
        raise ValueError(f"data.path={entries!r}: expected a data-set folder or a non-empty list of them")
    seen: dict[Path, int] = {}
    for k, entry in enumerate(entries):
        if (first := seen.setdefault(Path(entry).resolve(), k)) != k:
            raise ValueError(f"data.path[{k}]={entry} repeats data.path[{first}]: a set listed twice would count "
                             "its instances twice")
    return [Path(e) for e in entries]


def complete(path: Path) -> bool:
    """Whether `path` holds a finished data set (its manifest lists the shards)."""
    manifest = path / MANIFEST
    return manifest.exists() and json.loads(manifest.read_text()).get("shards") is not None


def generate_command(path: Path, physics: PhysicsConfig) -> str:
    """The physics.generate command line that makes a set at `path` with this physics (family and seed to fill)."""
    changed = [f"physics.{k}={b}" for k, _, b in diff(PhysicsConfig().to_dict(), physics.to_dict())]
    return " ".join(["python -m physics.generate potential=<family> seed=<its own seed>", f"out_dir={path}",
                     *changed])


def require_complete(paths: Sequence[Path], physics: PhysicsConfig) -> None:
    """Refuse a listed set that is missing or unfinished (FileNotFoundError, one line with the command that
    makes it): one `data.generate` block cannot sensibly make several sets of different families."""
    for k, path in enumerate(paths):
        if not complete(path):
            raise FileNotFoundError(f"data.path[{k}]={path}: no complete data set there; the sets of a list are not "
                                    "generated from data.generate: generate each set first, with its own family and "
                                    f"seed (and N): {generate_command(path, physics)}")


def _identity(ds: Dataset) -> dict[str, Any]:
    return {"physics": ds.config.to_dict(), "potential": families.to_dict(ds.potential_spec)}


def _under(field: str, prefixes: Sequence[str]) -> bool:
    return any(field == f or field.startswith(f"{f}.") for f in prefixes)


def differences(a: Dataset, b: Dataset) -> list[tuple[str, Any, Any]]:
    """`physics.config.diff` of two sets' identities, less the fields `MAY_DIFFER` allows (`WITH_N` only when
    their N differ)."""
    allowed = [f for f in MAY_DIFFER if f not in WITH_N or a.config.n_electrons != b.config.n_electrons]
    return [d for d in diff(_identity(a), _identity(b)) if not _under(d[0], allowed)]


def allowed_text() -> str:
    """`MAY_DIFFER` as messages show it."""
    return ", ".join(f"{f}.*" if "." not in f else f + (" (with N)" if f in WITH_N else "") for f in MAY_DIFFER)


@dataclass(frozen=True)
class Sets:
    """Opened data sets read as one: `len`, concatenated fields, per-instance families, each set's rows."""

    paths: list[Path]
    sets: list[Dataset]
    listed: bool  # data.path was a list (messages say data.path[k])
    n_extra: int = 0  # the last n_extra sets are data.extra_train's: training rows only

    @property
    def offsets(self) -> np.ndarray:
        """Row of each set's first instance in the concatenation, then the total, (len(sets) + 1,)."""
        return np.concatenate([[0], np.cumsum([len(ds) for ds in self.sets])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def label(self, k: int) -> str:
        """How messages name set k: `data.path=DIR` for one set, `data.path[k]=DIR` in a list."""
        return f"data.path[{k}]={self.paths[k]}" if self.listed else f"data.path={self.paths[k]}"

    @property
    def where(self) -> str:
        """`data.path` as messages show it."""
        return str([str(p) for p in self.paths]) if self.listed else str(self.paths[0])

    def read(self, field: str) -> np.ndarray:
        """One field of every instance, float32, in concatenation order (one set: its array as it is)."""
        first = self.sets[0][field][:]
        if len(self.sets) == 1:
            return np.ascontiguousarray(first, dtype=np.float32)
        out = np.empty((len(self), *first.shape[1:]), dtype=np.float32)
        for ds, a, b in zip(self.sets, self.offsets[:-1], self.offsets[1:], strict=True):
            out[a:b] = first if ds is self.sets[0] else ds[field][:]
        return out

    def family(self) -> np.ndarray:
        """Each instance's potential family, uint8 codes into `physics.families.FAMILIES`, (n,)."""
        codes = [np.array([families.FAMILIES.index(n) for n in ds.family_names], dtype=np.uint8)[ds.family]
                 for ds in self.sets]
        return np.concatenate(codes)

    def electrons(self) -> np.ndarray:
        """Each instance's electron count N (its set's `physics.n_electrons`), int64, (n,)."""
        return np.concatenate([np.full(len(ds), ds.config.n_electrons, dtype=np.int64) for ds in self.sets])

    def varying(self) -> list[str]:
        """The physics fields (dotted, `physics.` less) in which the listed sets differ among themselves."""
        first = self.sets[0].config.to_dict()
        return sorted({k for ds in self.sets[1:] for k, _, _ in diff(first, ds.config.to_dict())})

    @property
    def shared_potentials(self) -> bool:
        """Whether the listed sets hold the same potentials row by row: several sets of one size, seed and potential
        spec (instance k's potential depends on these and on the physics fields outside `MAY_DIFFER` only)."""
        return len(self.sets) > 1 and len({(len(ds), ds.seed, json.dumps(families.to_dict(ds.potential_spec),
                                                                          sort_keys=True)) for ds in self.sets}) == 1

    def split(self, split_seed: int, n_train: int, n_val: int, n_test: int) -> dict[str, np.ndarray]:
        """Rows of the concatenation in each split: `scaling.split_indices` over it, or, for sets that share
        their potentials, that split of one set (n_train/k, n_val/k, n_test/k for k sets) in every set, so each
        potential is in one split with every N. ValueError when the split does not fit (or does not divide).
        With extra sets: the split of the others (their n_train capped at what they hold beyond n_val + n_test),
        then the first training rows still missing from the extra sets, in order."""
        if self.n_extra:
            own = Sets(self.paths[:-self.n_extra], self.sets[:-self.n_extra], self.listed)
            rows = own.split(split_seed, min(n_train, len(own) - n_val - n_test), n_val, n_test)
            more = n_train - len(rows["train"])
            if more > len(self) - len(own):
                raise ValueError(f"n_train={n_train} is more than the {len(rows['train'])} training instances of "
                                 f"data.path and the {len(self) - len(own)} of data.extra_train together")
            return {**rows, "train": np.concatenate([rows["train"], len(own) + np.arange(more)])}
        if not self.shared_potentials:
            return split_indices(len(self), split_seed, n_train, n_val, n_test)
        k = len(self.sets)
        if n_train % k or n_val % k or n_test % k:
            raise ValueError(f"holds {k} sets of the same {len(self.sets[0])} potentials, split by potential: "
                             f"n_train, n_val, n_test = {n_train}, {n_val}, {n_test} must be multiples of {k}")
        rows = split_indices(len(self.sets[0]), split_seed, n_train // k, n_val // k, n_test // k)
        return {s: np.concatenate([r + off for off in self.offsets[:-1]]) for s, r in rows.items()}


def open_sets(value: Any, extra: Any = None) -> Sets:
    """Open every set of `data.path`, then of `data.extra_train` (DatasetError names a bad shard), and refuse, in
    one line naming both sets and the fields, a set whose identity differs from the first one's outside
    `MAY_DIFFER`."""
    more = as_paths(extra) if extra else []
    paths = as_paths([*map(str, as_paths(value)), *map(str, more)]) if more else as_paths(value)
    sets = Sets(paths, [open_dataset(p) for p in paths], is_list(value) or bool(more), len(more))
    for k, ds in enumerate(sets.sets[1:], 1):
        if found := differences(sets.sets[0], ds):
            raise ValueError(f"data.path: {paths[0]} and {paths[k]} differ in their physics "
                             f"({describe(found, str(paths[0]), str(paths[k]))}); the sets of one list may differ "
                             f"only in {allowed_text()} (qdgan.datasets.MAY_DIFFER)")
    return sets


def physics_of(value: Any, n_electrons: int) -> PhysicsConfig | None:
    """The physics of the set of `data.path` (one set or a list) that holds N = `n_electrons`, from its manifest;
    None when none does or a manifest cannot be read."""
    for path in as_paths(value):
        try:
            found = PhysicsConfig.from_mapping(json.loads((path / MANIFEST).read_text())["identity"]["physics"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if found.n_electrons == n_electrons:
            return found
    return None


def split_rows(data: Mapping[str, Any], path: str | Path, split: str) -> np.ndarray:
    """The rows of set `path` in split `split` of a run whose `data.path` is a list: the split of the
    concatenation, as row numbers of that set. ValueError when `path` is not one of the listed sets."""
    paths = as_paths(data["path"])
    listed = [p.resolve() for p in paths]
    if (here := Path(path).resolve()) not in listed:
        raise ValueError(f"split={split}: the training run split the concatenation of its data sets "
                         f"{[str(p) for p in paths]} (data.path), and {path} is not one of them; select rows "
                         "with indices=start:stop")
    sets = Sets(paths, [open_dataset(p) for p in paths], True)
    k = listed.index(here)
    start, stop = (int(o) for o in sets.offsets[k:k + 2])
    rows = sets.split(int(data["split_seed"]), int(data["n_train"]), int(data["n_val"]), int(data["n_test"]))[split]
    return rows[(rows >= start) & (rows < stop)] - start


def split_selection(run_cfg: Any, source: str | Path, split: str | None, indices: Any) -> tuple[Any, str | None]:
    """(indices, split) that read split `split` of the input `source` of a checkpoint's run: as given for a run
    on one set (the set's own split); for a run on a list of sets, that set's rows of the run's split as
    `indices` (ValueError when the input is not one of the sets or none of its instances is in the split)."""
    if split not in SPLITS or indices is not None or run_cfg is None or "data" not in run_cfg \
            or not is_list(run_cfg["data"]["path"]):
        return indices, split
    rows = split_rows(run_cfg["data"], source, split)
    if not rows.size:
        raise ValueError(f"split={split}: none of the training run's {split} instances is in {source}")
    return rows.tolist(), None
