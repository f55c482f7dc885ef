"""A trained mapping applied to physical inputs, and maps compared with the measures of paper §III.3.

The checkpoint alone maps physical inputs to physical outputs (scaling and the training mean image
live in its buffers); the training run's `config.yaml`, next to its `checkpoints/` folder, adds
the split and the full physics configuration when present.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from physics.config import PhysicsConfig
from qdgan import metrics
from qdgan.evaluate import predict
from qdgan.io import (
    DENSITIES,
    QUANTITIES,
    UNITS,
    InputError,
    Inputs,
    TrainedOn,
    check_inputs,
    load_inputs,
    physics_differences,
    physics_mismatch,
)
from qdgan.module import Pix2Pix

PER_SAMPLE = ("l1", "l2", "linf", "ssim", "mssim")


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
                     float(model.physics[0]), float(model.physics[1]))


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


def training_physics(run_cfg: DictConfig | None) -> PhysicsConfig | None:
    """The PhysicsConfig of the training data, from the run's config.yaml when it has one."""
    if run_cfg is None or "physics" not in run_cfg:
        return None
    from physics.generate import physics_config

    return physics_config(run_cfg.physics)


def generate(model: Pix2Pix, values: np.ndarray, batch_size: int, warmup: int = 2) -> tuple[np.ndarray, float]:
    """Physical inputs (n, H, W) → physical predictions (n, H, W) float32, and the seconds the forward
    passes took (scaling and host↔device copies included). Before the clock starts, each batch shape
    runs `warmup` times: the first passes of a shape build kernels (oneDNN, cuDNN) and allocate."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size={batch_size!r}: expected a positive integer")
    x = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    for size in {min(batch_size, len(x)), len(x) % batch_size} - {0}:
        for _ in range(warmup):
            predict(model, x[:size], batch_size)
    t0 = time.perf_counter()
    pred = predict(model, x, batch_size)  # returns on the CPU, so the clock includes the device sync
    return pred.numpy(), time.perf_counter() - t0


def compare(pred: np.ndarray, ref: np.ndarray, mean_image: np.ndarray, quantity: str) -> dict[str, Any]:
    """Per-instance L1, L2, L∞ (eqs. 11–13), SSIM, MSSIM of `pred` against `ref`, and R² over the set
    (eq. 14) with β̄ = `mean_image`; R² is None when SS_tot = 0 (e.g. one instance against its own mean)."""
    p = torch.from_numpy(np.asarray(pred, dtype=np.float64))
    r = torch.from_numpy(np.asarray(ref, dtype=np.float64))
    per = metrics.per_sample_errors(p, r)
    mean = torch.from_numpy(np.asarray(mean_image, dtype=np.float64))
    ss_tot = float((r - mean).square().sum())
    r2 = float(metrics.r2_score(p, r, mean)) if ss_tot > 0 else None
    unit = UNITS[quantity]
    return {
        "n": len(r),
        "r2": r2,
        "mean": {k: float(v.mean()) for k, v in per.items()},
        "std": {k: float(v.std()) if len(v) > 1 else 0.0 for k, v in per.items()},
        "per_sample": {k: v.tolist() for k, v in per.items()},
        "units": {"l1": unit, "l2": unit, "linf": unit, "ssim": "1", "mssim": "1"},
    }


def charge(values: np.ndarray, pixel_area: float) -> np.ndarray:
    """h²·Σn per density map (electrons)."""
    return pixel_area * np.asarray(values).sum(axis=(1, 2), dtype=np.float64)


def is_density(quantity: str) -> bool:
    return quantity in DENSITIES


def plain(value: Any) -> Any:
    """A config value as plain Python (lists instead of ListConfig)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def load_checked_inputs(cfg: DictConfig, model: Pix2Pix, run_cfg: DictConfig | None) -> tuple[Inputs, list[str]]:
    """The input maps of an inference config (`input`, `indices`, `split`, `png_range`, `h5_key`) for
    the checkpoint's input quantity, checked against what it was trained on: errors raise
    InputError, the returned strings are warnings."""
    trained = trained_on(model)
    inputs = load_inputs(cfg.input, trained.quantity, indices=plain(cfg.indices), split=cfg.split,
                         run_config=run_cfg, png_range=plain(cfg.png_range), h5_key=cfg.h5_key)
    if inputs.physics is not None:
        problems = physics_mismatch(inputs.physics, trained)
        if problems:
            raise InputError(f"input={cfg.input}: the data set's physics does not match the checkpoint: "
                             + "; ".join(problems))
    return inputs, check_inputs(inputs, trained, cfg.checks.range_tolerance, cfg.checks.charge_tolerance)


def ed_physics(physics_cfg: Any, inputs: Inputs, model: Pix2Pix,
               run_cfg: DictConfig | None) -> tuple[PhysicsConfig, str, list[str]]:
    """The PhysicsConfig to solve by ED, a sentence saying where it came from, and warnings.

    A data-set input carries the configuration it was generated with, and that one is used (the
    physics.* group is not); otherwise the composed physics group, which must match the
    checkpoint's grid, h² and N (InputError naming the fields). Differences from the training run's
    physics (its config.yaml) are warned about: ED would then answer a different question.
    """
    from physics.generate import physics_config

    if inputs.physics is not None:
        cfg = inputs.physics
        source = f"the input data set's own configuration ({Path(inputs.source) / 'manifest.json'})"
        diff = physics_differences(cfg, physics_config(physics_cfg))
        if diff:
            source += f"; the physics.* group, which differs in {', '.join(diff)}, is not used"
    else:
        cfg, source = physics_config(physics_cfg), "the physics config group (physics.*)"
        problems = physics_mismatch(cfg, trained_on(model))
        if problems:
            raise InputError("the physics config does not match the checkpoint: " + "; ".join(problems)
                             + " (set physics.* to the training data's values)")
    warnings = []
    trained = training_physics(run_cfg)
    if trained is not None:
        diff = physics_differences(cfg, trained)
        if diff:
            warnings.append(f"ED physics differs from the training data's (run config.yaml): {', '.join(diff)}")
    return cfg, source, warnings


def device_info(model: Pix2Pix) -> dict[str, Any]:
    return {"device": str(model.device), "torch_threads": torch.get_num_threads()}
