"""Inputs of the apply apps (`qdgan.predict`, `qdgan.invert`): readers and row selection; numpy + h5py only.

Inputs, in physical units (eV for potentials, nm⁻² for densities), one map per instance:
- `.npy`: an (N, H, W) or (H, W) array;
- `.h5`/`.hdf5`: the data set named after the quantity (or `key`) of an HDF5 file, e.g. a shard or
  the output of `qdgan.predict`;
- a data-set directory written by `physics.generate` (holds `manifest.json`): the quantity's field,
  after `Dataset.validate()` (checksums, finiteness, ∫n = N) so bad data ends here, naming the shard;
- PNG images (a file, a folder of them or a glob) with png_range=[lo, hi] (`apply/png.py`).
Opening reads shapes and names only; maps are read by row ranges (`Inputs.read`), one chunk at a time
whatever N is. Unreadable inputs raise `InputError`; checks against the checkpoint: `apply/checkpoint.py`.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from physics.config import PhysicsConfig
from physics.dataset import open_dataset
from physics.manifest import MANIFEST
from qdgan.apply import InputError
from qdgan.apply.png import check_range, png_shape, read_png
from qdgan.scaling import QUANTITIES, SPLITS, UNITS, split_indices

COMPANIONS = (*QUANTITIES, "energy")  # other fields of a source that may describe the same instances


def one_line_errors(app: str, run: Callable[[Any], Any], cfg: Any) -> None:
    """`run(cfg)` for the command line of `app`: bad input (InputError, ConfigError, data-set, ED and OS
    errors, a missing mandatory key) ends the process with one line naming the problem, no traceback."""
    from omegaconf.errors import MissingMandatoryValue

    from physics.shards import DatasetError
    from qdgan.apply.ed_batch import EDError

    try:
        run(cfg)
    except MissingMandatoryValue as err:
        sys.exit(f"{app}: error: {err.full_key}=<...> is required")
    except (ValueError, DatasetError, EDError, OSError) as err:  # InputError, ConfigError are ValueErrors
        sys.exit(f"{app}: error: {' '.join(str(err).split())}")


@dataclass
class Inputs:
    """The selected maps of one input and where they came from, read by row ranges of the selection."""

    quantity: str
    source: str  # the input path as given
    kind: str  # "npy" | "h5" | "dataset" | "png"
    rows: np.ndarray  # (n,) positions in the source (instance indices for a data set)
    labels: list[str]
    shape: tuple[int, ...]  # of one map, (H, W)
    fetch: Callable[[str, np.ndarray], np.ndarray | None] = field(repr=False)  # (field, source rows) → maps
    single: bool = False  # one (H, W) map was given: outputs keep that shape
    physics: PhysicsConfig | None = None  # a data set's own configuration
    _last: tuple[int, int, np.ndarray] | None = field(default=None, init=False, repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    def chunks(self, size: int) -> Iterator[tuple[int, int]]:
        """(start, stop) ranges of at most `size` instances covering the selection in order."""
        return ((a, min(a + size, len(self))) for a in range(0, len(self), size))

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Maps start:stop of the selection, float32 (n, H, W). The last range read is kept, so an input
        of one chunk is read once for the checks and the predictions."""
        stop = len(self) if stop is None else min(stop, len(self))
        if self._last is None or self._last[:2] != (start, stop):
            self._last = None  # let the previous chunk go before reading the next one
            self._last = (start, stop, np.asarray(self.fetch(self.quantity, self.rows[start:stop]), np.float32))
        return self._last[2]

    def companion(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray | None:
        """Another field of the same source for the same rows (e.g. the data set's V), or None."""
        return self.fetch(name, self.rows[start:stop])


# --- selection -----------------------------------------------------------------------------------


def parse_indices(indices: Any, n: int) -> np.ndarray:
    """Rows selected by `indices`: None (all), an int, "start:stop[:step]" or a list of ints."""
    if indices is None:
        return np.arange(n)
    if isinstance(indices, str):
        try:
            parts = [int(p) if p.strip() else None for p in indices.split(":")]
        except ValueError:
            parts = []
        if not 1 < len(parts) <= 3:
            raise InputError(f"indices={indices!r}: expected 'start:stop[:step]', an integer or a list of integers")
        rows = np.arange(n)[slice(*parts)]
    elif isinstance(indices, (int, np.integer)) and not isinstance(indices, bool):
        rows = np.array([indices])
    elif isinstance(indices, Sequence) and all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        rows = np.asarray(list(indices), dtype=np.int64)
    else:
        raise InputError(f"indices={indices!r}: expected 'start:stop[:step]', an integer or a list of integers")
    rows = np.where(rows < 0, rows + n, rows)
    if rows.size == 0:
        raise InputError(f"indices={indices!r} selects no instance of the {n} in the input")
    if rows.min() < 0 or rows.max() >= n:
        raise InputError(f"indices={indices!r} out of range: the input holds {n} instance(s)")
    return rows.astype(np.int64)


def select_rows(n: int, indices: Any, split: str | None, run_config: Any | None, source: str) -> np.ndarray:
    """Rows of a source with n instances from `indices` or `split` (the training run's split; needs
    its config: data.split_seed, n_train, n_val, n_test)."""
    if split is None:
        return parse_indices(indices, n)
    if indices is not None:
        raise InputError(f"split={split!r} and indices={indices!r}: give one of them, not both")
    if split not in SPLITS:
        raise InputError(f"split={split!r}: expected one of {SPLITS}")
    if run_config is None:
        raise InputError(f"split={split} needs the training run's config.yaml next to the checkpoint's "
                         "checkpoints/ folder, and there is none; select instances with indices=start:stop")
    d = run_config["data"]
    try:
        return split_indices(n, int(d["split_seed"]), int(d["n_train"]), int(d["n_val"]), int(d["n_test"]))[split]
    except ValueError as err:
        raise InputError(f"input={source}: {err} (the training run's data.n_train, n_val, n_test)") from None


# --- reading -------------------------------------------------------------------------------------


def load_inputs(path: str | os.PathLike[str], quantity: str, *, indices: Any = None, split: str | None = None,
                run_config: Any | None = None, png_range: Sequence[float] | None = None,
                h5_key: str | None = None) -> Inputs:
    """Open the `quantity` maps of the input at `path` (see the module docstring for the formats)."""
    text = str(path)
    p = Path(text)
    if any(c in text for c in "*?["):
        files = sorted(Path(f) for f in glob.glob(text))
        if not files:
            raise InputError(f"input={text}: no file matches this pattern")
        return _pngs(files, text, quantity, png_range, indices, split)
    if not p.exists():
        raise InputError(f"input={text}: no such file or directory")
    if p.name == MANIFEST:
        p = p.parent
    if p.is_dir():
        if (p / MANIFEST).exists():
            return _dataset(p, text, quantity, indices, split, run_config)
        files = sorted(p.glob("*.png"))
        if not files:
            raise InputError(f"input={text}: a folder that is neither a data set (no {MANIFEST}) nor holds .png images")
        return _pngs(files, text, quantity, png_range, indices, split)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return _npy(p, text, quantity, indices, split)
    if suffix in (".h5", ".hdf5"):
        return _h5(p, text, quantity, h5_key, indices, split)
    if suffix == ".png":
        return _pngs([p], text, quantity, png_range, indices, split)
    raise InputError(f"input={text}: unknown input format {suffix or '(no suffix)'!r}; expected .npy, .h5/.hdf5, "
                     f".png (with png_range) or a data-set folder ({MANIFEST})")


def _no_split(split: str | None, source: str) -> None:
    if split is not None:
        raise InputError(f"split={split} applies to data-set inputs only; input={source} is a file "
                         "(select rows with indices=start:stop)")


def _map_shape(shape: tuple[int, ...], dtype: np.dtype, source: str) -> tuple[int, tuple[int, ...], bool]:
    """(number of maps, shape of one map, whether a single (H, W) map was given) of a stored array."""
    if np.issubdtype(dtype, np.complexfloating) or not np.issubdtype(dtype, np.number):
        raise InputError(f"input={source}: holds {dtype} values, expected real numbers")
    if len(shape) not in (2, 3):
        raise InputError(f"input={source}: array of shape {shape} has {len(shape)} dimension(s), "
                         "expected (N, H, W) maps or one (H, W) map")
    if 0 in shape:
        raise InputError(f"input={source}: holds no maps (array of shape {shape}); expected (N, H, W) with N ≥ 1 "
                         "or one (H, W) map")
    return (1, shape, True) if len(shape) == 2 else (shape[0], shape[1:], False)


def _take(arr: Any, rows: np.ndarray, single: bool) -> np.ndarray:
    """arr[rows] of an array, memory map or h5py data set, for rows in any order (h5py reads increasing
    indices only): a dense span is read whole and indexed in memory."""
    if single:
        return np.asarray(arr[...])[None][rows]
    if rows.size == 0:
        return np.asarray(arr[:0])
    uniq, inverse = np.unique(rows, return_inverse=True)
    if uniq[-1] - uniq[0] + 1 <= 4 * uniq.size:
        block = np.asarray(arr[uniq[0]:uniq[-1] + 1])[uniq - uniq[0]]
    else:
        block = np.asarray(arr[uniq])
    return block[inverse]


def _npy(p: Path, source: str, quantity: str, indices: Any, split: str | None) -> Inputs:
    _no_split(split, source)
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"input={source}: not a readable .npy array ({err})") from None
    if not isinstance(arr, np.ndarray):
        raise InputError(f"input={source}: not a single .npy array")
    n, shape, single = _map_shape(arr.shape, arr.dtype, source)
    del arr

    def fetch(name: str, rows: np.ndarray) -> np.ndarray | None:
        if name != quantity:
            return None
        mapped = np.load(p, mmap_mode="r", allow_pickle=False)  # mapped per chunk: its pages leave with it
        return np.array(_take(mapped, rows, single), dtype=np.float32)

    rows = parse_indices(indices, n)
    return Inputs(quantity, source, "npy", rows, [f"row {r}" for r in rows], shape, fetch, single and indices is None)


