"""Per-instance trust: an estimate of each prediction's error 1 − R²_i, calibrated on held-out data.

R²_i = 1 − ||β_i − β̃_i||² / ||β_i − β̄||², β̄ the checkpoint's training-mean target image (eq. 16 per
instance). Raw features, each a candidate error estimate (docs/inverse.md, "Trust"):
  mc     MC-dropout spread: Σ Var_K(ỹ) / Σ (ȳ − β̄)² over K stochastic passes (qdgan/apply/uncertainty.py)
  tta    symmetry disagreement: the same spread over the 8 predictions g⁻¹ G(g α) of the square's symmetries g
         (ED's maps are exactly equivariant under them; the network's are not, least where it is sure)
  charge |h²·Σñ − N| of a predicted density (electrons)
  d_pca  Mahalanobis distance of the encoded input in the top principal components of the training inputs
  d_res  the input's distance from that principal subspace, relative to the training inputs' median
  knn    local distance: mean distance of the generator's bottleneck features to their K_NEIGHBOURS nearest
         reference training inputs over those neighbours' own such distance (≈ 1 for a training-like input)
  tta_local, charge_local  tta and charge over their means among those neighbours (the local typical value)
  contrast  Σ (ỹ − β̄)² / Σ β̄²: how far the prediction lies from the mean image, the scale of R²_i's
         denominator (not an error estimate alone; it lets the fit turn absolute errors into 1 − R²_i)
The calibration (`<run dir>/trust.json`) is a least-squares fit of log(1 − R²_i) on the logs of a
feature subset chosen by forward selection on 5-fold Spearman, plus the flag threshold. Numpy only:
the ED workers that re-import the apply modules never load torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from physics.files import atomic_write_bytes

FEATURES = ("mc", "tta", "charge", "d_pca", "d_res", "knn", "tta_local", "charge_local", "contrast")
LOCAL = ("knn", "tta_local", "charge_local")  # need the reference training inputs' bottleneck features
# log(x + floor): zeros stay finite
FLOOR = {"mc": 1e-6, "tta": 1e-6, "charge": 1e-4, "d_pca": 1e-3, "d_res": 1e-3, "knn": 1e-3, "tta_local": 1e-3,
         "charge_local": 1e-3, "contrast": 1e-6}
ERR_FLOOR = 1e-4  # 1 − R²_i below this is as good as perfect
BAD_R2 = 0.9  # an instance with R²_i below this should be flagged
CALIBRATION = "trust.json"
INPUT_STATS = "trust_inputs.npz"
N_COMPONENTS = 16
N_REFERENCE = 5000  # training inputs whose bottleneck features, tta and charge the local features compare with
K_NEIGHBOURS = 10
MIN_GAIN = 0.002  # forward selection adds a feature only if the 5-fold Spearman rises by this much
# The square's 8 symmetries as flip·4 + quarter turns (flip first), in the order tta takes them: its P passes
# are the first P (`calibrate --passes`, stored in trust.json); TTA_PASSES for a new calibration. The first 4 (e,
# half turn, the 2 diagonal reflections) ranked errors as well as all 8 on the mixture model (docs/inverse.md).
SYMMETRY_ORDER = (0, 2, 5, 7, 1, 3, 4, 6)
TTA_PASSES = 4


def run_dir(checkpoint: str | Path) -> Path:
    """`<run dir>` of `<run dir>/checkpoints/<name>.ckpt`: where trust.json and the input statistics live."""
    return Path(checkpoint).absolute().parent.parent


def r2_per_instance(pred: np.ndarray, true: np.ndarray, mean_image: np.ndarray) -> np.ndarray:
    """R²_i per instance against the training-mean target image (float64)."""
    p, t, m = (np.asarray(a, dtype=np.float64) for a in (pred, true, mean_image))
    return 1.0 - ((t - p) ** 2).sum(axis=(1, 2)) / np.maximum(((t - m) ** 2).sum(axis=(1, 2)), 1e-30)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (ties broken by order; the features are continuous)."""
    ra, rb = (np.argsort(np.argsort(np.asarray(x, dtype=np.float64))).astype(float) for x in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1]) if len(ra) > 1 else float("nan")


