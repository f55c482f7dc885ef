"""Figures of a study (qdgan/study/summary.py): test metrics against the study's x (Figs. 5, A5b, A6) and the
validation R² curve of every run against generator step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from physics.plots import save_figure

METRIC_LABELS = {"r2": "test R²", "best_val_r2": "best validation R²", "l1": "L1", "l2": "L2", "linf": "L∞",
                 "ssim": "SSIM", "mssim": "MSSIM", "charge_error": "|∫ñ − N| (electrons)"}


def metrics_vs_x(points: Sequence[Mapping[str, Any]], metrics: Sequence[str], x_label: str, x_scale: str,
                 title: str, path: str | Path, units: Mapping[str, str] | None = None) -> Path:
    """One panel per metric: the finished runs' values against x, one line per series (category x:
    points in run order). Each point is a mapping with x, series, annotation and the metric values."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.8), squeeze=False)
    categories = list(dict.fromkeys(str(p["x"]) for p in points))
    series = list(dict.fromkeys(p["series"] for p in points))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for name in series:
            pts = [p for p in points if p["series"] == name and p.get(metric) is not None]
            if x_scale == "category":
                xs = [categories.index(str(p["x"])) for p in pts]
            else:
                pts.sort(key=lambda p: p["x"])
                xs = [p["x"] for p in pts]
            ax.plot(xs, [p[metric] for p in pts], marker="o", ls="none" if x_scale == "category" else "-",
                    label=name or None)
            for x, p in zip(xs, pts, strict=True):
                if p.get("annotation"):
                    ax.annotate(p["annotation"], (x, p[metric]), textcoords="offset points", xytext=(4, 4),
                                fontsize=7)
        if x_scale == "category":
            ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right", fontsize=8)
        elif x_scale == "log":
            ax.set_xscale("log")
        unit = (units or {}).get(metric)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric) + (f" ({unit})" if unit else ""))
        ax.set_xlabel(x_label)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(alpha=0.3)
        if any(series):
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def r2_curves(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], title: str, path: str | Path) -> Path:
    """Validation R² against generator step, one line per run (Fig. 5's curves)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    values = [v for _, r2 in curves.values() for v in r2]
    for label, (steps, r2) in curves.items():
        ax.plot(steps, r2, marker="o", ms=2.5, lw=1, label=label)
    if values and min(values) < -1.0 < max(values):  # early R² can be far below 0: keep the top readable
        ax.set_ylim(-1.05, max(values) + 0.05 * (max(values) + 1.05))
    ax.set_xlabel("generator step")
    ax.set_ylabel("validation R²")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7, ncol=1 + len(curves) // 8)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def search_history(values: Mapping[int, float], curves: Mapping[str, tuple[Sequence[int], Sequence[float]]],
                   title: str, path: str | Path, n_best: int = 5) -> Path:
    """A search at a glance: each finished trial's best validation R² in trial order with the running best (left),
    and the validation curves of the n_best trials by that objective (right; all curves: curves.png)."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    numbers = sorted(values)
    best = [max(values[m] for m in numbers[: i + 1]) for i in range(len(numbers))]
    ax.step(numbers, best, where="post", c="C3", label="best so far")
    if numbers:  # a trial that diverged would squash the rest: zoom on the better three quarters, mark the others
        top = sorted(values.values())[len(numbers) // 4:]
        lo = min(top) - 0.1 * (max(top) - min(top) + 1e-3)
        ax.set_ylim(lo, max(top) + 0.15 * (max(top) - lo))
        inside = [n for n in numbers if values[n] >= lo]
        below = [n for n in numbers if values[n] < lo]
        ax.plot(inside, [values[n] for n in inside], "o", ms=4, c="C0", label="trial's best validation R²")
        if below:
            ax.plot(below, [lo] * len(below), "v", ms=6, c="C7", clip_on=False,
                    label=f"below {lo:.3f}: " + ", ".join(f"{values[n]:.3f}" for n in below))
    ax.set_xlabel("trial")
    ax.set_ylabel("best validation R²")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ranked = sorted(curves, key=lambda k: -max(curves[k][1]))[:n_best]
    for label in ranked:
        steps, r2 = curves[label]
        bx.plot(steps, r2, marker="o", ms=2.5, lw=1, label=f"{label}: {max(r2):.4f}")
    if ranked:
        vals = [v for k in ranked for v in curves[k][1]]
        floor = sorted(vals)[len(vals) // 10]
        bx.set_ylim(floor - 0.02 * (1 - floor), max(vals) + 0.1 * (max(vals) - floor))
    bx.set_xlabel("generator step")
    bx.set_ylabel("validation R²")
    bx.ticklabel_format(axis="y", useOffset=False)
    bx.grid(alpha=0.3)
    bx.legend(fontsize=8, loc="lower right", title=f"best {len(ranked)} trials", title_fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
