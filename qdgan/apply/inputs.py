"""Inputs of the apply apps (`qdgan.predict`, `qdgan.invert`): readers and row selection; numpy + h5py only.

Inputs, in physical units (eV for potentials, nm⁻² for densities), one map per instance:
- `.npy`: an (N, H, W) or (H, W) array;
- `.h5`/`.hdf5`: the data set named after the quantity (or `key`) of an HDF5 file, e.g. a shard or
  the output of `qdgan.predict`;
- a data-set directory written by `physics.generate` (holds `manifest.json`): the quantity's field;
- PNG images (a file, a folder of them or a glob) with an explicit value range [lo, hi]: grey level
  0 ↦ lo, the largest level (255 or 65535) ↦ hi. Orientation as in every figure of the project:
  x to the right, y up (image row 0 is the top, y = L).
Unreadable inputs raise `InputError` here; checks against the checkpoint are in `apply/checkpoint.py`.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from physics.config import PhysicsConfig
from physics.dataset import open_dataset
from physics.manifest import MANIFEST
from qdgan.scaling import QUANTITIES, SPLITS, UNITS, split_indices

_PNG_MAX = {"1": 1, "L": 255, "LA": 255, "I": 65535, "I;16": 65535, "I;16B": 65535, "I;16L": 65535}


class InputError(ValueError):
    """An input, checkpoint or output request is unusable; the message names the file and the problem."""


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
        sys.exit(f"{app}: error: {err}")


@dataclass
class Inputs:
    """A batch of input maps and where it came from."""

    values: np.ndarray  # (n, H, W) float32, physical units of `quantity`
    quantity: str
    source: str  # the input path as given
    kind: str  # "npy" | "h5" | "dataset" | "png"
    rows: np.ndarray  # (n,) positions in the source (instance indices for a data set)
    labels: list[str]
    single: bool = False  # one (H, W) map was given: outputs keep that shape
    physics: PhysicsConfig | None = None  # a data set's own configuration
    reader: Callable[[str], np.ndarray | None] = field(default=lambda name: None, repr=False)

    def __len__(self) -> int:
        return len(self.values)

    def companion(self, name: str) -> np.ndarray | None:
        """Another field of the same source for the same rows (e.g. the data set's V), or None."""
        return self.reader(name)


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
    """Read the `quantity` maps of the input at `path` (see the module docstring for the formats)."""
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


def _as_maps(arr: np.ndarray, source: str) -> tuple[np.ndarray, bool]:
    """(n, H, W) real array and whether a single (H, W) map was given."""
    if np.iscomplexobj(arr) or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"input={source}: holds {arr.dtype} values, expected real numbers")
    if arr.ndim == 2:
        return arr[None], True
    if arr.ndim != 3:
        raise InputError(f"input={source}: array of shape {arr.shape} has {arr.ndim} dimension(s), "
                         "expected (N, H, W) maps or one (H, W) map")
    return arr, False


def _npy(p: Path, source: str, quantity: str, indices: Any, split: str | None) -> Inputs:
    _no_split(split, source)
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"input={source}: not a readable .npy array ({err})") from None
    if not isinstance(arr, np.ndarray):
        raise InputError(f"input={source}: not a single .npy array")
    arr, single = _as_maps(arr, source)
    rows = parse_indices(indices, len(arr))
    return Inputs(np.asarray(arr[rows], dtype=np.float32), quantity, source, "npy", rows,
                  [f"row {r}" for r in rows], single and indices is None)


def _h5(p: Path, source: str, quantity: str, key: str | None, indices: Any, split: str | None) -> Inputs:
    _no_split(split, source)
    name = key or quantity
    try:
        with h5py.File(p, "r", locking=False) as f:
            if name not in f or not isinstance(f[name], h5py.Dataset):
                found = sorted(k for k in f if isinstance(f[k], h5py.Dataset))
                raise InputError(f"input={source}: no data set {name!r} in this HDF5 file (it holds {found}); "
                                 "name the one to read with h5_key=<name>")
            arr, single = _as_maps(f[name][...], f"{source}[{name}]")
            others = {q: f[q][...] for q in (*QUANTITIES, "energy") if q != name and q in f
                      and isinstance(f[q], h5py.Dataset) and f[q].shape[:1] == (len(arr),)}
    except OSError as err:
        raise InputError(f"input={source}: not a readable HDF5 file ({err})") from None
    rows = parse_indices(indices, len(arr))
    return Inputs(np.asarray(arr[rows], dtype=np.float32), quantity, source, "h5", rows,
                  [f"row {r}" for r in rows], single and indices is None,
                  reader=lambda q: others[q][rows] if q in others else None)


