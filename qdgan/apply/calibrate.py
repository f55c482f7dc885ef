"""`python -m qdgan.apply.calibrate --checkpoint C --set data/paper@val --set data/gates@0:100 …`

Calibrates the trust estimate of a checkpoint (qdgan/apply/trust.py) on held-out data sets whose targets
are known, and writes `<run dir>/trust.json` atomically; `qdgan.predict` and `qdgan.invert` then report
calibrated per-instance R²_i estimates and flag those below its threshold. A set is `PATH[@SELECTION]`,
SELECTION a split of the training run (`train`, `val`; `test` is refused: it stays for evaluation) or
rows `start:stop`. Mix sets of the training family and others, so that both kinds of error are seen.
Torch loads inside `main`, as in every apply app.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from qdgan.apply import InputError, trust


def parse_set(spec: str, evaluate: bool = False) -> tuple[str, str | None, str | None]:
    """`PATH[@SELECTION]` → (path, split, indices); the test split only when `evaluate`."""
    path, _, sel = spec.partition("@")
    if sel == "test" and evaluate:
        return path, sel, None
    if sel == "test":
        raise InputError(f"--set {spec}: the test split is for evaluation; calibrate on val or on other rows")
    if sel in ("", "train", "val"):
        return path, sel or None, None
    if ":" not in sel and not sel.isdigit():
        raise InputError(f"--set {spec}: selection {sel!r}; expected train, val or rows start:stop")
    return path, None, sel


def distributions(paths: str | Path | list[Any] | Any) -> frozenset[str] | None:
    """The generator distributions a data set (or a list of them) draws from: its physics with each potential
    family spec of positive weight (a mixture counts as its components), from the manifests' identities; None
    when a manifest cannot be read. A set is in-family for a model when its distributions are a subset of the
    training data's: another family, other family parameters or other physics (e.g. n_wells) are out."""
    found: set[str] = set()
    for path in [paths] if isinstance(paths, str | Path) else list(paths):
        try:
            ident = json.loads((Path(path) / "manifest.json").read_text()).get("identity", {})
        except (OSError, ValueError):
            return None
        spec = ident.get("potential") or {"family": "paper"}
        specs = ([spec["components"].get(f, {"family": f}) for f, w in spec.get("weights", {}).items() if w > 0]
                 if spec.get("family") == "mix" else [spec])
        found |= {json.dumps({"physics": ident.get("physics"), "potential": s}, sort_keys=True) for s in specs}
    return frozenset(found)


def collect(model: Any, checkpoint: str, run_cfg: Any, specs: list[str], k: int, batch_size: int,
            stats: dict[str, Any] | None, evaluate: bool = False, passes: int = trust.TTA_PASSES) -> dict[str, Any]:
    """Inputs, truths, predictions, trust features (tta of `passes` symmetries), R²_i and in-family marks of the
    data sets `specs` (`evaluate`: for measuring, so a test split is allowed)."""
    import torch

    from qdgan.apply.checkpoint import timed, warm_up
    from qdgan.apply.inputs import load_inputs
    from qdgan.apply.uncertainty import bottleneck_capture, features
    from qdgan.datasets import split_selection

    hp, mean = model.hparams, model.target_mean.cpu().numpy()
    home = distributions(run_cfg.data.path) if run_cfg is not None and "data" in run_cfg else None
    parts: dict[str, list[Any]] = {}
    for spec in specs:
        path, split, indices = parse_set(spec, evaluate)
        indices, split = split_selection(run_cfg, path, split, indices)  # a run on a list of sets: its split there
        inputs = load_inputs(path, hp.input_name, split=split, indices=indices, run_config=run_cfg)
        x, y = inputs.read(), inputs.companion(hp.target_name)
        if y is None:
            raise InputError(f"--set {spec}: holds no {hp.target_name} to calibrate against; expected a data set")
        warm_up(model, x, len(x), batch_size)
        with bottleneck_capture(model) as found:  # the prediction is tta's identity pass
            pred, _ = timed(model, x, batch_size)
        feats = features(model, x, pred, k, batch_size, stats, passes=passes,
                         points=torch.cat(found).numpy() if found else None)
        mine = distributions(path)
        row = {"x": x, "y": y, "pred": pred, "r2": trust.r2_per_instance(pred, y, mean),
               "in_family": np.full(len(x), bool(home and mine and mine <= home)), "set": np.full(len(x), spec)}
        for key, value in (row | {f"f_{f}": v for f, v in feats.items()}).items():
            parts.setdefault(key, []).append(value)
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["features"] = {k[2:]: out.pop(k) for k in list(out) if k.startswith("f_")}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from qdgan.apply import checkpoint
    from qdgan.apply.uncertainty import input_stats

    ap = argparse.ArgumentParser(prog="python -m qdgan.apply.calibrate", description=__doc__.split("\n")[2])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--set", action="append", required=True, dest="sets", help="PATH[@train|val|start:stop]")
    ap.add_argument("--k", type=int, default=8, help="MC-dropout passes")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--recall", type=float, default=0.98,
                    help="share of R²_i < 0.9 to flag (out-of-fold; 0.98 leaves a margin for a 0.95 target)")
    ap.add_argument("--passes", type=int, default=trust.TTA_PASSES, choices=range(2, 9), metavar="2..8",
                    help="symmetry passes of tta (the first of trust.SYMMETRY_ORDER; predict then uses as many)")
    ap.add_argument("--features", default=None,
                    help=f"a fixed set, e.g. tta+charge (default: forward selection among {'|'.join(trust.FEATURES)})")
    ap.add_argument("--out", default=None, help="default: <run dir>/trust.json")
    args = ap.parse_args(argv)
    model = checkpoint.load_model(args.checkpoint, "auto")
    run_cfg = checkpoint.run_config(args.checkpoint)
    stats, note = input_stats(args.checkpoint, model, run_cfg, args.passes)
    data = collect(model, args.checkpoint, run_cfg, args.sets, args.k, args.batch_size, stats, passes=args.passes)
    names = args.features.split("+") if args.features else None
    cal = trust.calibrate(data["features"], data["r2"], data["in_family"], args.recall, names)
    cal |= {"checkpoint": str(args.checkpoint), "k": args.k, "passes": args.passes, "sets": args.sets,
            "input_stats": note,
            "error": "1 − R²_i, R²_i against the checkpoint's training-mean target image"}
    out = Path(args.out) if args.out else trust.run_dir(args.checkpoint) / trust.CALIBRATION
    trust.save_calibration(out, cal)
    fit = cal["fit"]
    print(f"calibrated on {cal['n']} instances ({int(data['in_family'].sum())} in-family): features "
          f"{'+'.join(cal['features'])}, 5-fold Spearman {cal['spearman_cv']['+'.join(cal['features'])]:.3f}; "
          f"flag below estimated R² {cal['threshold']:.3f}: recall {fit['recall']}, false flags in-family "
          f"{fit['false_flags_in_family']}\n  wrote {out}", flush=True)
    return cal


if __name__ == "__main__":
    try:
        main()
    except (InputError, ValueError) as err:
        print(f"qdgan.apply.calibrate: error: {err}", file=sys.stderr)
        sys.exit(1)
