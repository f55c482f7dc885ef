"""Trained-on × tested-on: every finished run of a study evaluated on the test split of each data set named in
the study's `transfer` node (e.g. one set per potential family), so a table shows how a model generalizes.

The test split of each set is the one a model trained on that set is tested on (`qdgan.scaling.split_indices`
with the study's `transfer.split`), so the diagonal of the table repeats the runs' own test metrics and no
model is scored on instances it trained on when the sets are independent. R² uses each model's own
training-mean image β̄ (eq. 14), as its metrics.json does.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from physics.dataset import open_dataset
from physics.plots import save_figure
from qdgan.pix2pix import Pix2Pix
from qdgan.scaling import split_indices
from qdgan.train.evaluate import evaluate

COLUMNS = ("trained_on", "series", "tested_on", "n", "r2", "ssim", "charge_error", "run_dir")


@dataclass(frozen=True)
class Cell:
    trained_on: str
    series: str
    tested_on: str
    n: int
    r2: float | None
    ssim: float | None
    charge_error: float | None
    run_dir: str


def test_split(path: str | Path, split: Mapping[str, int], quantities: Sequence[str]) -> list[np.ndarray]:
    """The `quantities` maps (physical units) of the test split of the data set at `path`, validated."""
    ds = open_dataset(path)
    ds.validate()
    rows = split_indices(len(ds), int(split["split_seed"]), int(split["n_train"]), int(split["n_val"]),
                         int(split["n_test"]))["test"]
    return [np.asarray(ds[q][rows], dtype=np.float32) for q in quantities]


def evaluate_runs(runs: Sequence[tuple[str, str, Path]], sets: Mapping[str, str],
                  split: Mapping[str, int]) -> list[Cell]:
    """Cells for each (trained-on label, series, run dir) × each test set {name: path}."""
    cells, cache = [], {}
    for trained_on, series, run_dir in runs:
        model = Pix2Pix.load_from_checkpoint(run_dir / "checkpoints" / "best.ckpt", map_location="cpu").eval()
        hp = model.hparams
        for name, path in sets.items():
            key = (name, hp.input_name, hp.target_name)
            if key not in cache:
                cache[key] = test_split(path, split, (hp.input_name, hp.target_name))
            x, y = (torch.from_numpy(a) for a in cache[key])
            result, _ = evaluate(model, x, y)
            m = result["mean"]
            cells.append(Cell(trained_on, series, name, result["n"], result["r2"], m.get("ssim"),
                              m.get("charge_error"), str(run_dir)))
    return cells


def csv_text(cells: Sequence[Cell]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for c in cells:
        writer.writerow(["" if v is None else v for v in (getattr(c, k) for k in COLUMNS)])
    return out.getvalue()


def _grid(cells: Sequence[Cell], series: str, metric: str) -> tuple[list[str], list[str], np.ndarray]:
    mine = [c for c in cells if c.series == series]
    rows = list(dict.fromkeys(c.trained_on for c in mine))
    cols = list(dict.fromkeys(c.tested_on for c in mine))
    grid = np.full((len(rows), len(cols)), np.nan)
    for c in mine:
        value = getattr(c, metric)
        grid[rows.index(c.trained_on), cols.index(c.tested_on)] = np.nan if value is None else value
    return rows, cols, grid


def markdown(cells: Sequence[Cell], metrics: Sequence[str] = ("r2", "ssim", "charge_error")) -> str:
    """One table per series and metric: rows trained on, columns tested on."""
    fmt = {"r2": ".3f", "ssim": ".3f", "charge_error": ".3g"}
    label = {"r2": "R²", "ssim": "SSIM", "charge_error": "\\|∫ñ − N\\| (electrons)"}
    parts = []
    for series in dict.fromkeys(c.series for c in cells):
        for metric in metrics:
            rows, cols, grid = _grid(cells, series, metric)
            if np.isnan(grid).all():
                continue
            parts += [f"**{label[metric]}**{f' — {series}' if series else ''} (rows: trained on, columns: tested on)",
                      "", "| trained on \\ tested on | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
            parts += ["| " + r + " | " + " | ".join("" if np.isnan(v) else format(v, fmt[metric]) for v in grid[i])
                      + " |" for i, r in enumerate(rows)]
            parts.append("")
    return "\n".join(parts)


def heatmaps(cells: Sequence[Cell], path: str | Path, metric: str = "r2", floor: float = 0.5) -> Path:
    """R² (or `metric`) heat map per series: trained on × tested on, values written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = list(dict.fromkeys(c.series for c in cells))
    n_rows, n_cols = (len(set(getattr(c, k) for c in cells)) for k in ("trained_on", "tested_on"))
    fig, axes = plt.subplots(1, len(series), squeeze=False,
                             figsize=(len(series) * (2.6 + 0.55 * n_cols), 1.8 + 0.38 * n_rows))
    for ax, s in zip(axes[0], series, strict=True):
        rows, cols, grid = _grid(cells, s, metric)
        im = ax.imshow(np.clip(grid, floor, 1.0), cmap="viridis", vmin=floor, vmax=1.0)
        ax.set_xticks(range(len(cols)), cols, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_xlabel("tested on")
        ax.set_ylabel("trained on")
        ax.set_title(s or metric, fontsize=9)
        for (i, j), v in np.ndenumerate(grid):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if v < floor + 0.6 * (1 - floor) else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label(f"test {metric} (clipped at {floor})")
    return save_figure(fig, path)


def read_csv(path: str | Path) -> list[Cell]:
    """The cells of a transfer.csv (to redraw its tables and figure without evaluating again)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    num = lambda v, t: None if v == "" else t(v)  # noqa: E731
    return [Cell(r["trained_on"], r["series"], r["tested_on"], int(r["n"]), num(r["r2"], float),
                 num(r["ssim"], float), num(r["charge_error"], float), r["run_dir"]) for r in rows]


def write(cells: Sequence[Cell], out: Path) -> list[Path]:
    """transfer.csv, transfer.md and transfer.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "transfer.csv").write_text(csv_text(cells))
    (out / "transfer.md").write_text("# Trained on × tested on\n\n" + markdown(cells))
    return [out / "transfer.csv", out / "transfer.md", heatmaps(cells, out / "transfer.png")]
