"""Summary of a study: one row per planned run — finished, failed, stale (finished with another config),
incomplete (started, no result) or missing — as summary.csv and summary.md, with the study's figures
summary.png (metrics against x) and curves.png (validation R² against step), in the study's sweep dir."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdgan.study import figures
from qdgan.study.plan import Job, Study
from qdgan.train import rundir

TOP_LEVEL = ("r2", "best_val_r2")  # metrics.json keys outside "mean"


@dataclass(frozen=True)
class Row:
    job: Job
    status: str
    metrics: dict[str, Any]
    error: str
    curve: tuple[list[int], list[float]] | None

    def metric(self, key: str) -> float | None:
        return self.metrics.get(key) if key in TOP_LEVEL else self.metrics.get("mean", {}).get(key)

    def values(self) -> dict[str, Any]:
        """The table's cells as raw values (None when unknown)."""
        m = self.metrics
        seconds = m.get("train_seconds")
        return {
            "run": self.job.label, "status": self.status, "N_pt": self.job.n_pt, "N_train": self.job.n_train,
            "R2": m.get("r2"), "L1": self.metric("l1"), "L2": self.metric("l2"), "Linf": self.metric("linf"),
            "unit": m.get("units", {}).get("l1"), "SSIM": self.metric("ssim"), "MSSIM": self.metric("mssim"),
            "SSIM_pm1": self.metric("ssim_pm1"),
            "charge_error": self.metric("charge_error"), "best_val_R2": m.get("best_val_r2"),
            "best_step": m.get("best_step"), "steps": m.get("generator_steps"),
            "train_min": seconds / 60 if seconds is not None else None,
            "error": self.error,
        }


def _fmt(spec: str) -> Callable[[Any], str]:
    return lambda v: "" if v is None else format(v, spec)


# column → (markdown header, markdown format); the CSV holds the raw values plus x, series and run_dir
MARKDOWN: dict[str, tuple[str, Callable[[Any], str]]] = {
    "run": ("run", str), "status": ("status", str), "N_pt": ("N_pt", _fmt("")), "N_train": ("N_train", _fmt("")),
    "R2": ("R²", _fmt(".4f")), "L1": ("L1", _fmt(".4g")), "L2": ("L2", _fmt(".4g")), "Linf": ("L∞", _fmt(".4g")),
    "unit": ("unit", _fmt("")), "SSIM": ("SSIM", _fmt(".4f")), "MSSIM": ("MSSIM", _fmt(".4f")),
    "SSIM_pm1": ("SSIM[±1]", _fmt(".4f")),
    "charge_error": ("\\|∫ñ − N\\|", _fmt(".3g")), "best_val_R2": ("best val R²", _fmt(".4f")),
    "best_step": ("best at step", _fmt("")), "steps": ("steps", _fmt("")), "train_min": ("train min", _fmt(".1f")),
    "error": ("error", lambda v: v.replace("|", "\\|")),
}


def collect(study: Study) -> list[Row]:
    """Read every planned run's directory, in the sweep's order; never drops a run."""
    rows = []
    for job in study.jobs:
        state, payload = rundir.status(job.run_dir, job.settings)
        finished = state == rundir.FINISHED
        error = payload.get("error", "").splitlines()[0] if not finished and payload.get("error") else ""
        rows.append(Row(job, state, payload if finished else {}, error, read_curve(job.run_dir) if finished else None))
    return rows


def read_curve(run_dir: Path) -> tuple[list[int], list[float]] | None:
    """A run's validation R² against generator step (history.json), or None."""
    try:
        val = json.loads((run_dir / "history.json").read_text())["val"]
    except (OSError, ValueError, KeyError):
        return None
    return (val["step"][: len(val["r2"])], val["r2"]) if "r2" in val else None


def csv_text(rows: Sequence[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*MARKDOWN, "x", "series", "run_dir"])
    for r in rows:
        cells = [*r.values().values(), r.job.x, r.job.series, r.job.run_dir]
        writer.writerow(["" if v is None else v for v in cells])
    return out.getvalue()


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(h for h, _ in MARKDOWN.values()) + " |", "|" + "---|" * len(MARKDOWN)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(v) for (_, fmt), v in zip(MARKDOWN.values(), r.values().values(),
                                                                      strict=True)) + " |")
    return "\n".join(lines)


def markdown(study: Study, rows: Sequence[Row]) -> str:
    counts = {s: sum(r.status == s for r in rows) for s in dict.fromkeys(r.status for r in rows)}
    tally = ", ".join(f"{n} {s}" for s, n in counts.items())
    return "\n".join([
        f"# Study `{study.name}`", "",
        f"{len(rows)} runs in `{study.sweep_dir}`: {tally}. Test-set metrics of each run's best checkpoint "
        "(by validation R², saved at generator step 'best at step' of 'steps'); L1/L2/L∞ in the target's unit; "
        "train min = wall time of the last attempt.", "",
        markdown_table(rows), "",
        f"![test metrics vs {study.x_label}](summary.png)", "",
        "![validation R² vs generator step](curves.png)", "",
    ])


def write(study: Study, rows: Sequence[Row]) -> list[Path]:
    """summary.csv, summary.md, summary.png, curves.png in the study's sweep dir."""
    out = study.sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.csv").write_text(csv_text(rows))
    (out / "summary.md").write_text(markdown(study, rows))
    done = [r for r in rows if r.status == rundir.FINISHED]
    title = f"study {study.name}: {len(done)} of {len(rows)} runs finished"
    points = [{"x": r.job.x, "series": r.job.series, "annotation": r.job.annotation,
               **{m: r.metric(m) for m in study.metrics}} for r in done]
    units = {m: u for r in done for m, u in r.metrics.get("units", {}).items() if u != "1"}
    figures.metrics_vs_x(points, study.metrics, study.x_label, study.x_scale, title, out / "summary.png",
                             units if len({r.metrics["units"]["l1"] for r in done}) == 1 else None)
    figures.r2_curves({r.job.label: r.curve for r in done if r.curve}, title, out / "curves.png")
    return [out / "summary.csv", out / "summary.md", out / "summary.png", out / "curves.png"]


def copy(paths: Sequence[Path], dest: Path) -> list[Path]:
    """Copy the summary files to `dest` (e.g. docs/results/<study>) for committing."""
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(p, dest / p.name)) for p in paths]