def fit_input_stats(encoded: np.ndarray, k: int = N_COMPONENTS, max_n: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Principal components of (at most `max_n`) encoded training inputs (n, H·W): mean, components,
    their standard deviations and the median distance of a training input from the subspace."""
    x = np.asarray(encoded, dtype=np.float64)
    if len(x) > max_n:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_n, replace=False))]
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = min(k, len(s))
    stats = {"mean": mean, "components": vt[:k], "sigma": np.maximum(s[:k] / np.sqrt(max(len(x) - 1, 1)), 1e-12)}
    stats["res_median"] = np.array(max(float(np.median(input_distance(stats, x)[1])), 1e-12))
    return stats


def input_distance(stats: dict[str, Any], encoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d_pca, d_res) of encoded inputs: RMS of the component scores in units of the training spread, and
    the norm of what the components do not explain (relative to the training median when known)."""
    x = np.asarray(encoded, dtype=np.float64) - stats["mean"]
    z = x @ stats["components"].T
    res = np.linalg.norm(x - z @ stats["components"], axis=1)
    return np.sqrt(((z / stats["sigma"]) ** 2).mean(axis=1)), res / float(stats.get("res_median", 1.0))


def knn_distance(points: np.ndarray, ref: np.ndarray, k: int = K_NEIGHBOURS,
                 exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean Euclidean distance of each point to its `k` nearest rows of `ref`, and their indices (n, k);
    `exclude_self`: `points` is `ref`, and a row is not its own neighbour."""
    p, r = np.asarray(points, np.float64), np.asarray(ref, np.float64)
    k = min(k, len(r) - exclude_self)
    rr, dist, idx = (r**2).sum(axis=1), np.empty(len(p)), np.empty((len(p), k), dtype=np.int64)
    for a in range(0, len(p), 1000):  # (1000, n_ref) distances at a time
        d2 = np.maximum((p[a:a + 1000] ** 2).sum(axis=1)[:, None] + rr[None] - 2 * p[a:a + 1000] @ r.T, 0.0)
        if exclude_self:
            d2[np.arange(len(d2)), np.arange(a, a + len(d2))] = np.inf
        near = np.argpartition(d2, k - 1, axis=1)[:, :k]
        idx[a:a + 1000], dist[a:a + 1000] = near, np.sqrt(np.take_along_axis(d2, near, axis=1)).mean(axis=1)
    return dist, idx


def fit_reference(bottleneck: np.ndarray, tta: np.ndarray, charge: np.ndarray | None) -> dict[str, np.ndarray]:
    """The reference of the local features: training inputs' bottleneck features, each one's own kNN
    distance among them, and their tta and charge (charge: absent for a potential output)."""
    own, _ = knn_distance(bottleneck, bottleneck, exclude_self=True)
    ref = {"ref_points": np.asarray(bottleneck, np.float32), "ref_own": own, "ref_tta": np.asarray(tta, np.float64)}
    return ref | ({"ref_charge": np.asarray(charge, np.float64)} if charge is not None else {})


def local_features(stats: dict[str, Any], bottleneck: np.ndarray, tta: np.ndarray,
                   charge: np.ndarray | None) -> dict[str, np.ndarray]:
    """knn, tta_local and charge_local of instances with these bottleneck features, tta and charge."""
    dist, idx = knn_distance(bottleneck, stats["ref_points"])
    out = {"knn": dist / np.maximum(stats["ref_own"][idx].mean(axis=1), 1e-12),
           "tta_local": tta / np.maximum(stats["ref_tta"][idx].mean(axis=1), 1e-12)}
    if charge is not None and "ref_charge" in stats:
        out["charge_local"] = charge / np.maximum(stats["ref_charge"][idx].mean(axis=1), 1e-12)
    return out


def calibration_passes(cal: dict[str, Any] | None) -> int:
    """The symmetry passes of the calibration's tta (8 for one made before they were a setting)."""
    return int((cal or {}).get("passes", len(SYMMETRY_ORDER) if cal else TTA_PASSES))


def reference_passes(stats: dict[str, Any]) -> int | None:
    """The symmetry passes of the cached reference's tta (8 before they were a setting); None without one."""
    return None if "ref_tta" not in stats else int(stats.get("ref_passes", len(SYMMETRY_ORDER)))


def save_input_stats(path: Path, stats: dict[str, Any]) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **stats)
    atomic_write_bytes(path, buf.getvalue())


def load_input_stats(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def design(features: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """[1, log(f + floor) for f in names] per instance."""
    n = len(next(iter(features.values())))
    cols = [np.ones(n)] + [np.log(np.asarray(features[f], dtype=np.float64) + FLOOR[f]) for f in names]
    return np.stack(cols, axis=1)


def _fit(features: dict[str, np.ndarray], err: np.ndarray, names: list[str]) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(design(features, names), np.log(np.maximum(err, ERR_FLOOR)), rcond=None)
    return coef


def _cv_predict(features: dict[str, np.ndarray], err: np.ndarray, names: list[str], folds: int = 5,
                seed: int = 0) -> np.ndarray:
    """Out-of-fold fitted log errors (5-fold): what the fit predicts for instances it has not seen."""
    idx = np.random.default_rng(seed).permutation(len(err))
    pred = np.empty(len(err))
    for part in np.array_split(idx, folds):
        train = np.setdiff1d(idx, part)
        coef = _fit({k: v[train] for k, v in features.items()}, err[train], names)
        pred[part] = design({k: v[part] for k, v in features.items()}, names) @ coef
    return pred


def cv_spearman(features: dict[str, np.ndarray], err: np.ndarray, names: list[str], repeats: int = 3) -> float:
    """Spearman of out-of-fold fitted errors with the true ones, averaged over `repeats` fold draws."""
    return float(np.mean([spearman(_cv_predict(features, err, names, seed=s), err) for s in range(repeats)]))


def select(features: dict[str, np.ndarray], err: np.ndarray,
           available: list[str]) -> tuple[list[str], dict[str, float]]:
    """Forward selection: start empty, add the feature whose fit ranks held-out errors best (cv_spearman),
    stop when that gains less than MIN_GAIN. Returns the chosen features and every scored set."""
    chosen: list[str] = []
    scores: dict[str, float] = {}
    best = -np.inf
    while len(chosen) < len(available):
        step = {f: cv_spearman(features, err, [*chosen, f]) for f in available if f not in chosen}
        scores |= {"+".join([*chosen, f]): v for f, v in step.items()}
        f = max(step, key=lambda name: step[name])
        if step[f] < best + MIN_GAIN:
            break
        chosen, best = [*chosen, f], step[f]
    return chosen, scores


def calibrate(features: dict[str, np.ndarray], r2: np.ndarray, in_family: np.ndarray,
              recall: float = 0.95, names: list[str] | None = None) -> dict[str, Any]:
    """Choose the features by forward selection on 5-fold Spearman with the true error 1 − R²_i (or take
    `names`), fit them on all the data, and pick the flag threshold (flag: estimated R²_i below it) on the
    out-of-fold estimates, as the higher of two: the lowest that flags ≥ `recall` of the instances with
    R²_i < BAD_R2 (when there are any), and the estimate at which an error underestimated as much as the
    `recall` quantile of the out-of-fold log residuals reaches 1 − BAD_R2 (it needs no bad instance: a
    good model's calibration sets may hold none). `fit`: those rates."""
    err = 1.0 - np.asarray(r2, dtype=np.float64)
    available = [f for f in FEATURES if f in features and np.ptp(features[f]) > 0]
    if not available:
        raise ValueError(f"calibration: no informative feature among {sorted(features)} (all constant)")
    if names and (bad := [f for f in names if f not in available]):
        raise ValueError(f"calibration: feature(s) {bad} not available here; expected some of {available}")
    best, scores = (names, {"+".join(names): cv_spearman(features, err, names)}) if names else \
        select(features, err, available)
    raw = {f: spearman(features[f], err) for f in available}
    coef = _fit(features, err, best)
    cal = {"features": best, "coef": coef.tolist(), "n": len(err), "bad_r2": BAD_R2, "recall_target": recall,
           "spearman_raw": raw, "spearman_cv": scores}
    pred_log = _cv_predict(features, err, best)  # out-of-fold: an honest threshold
    pred_r2, bad = 1.0 - np.exp(pred_log), r2 < BAD_R2
    rules = {"recall": recall_threshold(pred_r2[bad], recall), "residual_quantile": float(1.0 - (1.0 - BAD_R2) * np.exp(
        -np.quantile(np.log(np.maximum(err, ERR_FLOOR)) - pred_log, recall)))}
    cal["threshold"], cal["threshold_rules"] = max(v for v in rules.values() if v is not None), rules
    cal["fit"] = flag_rates(pred_r2 < cal["threshold"], r2, in_family)
    return cal


def recall_threshold(r2: np.ndarray, recall: float) -> float | None:
    """The lowest threshold that flags ⌈recall·n⌉ of these (bad) instances' R² (flag: below it); None for none."""
    return float(np.sort(r2)[int(np.ceil(recall * len(r2))) - 1]) + 1e-9 if len(r2) else None


def estimate_r2(cal: dict[str, Any], features: dict[str, np.ndarray]) -> np.ndarray:
    """Calibrated estimate of R²_i: 1 − exp(fitted log error)."""
    return 1.0 - np.exp(design(features, cal["features"]) @ np.asarray(cal["coef"]))


def raw_r2(features: dict[str, np.ndarray]) -> np.ndarray:
    """Uncalibrated estimate of R²_i: 1 − the MC-dropout spread (0 spread reads as R²_i = 1)."""
    return 1.0 - np.asarray(features["mc"], dtype=np.float64)


def flag_rates(flagged: np.ndarray, r2: np.ndarray, in_family: np.ndarray) -> dict[str, Any]:
    """Recall of instances with R²_i < BAD_R2, false flags among good in-family ones, fraction flagged."""
    bad, fam = np.asarray(r2) < BAD_R2, np.asarray(in_family, dtype=bool)
    good_fam = fam & ~bad
    return {"n": len(r2), "n_bad": int(bad.sum()), "flagged": float(np.mean(flagged)) if len(r2) else 0.0,
            "recall": float(flagged[bad].mean()) if bad.any() else None,
            "false_flags_in_family": float(flagged[good_fam].mean()) if good_fam.any() else None,
            "false_flags_all": float(flagged[~bad].mean()) if (~bad).any() else None}


def save_calibration(path: Path, cal: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(cal, indent=1) + "\n").encode())


def load_calibration(path: Path) -> dict[str, Any] | None:
    """trust.json, or None when absent; ValueError naming the file when it is not a calibration."""
    if not path.is_file():
        return None
    try:
        cal = json.loads(path.read_text())
        assert set(cal["features"]) <= set(FEATURES) and len(cal["coef"]) == len(cal["features"]) + 1
        float(cal["threshold"])
    except Exception as err:
        raise ValueError(f"{path}: not a trust calibration ({type(err).__name__}: {err}); expected the JSON "
                         "written by python -m qdgan.apply.calibrate") from None
    return cal


def assess(cal: dict[str, Any] | None, features: dict[str, np.ndarray], threshold: float | None) -> dict[str, Any]:
    """Per-instance estimated R²_i and flags: calibrated when `cal`, else the raw MC estimate; `threshold`
    (flag when the estimate is below it) overrides the calibration's (null: calibration's, else BAD_R2)."""
    missing = [f for f in (cal or {}).get("features", []) if f not in features]
    if cal is not None and missing:
        raise ValueError(f"trust calibration uses feature(s) {missing} that this run cannot compute "
                         f"(available: {sorted(features)})")
    est = estimate_r2(cal, features) if cal is not None else raw_r2(features)
    thr = float(threshold) if threshold is not None else float(cal["threshold"]) if cal is not None else BAD_R2
    return {"estimated_r2": est, "flagged": est < thr, "threshold": thr, "calibrated": cal is not None}


def trust_report(state: dict[str, Any], per: dict[str, np.ndarray], labels: list[str], seconds: float,
                 ed_seconds: float | None, advice: str = "verify=auto re-solves them by ED") -> dict[str, Any]:
    """The report's `trust` entry: per-instance estimates and flags, the threshold, calibration note, and
    the warning naming the flagged instances (None when none is flagged)."""
    flagged, thr = np.flatnonzero(per["flagged"]), state["threshold"]
    thr = float(thr) if thr is not None else float(state["cal"]["threshold"]) if state["cal"] else BAD_R2
    warning = None
    if flagged.size:
        named = ", ".join(f"{labels[i]} ({per['estimated_r2'][i]:.3f})" for i in flagged[:3])
        redo = state.get("recheck")  # then the flags are those a reduced-basis ED confirmed, the values its R²_pc
        warning = (f"trust: {flagged.size} of {len(labels)} prediction(s) have estimated R²_i below {thr:.3f}"
                   + (f", confirmed by a reduced-basis ED (R²_pc < {redo['threshold']:.3f})" if redo else "")
                   + f" ({named}{', ...' if flagged.size > 3 else ''}): likely wrong"
                   + ("; re-solved by ED (verify=auto)" if ed_seconds is not None else
                      f"; {advice}") + ("" if state["cal"] else f" [{state['note']}]"))
    return {"calibrated": state["cal"] is not None, "note": state["note"], "input_stats": state["stats_note"],
            "threshold": thr, "k": state["k"], "seconds": seconds, "n_flagged": int(flagged.size),
            "n_from_ed": int(per["from_ed"].sum()), "ed_seconds": ed_seconds, "warning": warning,
            "estimated_r2": per["estimated_r2"].tolist(), "flagged": per["flagged"].tolist(),
            "from_ed": per["from_ed"].tolist()}
