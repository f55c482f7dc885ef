"""Time to accuracy (issue 12, part 3): wall-clock minutes on this CPU from a fresh clone to a V ↦ n_int test
R² ≥ 0.98 and ≥ 0.99, the ED data set included.

The repository's HEAD is cloned (`git clone`; a clone has no data) and run with this venv: `python -m
physics.generate` makes the paper's data set (5000 ED instances, `workers` = --threads, as train.py would on first
use; timed), then each row runs `python train.py mapping=v_to_nint <row overrides>` (the README's main command) with
`timed_ckpt_every_n_steps`: G's weights every --every-images training images, with the time each save began. After
training, each kept checkpoint is scored on the test split (and the validation split), so test R² never steers
training. Minutes to a threshold = ED minutes + minutes from launching train.py to the first checkpoint at or above
it (the timed saves' own cost left out, evaluation time reported apart); "held" = from which checkpoint on every
later one stays at or above it. A row ends at its config's max_steps or after --max-minutes of training
(Lightning's max_time), then train.py tests its best checkpoint by validation R² as always ("run's test R²").
Each checkpoint is also scored with batch norm on each test instance's own statistics (batch 1, BN in training
mode, dropout as evaluated): how the TF pix2pix (`training=True`) and the reference PyTorch pix2pix (without
--eval) test; columns "BN batch stats". qdgan's own evaluation uses the running statistics.

    python benchmarks/time_to_accuracy.py --rows default paper --max-minutes 20 --threads 1
    # → outputs/time_to_accuracy/{table.md, results.json, time_to_accuracy.png, rows/<row>/}

Rows: `default` (the config as it is), `paper` (model=pix2pix_paper at batch 1: the paper's step and batch,
validation every 4800 images as the default's 300 × 16), any conf/ablation name (`--rows ema`: ablation=ema), and
`--row NAME='override …'` for any other. A rerun
reuses the clone's data set and finished rows (rows/<row>/row.json; --rescore scores their checkpoints again, e.g.
after a change of the scoring); --fresh starts over. Scoring runs this file with the clone's packages.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CEILING = 1_000_000  # max_steps where the time budget ends a row
ROWS: dict[str, list[str]] = {  # any other name in --rows: ablation=<name> (conf/ablation/, study=accuracy's arms)
    "default": [],
    "paper": ["model=pix2pix_paper", "data.batch_size=1", f"max_steps={CEILING}", "val_every_n_steps=4800"],
}
THRESHOLDS = (0.98, 0.99)


def crossing(points: list[dict[str, Any]], threshold: float) -> tuple[float | None, float | None]:
    """(minutes at the first point with test R² ≥ threshold, minutes from which every later point stays ≥ it);
    None where never. `points`: {"minutes", "test_r2"} in time order."""
    first = next((p["minutes"] for p in points if p["test_r2"] >= threshold), None)
    held = None
    for p in reversed(points):
        if p["test_r2"] < threshold:
            break
        held = p["minutes"]
    return first, held


def timeline(index: list[dict[str, Any]], scores: dict[str, dict[str, float]], launched: float,
             ed_minutes: float) -> list[dict[str, Any]]:
    """Each timed checkpoint: step, minutes since the clone started ED (ED + train.py wall time up to the save,
    earlier timed saves left out), its scores (test_r2, val_r2, test_r2_bs)."""
    return [{"step": e["step"], "minutes": ed_minutes + (e["unix_time"] - launched - e["overhead_s"]) / 60,
             **scores[e["file"]]} for e in index]


def summarize_row(name: str, overrides: list[str], points: list[dict[str, Any]], ed_minutes: float,
                  metrics: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The row's record (results.json): thresholds crossed, final and run's test R², steps, minutes."""
    def reached(key: str) -> dict[str, dict[str, float | None]]:
        by = [{"minutes": p["minutes"], "test_r2": p[key]} for p in points]
        return {f"{t:g}": dict(zip(("first", "held"), crossing(by, t), strict=True)) for t in THRESHOLDS}

    return {"row": name, "overrides": overrides, "ed_minutes": ed_minutes, "reached": reached("test_r2"),
            "reached_bs": reached("test_r2_bs"), "points": points, "last_step": points[-1]["step"] if points else None,
            "final_test_r2": points[-1]["test_r2"] if points else None, "run_test_r2": metrics.get("r2"),
            "best_step": metrics.get("best_step"), "steps": metrics.get("generator_steps"), **extra}


