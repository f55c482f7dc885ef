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

from qdgan.apply import InputError, recheck, trust


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


def measure_recheck(args: Any, model: Any, data: dict[str, Any], cal: dict[str, Any]) -> dict[str, Any] | None:
    """The reduced-basis recheck of a potential-input model (qdgan/apply/recheck.py): its ED error on (at most
    --recheck-sample) calibration instances, the threshold it implies, and the flag rates of the estimate's
    out-of-fold flags rechecked; None for `--recheck none` or another input. `auto` tries recheck.FRACTIONS of the
    data's basis in turn and goes without a recheck (saying so) when even the largest is too coarse."""
    from physics.dataset import open_dataset
    from qdgan.apply.ed_batch import Solver

    if args.recheck == "none" or model.hparams.input_name != "potential":
        return None
    physics_of = {}
    for spec in dict.fromkeys(data["set"]):
        try:
            physics_of[spec] = open_dataset(spec.partition("@")[0]).config
        except Exception as err:  # any unreadable manifest: say which set and what to do
            raise InputError(f"--set {spec}: the recheck solves its potentials by ED and needs a data-set folder's "
                             f"physics ({type(err).__name__}: {err}); pass --recheck none") from None
    first = next(iter(physics_of.values()))
    try:
        bases = ([recheck.default_basis(first, f) for f in recheck.FRACTIONS] if args.recheck == "auto" else
                 [tuple(int(v) for v in args.recheck.split(","))])
        assert len(bases[0]) == 2
    except (ValueError, AssertionError):
        raise InputError(f"--recheck {args.recheck}: expected N_BASIS,N_ORBITALS (e.g. 20,10), auto or none") from None
    mean, target = model.target_mean.cpu().numpy(), model.hparams.target_name
    err = 1.0 - np.asarray(data["r2"], np.float64)
    flags = 1.0 - np.exp(trust._cv_predict(data["features"], err, cal["features"])) < cal["threshold"]
    rows = np.random.default_rng(0).permutation(len(err))[: args.recheck_sample]
    with Solver(first, args.workers, len(rows)) as solver:  # one pool; each set in its own reduced configuration
        for n_basis, n_orbitals in dict.fromkeys(bases):
            r2_pc, errors = np.full(len(err), np.inf), []
            for spec, physics in physics_of.items():
                pick = rows[data["set"][rows] == spec]
                red = solver.solve(data["x"][pick], [f"{spec} row {i}" for i in pick],
                                   cfg=recheck.reduced_config(physics, n_basis, n_orbitals))
                red = red.n_int if target == "n_int" else red.n0
                errors.append(recheck.reduced_error(red, data["y"][pick], mean))
                r2_pc[pick] = trust.r2_per_instance(data["pred"][pick], red, mean)
            errors = np.concatenate(errors)
            try:
                rules = {"bound": recheck.threshold(errors), "recall": None}
            except ValueError as why:
                print(f"recheck: basis ({n_basis}, {n_orbitals}): {why}", flush=True)
                continue
            seen = np.zeros(len(err), bool)
            seen[rows] = True
            # the recheck must not lose what the estimate caught, where the bound alone would
            rules["recall"] = trust.recall_threshold(r2_pc[seen & flags & (data["r2"] < trust.BAD_R2)], args.recall)
            thr = max(v for v in rules.values() if v is not None)
            final = flags & (r2_pc < thr)
            return {"n_basis": n_basis, "n_orbitals": n_orbitals, "threshold": thr, "threshold_rules": rules,
                    "n_measured": len(rows),
                    "error_quantile": recheck.ERROR_QUANTILE, "error_max": float(errors.max()),
                    "error_quantile_value": float(np.quantile(errors, recheck.ERROR_QUANTILE)),
                    "fit": trust.flag_rates(final[seen], data["r2"][seen], data["in_family"][seen])}
    if args.recheck != "auto":
        raise InputError(f"--recheck {args.recheck}: the reduced basis is too coarse to check R²_i < {trust.BAD_R2} "
                         "(above); choose a larger one, or auto")
    print("recheck: none (every reduced basis tried is too coarse); flags are the estimate's alone", flush=True)
    return None


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
    ap.add_argument("--recheck", default="auto",
                    help="N_BASIS,N_ORBITALS of the reduced-basis ED that rechecks flagged predictions of a potential "
                         "input (its error is measured here; qdgan/apply/recheck.py); auto: "
                         f"the first fine enough of {recheck.FRACTIONS} of the data's basis; none: no recheck")
    ap.add_argument("--recheck-sample", type=int, default=2000, help="calibration instances it is measured on, at most")
    ap.add_argument("--workers", type=int, default=None, help="ED processes for the recheck (default: all cores)")
    ap.add_argument("--estimate-margin", type=float, default=recheck.ESTIMATE_MARGIN,
                    help="with a recheck, flag estimated errors down to 1/this of the calibrated cut for it")
    ap.add_argument("--out", default=None, help="default: <run dir>/trust.json")
    args = ap.parse_args(argv)
    model = checkpoint.load_model(args.checkpoint, "auto")
    run_cfg = checkpoint.run_config(args.checkpoint)
    stats, note = input_stats(args.checkpoint, model, run_cfg, args.passes)
    data = collect(model, args.checkpoint, run_cfg, args.sets, args.k, args.batch_size, stats, passes=args.passes)
    names = args.features.split("+") if args.features else None
    cal = trust.calibrate(data["features"], data["r2"], data["in_family"], args.recall, names)
    base = cal["threshold"]
    if args.recheck != "none" and model.hparams.input_name == "potential":
        cal["threshold"] = recheck.widen(base, args.estimate_margin)  # suspects for the recheck
    cal |= {"checkpoint": str(args.checkpoint), "k": args.k, "passes": args.passes, "sets": args.sets,
            "input_stats": note,
            "error": "1 − R²_i, R²_i against the checkpoint's training-mean target image",
            "recheck": measure_recheck(args, model, data, cal)}
    if cal["recheck"] is None:
        cal["threshold"] = base
    else:
        cal["threshold_rules"]["widened_for_recheck"] = cal["threshold"]
        cal["recheck"]["estimate_margin"] = args.estimate_margin
    out = Path(args.out) if args.out else trust.run_dir(args.checkpoint) / trust.CALIBRATION
    trust.save_calibration(out, cal)
    fit = cal["fit"]
    if cal["recheck"]:
        r = cal["recheck"]
        print(f"recheck: reduced basis n_basis={r['n_basis']}, n_orbitals={r['n_orbitals']} errs by e ≤ "
              f"{r['error_quantile_value']:.3f} on {r['n_measured']} instances (99 %); flagged predictions stay "
              f"flagged below R²_pc {r['threshold']:.3f}: recall {r['fit']['recall']}, false flags in-family "
              f"{r['fit']['false_flags_in_family']}", flush=True)
    print(f"calibrated on {cal['n']} instances ({int(data['in_family'].sum())} in-family): features "
          f"{'+'.join(cal['features'])}, 5-fold Spearman {cal['spearman_cv']['+'.join(cal['features'])]:.3f}; "
          f"flag below estimated R² {base:.3f}: recall {fit['recall']}, false flags in-family "
          f"{fit['false_flags_in_family']}" + (f" (out of fold; widened to {cal['threshold']:.4f} for the recheck)"
                                               if cal["recheck"] else "") + f"\n  wrote {out}", flush=True)
    return cal


if __name__ == "__main__":
    try:
        main()
    except (InputError, ValueError) as err:
        print(f"qdgan.apply.calibrate: error: {err}", file=sys.stderr)
        sys.exit(1)
