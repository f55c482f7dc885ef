"""Test-set evaluation of a trained mapping in physical units (paper §III.3) → `metrics.json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from physics.files import atomic_write_bytes
from qdgan import metrics
from qdgan.pix2pix import Pix2Pix
from qdgan.scaling import UNITS


def evaluate(model: Pix2Pix, inputs: torch.Tensor, targets: torch.Tensor, indices: np.ndarray | None = None,
             batch_size: int = 100) -> tuple[dict[str, Any], torch.Tensor]:
    """`metrics.summarize` of the predictions for (inputs, targets) with β̄ the training mean and, for
    densities, |∫ñ − N|; density mappings also report the charge-normalized predictions."""
    pred = model.predict_maps(inputs, batch_size)
    ref = targets.float()
    mean_image = model.target_mean.cpu()
    result = {"mapping": model.hparams.mapping,
              **metrics.summarize(pred, ref, mean_image, UNITS[model.hparams.target_name], model.charge)}
    if model.hparams.is_density:  # the same predictions projected onto n ≥ 0, ∫n = N (not used for training)
        n_el, area = model.charge
        fixed = metrics.summarize(normalize_charge(pred, n_el, area), ref, mean_image, "", model.charge)
        result["charge_normalized"] = {"r2": fixed["r2"], "mean": fixed["mean"]}
    if indices is not None:
        result["indices"] = [int(i) for i in indices]
    return result, pred


def normalize_charge(density: torch.Tensor, n_electrons: float, pixel_area: float) -> torch.Tensor:
    """Project densities (B, H, W) onto the physical set: negative pixels to 0, then rescaled so that
    h²·Σn = N exactly (eq. 7's normalization, which the generator only learns approximately)."""
    positive = density.clamp(min=0)
    charge = positive.sum(dim=(-2, -1), keepdim=True) * pixel_area
    return positive * (n_electrons / charge.clamp(min=1e-12))


def write_metrics(result: dict[str, Any], path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """metrics.json, written atomically: a complete file or none (sweeps use it as the "run finished" mark)."""
    path = Path(path)
    atomic_write_bytes(path, json.dumps(result | (extra or {}), indent=1).encode())
    return path
