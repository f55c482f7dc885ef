"""The results table of a search (qdgan/study/search.py): one row per Optuna trial — its state, objective (best
validation R²), parameters and its run's test metrics (reported, never used to choose) — as search.csv and
search.md, with every finished trial's validation R² curve in curves.png and the search's history (objective per
trial, running best, the best trials' curves) in history.png, in the search's sweep dir."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdgan.study import figures
from qdgan.study.search import Search, run_dirs
from qdgan.study.summary import read_curve
from qdgan.train import rundir

COLUMNS = ("trial", "state", "best_val_R2", "R2", "SSIM", "steps", "train_min", "note")


@dataclass(frozen=True)
class Trial:
    number: int
    state: str  # Optuna's: complete, fail, running, waiting
    value: float | None  # the objective: best validation R²
    params: dict[str, Any]
    run_dir: Path
    metrics: dict[str, Any]  # the run's metrics.json when it finished
    note: str  # best, the run's error, or which later trial continued an interrupted one

    def cells(self) -> dict[str, Any]:
        m = self.metrics
        seconds = m.get("train_seconds")
        return {"trial": self.number, "state": self.state, "best_val_R2": self.value, "R2": m.get("r2"),
                "SSIM": m.get("mean", {}).get("ssim"), "steps": m.get("generator_steps"),
                "train_min": seconds / 60 if seconds is not None else None, "note": self.note}


def collect(search: Search, study: Any) -> list[Trial]:
    """Every trial of the study, in order, with its run dir's state."""
    frozen = study.get_trials(deepcopy=False)
    dirs = run_dirs(search, [t.params for t in frozen])
    complete = [t for t in frozen if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: t.value).number if complete else None
    rows = []
    for t, run_dir in zip(frozen, dirs, strict=True):
        state, payload = rundir.status(run_dir)
        later = [u.number for u in frozen if u.number > t.number and u.params == t.params]
        if t.number == best:
            note = "best (by validation R²)"
        elif t.state.name == "FAIL" and later:
            note = f"interrupted; continued as trial {later[0]}"
        else:
            note = payload.get("error", "").splitlines()[0] if state == rundir.FAILED else ""
        metrics = payload if state == rundir.FINISHED and t.state.name == "COMPLETE" else {}
        rows.append(Trial(t.number, t.state.name.lower(), t.value, dict(t.params), run_dir, metrics, note))
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.3g}"
    return str(value).replace("|", "\\|")


def csv_text(rows: Sequence[Trial], keys: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*COLUMNS[:3], *keys, *COLUMNS[3:], "run_dir"])
    for r in rows:
        c = r.cells()
        values = [*(c[k] for k in COLUMNS[:3]), *(r.params.get(k) for k in keys), *(c[k] for k in COLUMNS[3:]),
                  r.run_dir]
        writer.writerow(["" if v is None else v for v in values])
    return out.getvalue()


def markdown_table(rows: Sequence[Trial], keys: Sequence[str]) -> str:
    head = ["trial", "state", "best val R²", *keys, "test R²", "SSIM", "steps", "train min", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        c = r.cells()
        cells = [*(c[k] for k in COLUMNS[:3]), *(r.params.get(k) for k in keys), *(c[k] for k in COLUMNS[3:])]
        lines.append("| " + " | ".join(_fmt(v) for v in cells) + " |")
    return "\n".join(lines)


def best_command(search: Search, rows: Sequence[Trial]) -> str | None:
    """`python train.py ...` that trains the best trial's config as a single run."""
    best = [r for r in rows if r.note.startswith("best")]
    if not best:
        return None
    return "python train.py " + " ".join([*search.fixed, *(f"{k}={v}" for k, v in best[0].params.items())])


def markdown(search: Search, rows: Sequence[Trial]) -> str:
    keys = list(search.space)
    counts = {s: sum(r.state == s for r in rows) for s in dict.fromkeys(r.state for r in rows)}
    tally = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no trials yet"
    command = best_command(search, rows)
    return "\n".join([
        f"# Search `{search.name}`", "",
        f"{len(rows)} trials of {search.n_trials} in `{search.sweep_dir}`: {tally}. Objective: the best validation R² "
        "of each run (its best checkpoint); the test R² and SSIM of that checkpoint are reported and were not used "
        "to choose. Search space: " + ", ".join(f"`{k}={v}`" for k, v in search.space.items()) + ".", "",
        markdown_table(rows, keys), "",
        *([f"Best trial as a single run: `{command}`", ""] if command else []),
        "![best validation R² per trial; the best trials' curves](history.png)", "",
        "![validation R² vs generator step, every finished trial](curves.png)", "",
    ])


def write(search: Search, rows: Sequence[Trial]) -> list[Path]:
    """search.csv, search.md, history.png and curves.png in the search's sweep dir."""
    out = search.sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "search.csv").write_text(csv_text(rows, list(search.space)))
    (out / "search.md").write_text(markdown(search, rows))
    curves = {f"trial {r.number}": c for r in rows if r.state == "complete" and (c := read_curve(r.run_dir))}
    done = sum(r.state == "complete" for r in rows)
    figures.r2_curves(curves, f"search {search.name}: {done} of {search.n_trials} trials finished",
                      out / "curves.png")
    values = {r.number: r.value for r in rows if r.state == "complete" and r.value is not None}
    figures.search_history(values, curves, f"search {search.name}: {done} of {search.n_trials} trials finished",
                           out / "history.png")
    return [out / "search.csv", out / "search.md", out / "history.png", out / "curves.png"]
