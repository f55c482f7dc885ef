"""benchmarks/trust.py's leave-one-set-out check: each out-of-family calibration set is scored by a calibration
that never saw it (numpy only, synthetic features)."""

from __future__ import annotations

import importlib.util

import numpy as np
from tiny import ROOT

from qdgan.apply import trust


def _bench():
    spec = importlib.util.spec_from_file_location("trust_bench", ROOT / "benchmarks" / "trust.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_leave_one_set_out_scores_each_kind_with_a_calibration_that_never_saw_it():
    rng = np.random.default_rng(0)
    tta = np.concatenate([10 ** rng.uniform(-4, -3, 200), 10 ** rng.uniform(-3, -0.5, 200),
                          10 ** rng.uniform(-3, -0.5, 100)])
    err = 2 * tta * np.exp(rng.normal(0, 0.1, len(tta)))
    hidden = np.arange(400, 410)  # kind B: 10 failures that look perfect to the feature
    tta[hidden], err[hidden] = 1e-4, 0.5
    data = {"features": {"tta": tta}, "r2": 1 - err, "in_family": np.arange(len(tta)) < 200,
            "set": np.array(["val"] * 200 + ["A"] * 200 + ["B"] * 100)}
    loso = _bench().leave_one_set_out(data, ["tta"], 0.98)
    assert set(loso["by_set"]) == {"A", "B"}
    assert loso["n_bad"] == int((data["r2"][200:] < trust.BAD_R2).sum())
    assert loso["by_set"]["A"]["recall"] == 1.0  # A's failures are like B's visible ones
    # left out, B's hidden failures are estimated as good; a calibration that sees them flags them (recall rule)
    b_bad = loso["by_set"]["B"]["n_bad"]
    assert b_bad == int((data["r2"][400:] < trust.BAD_R2).sum()) > 10
    assert loso["by_set"]["B"]["recall"] == (b_bad - 10) / b_bad
    full = trust.calibrate(data["features"], data["r2"], data["in_family"], 0.98, ["tta"])
    assert trust.assess(full, {"tta": tta[hidden]}, None)["flagged"].all()
