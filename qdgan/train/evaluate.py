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
from qdgan.scaling import UNITS, is_density


def evaluate(model: Pix2Pix, inputs: torch.Tensor, targets: torch.Tensor, indices: np.ndarray | None = None,
             batch_size: int = 100) -> tuple[dict[str, Any], torch.Tensor]:
    """`metrics.summarize` of the predictions for (inputs, targets) with β̄ the training mean and, for
    densities, |∫ñ − N| with each instance's own N; density mappings also report the charge-normalized
    predictions; a model of several N also each N's scores (`per_n`)."""
    n_el = electrons_of(model, inputs, targets)
    pred = model.predict_maps(inputs, batch_size, n_el)
    ref = targets.float()
    result = {"mapping": model.hparams.mapping, **scores(model, pred, ref, n_el)}
    if model.conditioned and isinstance(n_el, torch.Tensor):
        per = {int(n): scores(model, pred[n_el == n], ref[n_el == n], float(n)) for n in n_el.unique()}
        result["per_n"] = {str(n): {k: v for k, v in s.items() if k != "per_sample"} for n, s in per.items()}
    if indices is not None:
        result["indices"] = [int(i) for i in indices]
    return result, pred


def scores(model: Pix2Pix, pred: torch.Tensor, ref: torch.Tensor, n_el: torch.Tensor | float) -> dict[str, Any]:
    """`metrics.summarize` against the training mean, and for densities the charge-normalized predictions too."""
    mean_image, area = model.target_mean.cpu(), float(model.physics[0])
    charge = (n_el, area) if model.hparams.is_density else None
    value_range = (float(model.scale[2]), float(model.scale[3])) if model.has_stats else None  # ssim_pm1: G's own range
    result = metrics.summarize(pred, ref, mean_image, UNITS[model.hparams.target_name], charge, value_range)
    if model.hparams.is_density:  # the same predictions projected onto n ≥ 0, ∫n = N (not used for training)
        fixed = metrics.summarize(normalize_charge(pred, n_el, area), ref, mean_image, "", charge)
        result["charge_normalized"] = {"r2": fixed["r2"], "mean": fixed["mean"]}
    return result


def electrons_of(model: Pix2Pix, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | float:
    """Each test instance's N, from the density of its (input, target) pair (h²·Σn = N in a validated data set):
    one number when all agree (a one-N test set: the very number `model.charge` held), else (n,)."""
    density = targets if is_density(model.hparams.target_name) else inputs
    if not len(density):
        return float(model.physics[1])
    n = (float(model.physics[0]) * density.double().sum(dim=(-2, -1))).round().float()
    return float(n[0]) if bool((n == n[0]).all()) else n


def normalize_charge(density: torch.Tensor, n_electrons: torch.Tensor | float, pixel_area: float) -> torch.Tensor:
    """Project densities (B, H, W) onto the physical set: negative pixels to 0, then rescaled so that
    h²·Σn = N exactly (eq. 7's normalization, which the generator only learns approximately); N one number or
    each density's (B,)."""
    positive = density.clamp(min=0)
    charge = positive.sum(dim=(-2, -1), keepdim=True) * pixel_area
    if isinstance(n_electrons, torch.Tensor):
        n_electrons = n_electrons.to(density).reshape(-1, 1, 1)
    return positive * (n_electrons / charge.clamp(min=1e-12))


def write_metrics(result: dict[str, Any], path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """metrics.json, written atomically: a complete file or none (sweeps use it as the "run finished" mark)."""
    path = Path(path)
    atomic_write_bytes(path, json.dumps(result | (extra or {}), indent=1).encode())
    return path
