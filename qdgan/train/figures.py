"""Figures of a training run: Fig. 2/A1-style panels, loss curves (Fig. 3), SSIM/MSSIM evolution
(Fig. 4), validation R² vs step (Fig. 5/A5a). All maps in physical units, axis 0 = x."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy.signal import savgol_filter

from physics.plots import CMAPS, UNITS, save_figure

LABELS = {"potential": "V", "n0": "n₀", "n_int": "n_int"}


def _imshow(ax: plt.Axes, values: np.ndarray, length_nm: float, cmap: str, title: str, unit: str,
            vmin: float | None = None, vmax: float | None = None) -> None:
    im = ax.imshow(np.asarray(values).T, origin="lower", extent=(0, length_nm, 0, length_nm), cmap=cmap,
                   vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    plt.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label(unit, fontsize=8)


def panels(inputs: np.ndarray, targets: np.ndarray, preds: np.ndarray, input_name: str, target_name: str,
           length_nm: float, path: str | Path, labels: Sequence[str] | None = None) -> Path:
    """Rows of (input α, target β, generated β̃, |β − β̃|) for a few instances (Figs. 2, A1, A2)."""
    n = len(inputs)
    fig, axes = plt.subplots(n, 4, figsize=(13, 2.9 * n), squeeze=False)
    t_unit = UNITS.get(target_name, "")
    for i in range(n):
        tag = f"{labels[i]}: " if labels else ""
        lo, hi = float(targets[i].min()), float(targets[i].max())
        _imshow(axes[i, 0], inputs[i], length_nm, CMAPS.get(input_name, "viridis"),
                f"{tag}input {LABELS.get(input_name, input_name)}", UNITS.get(input_name, ""))
        _imshow(axes[i, 1], targets[i], length_nm, CMAPS.get(target_name, "viridis"),
                f"target {LABELS.get(target_name, target_name)}", t_unit, lo, hi)
        _imshow(axes[i, 2], preds[i], length_nm, CMAPS.get(target_name, "viridis"),
                f"generated {LABELS.get(target_name, target_name)}~", t_unit, lo, hi)
        _imshow(axes[i, 3], np.abs(targets[i] - preds[i]), length_nm, "magma", "|error|", t_unit)
    return save_figure(fig, path)


def smooth(values: Sequence[float], window: int = 40, order: int = 3) -> np.ndarray:
    """Savitzky–Golay smoothing as in Fig. 3 (cubic, 40 points), shrunk for short series."""
    v = np.asarray(values, dtype=float)
    w = min(window, len(v) - (1 - len(v) % 2))
    if w <= order + 1:
        return v
    return savgol_filter(v, w if w % 2 else w - 1, order)


def loss_curves(history: dict[str, Any], path: str | Path) -> Path:
    """Generator and discriminator losses vs generator step, raw (thin) and smoothed (thick)."""
    losses = history["losses"]
    steps = np.asarray(losses["step"])
    keys = [k for k in ("train/loss_g", "train/loss_l1", "train/loss_g_gan", "train/loss_d") if k in losses]
    if not keys:  # a run shorter than history_every_n_steps recorded none
        fig, ax = plt.subplots(figsize=(4.2, 3.4))
        ax.text(0.5, 0.5, f"no losses recorded\n({len(steps)} samples)", ha="center", va="center")
        ax.set_axis_off()
        return save_figure(fig, path)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=False):
        vals = np.asarray(losses[key])
        ax.plot(steps[: len(vals)], vals, lw=0.5, alpha=0.5)
        ax.plot(steps[: len(vals)], smooth(vals), lw=2)
        ax.set_title(key.split("/")[-1])
        ax.set_xlabel("generator step")
    return save_figure(fig, path)


def r2_curve(history: dict[str, Any], path: str | Path) -> Path:
    """Validation R² (eq. 14, β̄ = training mean) vs generator step."""
    val = history["val"]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    if "r2" in val:
        ax.plot(val["step"][: len(val["r2"])], val["r2"], marker="o", ms=3)
        best = int(np.argmax(val["r2"]))
        ax.axvline(val["step"][best], ls=":", c="gray", label=f"best {val['r2'][best]:.4f}")
        ax.legend()
    ax.set_xlabel("generator step")
    ax.set_ylabel("validation R²")
    return save_figure(fig, path)


def ssim_evolution(history: dict[str, Any], path: str | Path) -> Path:
    """SSIM and MSSIM of the tracked test instances vs step, with histograms of all values (Fig. 4)."""
    tr = history["tracked"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), gridspec_kw={"width_ratios": [4, 1]}, squeeze=False)
    for row, key in enumerate(("ssim", "mssim")):
        vals = np.asarray(tr[key])  # (n_evals, n_tracked)
        ax, hist = axes[row]
        if vals.size:
            ax.plot(tr["step"], vals, lw=0.7, alpha=0.7)
            hist.hist(vals.ravel(), bins=40, orientation="horizontal")
        ax.set_ylabel(key.upper())
        ax.set_xlabel("generator step")
        hist.set_xlabel("count")
    return save_figure(fig, path)


def prediction_panels(inputs: np.ndarray, preds: np.ndarray, input_name: str, target_name: str,
                      length_nm: float, path: str | Path, labels: Sequence[str] | None = None) -> Path:
    """Rows of (input α, generated β̃) when no reference β is known (`qdgan.predict` without verify)."""
    n = len(inputs)
    fig, axes = plt.subplots(n, 2, figsize=(6.8, 2.9 * n), squeeze=False)
    for i in range(n):
        tag = f"{labels[i]}: " if labels else ""
        _imshow(axes[i, 0], inputs[i], length_nm, CMAPS.get(input_name, "viridis"),
                f"{tag}input {LABELS.get(input_name, input_name)}", UNITS.get(input_name, ""))
        _imshow(axes[i, 1], preds[i], length_nm, CMAPS.get(target_name, "viridis"),
                f"generated {LABELS.get(target_name, target_name)}~", UNITS.get(target_name, ""))
    return save_figure(fig, path)


def inversion_panels(densities: np.ndarray, generated: np.ndarray, recomputed: np.ndarray, length_nm: float,
                     path: str | Path, potentials: np.ndarray | None = None, density_name: str = "n_int",
                     labels: Sequence[str] | None = None) -> Path:
    """Fig. 6 rows: (V,) n_int, Ṽ = G(n_int), n_int^(r) = ED(Ṽ), (|V − Ṽ|,) |n_int − n_int^(r)|.

    V and Ṽ share one colour scale, n_int and n_int^(r) another; V and |V − Ṽ| only when V is known.
    """
    n = len(densities)
    cols = 4 + 2 * (potentials is not None)
    fig, axes = plt.subplots(n, cols, figsize=(3.25 * cols, 2.9 * n), squeeze=False)
    d = {"n_int": "n_{int}", "n0": "n_0"}.get(density_name, density_name)
    v_unit, n_unit = UNITS["potential"], UNITS.get(density_name, "")
    for i in range(n):
        tag = f"{labels[i]}: " if labels else ""
        row = list(axes[i])
        v_lo, v_hi = float(generated[i].min()), float(generated[i].max())
        if potentials is not None:
            v_lo, v_hi = min(v_lo, float(potentials[i].min())), max(v_hi, float(potentials[i].max()))
            _imshow(row.pop(0), potentials[i], length_nm, CMAPS["potential"], f"{tag}$V$", v_unit, v_lo, v_hi)
        n_lo = min(float(densities[i].min()), float(recomputed[i].min()))
        n_hi = max(float(densities[i].max()), float(recomputed[i].max()))
        _imshow(row.pop(0), densities[i], length_nm, CMAPS.get(density_name, "inferno"),
                f"{'' if potentials is not None else tag}input ${d}$", n_unit, n_lo, n_hi)
        _imshow(row.pop(0), generated[i], length_nm, CMAPS["potential"], r"generated $\tilde{V}$", v_unit,
                v_lo, v_hi)
        _imshow(row.pop(0), recomputed[i], length_nm, CMAPS.get(density_name, "inferno"),
                rf"${d}^{{(r)}}$ = ED($\tilde{{V}}$)", n_unit, n_lo, n_hi)
        if potentials is not None:
            _imshow(row.pop(0), np.abs(potentials[i] - generated[i]), length_nm, "magma", r"$|V - \tilde{V}|$",
                    v_unit)
        _imshow(row.pop(0), np.abs(densities[i] - recomputed[i]), length_nm, "magma", f"$|{d} - {d}^{{(r)}}|$",
                n_unit)
    return save_figure(fig, path)