def markdown(rows: list[dict[str, Any]]) -> str:
    def minutes(v: float | None) -> str:
        return "not reached" if v is None else f"{v:.1f}"

    lines = ["| row | overrides | ED min | to R² ≥ 0.98 | to R² ≥ 0.99 | ≥ 0.99 held from | last timed checkpoint's "
             "test R² | run's test R² (best val) | BN batch stats: to 0.98 / 0.99; last R² | steps | train min | "
             "eval min | threads | load avg |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        hit, bs = r["reached"], r["reached_bs"]
        lines.append(
            f"| {r['row']} | `{' '.join(r['overrides']) or '(defaults)'}` | {r['ed_minutes']:.1f} | "
            f"{minutes(hit['0.98']['first'])} | {minutes(hit['0.99']['first'])} | {minutes(hit['0.99']['held'])} | "
            f"{r['final_test_r2']:.4f} (step {r['last_step']}) | {r['run_test_r2']:.4f} (step {r['best_step']}) | "
            f"{minutes(bs['0.98']['first'])} / {minutes(bs['0.99']['first'])}; {r['points'][-1]['test_r2_bs']:.4f} | "
            f"{r['steps']} | "
            f"{r['train_minutes']:.1f} | {r['eval_minutes']:.1f} | {r['threads']} | "
            f"{r['load'][0]:.1f}–{r['load'][1]:.1f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Test R² of the timed checkpoints against minutes since the clone (ED shaded), one line per row; dotted: scored
    with BN batch statistics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from physics.plots import save_figure

    low = 0.9
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for r in rows:
        pts, minutes = r["points"], [p["minutes"] for p in r["points"]]
        below = f" (all < {low:g}: {min(p['test_r2'] for p in pts):.2f}–{max(p['test_r2'] for p in pts):.2f})" \
            if pts and max(p["test_r2"] for p in pts) < low else ""
        line, = ax.plot(minutes, [p["test_r2"] for p in pts], ".-", label=r["row"] + below)
        ax.plot(minutes, [p["test_r2_bs"] for p in pts], ":", color=line.get_color(),
                label=f"{r['row']}, BN batch stats")
    ed = max((r["ed_minutes"] for r in rows), default=0.0)
    ax.axvspan(0, ed, color="0.9", label=f"ED data set ({ed:.1f} min)")
    for t in THRESHOLDS:
        ax.axhline(t, color="0.4", lw=0.8, ls="--")
    ax.set_ylim(low, 1.0)
    ax.set_xlabel("minutes since the fresh clone (ED + train.py wall clock)")
    ax.set_ylabel("test R² of the checkpoint (V ↦ n_int)")
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)


def score(run_dir: Path) -> None:
    """`--score RUN_DIR` (run with the clone's packages): test and validation R² of every timed checkpoint, and test
    R² with BN batch statistics (`batch_stat_predictions`) → RUN_DIR/timed_scores.json (its scores kept)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from qdgan.apply.checkpoint import load_model
    from qdgan.train.evaluate import electrons_of, evaluate, scores

    cfg = OmegaConf.load(run_dir / "config.yaml")
    dm = instantiate(cfg.data, _recursive_=False)
    dm.setup("fit")
    dm.setup("test")
    timed, path = run_dir / "checkpoints" / "timed", run_dir / "timed_scores.json"
    out = json.loads(path.read_text()) if path.exists() else {}  # a rescore computes only the scores missing
    x, y = dm.physical("test")
    for entry in json.loads((timed / "index.json").read_text()):
        have = out.setdefault(entry["file"], {})
        if {"test_r2", "val_r2", "test_r2_bs"} <= set(have):
            continue
        model = load_model(timed / entry["file"])
        for split in {"test", "val"} - {k[:-3] for k in have}:
            have[f"{split}_r2"] = evaluate(model, *dm.physical(split), None, cfg.data.eval_batch_size)[0]["r2"]
        if "test_r2_bs" not in have:
            have["test_r2_bs"] = scores(model, batch_stat_predictions(model, x), y.float(),
                                        electrons_of(model, x, y))["r2"]
    path.write_text(json.dumps(out, indent=1))


def batch_stat_predictions(model: Any, inputs: Any) -> Any:
    """Physical predictions (n, H, W) one instance at a time with G's batch norm on that instance's statistics
    (training mode; dropout stays as evaluated): the test mode of the pix2pix reference implementations."""
    import torch

    model.eval()
    for m in model.eval_generator.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.train()
    with torch.no_grad():
        out = [model.physical_prediction(model.network_input(inputs[i : i + 1], None)) for i in range(len(inputs))]
    model.eval()
    return torch.cat(out)


def composed(clone: Path, overrides: list[str]) -> Any:
    """The train config a row composes to in the clone."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(clone / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def run_logged(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    """Run `cmd`, output appended to `log`; its wall seconds (SystemExit naming the log when it fails)."""
    began = time.perf_counter()
    with open(log, "a") as f:
        print(f"$ {' '.join(cmd)}", file=f, flush=True)
        code = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
    if code:
        raise SystemExit(f"failed (exit {code}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - began


def prepare(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """Clone HEAD and generate the data set there (reused when done before); ed.json."""
    clone, record = args.out / "clone", args.out / "ed.json"
    if record.exists() and clone.exists():
        return json.loads(record.read_text())
    shutil.rmtree(clone, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(args.repo), str(clone)], check=True)
    commit = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    where = subprocess.run([sys.executable, "-c", "import qdgan, physics; print(qdgan.__file__, physics.__file__)"],
                           cwd=clone, env=env, check=True, capture_output=True, text=True).stdout.split()
    if not all(Path(w).resolve().is_relative_to(clone.resolve()) for w in where):
        raise SystemExit(f"the clone's packages do not import from the clone: {where}")
    load = os.getloadavg()[0]
    seconds = run_logged([sys.executable, "-m", "physics.generate", f"workers={args.threads}", *args.generate_set],
                         clone, env, args.out / "ed.log")
    ed = {"commit": commit, "ed_minutes": seconds / 60, "workers": args.threads, "load": [load, os.getloadavg()[0]],
          "same_as_reference": same_shards(clone / "data" / "paper", args.repo / "data" / "paper")}
    record.write_text(json.dumps(ed, indent=1))
    return ed


def same_shards(made: Path, reference: Path) -> bool | None:
    """Whether two data sets hold the same shards (file names and checksums); None without a reference."""
    if not (reference / "manifest.json").exists() or not (made / "manifest.json").exists():
        return None
    shards = [[(s["file"], s["sha256"]) for s in json.loads((d / "manifest.json").read_text())["shards"]]
              for d in (made, reference)]
    return shards[0] == shards[1]


def run_row(name: str, overrides: list[str], args: argparse.Namespace, env: dict[str, str],
            ed: dict[str, Any]) -> dict[str, Any]:
    """Train one row in the clone (rows/<name>/train.json; reused when present), score its timed checkpoints
    (again with --rescore) → rows/<name>/row.json (reused when present)."""
    clone, row_dir = args.out / "clone", args.out / "rows" / name
    run, trained = row_dir / "run", row_dir / "train.json"
    if (row_dir / "row.json").exists() and not args.rescore:
        return json.loads((row_dir / "row.json").read_text())
    if not trained.exists():
        shutil.rmtree(run, ignore_errors=True)
        row_dir.mkdir(parents=True, exist_ok=True)
        base = ["mapping=v_to_nint", *overrides, *args.set]
        every = max(1, args.every_images // int(composed(clone, base).data.batch_size))
        cmd = [sys.executable, "train.py", *base, f"timed_ckpt_every_n_steps={every}",
               f"+trainer.max_time={{minutes:{args.max_minutes}}}", "trainer.enable_progress_bar=false",
               f"hydra.run.dir={run.resolve()}"]
        load, launched = os.getloadavg()[0], time.time()
        seconds = run_logged(cmd, clone, env, row_dir / "train.log")
        trained.write_text(json.dumps({"launched": launched, "train_minutes": seconds / 60, "threads": args.threads,
                                       "every_n_steps": every, "load": [load, os.getloadavg()[0]],
                                       "commit": ed["commit"]}, indent=1))
    train = json.loads(trained.read_text())
    eval_seconds = run_logged([sys.executable, str(Path(__file__).resolve()), "--score", str(run.resolve())], clone,
                              env, row_dir / "score.log")
    index = json.loads((run / "checkpoints" / "timed" / "index.json").read_text())
    points = timeline(index, json.loads((run / "timed_scores.json").read_text()), train.pop("launched"),
                      ed["ed_minutes"])
    timing = {"eval_minutes": eval_seconds / 60}
    if (row_dir / "row.json").exists():  # a rescore: keep the first scoring's time, which scored everything
        timing = {"eval_minutes": json.loads((row_dir / "row.json").read_text())["eval_minutes"],
                  "rescore_minutes": eval_seconds / 60}
    row = summarize_row(name, overrides, points, ed["ed_minutes"], json.loads((run / "metrics.json").read_text()),
                        train | timing)
    (row_dir / "row.json").write_text(json.dumps(row, indent=1))
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=["default", "paper"],
                        help=f"rows to run: {', '.join(ROWS)} or a conf/ablation name")
    parser.add_argument("--row", action="append", default=[], metavar="NAME='OVERRIDES'",
                        help="another row: a name and its train.py overrides (repeatable; runs after --rows)")
    parser.add_argument("--max-minutes", type=float, default=20.0, help="training budget per row (max_time)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of training, ED worker processes")
    parser.add_argument("--every-images", type=int, default=1600, help="timed checkpoint every so many images")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "time_to_accuracy")
    parser.add_argument("--repo", type=Path, default=ROOT, help="the repository whose HEAD is cloned")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="train.py override, all rows")
    parser.add_argument("--generate-set", action="append", default=[], metavar="KEY=VALUE",
                        help="python -m physics.generate override (e.g. a smaller set for a trial)")
    parser.add_argument("--fresh", action="store_true", help="remove OUT's clone and rows first")
    parser.add_argument("--rescore", action="store_true", help="score the rows' checkpoints again (no training)")
    parser.add_argument("--score", type=Path, help=argparse.SUPPRESS)  # internal: score one run dir
    args = parser.parse_args(argv)
    if args.score:
        return score(args.score)
    rows = {r: ROWS.get(r, [f"ablation={r}"]) for r in args.rows}
    rows |= {n: o.split() for n, _, o in (r.partition("=") for r in args.row)}
    args.out = args.out.resolve()
    if args.fresh:
        shutil.rmtree(args.out / "clone", ignore_errors=True)
        shutil.rmtree(args.out / "rows", ignore_errors=True)
        (args.out / "ed.json").unlink(missing_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"PYTHONPATH": str(args.out / "clone"), "OMP_NUM_THREADS": str(args.threads),
                        "MKL_NUM_THREADS": str(args.threads)}
    ed = prepare(args, env)
    print(f"clone {ed['commit'][:12]}: ED {ed['ed_minutes']:.1f} min (same shards as {args.repo}/data/paper: "
          f"{ed['same_as_reference']})", flush=True)
    done = []
    for name, overrides in rows.items():
        print(f"row {name}: {' '.join(overrides) or '(defaults)'}", flush=True)
        done.append(run_row(name, overrides, args, env, ed))
    table = markdown(done)
    (args.out / "table.md").write_text(table)
    (args.out / "results.json").write_text(json.dumps({"ed": ed, "rows": done}, indent=1))
    plot(done, args.out / "time_to_accuracy.png")
    print(table, flush=True)


if __name__ == "__main__":
    main()
