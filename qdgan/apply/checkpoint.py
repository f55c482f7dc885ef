"""A trained checkpoint as the apply apps use it: loaded, described, checked against its inputs and
physics, and run on physical maps (timed).

The checkpoint alone maps physical inputs to physical outputs (scaling and the training mean image
live in its buffers); the training run's `config.yaml`, next to its `checkpoints/` folder, adds
the split and the full physics configuration when present.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from physics.config import PhysicsConfig, describe, diff
from qdgan import metrics
from qdgan.apply.inputs import InputError, Inputs, load_inputs
from qdgan.datasets import physics_of, split_selection
from qdgan.pix2pix import Pix2Pix
from qdgan.scaling import DENSITIES, QUANTITIES, UNITS

_LISTED = 3  # instances named in a warning
CHUNK = 1000  # maps read at a time by the input checks (predict: its chunk_size)
_DENSITY_LIKE = 0.1  # a potential input ≥ 0 (to 1 % of its max) with h²·Σ within 10 % of N looks like a density
_POTENTIAL_LIKE = 10.0  # a density input with h²·Σ off N by more than 10·N looks like a potential


@dataclass(frozen=True)
class TrainedOn:
    """What a checkpoint was trained on: input quantity, image size, training input range, h², N, every N."""

    quantity: str
    image_size: int
    lo: float  # training-set minimum of the input quantity (physical unit)
    hi: float  # training-set maximum
    pixel_area: float  # h², nm²
    n_electrons: float  # after `load_checked_inputs`: the inputs' N (`electrons_for`)
    electrons: tuple[int, ...] = ()  # several: a model that takes N as an input channel


def pick_device(device: str) -> torch.device:
    """'auto' → CUDA when available, else CPU; anything else as torch names it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise InputError(f"device={device!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={device!r}: CUDA is not available here (use device=cpu or auto)")
    return dev


def load_model(path: str | Path, device: str = "cpu") -> Pix2Pix:
    """The Pix2Pix of a Lightning checkpoint, in eval mode on `device`; InputError if the file is
    missing or not such a checkpoint, or holds no training statistics."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint={path}: no such file")
    try:
        model = Pix2Pix.load_from_checkpoint(path, map_location="cpu", compile=False)
    except Exception as err:  # torch/Lightning raise many types for foreign files; one line for the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise InputError(f"checkpoint={path}: not a qdgan Pix2Pix Lightning checkpoint "
                         f"({type(err).__name__}: {first[:200]})") from None
    hp = model.hparams
    if hp.get("input_name") not in QUANTITIES or hp.get("target_name") not in QUANTITIES:
        raise InputError(f"checkpoint={path}: names no mapping (input_name={hp.get('input_name')!r}, "
                         f"target_name={hp.get('target_name')!r}); expected quantities from {QUANTITIES}")
    if not model.has_stats:
        raise InputError(f"checkpoint={path}: holds no training statistics (scale buffer {model.scale.tolist()}); "
                         "it was saved before the data module set them")
    return model.to(pick_device(device)).eval()


def trained_on(model: Pix2Pix) -> TrainedOn:
    """The input quantity, image size, training input range, h² and N of a checkpoint."""
    s = model.scale.tolist()
    return TrainedOn(model.hparams.input_name, int(model.generator.image_size), s[0], s[1],
                     float(model.physics[0]), float(model.physics[1]), model.electrons)


def electrons_for(requested: Any, model: Pix2Pix, inputs: Inputs) -> int:
    """The inputs' N: `n_electrons=`, else a data-set input's own, else a one-N model's. One-line errors naming both
    values for an N the model was not trained on or the data set contradicts; none for a model of several N."""
    own = None if inputs.physics is None else inputs.physics.n_electrons
    if requested is not None and (isinstance(requested, bool) or not isinstance(requested, int) or requested < 1):
        raise InputError(f"n_electrons={requested!r}: expected a positive integer (the inputs' electron count N)")
    if None not in (requested, own) and requested != own:
        raise InputError(f"n_electrons={requested}, but input={inputs.source} is a data set of N = {own}")
    if (n := own if requested is None else requested) is None and model.conditioned:
        raise InputError(f"n_electrons=<N> is required: the checkpoint takes N as an input (trained on N = "
                         f"{', '.join(map(str, model.electrons))}), and input={inputs.source} does not say its N")
    model.check_electrons(n := model.electrons[0] if n is None else n,  # ValueError: one line, as InputError
                          "n_electrons" if requested is not None else f"input={inputs.source}: N")
    return n


def mapping_text(model: Pix2Pix) -> str:
    hp = model.hparams
    return f"{hp.input_name} ↦ {hp.target_name} ({hp.mapping or 'unnamed mapping'})"


def length_nm(model: Pix2Pix) -> float:
    """Box side L = h·grid from the checkpoint's pixel area (for figure axes)."""
    return math.sqrt(float(model.physics[0])) * int(model.generator.image_size)


