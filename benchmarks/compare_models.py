"""Model comparison on the same data and the same budget (issue 12, part 2): pix2pix (the paper's method, the
config's defaults), the L1-only U-Net (model.adv_weight=0) and a Fourier neural operator (generator=fno, the
`fno` extra), for V ↦ n_int and n_int ↦ V on the paper's data set (data=paper, split 4800/100/100).

Each model trains through train.py with the same wall-clock budget (`--minutes`: Lightning's max_time, the
validations included; max_steps then only a ceiling) or the same number of generator steps (`--steps`), one
run after another, and is scored on the test split by its best checkpoint (validation R², as every run).
One table: test R², SSIM in physical units and on [−1, 1] (the network's scaling: the training set's range of
the target ↦ [−1, 1], L = 2; recomputed from the best checkpoint), L1, |∫ñ − N| (densities), the share of the
error power in period-2 (checkerboard) components, generator steps,
training minutes, generator parameters and the load average around the run (other processes share the CPU).
Runs use one torch thread by default (`--threads`): on a machine whose cores other jobs keep busy, two OpenMP
threads wait on each other and a step takes many times longer.

    python benchmarks/compare_models.py --minutes 8          # → outputs/compare/8min/{table.md, <mapping>/<model>/}

A rerun finds its finished runs (train.py skips them) and only rebuilds the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS: dict[str, list[str]] = {
    "pix2pix": [],                                            # the paper's method (conf defaults)
    "l1_unet": ["model.adv_weight=0"],                        # the same U-Net, L1 loss only
    "fno": ["generator=fno", "model.adv_weight=0"],           # Fourier neural operator, L1 loss only
    "fno_gan": ["generator=fno"],                             # the FNO as pix2pix's generator (cGAN + λ·L1)
    "pix2pix_resize": ["generator=unet64_resize"],            # pix2pix with resize-conv upsampling
}
MAPPINGS = ("v_to_nint", "nint_to_v")
CEILING = 1_000_000  # max_steps under a time budget: never reached


def budget_overrides(minutes: float | None, steps: int | None) -> tuple[str, list[str]]:
    """(tag, overrides) of the budget: wall-clock minutes (Lightning max_time) or generator steps."""
    if minutes is not None:
        return f"{minutes:g}min", [f"max_steps={CEILING}", f"+trainer.max_time={{minutes:{minutes}}}"]
    return f"{steps}steps", [f"max_steps={steps}"]


def train(mapping: str, model: str, run_dir: Path, overrides: list[str], threads: int) -> dict[str, Any]:
    """One train.py run in `run_dir` on `threads` threads (skipped by train.py when finished); its metrics.json and
    the 1-minute load average at its start and end."""
    cmd = [sys.executable, str(ROOT / "train.py"), f"mapping={mapping}", "data=paper", "logger=csv",
           "trainer.enable_progress_bar=false", *MODELS[model], *overrides, f"hydra.run.dir={run_dir}"]
    run_dir.mkdir(parents=True, exist_ok=True)
    trained_before, load = (run_dir / "metrics.json").exists(), os.getloadavg()[0]
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(run_dir.parent / f"{model}.log", "a") as log:
        print(f"$ OMP_NUM_THREADS={threads} {' '.join(cmd[1:])}", file=log, flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    if proc.returncode:
        raise SystemExit(f"{mapping}/{model} failed (exit {proc.returncode}): see {run_dir.parent / f'{model}.log'}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if not trained_before:  # trained now (not skipped): record the load it trained under
        (run_dir / "compare.json").write_text(json.dumps({"load": [load, os.getloadavg()[0]], "threads": threads}))
    if (run_dir / "compare.json").exists():
        metrics |= json.loads((run_dir / "compare.json").read_text())
    return metrics


def rescore(run_dir: Path, metrics: dict[str, Any]) -> tuple[int, float, float]:
    """(parameters of G, mean SSIM on [−1, 1] by the model's own range, `period2_share` of the errors) of the
    run's best checkpoint (last when none was kept) on its test rows: metrics.json's ssim_pm1 may use the test
    set's range instead."""
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    from physics.dataset import open_dataset
    from qdgan.metrics import period2_share, ssim_pm1
    from qdgan.pix2pix import Pix2Pix

    ckpts = run_dir / "checkpoints"
    model = Pix2Pix.load_from_checkpoint(ckpts / "best.ckpt" if (ckpts / "best.ckpt").exists() else
                                         ckpts / "last.ckpt", map_location="cpu")
    ds, rows = open_dataset(OmegaConf.load(run_dir / "config.yaml").data.path), np.asarray(metrics["indices"])
    x, y = (torch.from_numpy(np.asarray(ds[q][:], dtype=np.float32)[rows])
            for q in (model.hparams.input_name, model.hparams.target_name))
    pred = model.predict_maps(x)
    pm1 = ssim_pm1(pred.double(), y.double(), (float(model.scale[2]), float(model.scale[3])))
    return (sum(p.numel() for p in model.generator.parameters()), float(pm1.mean()),
            period2_share(pred.double() - y.double()))


def row(mapping: str, model: str, m: dict[str, Any], params: int, pm1: float, period2: float) -> str:
    mean, unit = m["mean"], m["units"]["l1"]
    charge = f"{mean['charge_error']:.3f}" if "charge_error" in mean else "–"
    load = "–" if "load" not in m else f"{m['load'][0]:.1f}–{m['load'][1]:.1f}"
    return (f"| {mapping} | {model} | {m['r2']:.4f} | {mean['ssim']:.4f} | {pm1:.4f} | {mean['l1']:.3g} {unit} | "
            f"{charge} | {100 * period2:.2f} % | {m['generator_steps']} | {m['train_seconds'] / 60:.1f} | "
            f"{params / 1e6:.2f} M | {load} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="wall-clock training budget per model and mapping")
    budget.add_argument("--steps", type=int, default=3000, help="generator steps per model and mapping (default)")
    parser.add_argument("--models", nargs="+", default=["pix2pix", "l1_unet", "fno"], choices=list(MODELS))
    parser.add_argument("--mappings", nargs="+", default=list(MAPPINGS), choices=list(MAPPINGS))
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "compare", help="runs go to OUT/<budget>/")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run (1: a shared machine's busy cores make 2 threads far slower)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra train.py override for every run (repeatable), e.g. --set val_every_n_steps=100")
    args = parser.parse_args(argv)
    sys.path[:0] = [str(ROOT)]
    if "fno" in " ".join(args.models):
        from qdgan.fno import require

        try:
            require()
        except ImportError as err:
            raise SystemExit(f"error: {err}") from None
    tag, overrides = budget_overrides(args.minutes, None if args.minutes is not None else args.steps)
    out = args.out / tag
    lines = [f"Budget per run: {tag}, {args.threads} thread(s); `python benchmarks/compare_models.py "
             + (f"--minutes {args.minutes:g}" if args.minutes is not None else f"--steps {args.steps}")
             + f" --models {' '.join(args.models)} --mappings {' '.join(args.mappings)}"
             + (f" --threads {args.threads}" if args.threads != 1 else "")
             + "".join(f" --set {s}" for s in args.set) + "`", "",
             "| mapping | model | test R² | SSIM | SSIM [−1, 1] | L1 | \\|∫ñ − N\\| | period-2 error | steps "
             "| train min | G params | load avg |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for mapping in args.mappings:
        for model in args.models:
            run_dir = out / mapping / model
            print(f"{mapping} / {model} → {run_dir}", flush=True)
            m = train(mapping, model, run_dir, [*overrides, *args.set], args.threads)
            lines.append(row(mapping, model, m, *rescore(run_dir, m)))
            print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    print(f"\n{table}\nwritten: {out / 'table.md'}")


if __name__ == "__main__":
    main()