def _h5(p: Path, source: str, quantity: str, key: str | None, indices: Any, split: str | None) -> Inputs:
    _no_split(split, source)
    name = key or quantity
    try:
        with h5py.File(p, "r", locking=False) as f:
            if name not in f or not isinstance(f[name], h5py.Dataset):
                found = sorted(k for k in f if isinstance(f[k], h5py.Dataset))
                raise InputError(f"input={source}: no data set {name!r} in this HDF5 file (it holds {found}); "
                                 "name the one to read with h5_key=<name>")
            n, shape, single = _map_shape(f[name].shape, f[name].dtype, f"{source}[{name}]")
            others = {q for q in COMPANIONS if q != name and q in f and isinstance(f[q], h5py.Dataset)
                      and f[q].shape[:1] == (n,) and not single}
    except OSError as err:
        raise InputError(f"input={source}: not a readable HDF5 file ({err})") from None

    def fetch(field_name: str, rows: np.ndarray) -> np.ndarray | None:
        stored = name if field_name == quantity else field_name if field_name in others else None
        if stored is None:
            return None
        with h5py.File(p, "r", locking=False) as f:
            return _take(f[stored], rows, single and stored == name)

    rows = parse_indices(indices, n)
    return Inputs(quantity, source, "h5", rows, [f"row {r}" for r in rows], shape, fetch, single and indices is None)


