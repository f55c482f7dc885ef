"""The reduced-basis recheck of flagged predictions (qdgan/apply/recheck.py): the basis and threshold rules, the
ED pool's per-chunk configuration, and predict's flags with a recheck in the exact (full) basis, where R²_pc is
the true R²_i against ED."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from tiny import ROOT, TINY_PHYSICS, compose_app, train_tiny

from physics.config import PhysicsConfig
from physics.dataset import open_dataset
from physics.ed import solve
from qdgan.apply import InputError, calibrate, recheck, trust
from qdgan.apply.ed_batch import Solver
from qdgan.apply.predict import run_predict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpt(tiny_data, tmp_path_factory) -> Path:
    return train_tiny(tiny_data, tmp_path_factory.mktemp("v_to_nint"), "v_to_nint")


def test_reduced_basis_is_a_fraction_and_bad_sizes_are_named():
    paper = PhysicsConfig()
    assert (paper.n_basis, paper.n_orbitals) == (32, 16) and recheck.default_basis(paper) == (20, 10)
    small = recheck.reduced_config(paper, 20, 10)
    assert (small.n_basis, small.n_orbitals, small.length_nm, small.grid) == (20, 10, paper.length_nm, paper.grid)
    with pytest.raises(InputError, match=r"n_basis=40: expected an integer in \[1, 32\]"):
        recheck.reduced_config(paper, 40, 10)
    with pytest.raises(InputError, match="n_orbitals=1: 3 electrons need at least 2 orbitals"):
        recheck.reduced_config(dataclasses.replace(paper, n_electrons=3), 20, 1)


def test_threshold_follows_the_triangle_inequality():
    assert recheck.threshold(np.zeros(10)) == pytest.approx(trust.BAD_R2)  # an exact recheck: R²_pc is R²_i
    e = np.full(100, 0.05)
    assert recheck.threshold(e) == pytest.approx(1 - (np.sqrt(1 - trust.BAD_R2) - 0.05) ** 2)
    # an instance at R²_i = BAD_R2 whose reduced density errs by e away from the prediction still falls below it
    with pytest.raises(ValueError, match="too coarse"):
        recheck.threshold(np.full(10, 0.3))


def test_solver_solves_a_chunk_in_another_configuration(tiny_data):
    cfg = open_dataset(tiny_data).config
    v = open_dataset(tiny_data).potential[:3]
    small = recheck.reduced_config(cfg, 6, 3)
    with Solver(cfg, 1, 6, False) as solver:
        full, reduced = solver.solve(v), solver.solve(v, cfg=small)
    for i in range(3):
        np.testing.assert_allclose(reduced.n_int[i], solve(v[i], small).n_int, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(full.n_int[i], solve(v[i], cfg).n_int, rtol=1e-5, atol=1e-7)
    assert not np.allclose(full.n_int, reduced.n_int, atol=1e-6)


def test_exact_recheck_replaces_the_estimate_by_the_true_r2(ckpt, tiny_data, tmp_path):
    out = tmp_path / "t.json"
    cal = calibrate.main(["--checkpoint", str(ckpt), "--set", f"{tiny_data}@val", "--set", f"{tiny_data}@0:30",
                          "--k", "0", "--features", "tta", "--recheck", "10,4", "--workers", "1", "--out", str(out)])
    r = cal["recheck"]
    assert (r["n_basis"], r["n_orbitals"], r["threshold"]) == (10, 4, pytest.approx(trust.BAD_R2, abs=1e-5))
    assert r["error_max"] < 1e-3 and trust.load_calibration(out)["recheck"] == r
    base = max(v for k, v in cal["threshold_rules"].items() if k != "widened_for_recheck" and v is not None)
    assert cal["threshold"] == cal["threshold_rules"]["widened_for_recheck"] == pytest.approx(recheck.widen(base))
    args = ["indices=0:8", "batch_size=4", "chunk_size=4", f"trust.calibration={out}", "trust.threshold=1.01"]
    base = [f"checkpoint={ckpt}", f"input={tiny_data}", "report=null", "panels=null", "ed.workers=1",
            "ed.progress=false", *TINY_PHYSICS, *args]
    report = run_predict(compose_app("predict", [*base, f"output={tmp_path / 'p.h5'}"]))
    t, ds = report["trust"], open_dataset(tiny_data)
    assert t["n_rechecked"] == 8 and t["recheck"]["threshold"] == r["threshold"] and t["recheck_seconds"] > 0
    with h5py.File(tmp_path / "p.h5") as f:
        pred, est, flagged, redone = f["n_int"][...], f["estimated_r2"][...], f["flagged"][...], f["rechecked"][...]
    true_r2 = trust.r2_per_instance(pred, ds.n_int[:8], _mean(ckpt))
    assert redone.all()
    np.testing.assert_allclose(est, true_r2, atol=1e-4)  # the full-basis recheck is ED itself
    np.testing.assert_array_equal(flagged, est < r["threshold"])
    assert flagged.any() and any(f"confirmed by a reduced-basis ED (R²_pc < {r['threshold']:.3f})" in w
                                 for w in report["warnings"])
    off = run_predict(compose_app("predict", [*base, f"output={tmp_path / 'q.h5'}", "trust.recheck=false"]))
    assert off["trust"]["n_rechecked"] == 0 and off["trust"]["n_flagged"] == 8 and off["trust"]["recheck"] is None


def _mean(ckpt: Path) -> np.ndarray:
    from qdgan.apply import checkpoint

    return checkpoint.load_model(ckpt).target_mean.cpu().numpy()


def test_calibrate_refuses_a_basis_larger_than_the_data_in_one_line(ckpt, tiny_data):
    run = subprocess.run([sys.executable, "-m", "qdgan.apply.calibrate", "--checkpoint", str(ckpt), "--set",
                          f"{tiny_data}@val", "--k", "0", "--features", "tta", "--recheck", "12,4", "--workers", "1",
                          "--out", "/dev/null"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith("qdgan.apply.calibrate: error: trust recheck n_basis=12: "
                                                          "expected an integer in [1, 10]")


def test_recheck_turns_off_with_a_warning_when_ed_cannot_run(ckpt, tiny_data, tmp_path):
    """verify=false and an .npy input whose physics group does not match the checkpoint: predictions are still
    made, the flags stay the estimate's, and a warning says why the recheck is off."""
    out = tmp_path / "t.json"
    calibrate.main(["--checkpoint", str(ckpt), "--set", f"{tiny_data}@val", "--k", "0", "--features", "tta",
                    "--recheck", "10,4", "--workers", "1", "--out", str(out)])
    np.save(tmp_path / "v.npy", open_dataset(tiny_data).potential[:4])
    report = run_predict(compose_app("predict", [
        f"checkpoint={ckpt}", f"input={tmp_path / 'v.npy'}", f"output={tmp_path / 'p.h5'}", "report=null",
        "panels=null", "ed.workers=1", *TINY_PHYSICS, "physics.length_nm=40.0", f"trust.calibration={out}",
        "trust.threshold=1.01"]))
    assert report["trust"]["n_flagged"] == 4 and report["trust"]["n_rechecked"] == 0
    assert any(w.startswith("trust recheck off (flags stay the estimate's): the physics config does not match")
               for w in report["warnings"])


def test_recall_rule_keeps_the_flagged_bad_instances():
    assert trust.recall_threshold(np.array([0.93, 0.5, 0.8]), 0.98) == pytest.approx(0.93)
    assert trust.recall_threshold(np.array([0.93, 0.5, 0.8]), 0.98) > 0.93  # strictly: all three stay below it
    assert trust.recall_threshold(np.array([0.93, 0.5, 0.8]), 0.6) == pytest.approx(0.8)
    assert trust.recall_threshold(np.array([]), 0.98) is None


def test_widened_estimate_threshold_sends_more_suspects_to_the_recheck():
    assert recheck.widen(0.994, 1.5) == pytest.approx(0.996) and recheck.widen(0.994, 1.0) == pytest.approx(0.994)
