"""Score trained runs on every potential family's test split and on kinds of potential no training set holds.

Family columns: the test split (split_seed 0, 4800/100/100) of data/<family>, the split a model trained on that
set is tested on, so no model is scored on instances it trained on. Unseen columns: every instance of the
small sets in data/unseen/ (made by the commands below; parameters outside every family's default ranges or
paper physics with another well count). R² per set (eq. 14 with each model's own training mean β̄), the
worst instance's R²_i, SSIM and |∫ñ − N|.

    python benchmarks/families_eval.py --run mix=outputs/families/mix_large-v_to_nint \
        --run paper=outputs/studies/families/data=paper,mapping=v_to_nint --out docs/results/families/eval.md

The unseen sets (200 instances each, seeds 101-105):
    python -m physics.generate potential=paper physics.n_wells=10 out_dir=data/unseen/sparse_wells \
        n_samples=200 shard_size=100 seed=101
    python -m physics.generate potential=gates potential.n_dips=[4,6] potential.dip_sigma_nm=[2.5,4.0] \
        potential.dip_depth_ev=[0.1,0.3] out_dir=data/unseen/many_gates n_samples=200 shard_size=100 seed=102
    python -m physics.generate potential=parabolic potential.hbar_omega_x_mev=[28,40] \
        potential.hbar_omega_y_mev=[28,40] out_dir=data/unseen/wide_parabolic n_samples=200 shard_size=100 seed=103
    python -m physics.generate potential=double_dot potential.separation_nm=[14,18] \
        out_dir=data/unseen/far_double_dot n_samples=200 shard_size=100 seed=104
    python -m physics.generate potential=disordered potential.base.family=gates potential.amplitude_ev=0.06 \
        potential.correlation_nm=2.0 out_dir=data/unseen/rough_gates n_samples=200 shard_size=100 seed=105
The larger sets of the same five kinds that benchmarks/trust.py's presets mix_large and mix_fail read: the same
commands with n_samples=1000 workers=1, seeds 201-205 (in the order above) and out_dir=data/unseen_large/<kind>.
The fresh sets of preset mix_fresh (made after the trust recheck was chosen): n_samples=1000 shard_size=500 workers=2,
seeds 301-305 (in the order above), out_dir=data/unseen_fresh/<kind>; and those of mix_fresh2 (made after the
recheck's recall rule): the same with seeds 401-405 and out_dir=data/unseen_fresh2/<kind>; mix_fresh3 (made after
the estimate's margin for the recheck): seeds 501-505, out_dir=data/unseen_fresh3/<kind>.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

FAMILIES = ["paper", "gates", "parabolic", "double_dot", "disordered"]
UNSEEN = ["sparse_wells", "many_gates", "wide_parabolic", "far_double_dot", "rough_gates"]
SPLIT = {"split_seed": 0, "n_train": 4800, "n_val": 100, "n_test": 100}


def score(run_dir: Path, sets: dict[str, tuple[str, dict | None]]) -> dict[str, dict[str, float]]:
    """{set: {r2, worst_r2, ssim, charge}} of the best checkpoint of `run_dir`."""
    import torch

    from physics.dataset import open_dataset
    from qdgan.apply.trust import r2_per_instance
    from qdgan.pix2pix import Pix2Pix
    from qdgan.study.transfer import test_split
    from qdgan.train.evaluate import evaluate

    model = Pix2Pix.load_from_checkpoint(run_dir / "checkpoints" / "best.ckpt", map_location="cpu").eval()
    hp, out = model.hparams, {}
    for name, (path, split) in sets.items():
        if split is None:
            ds = open_dataset(path)
            ds.validate()
            x, y = (np.asarray(ds[q][:], dtype=np.float32) for q in (hp.input_name, hp.target_name))
        else:
            x, y = test_split(path, split, (hp.input_name, hp.target_name))
        result, pred = evaluate(model, torch.from_numpy(x), torch.from_numpy(y))
        m = result["mean"]
        worst = float(r2_per_instance(pred.numpy(), y, model.target_mean.cpu().numpy()).min())
        out[name] = {"r2": result["r2"], "worst_r2": worst, "ssim": m.get("ssim", float("nan")),
                     "charge": m.get("charge_error", float("nan"))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", required=True, help="LABEL=RUN_DIR (repeatable)")
    ap.add_argument("--out", default=None, help="markdown file for the tables")
    args = ap.parse_args()
    sets = {f: (str(ROOT / "data" / f), SPLIT) for f in FAMILIES}
    sets |= {u: (str(p), None) for u in UNSEEN if (p := ROOT / "data" / "unseen" / u).is_dir()}
    rows = {}
    for spec in args.run:
        label, _, path = spec.partition("=")
        rows[label] = score(Path(path), sets)
        print(label, {k: round(v["r2"], 4) for k, v in rows[label].items()}, flush=True)
    lines = []
    for key, title, fmt in (("r2", "R²", ".4f"), ("worst_r2", "worst instance R²_i", ".3f"),
                            ("ssim", "SSIM", ".3f"), ("charge", "mean \\|∫ñ − N\\| (electrons)", ".3g")):
        cols = list(sets)
        lines += [f"**{title}** (rows: model; columns: family test splits, then unseen kinds)", "",
                  "| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        lines += ["| " + label + " | " + " | ".join(format(r[c][key], fmt) for c in cols) + " |"
                  for label, r in rows.items()]
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
