"""Which symmetry passes the trust estimate's `tta` needs, and what the estimate costs (docs/results.md, "Trust
on the mixture model").

Subsets: every instance's 8 maps g⁻¹ G(g α) are computed once (calibration sets, evaluation sets and the
reference training inputs of the local features), then `tta` and `tta_local` of each subset of symmetries;
for each subset the calibration chooses features by forward selection on the calibration sets and is scored
on the evaluation sets (benchmarks/trust.py's presets and scores; MC dropout off, K = 0).
`--cost`: CPU seconds of the trust features of 500 inputs with all 8 passes and the identity pass run again
(as before issue 10's second pass) against `trust.TTA_PASSES` passes that reuse the prediction pass; one
thread, interleaved rounds, medians.

    python benchmarks/trust_passes.py \
        --checkpoint outputs/families/mix_large-newdefaults-8k-v_to_nint/checkpoints/best.ckpt
    python benchmarks/trust_passes.py --checkpoint … --cost
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

# symmetries as flip·4 + quarter turns (trust.SYMMETRY_ORDER's numbering)
SUBSETS = {"all 8": [0, 1, 2, 3, 4, 5, 6, 7], "4 rotations": [0, 1, 2, 3], "e, half turn, 2 diagonals": [0, 2, 5, 7],
           "e, half turn, 2 axis flips": [0, 2, 4, 6], "e + 3 reflections": [0, 4, 5, 6],
           "e + transpose": [0, 5], "e + half turn": [0, 2]}


def all_maps(model: Any, x: np.ndarray, batch_size: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The 8 maps g⁻¹ G(g x) (8, n, H, W) float32, numbered as SUBSETS, and the identity pass's bottleneck
    features (n, C)."""
    import torch

    from qdgan.apply import trust
    from qdgan.apply.uncertainty import bottleneck_capture, symmetries

    group = dict(zip(trust.SYMMETRY_ORDER, symmetries(), strict=True))
    ys, found = np.empty((8, *x.shape), np.float32), []
    with torch.no_grad():
        for a in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[a:a + batch_size], dtype=np.float32))
            for j in range(8):
                g, inv = group[j]
                with bottleneck_capture(model, j == 0) as got:
                    ys[j, a:a + len(xb)] = inv(model.physical_prediction(model.network_input(g(xb), None))).numpy()
                found += got
    return ys, torch.cat(found).numpy()


def spread(ys: np.ndarray, subset: list[int], mean_image: np.ndarray) -> np.ndarray:
    """tta of the maps `ys[subset]`: Σ Var_g / Σ (mean_g − β̄)² per instance (uncertainty.tta_spread)."""
    y = ys[subset].astype(np.float64)
    return y.var(axis=0, ddof=1).sum(axis=(1, 2)) / np.maximum(((y.mean(axis=0) - mean_image) ** 2).sum(axis=(1, 2)),
                                                               1e-30)


def subsets(args: argparse.Namespace) -> dict[str, Any]:
    """Forward selection and evaluation scores per symmetry subset."""
    import trust as bench

    from qdgan.apply import calibrate, checkpoint, trust
    from qdgan.apply.uncertainty import input_stats, reference_inputs

    model = checkpoint.load_model(args.checkpoint, "cpu")
    run_cfg = checkpoint.run_config(args.checkpoint)
    stats, _ = input_stats(args.checkpoint, model, run_cfg)
    mean = model.target_mean.cpu().numpy().astype(np.float64)
    ref_maps, _ = all_maps(model, reference_inputs(model, run_cfg))
    home = str(run_cfg.data.path)
    data = {}
    for name in ("cal", "eval"):
        specs = [home + s if s.startswith("@") else s for s in bench.PRESETS[args.preset][name]]
        d = calibrate.collect(model, args.checkpoint, run_cfg, specs, 0, 100, stats, evaluate=name == "eval")
        d["maps"], points = all_maps(model, d["x"])
        _, d["near"] = trust.knn_distance(points, stats["ref_points"])
        data[name] = d
    out = {}
    for label, subset in SUBSETS.items():
        ref_tta = spread(ref_maps, subset, mean)
        for d in data.values():
            tta = spread(d["maps"], subset, mean)
            d["features"] |= {"tta": tta, "tta_local": tta / np.maximum(ref_tta[d["near"]].mean(axis=1), 1e-12)}
        cal = trust.calibrate(data["cal"]["features"], data["cal"]["r2"], data["cal"]["in_family"], args.recall)
        scored = bench.scores(cal, data["eval"])
        out[label] = {"passes": len(subset), "features": cal["features"], "threshold": cal["threshold"],
                      "cv_spearman": cal["spearman_cv"]["+".join(cal["features"])],
                      "spearman_eval": scored["calibrated"], "flags_eval": scored["flags_eval"],
                      "false_flags_in_family": scored["flags_eval_in_family"]["false_flags_in_family"]}
        print(label, json.dumps(out[label]), flush=True)
    return out


def cost(args: argparse.Namespace) -> dict[str, Any]:
    """CPU seconds of the trust features, before (8 passes, identity again) and now (reusing the prediction)."""
    import torch

    from physics.dataset import open_dataset
    from qdgan.apply import checkpoint, trust
    from qdgan.apply.uncertainty import bottleneck_capture, features, input_stats

    model = checkpoint.load_model(args.checkpoint, "cpu")
    stats, _ = input_stats(args.checkpoint, model, checkpoint.run_config(args.checkpoint))
    x = np.concatenate([open_dataset(ROOT / "data/mix_large").potential[-250:],
                        open_dataset(ROOT / "data/unseen/many_gates").potential[:250]]).astype(np.float32)
    checkpoint.warm_up(model, x, len(x), 100)
    seconds: dict[str, list[float]] = {"predict": [], "before": [], "now": []}
    for _ in range(args.repeats):
        t = time.process_time()
        with bottleneck_capture(model) as found:
            pred, _ = checkpoint.timed(model, x, 100)
        seconds["predict"].append(time.process_time() - t)
        t = time.process_time()
        features(model, x, pred, 0, 100, stats, passes=8)
        seconds["before"].append(time.process_time() - t)
        t = time.process_time()
        features(model, x, pred, 0, 100, stats, passes=trust.TTA_PASSES, points=torch.cat(found).numpy())
        seconds["now"].append(time.process_time() - t)
    return {k: {"cpu_seconds_rounds": v, "cpu_ms_per_instance": 1e3 * float(np.median(v)) / len(x)}
            for k, v in seconds.items()}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--preset", default="mix", help="calibration and evaluation sets of benchmarks/trust.py")
    ap.add_argument("--recall", type=float, default=0.98)
    ap.add_argument("--cost", action="store_true", help="time the features instead of scoring subsets")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    result = cost(args) if args.cost else subsets(args)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
