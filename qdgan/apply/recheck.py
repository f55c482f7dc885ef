"""Recheck: a reduced-basis ED of the instances the trust estimate flags, a sharp second opinion on them.

The network's own error features (tta, knn) cannot see a confident mistake: two separated wells whose charge
the network shares out wrongly, identically in every symmetric pass (docs/inverse.md, "Trust"). ED in a reduced
basis (fewer sine functions and orbitals than the physics config's, ~4× cheaper than the full ED) gets that
balance right, so a flagged prediction is compared with it: R²_pc = R²_i of the prediction against the reduced-ED
density (trust.r2_per_instance). The flag stands when R²_pc < `threshold`, the higher of two rules at
calibration: from the reduced ED's own error e = ‖n_reduced − n‖ / ‖n − β̄‖ (by the triangle inequality an
instance with R²_i < BAD_R2 has √(1 − R²_pc) ≳ √(1 − BAD_R2) − e), and the lowest that keeps the calibration's
flagged bad instances flagged (`--recall`). Numpy only (ED workers re-import the apply modules).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from physics.config import PhysicsConfig
from qdgan.apply import InputError
from qdgan.apply.trust import BAD_R2, r2_per_instance

# the reduced bases `calibrate --recheck auto` tries in turn, as fractions of the data's: the first is 20 of 32 sine
# functions per axis and 10 of 16 orbitals for the paper's system (9.2 vs 33.7 ms per N = 2 solve, recheck_basis.py)
FRACTIONS = (0.625, 0.75, 0.875)
ERROR_QUANTILE = 0.99  # of the reduced ED's error at calibration, which sets the threshold
# With a recheck the estimate flags errors down to 1/ESTIMATE_MARGIN of its calibrated cut (0.994 → 0.996 on the
# mixture model), chosen on validation sets of unseen kinds (data/unseen_fresh, unseen_fresh2: recall 94.4 and 93.4 %
# at 1, 97.2 and 96.7 % at 1.5, verify=auto still ≥ ×5; docs/results.md, "The reduced-basis recheck")
ESTIMATE_MARGIN = 1.5


def reduced_config(physics: PhysicsConfig, n_basis: int, n_orbitals: int) -> PhysicsConfig:
    """`physics` with a smaller ED basis; InputError naming the field when it is not smaller or cannot hold N."""
    for name, value, full in (("n_basis", n_basis, physics.n_basis), ("n_orbitals", n_orbitals, physics.n_orbitals)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= full:
            raise InputError(f"trust recheck {name}={value!r}: expected an integer in [1, {full}] (the physics "
                             f"config's {name}; a recheck solves in a smaller basis)")
    if 2 * n_orbitals < physics.n_electrons:
        raise InputError(f"trust recheck n_orbitals={n_orbitals}: {physics.n_electrons} electrons need at least "
                         f"{(physics.n_electrons + 1) // 2} orbitals")
    return dataclasses.replace(physics, n_basis=n_basis, n_orbitals=n_orbitals)


def default_basis(physics: PhysicsConfig, fraction: float = FRACTIONS[0]) -> tuple[int, int]:
    """(n_basis, n_orbitals): `fraction` of the full basis, with enough orbitals for N."""
    return (max(1, round(fraction * physics.n_basis)),
            max((physics.n_electrons + 1) // 2, round(fraction * physics.n_orbitals)))


def reduced_error(reduced: np.ndarray, truth: np.ndarray, mean_image: np.ndarray) -> np.ndarray:
    """e = ‖n_reduced − n‖ / ‖n − β̄‖ per instance: the reduced ED's error in units of R²_i's denominator."""
    return np.sqrt(np.maximum(1.0 - r2_per_instance(reduced, truth, mean_image), 0.0))


def threshold(errors: np.ndarray, quantile: float = ERROR_QUANTILE) -> float:
    """R²_pc below which a rechecked instance stays flagged: 1 − (√(1 − BAD_R2) − e_q)², e_q the `quantile` of the
    reduced ED's measured errors; ValueError when e_q is too large for the check to tell R²_i < BAD_R2."""
    e_q = float(np.quantile(np.asarray(errors, np.float64), quantile))
    margin = np.sqrt(1.0 - BAD_R2) - e_q
    if margin <= 0.1 * np.sqrt(1.0 - BAD_R2):
        raise ValueError(f"the reduced basis errs by {e_q:.3f} (its {quantile:.0%} quantile; R²_i 1 − e²): too coarse "
                         f"to check R²_i < {BAD_R2}; choose a larger n_basis/n_orbitals")
    return float(1.0 - margin**2)


def widen(threshold: float, margin: float = ESTIMATE_MARGIN) -> float:
    """The estimate's flag threshold with a recheck behind it: estimated errors down to 1/`margin` of the calibrated
    cut are rechecked (a recheck costs ~1/4 of an ED solve, so extra suspects are cheap and misses are not)."""
    return float(1.0 - (1.0 - threshold) / margin)


def settings(cal: dict[str, Any] | None, enabled: bool) -> dict[str, Any] | None:
    """The calibration's recheck (n_basis, n_orbitals, threshold), or None when off or not calibrated."""
    return dict(cal["recheck"]) if enabled and cal is not None and cal.get("recheck") else None


def reduced_of(recheck: dict[str, Any], physics: PhysicsConfig) -> PhysicsConfig:
    """The reduced configuration of a calibration's recheck for `physics`."""
    return reduced_config(physics, int(recheck["n_basis"]), int(recheck["n_orbitals"]))


def apply(recheck: dict[str, Any], solver: Any, reduced: PhysicsConfig, x: np.ndarray, pred: np.ndarray,
          est: dict[str, Any], mean_image: np.ndarray, labels: list[str], target: str = "n_int") -> np.ndarray:
    """Recheck the flagged instances of one chunk (potentials x, predicted `target` densities) in place, solved in
    the `reduced` configuration (`reduced_of`): their estimate becomes R²_pc and their flag R²_pc < threshold.
    Returns the mask of rechecked instances."""
    flagged = np.flatnonzero(est["flagged"])
    done = np.zeros(len(x), bool)
    if flagged.size:
        reduced = solver.solve(x[flagged], [labels[i] for i in flagged], cfg=reduced)
        r2_pc = r2_per_instance(pred[flagged], reduced.n_int if target == "n_int" else reduced.n0, mean_image)
        est["estimated_r2"] = np.array(est["estimated_r2"], np.float64)
        est["estimated_r2"][flagged] = r2_pc
        est["flagged"] = np.array(est["flagged"], bool)
        est["flagged"][flagged] = r2_pc < float(recheck["threshold"])
        done[flagged] = True
    return done