def run_config(checkpoint: str | Path) -> DictConfig | None:
    """The training run's resolved config (`<run dir>/config.yaml`, the checkpoint in `<run dir>/checkpoints/`)."""
    path = Path(checkpoint).absolute().parent.parent / "config.yaml"
    return OmegaConf.load(path) if path.is_file() else None


def training_physics(run_cfg: DictConfig | None, n_electrons: int | None = None) -> PhysicsConfig | None:
    """The PhysicsConfig of the training data, from the run's config.yaml when it has one; with `n_electrons`,
    that of the run's listed data set of this N (None when none can be read)."""
    if run_cfg is None or "physics" not in run_cfg:
        return None
    return PhysicsConfig.from_mapping(run_cfg.physics) if n_electrons is None else physics_of(run_cfg.data.path,
                                                                                              n_electrons)


def check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size={batch_size!r}: expected a positive integer")
    return batch_size


def warm_up(model: Pix2Pix, values: np.ndarray, n: int, batch_size: int, warmup: int = 2,
            n_electrons: Any = None) -> None:
    """Run each batch shape of an n-instance run `warmup` times on the first `values` before the clock
    starts: the first passes of a shape build kernels (oneDNN, cuDNN) and allocate."""
    x = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    for size in {min(batch_size, n), n % batch_size} - {0}:
        for _ in range(warmup):
            model.predict_maps(x[:size], batch_size, n_electrons)


def timed(model: Pix2Pix, values: np.ndarray, batch_size: int, n_electrons: Any = None) -> tuple[np.ndarray, float]:
    """Physical inputs (n, H, W) of N = `n_electrons` (needed by a model of several N) → physical predictions
    (n, H, W) float32, and the seconds the forward passes took (scaling and host↔device copies included)."""
    x = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    t0 = time.perf_counter()
    pred = model.predict_maps(x, batch_size, n_electrons)  # returns on the CPU: the clock includes the device sync
    return pred.numpy(), time.perf_counter() - t0


def timed_predictions(model: Pix2Pix, values: np.ndarray, batch_size: int, warmup: int = 2,
                      n_electrons: float | None = None) -> tuple[np.ndarray, float]:
    """`timed` after `warm_up`, for a batch held in memory at once."""
    warm_up(model, values, len(values), check_batch_size(batch_size), warmup, n_electrons)
    return timed(model, values, batch_size, n_electrons)


def compare(pred: np.ndarray, ref: np.ndarray, mean: np.ndarray, quantity: str, pm1_range: tuple | None = None) -> dict:
    """`metrics.summarize` of generated maps against known ones, in float64 (`ssim_pm1` on `pm1_range`)."""
    as64 = (torch.from_numpy(np.asarray(a, dtype=np.float64)) for a in (pred, ref, mean))
    return metrics.summarize(*as64, UNITS[quantity], value_range=pm1_range)


def charge(values: np.ndarray, pixel_area: float) -> np.ndarray:
    """h²·Σn per density map (electrons)."""
    return pixel_area * np.asarray(values).sum(axis=(1, 2), dtype=np.float64)


