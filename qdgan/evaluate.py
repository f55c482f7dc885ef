"""Test-set evaluation of a trained mapping in physical units (paper §III.3) → `metrics.json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qdgan import metrics
from qdgan.module import Pix2Pix

PER_SAMPLE = ("l1", "l2", "linf", "ssim", "mssim", "charge_error")


@torch.no_grad()
def predict(model: Pix2Pix, inputs: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """Physical inputs (n, H, W) → physical predictions (n, H, W) on the model's device, eval mode."""
    model.eval()
    outs = []
    for i in range(0, len(inputs), batch_size):
        x = model.scale_input(inputs[i : i + batch_size].to(model.device)).unsqueeze(1)
        outs.append(model.physical_prediction(x).cpu())
    return torch.cat(outs) if outs else inputs.new_zeros((0, *inputs.shape[1:]))


def evaluate(model: Pix2Pix, inputs: torch.Tensor, targets: torch.Tensor, indices: np.ndarray | None = None,
             batch_size: int = 100) -> tuple[dict[str, Any], torch.Tensor]:
    """Metrics of the predictions for (inputs, targets): R² over the set (β̄ = training mean) and the
    per-sample L1/L2/L∞ (eqs. 11–13), SSIM, MSSIM and, for densities, |∫ñ − N|."""
    pred = predict(model, inputs, batch_size)
    ref = targets.float()
    per = metrics.per_sample_errors(pred, ref, model.charge)
    result = {
        "mapping": model.hparams.mapping,
        "n": len(ref),
        "r2": float(metrics.r2_score(pred, ref, model.target_mean.cpu())),
        "mean": {k: float(v.double().mean()) for k, v in per.items()},
        "std": {k: float(v.double().std()) if len(v) > 1 else 0.0 for k, v in per.items()},
        "per_sample": {k: v.double().tolist() for k, v in per.items()},
        "units": {"l1": _unit(model), "l2": _unit(model), "linf": _unit(model), "ssim": "1", "mssim": "1",
                  "charge_error": "electrons"},
    }
    if model.hparams.is_density:  # the same predictions projected onto n ≥ 0, ∫n = N (not used for training)
        n_el, area = float(model.physics[1]), float(model.physics[0])
        fixed = normalize_charge(pred, n_el, area)
        per_fixed = metrics.per_sample_errors(fixed, ref, model.charge)
        result["charge_normalized"] = {
            "r2": float(metrics.r2_score(fixed, ref, model.target_mean.cpu())),
            "mean": {k: float(v.double().mean()) for k, v in per_fixed.items()},
        }
    if indices is not None:
        result["indices"] = [int(i) for i in indices]
    return result, pred


def normalize_charge(density: torch.Tensor, n_electrons: float, pixel_area: float) -> torch.Tensor:
    """Project densities (B, H, W) onto the physical set: negative pixels to 0, then rescaled so that
    h²·Σn = N exactly (eq. 7's normalization, which the generator only learns approximately)."""
    positive = density.clamp(min=0)
    charge = positive.sum(dim=(-2, -1), keepdim=True) * pixel_area
    return positive * (n_electrons / charge.clamp(min=1e-12))



def _unit(model: Pix2Pix) -> str:
    return "nm^-2" if model.hparams.is_density else "eV"


def write_metrics(result: dict[str, Any], path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    payload = dict(result)
    if extra:
        payload.update(extra)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)  # a complete metrics.json or none: sweeps use it as the "run finished" mark
    return path