def _dataset(p: Path, source: str, quantity: str, indices: Any, split: str | None, run_config: Any) -> Inputs:
    ds = open_dataset(p)
    rows = select_rows(len(ds), indices, split, run_config, source)
    values = ds[quantity][rows]

    def reader(name: str) -> np.ndarray | None:
        return ds[name][rows] if name in (*QUANTITIES, "energy") else None

    return Inputs(values, quantity, source, "dataset", rows, [f"#{r}" for r in rows], physics=ds.config,
                  reader=reader)


def _pngs(files: list[Path], source: str, quantity: str, value_range: Sequence[float] | None, indices: Any,
          split: str | None) -> Inputs:
    _no_split(split, source)
    if value_range is None:
        raise InputError(f"input={source}: PNG images need their value range, png_range=[lo,hi] in "
                         f"{UNITS.get(quantity, '')} (grey 0 ↦ lo, white ↦ hi; e.g. [0,0.5] for potentials)")
    lo, hi = _range(value_range)
    rows = parse_indices(indices, len(files))
    maps = [read_png(files[r], (lo, hi)) for r in rows]
    shapes = {m.shape for m in maps}
    if len(shapes) > 1:
        raise InputError(f"input={source}: the PNG images differ in size: {sorted(shapes)}")
    return Inputs(np.stack(maps), quantity, source, "png", rows, [files[r].stem for r in rows],
                  len(files) == 1 and indices is None)


def _range(value_range: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise InputError(f"png_range={value_range!r}: expected two numbers [lo,hi]") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise InputError(f"png_range={value_range!r}: expected finite lo < hi")
    return lo, hi


def read_png(path: Path, value_range: tuple[float, float]) -> np.ndarray:
    """One grey-scale PNG (8 or 16 bit; RGB only with equal channels) as an (x, y) map in physical units."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode == "P":
                img, mode = img.convert("RGBA"), "RGBA"
            pixels = np.asarray(img)
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"input={path}: not a readable PNG image ({err})") from None
    if mode in ("RGB", "RGBA"):
        rgb = pixels[..., :3].astype(np.int64)
        if not ((rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])).all():
            raise InputError(f"input={path}: a colour image; expected grey levels (a colour map cannot be "
                             "inverted to values)")
        pixels, top = rgb[..., 0], 255
    elif mode in _PNG_MAX:
        pixels, top = (pixels[..., 0] if pixels.ndim == 3 else pixels), _PNG_MAX[mode]
    else:
        raise InputError(f"input={path}: PNG mode {mode!r} is not supported; expected 8- or 16-bit grey")
    lo, hi = value_range
    values = lo + (pixels.astype(np.float64) / top) * (hi - lo)
    return np.ascontiguousarray(values[::-1].T, dtype=np.float32)


def write_png(path: str | os.PathLike[str], values: np.ndarray, value_range: tuple[float, float]) -> Path:
    """An (x, y) map as a 16-bit grey PNG that `read_png` with the same range reads back (clipped to it)."""
    from PIL import Image

    lo, hi = value_range
    level = np.rint(np.clip((np.asarray(values, dtype=np.float64) - lo) / (hi - lo), 0, 1) * 65535)
    path = Path(path)
    Image.fromarray(np.ascontiguousarray(level.T[::-1]).astype(np.uint16)).save(path, format="PNG")
    return path


def read_reference(path: str | os.PathLike[str], quantity: str, n: int, rows: np.ndarray | None = None,
                   h5_key: str | None = None) -> np.ndarray:
    """Known maps to compare generated ones with (.npy or .h5), one per input instance."""
    ref = load_inputs(path, quantity, h5_key=h5_key)
    values = ref.values
    if len(values) != n and rows is not None and len(values) > int(rows.max()):
        values = values[rows]  # a reference for the whole source, the input selected some rows
    if len(values) != n:
        raise InputError(f"reference={path}: holds {len(ref.values)} map(s) for {n} input instance(s)")
    return values