def plain(value: Any) -> Any:
    """A config value as plain Python (lists instead of ListConfig)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def load_checked_inputs(cfg: DictConfig, model: Pix2Pix, run_cfg: DictConfig | None,
                        chunk: int = CHUNK) -> tuple[Inputs, list[str], int]:
    """The input maps of an inference config (`input`, `indices`, `split`, `png_range`, `h5_key`, `n_electrons`)
    for the checkpoint's input quantity, checked against what it was trained on (`chunk` maps at a time):
    errors raise InputError; returns the inputs, warnings and their N (`electrons_for`)."""
    trained = trained_on(model)
    indices, split = split_selection(run_cfg, cfg.input, cfg.split, plain(cfg.indices))  # a run on a list of sets
    inputs = load_inputs(cfg.input, trained.quantity, indices=indices, split=split,
                         run_config=run_cfg, png_range=plain(cfg.png_range), h5_key=cfg.h5_key)
    if inputs.physics is not None:
        problems = physics_mismatch(inputs.physics, trained)
        if problems:
            raise InputError(f"input={cfg.input}: the data set's physics does not match the checkpoint: "
                             + "; ".join(problems))
    n = electrons_for(cfg.get("n_electrons"), model, inputs)
    trained = dataclasses.replace(trained, n_electrons=float(n))
    return inputs, check_inputs(inputs, trained, cfg.checks.range_tolerance, cfg.checks.charge_tolerance, chunk), n


def ed_physics(physics_cfg: Any, inputs: Inputs, model: Pix2Pix, run_cfg: DictConfig | None,
               n_electrons: int | None = None) -> tuple[PhysicsConfig, str, list[str]]:
    """The PhysicsConfig to solve by ED, a sentence saying where it came from, and warnings.

    A data-set input carries the configuration it was generated with, and that one is used (the
    physics.* group is not); otherwise the composed physics group, which must match the
    checkpoint's grid, h² and N (InputError naming the fields), with N = `n_electrons` for a model of several
    N. Differences from the training run's physics (its config.yaml; for a run on sets of several N, the set
    of this N) are warned about: ED would then answer a different question.
    """
    if inputs.physics is not None:
        cfg = inputs.physics
        source = f"the input data set's own configuration ({Path(inputs.source) / 'manifest.json'})"
        if differences := diff(cfg.to_dict(), PhysicsConfig.from_mapping(physics_cfg).to_dict(), "physics."):
            source += (f"; the physics.* group, which differs ({describe(differences, 'data set', 'group')}), "
                       "is not used")
    else:
        cfg, source = PhysicsConfig.from_mapping(physics_cfg), "the physics config group (physics.*)"
        if model.conditioned and n_electrons is not None:  # ConfigError names N and n_orbitals if they clash
            cfg, source = dataclasses.replace(cfg, n_electrons=n_electrons), source + f" with N = {n_electrons}"
        problems = physics_mismatch(cfg, trained_on(model))
        if problems:
            raise InputError("the physics config does not match the checkpoint: " + "; ".join(problems)
                             + " (set physics.* to the training data's values)")
    warnings = []
    trained = training_physics(run_cfg, cfg.n_electrons if model.conditioned else None)
    if trained is not None:
        if differences := diff(trained.to_dict(), cfg.to_dict(), "physics."):
            warnings.append("ED physics differs from the training data's (run config.yaml): "
                            + describe(differences, "training", "ED"))
    return cfg, source, warnings


def device_info(model: Pix2Pix) -> dict[str, Any]:
    return {"device": str(model.device), "torch_threads": torch.get_num_threads()}


def check_inputs(inputs: Inputs, trained: TrainedOn, range_tolerance: float, charge_tolerance: float,
                 chunk: int = CHUNK) -> list[str]:
    """Raise InputError on a wrong shape or NaN/inf; return warnings for values outside the training
    range (by more than `range_tolerance` of its span), densities with |h²·Σn − N| > `charge_tolerance`
    electrons, and maps that look like the other quantity (a density given to a potential model: ≥ 0
    with h²·Σ ≈ N; a potential given to a density model: h²·Σ off N by more than 10·N). One pass,
    `chunk` maps at a time; only per-instance numbers are kept."""
    src, name, size, n = inputs.source, inputs.quantity, trained.image_size, len(inputs)
    if tuple(inputs.shape) != (size, size):
        raise InputError(f"input={src}: maps of {'×'.join(map(str, inputs.shape))} pixels, but the checkpoint's "
                         f"generator works on {size}×{size} (expected shape (N, {size}, {size}) or ({size}, {size}))")
    lo, hi, total = np.empty(n), np.empty(n), np.empty(n)
    n_bad, bad_maps, first = 0, 0, None
    for a, b in inputs.chunks(chunk):
        x = inputs.read(a, b)
        if not (finite := np.isfinite(x)).all():
            n_bad, bad_maps = n_bad + int((~finite).sum()), bad_maps + int((~finite).any(axis=(1, 2)).sum())
            first = np.argwhere(~finite)[0] + (a, 0, 0) if first is None else first
        lo[a:b], hi[a:b], total[a:b] = x.min(axis=(1, 2)), x.max(axis=(1, 2)), x.sum(axis=(1, 2), dtype=np.float64)
    if n_bad:
        raise InputError(f"input={src}: {n_bad} NaN/inf value(s) in {bad_maps} instance(s), first in "
                         f"{inputs.labels[first[0]]} at pixel {tuple(int(i) for i in first[1:])}")
    warnings = []
    unit, labels, big_n = UNITS.get(name, ""), inputs.labels, trained.n_electrons

    def listed(idx: np.ndarray, text: Any) -> str:
        return ", ".join(text(i) for i in idx[:_LISTED]) + (", ..." if idx.size > _LISTED else "")

    tol = range_tolerance * (trained.hi - trained.lo)
    out = np.flatnonzero((lo < trained.lo - tol) | (hi > trained.hi + tol))
    if out.size:
        warnings.append(f"input {name}: {out.size} of {n} instance(s) leave the training range "
                        f"[{trained.lo:.4g}, {trained.hi:.4g}] {unit} by more than {range_tolerance:.0%} of its "
                        f"span ({listed(out, lambda i: f'{labels[i]} in [{lo[i]:.4g}, {hi[i]:.4g}]')}): out of "
                        "the training distribution, the predictions there are extrapolations")
    charge = trained.pixel_area * total
    if name in DENSITIES:
        off = np.flatnonzero(np.abs(charge - big_n) > charge_tolerance)
        if off.size:
            like = off[np.abs(charge[off] - big_n) > _POTENTIAL_LIKE * big_n]
            warnings.append(f"input {name}: {off.size} of {n} density map(s) do not integrate to N = {big_n:g}: "
                            f"h²·Σn = {listed(off, lambda i: f'{charge[i]:.5g} ({labels[i]})')} (tolerance "
                            f"{charge_tolerance:g} electrons)" + (
                                f"; {like.size} of them look like potentials, not densities (h²·Σ off N by more "
                                f"than {_POTENTIAL_LIKE:g}·N): was a potential given to a density-input model?"
                                if like.size else ""))
    elif name == "potential":
        like = np.flatnonzero((lo >= -0.01 * np.abs(hi)) & (np.abs(charge - big_n) <= _DENSITY_LIKE * big_n))
        if like.size:
            warnings.append(f"input potential: {like.size} of {n} map(s) look like densities, not potentials: "
                            f"non-negative with h²·Σ = {listed(like, lambda i: f'{charge[i]:.5g} ({labels[i]})')} "
                            f"≈ N = {big_n:g} electrons: was a density given to a potential-input model?")
    return warnings


def physics_mismatch(cfg: PhysicsConfig, trained: TrainedOn) -> list[str]:
    """Fields of `cfg` that disagree with the checkpoint's grid, pixel area h² and electron count N."""
    problems = []
    if cfg.grid != trained.image_size:
        problems.append(f"physics.grid={cfg.grid} vs the checkpoint's {trained.image_size}×{trained.image_size} images")
    if not np.isclose(cfg.h_nm**2, trained.pixel_area, rtol=1e-6, atol=0):
        problems.append(f"physics.length_nm={cfg.length_nm} and grid={cfg.grid} give h² = {cfg.h_nm**2:.6g} nm², "
                        f"the checkpoint was trained with h² = {trained.pixel_area:.6g} nm²")
    if cfg.n_electrons not in (known := trained.electrons or (round(trained.n_electrons),)):
        problems.append(f"physics.n_electrons={cfg.n_electrons} vs the checkpoint's N = {', '.join(map(str, known))}")
    return problems
