"""The torch side of the per-instance trust estimate (qdgan/apply/trust.py): MC-dropout spread and the
network-input encoding. Imported lazily by the torch-side code (checkpoint users) only, so the apply
modules that ED workers import stay free of torch.

MC dropout: the U-Net's noise γ is dropout on its innermost decoder layers; K passes with only those
layers stochastic (norms in eval mode) give a per-pixel variance whose sum, relative to the
prediction's distance from the training-mean target image, estimates 1 − R²_i of the instance.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qdgan.apply import trust
from qdgan.pix2pix import Pix2Pix
from qdgan.scaling import is_density


def has_dropout(model: Pix2Pix) -> bool:
    """Whether the generator has any active dropout layer (dropout=0 builds none)."""
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.eval_generator.modules())


@torch.no_grad()
def mc_spread(model: Pix2Pix, values: np.ndarray, k: int, batch_size: int = 100, seed: int = 0,
              n_electrons: float | None = None) -> np.ndarray:
    """Per instance Σ_pixels Var_k(ỹ) / Σ_pixels (ȳ_k − β̄)² over `k` stochastic passes (dropout on, norms
    in eval mode); 0 for k < 2 or a generator without dropout. Seeded, and the global RNG is restored.
    `n_electrons`: the inputs' N, for a model of several N."""
    n = len(values)
    if k < 2 or not has_dropout(model) or n == 0:
        return np.zeros(n)
    mean_image = model.target_mean.to(model.device).double()
    out = np.empty(n)
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model.eval()
        drops = [m for m in model.eval_generator.modules() if isinstance(m, nn.Dropout)]  # the EMA when on
        try:
            for m in drops:
                m.train()
            for a in range(0, n, batch_size):
                x = torch.from_numpy(np.ascontiguousarray(values[a:a + batch_size], dtype=np.float32))
                x = model.network_input(x.to(model.device), n_electrons)
                ys = torch.stack([model.unscale_target(model(x)).squeeze(1).double() for _ in range(k)])
                var = ys.var(dim=0, unbiased=True).sum(dim=(1, 2))
                spread = ((ys.mean(dim=0) - mean_image) ** 2).sum(dim=(1, 2))
                out[a:a + len(x)] = (var / spread.clamp_min(1e-30)).cpu().numpy()
        finally:
            model.eval()
    return out


@torch.no_grad()
def encoded(model: Pix2Pix, values: np.ndarray) -> np.ndarray:
    """Physical inputs (n, H, W) → the network's input encoding, flattened (n, H·W) float32."""
    x = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(model.device)
    return model.scale_input(x).reshape(len(values), -1).cpu().numpy().astype(np.float32)


def input_stats(checkpoint: str, model: Pix2Pix, run_cfg: Any) -> tuple[dict[str, Any] | None, str]:
    """The principal components of the run's training inputs (cached as `<run dir>/trust_inputs.npz`), and
    a note; None when the run's config.yaml or its data set (data.path, split train) cannot be read."""
    from qdgan.apply.inputs import load_inputs

    cache = trust.run_dir(checkpoint) / trust.INPUT_STATS
    if (stats := trust.load_input_stats(cache)) is not None:
        return stats, f"training-input components from {cache}"
    if run_cfg is None or "data" not in run_cfg:
        return None, f"no input distance: no config.yaml next to {Path(checkpoint).parent} names the training data"
    from qdgan.datasets import as_paths, split_selection

    try:  # the training split of data.path: one set, or each listed set's rows of the run's split
        sets = []
        for path in as_paths(run_cfg.data.path):
            indices, split = split_selection(run_cfg, path, "train", None)
            sets.append(load_inputs(str(path), model.hparams.input_name, split=split, indices=indices,
                                    run_config=run_cfg))
    except Exception as err:  # a moved or missing data set: the distance features are then left out
        return None, f"no input distance: training data {run_cfg.data.path} unreadable ({err})"
    total = sum(len(t) for t in sets)
    rows = np.sort(np.random.default_rng(0).choice(total, min(total, 2000), replace=False))
    enc, offset = [], 0
    for train in sets:
        enc += [encoded(model, train.read(a, b))[rows[(rows >= offset + a) & (rows < offset + b)] - offset - a]
                for a, b in train.chunks(1000)]
        offset += len(train)
    enc = np.concatenate(enc)
    stats = trust.fit_input_stats(enc)
    with contextlib.suppress(OSError):  # a read-only run folder: computed again next time
        trust.save_input_stats(cache, stats)
    return stats, f"training-input components of {len(enc)} training inputs of {run_cfg.data.path}, cached in {cache}"


def features(model: Pix2Pix, values: np.ndarray, pred: np.ndarray, k: int, batch_size: int,
             stats: dict[str, Any] | None, seed: int = 0, n_electrons: float | None = None) -> dict[str, np.ndarray]:
    """The raw trust features of `trust.FEATURES` for physical inputs of N = `n_electrons` (default: the
    model's one N) and their predictions."""
    out = {"mc": mc_spread(model, values, k, batch_size, seed, n_electrons)}
    mean = model.target_mean.cpu().numpy().astype(np.float64)
    out["contrast"] = ((np.asarray(pred, np.float64) - mean) ** 2).sum(axis=(1, 2)) / max((mean**2).sum(), 1e-30)
    if is_density(model.hparams.target_name):
        area, n = float(model.physics[0]), float(model.physics[1] if n_electrons is None else n_electrons)
        out["charge"] = np.abs(area * np.asarray(pred).sum(axis=(1, 2), dtype=np.float64) - n)
    if stats is not None:
        out["d_pca"], out["d_res"] = trust.input_distance(stats, encoded(model, values))
    return out


def prepare(cfg: Any, checkpoint: str, model: Pix2Pix, run_cfg: Any) -> dict[str, Any] | None:
    """The trust settings of an apply run (`cfg` = its `trust` group): calibration, input statistics and
    a note saying whether the estimate is calibrated; None when `trust.enabled` is false."""
    if not cfg.enabled:
        return None
    path = Path(cfg.calibration) if cfg.calibration else trust.run_dir(checkpoint) / trust.CALIBRATION
    try:
        cal = trust.load_calibration(path)
    except ValueError as err:
        from qdgan.apply import InputError

        raise InputError(f"trust.calibration={path}: {err}") from None
    need_stats = cal is not None and any(f.startswith("d_") for f in cal["features"])  # uncalibrated: MC only
    stats, stats_note = input_stats(checkpoint, model, run_cfg) if need_stats else (None, "")
    note = (f"calibrated by {path} (features {'+'.join(cal['features'])})" if cal is not None else
            f"uncalibrated: estimated R²_i = 1 − MC-dropout spread; no {path} (python -m qdgan.apply.calibrate)")
    k = int(cfg.k) if cal is None or "mc" in cal["features"] else 0  # MC passes cost ~k forward passes: only if used
    return {"cal": cal, "stats": stats, "k": k, "seed": int(cfg.seed), "threshold": cfg.threshold,
            "note": note, "stats_note": stats_note, "path": str(path)}


def assess_chunk(state: dict[str, Any], model: Pix2Pix, values: np.ndarray, pred: np.ndarray,
                 batch_size: int, n_electrons: float | None = None) -> dict[str, Any]:
    """`trust.assess` of one chunk (inputs of N = `n_electrons`): its features, estimated R²_i and flags."""
    feats = features(model, values, pred, state["k"], batch_size, state["stats"], state["seed"], n_electrons)
    return trust.assess(state["cal"], feats, state["threshold"]) | {"features": feats}