def _dataset(p: Path, source: str, quantity: str, indices: Any, split: str | None, run_config: Any) -> Inputs:
    ds = open_dataset(p)
    ds.validate()  # checksums, finiteness, ∫n = N: DatasetError naming the shard before any work
    rows = select_rows(len(ds), indices, split, run_config, source)

    def fetch(name: str, selected: np.ndarray) -> np.ndarray | None:
        return ds[name][selected] if name in COMPANIONS else None

    grid = ds.config.grid
    return Inputs(quantity, source, "dataset", rows, [f"#{r}" for r in rows], (grid, grid), fetch,
                  physics=ds.config)


def _pngs(files: list[Path], source: str, quantity: str, value_range: Sequence[float] | None, indices: Any,
          split: str | None) -> Inputs:
    _no_split(split, source)
    if value_range is None:
        raise InputError(f"input={source}: PNG images need their value range, png_range=[lo,hi] in "
                         f"{UNITS.get(quantity, '')} (grey 0 ↦ lo, white ↦ hi; e.g. [0,0.5] for potentials)")
    lo, hi = check_range(value_range)
    rows = parse_indices(indices, len(files))
    shapes = {png_shape(files[r]) for r in rows}
    if len(shapes) > 1:
        raise InputError(f"input={source}: the PNG images differ in size: {sorted(shapes)}")

    def fetch(name: str, selected: np.ndarray) -> np.ndarray | None:
        return np.stack([read_png(files[r], (lo, hi)) for r in selected]) if name == quantity else None

    return Inputs(quantity, source, "png", rows, [files[r].stem for r in rows], shapes.pop(), fetch,
                  len(files) == 1 and indices is None)


def read_reference(path: str | os.PathLike[str], quantity: str, n: int, rows: np.ndarray | None = None,
                   h5_key: str | None = None) -> np.ndarray:
    """Known maps to compare generated ones with (.npy or .h5), one per input instance."""
    ref = load_inputs(path, quantity, h5_key=h5_key)
    if len(ref) == n:
        return ref.read()
    if rows is not None and len(ref) > int(rows.max()):  # a reference for the whole source, the input selected rows
        return np.asarray(ref.fetch(quantity, rows), dtype=np.float32)
    raise InputError(f"reference={path}: holds {len(ref)} map(s) for {n} input instance(s)")
