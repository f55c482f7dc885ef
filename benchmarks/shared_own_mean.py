"""The shared V ↦ n_int model of N = 1…4 (data=electrons) scored on each N's test split in two R² conventions
(issue 11, "the shared model within 0.01 of the per-N models"):

- `r2_study`: eq. 14 with the shared model's own training mean β̄ over all four N (its metrics.json `per_n`);
- `r2_own_mean`: eq. 14 with β̄ the training mean of that N's set alone, the image a per-N model trained on that
  set has (`qdgan.scaling.fit_stats` on its training split), so SS_tot is the per-N models' and the two R² compare
  like with like. The per-N training mean needs only the set and the split, not the per-N run.

Test and training splits: split_seed 0, 4800/100/100 per set (conf/study/electrons.yaml's `transfer.split`), the
split every per-N run and the shared model use, so no model is scored on a potential it trained on.

    python benchmarks/shared_own_mean.py \
        --run "shared 12000=/tmp/wt_f/outputs/shared12k/v_to_nint" \
        --run "shared 24000=/tmp/wt_i11/outputs/shared24k/v_to_nint" \
        --out docs/results/electrons/new_defaults/shared_r2_own_mean.json

`--part val` scores the validation split instead (each N's 100 validation potentials), for choosing between runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

SETS = {1: "data/paper_n1", 2: "data/paper", 3: "data/paper_n3", 4: "data/paper_n4"}
SPLIT = {"split_seed": 0, "n_train": 4800, "n_val": 100, "n_test": 100}


def training_mean(path: str, split: dict[str, int], target: str = "n_int") -> np.ndarray:
    """β̄ of the training split of the set at `path`: the mean image a model trained on that set alone holds
    (float64 mean, stored as float32, as `fit_stats`)."""
    (train,) = rows_of(path, split, "train", (target,))
    return train.astype(np.float64).mean(0).astype(np.float32)


def rows_of(path: str, split: dict[str, int], part: str, quantities: tuple[str, ...]) -> list[np.ndarray]:
    """The `quantities` maps (physical units, float32) of split `part` ("train", "val", "test") of the set."""
    from physics.dataset import open_dataset
    from qdgan.scaling import split_indices

    ds = open_dataset(path)
    ds.validate()
    rows = split_indices(len(ds), split["split_seed"], split["n_train"], split["n_val"], split["n_test"])[part]
    return [np.asarray(ds[q][rows], dtype=np.float32) for q in quantities]


def score(run_dir: Path, sets: dict[int, str], split: dict[str, int],
          part: str = "test") -> dict[str, dict[str, float]]:
    """{N: {r2_study, r2_own_mean}} of the best checkpoint (by validation R²) of `run_dir` on split `part`."""
    import torch

    from qdgan import metrics
    from qdgan.pix2pix import Pix2Pix
    from qdgan.train.evaluate import evaluate

    model = Pix2Pix.load_from_checkpoint(run_dir / "checkpoints" / "best.ckpt", map_location="cpu").eval()
    hp, out = model.hparams, {}
    for n, path in sets.items():
        x, y = (torch.from_numpy(a) for a in rows_of(path, split, part, (hp.input_name, hp.target_name)))
        result, pred = evaluate(model, x, y)
        own = torch.from_numpy(training_mean(path, split, hp.target_name))
        out[str(n)] = {"r2_study": float(result["r2"]), "r2_own_mean": float(metrics.r2_score(pred, y.float(), own))}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", required=True, metavar="LABEL=RUN_DIR",
                   help="a finished data=electrons run (its checkpoints/best.ckpt); repeatable")
    p.add_argument("--out", type=Path, help="write the scores as JSON here")
    p.add_argument("--part", choices=("test", "val"), default="test",
                   help="score each N's test split (results) or validation split (to choose between runs)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    results = {}
    for spec in args.run:
        label, _, run_dir = spec.partition("=")
        if not run_dir:
            p.error(f"--run {spec!r}: expected LABEL=RUN_DIR")
        results[label] = score(Path(run_dir), SETS, SPLIT, args.part)
        for n, s in results[label].items():
            print(f"{label} | {args.part} N={n}: R² study {s['r2_study']:.4f}, "
                  f"own training mean {s['r2_own_mean']:.4f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
