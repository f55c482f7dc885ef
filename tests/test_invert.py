"""`python -m qdgan.invert` (paper Fig. 6): a tiny end-to-end inversion — train n_int ↦ V for a few
steps, generate Ṽ, re-solve it by ED, compare — plus projections, references, warnings and errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from tiny import ROOT, TINY_PHYSICS, compose_app, train_tiny

from physics.dataset import open_dataset
from physics.ed import solve
from qdgan.apply.inputs import InputError
from qdgan.apply.invert import project, run_invert

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpt(tiny_data, tmp_path_factory) -> Path:
    return train_tiny(tiny_data, tmp_path_factory.mktemp("nint_to_v"), "nint_to_v")


def invert_cfg(ckpt: Path, inp: Path | str, out: Path, *extra: str):
    return compose_app("invert", [f"checkpoint={ckpt}", f"input={inp}", f"out_dir={out}", "n_panels=0",
                                  "ed.workers=1", *TINY_PHYSICS, *extra])


def test_project_onto_admissible_potentials():
    v = np.array([[-0.1, 0.1, 0.3, 0.7]], np.float32)
    np.testing.assert_array_equal(project(v, "none", 0.0, 0.5), v)
    np.testing.assert_allclose(project(v, "clip", 0.0, 0.5), [[0.0, 0.1, 0.3, 0.5]])
    np.testing.assert_array_equal(project(v, "snap", 0.0, 0.5), [[0.0, 0.0, 0.5, 0.5]])
    with pytest.raises(InputError, match="projection='round'"):
        project(v, "round", 0.0, 0.5)


def test_end_to_end_inversion_of_the_test_split(ckpt, tiny_data, tmp_path):
    result = run_invert(invert_cfg(ckpt, tiny_data, tmp_path, "split=test", "n_panels=2"))
    saved = json.loads((tmp_path / "invert_metrics.json").read_text())
    assert saved["n"] == result["n"] == 10 and saved["projection"] == "none"
    assert saved["rows"] == json.loads((ckpt.parents[1] / "metrics.json").read_text())["indices"]
    for key in ("potential", "density"):
        m = saved[key]
        assert np.isfinite(m["r2"]) and set(m["mean"]) == {"l1", "l2", "linf", "ssim", "mssim", "ssim_pm1"}
        assert len(m["per_sample"]["l2"]) == 10
    assert saved["potential"]["units"]["l1"] == "eV" and saved["density"]["units"]["l1"] == "nm^-2"
    assert saved["r2_mean_image"]["density"].startswith("mean of the input n_int maps over the 10")
    assert len(saved["energy"]["per_sample"]) == 10
    ds = open_dataset(tiny_data)
    with h5py.File(tmp_path / "inversion.h5") as f:
        k = 3  # n_int^(r) is the ED density of the generated Ṽ, with the data set's own physics
        gs = solve(f["potential"][k], ds.config)
        np.testing.assert_allclose(f["n_int_r"][k], gs.n_int, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(f["n_int"][...], ds.n_int[f["index"][...]])
        np.testing.assert_array_equal(f["potential_ref"][...], ds.potential[f["index"][...]])
        assert "potential_raw" not in f
    rows = list(csv.DictReader((tmp_path / "invert_instances.csv").open()))
    assert len(rows) == 10 and float(rows[0]["n_l1"]) == pytest.approx(saved["density"]["per_sample"]["l1"][0])
    check = saved["density_check"]
    assert check["tolerance"] == 0.1 and check["flagged"] == [r > 0.1 for r in saved["relative_l2"]]
    assert [row["n_flagged"] == "True" for row in rows] == check["flagged"]
    seen = saved["potential_seen"]
    assert len(seen["per_sample"]) == 10 and seen["worst"] == min(seen["per_sample"]) <= seen["median"] <= 1
    assert float(rows[4]["v_r2_seen"]) == pytest.approx(seen["per_sample"][4])
    assert (tmp_path / "figures" / "fig6.png").stat().st_size > 1000


def test_npy_densities_with_and_without_reference_and_snap(ckpt, tiny_data, tmp_path):
    ds = open_dataset(tiny_data)
    np.save(tmp_path / "n.npy", ds.n_int[:4])
    np.save(tmp_path / "v.npy", ds.potential[:4])
    plain = run_invert(invert_cfg(ckpt, tmp_path / "n.npy", tmp_path / "a"))
    assert plain["potential"] is None and plain["density"]["n"] == 4
    assert "physics config group" in plain["physics_source"]
    ref = run_invert(invert_cfg(ckpt, tmp_path / "n.npy", tmp_path / "b", f"reference={tmp_path / 'v.npy'}",
                                "projection=snap", f"output={tmp_path / 'b' / 'vt.npy'}"))
    assert ref["potential"]["n"] == 4 and ref["reference_potential"] == str(tmp_path / "v.npy")
    snapped = np.load(tmp_path / "b" / "vt.npy")
    assert set(np.unique(snapped)) <= {0.0, 0.5}
    with h5py.File(tmp_path / "b" / "inversion.h5") as f:
        np.testing.assert_array_equal(f["potential"][...], snapped)
        assert f["potential_raw"].shape == (4, 64, 64)


def test_densities_that_do_not_integrate_to_n_warn_with_the_values(ckpt, tiny_data, tmp_path):
    ds = open_dataset(tiny_data)
    n = ds.n_int[:3]
    n[2] *= 1.5
    n[0] = ds.potential[0]  # a potential given to the density ↦ potential model
    np.save(tmp_path / "n.npy", n)
    result = run_invert(invert_cfg(ckpt, tmp_path / "n.npy", tmp_path / "out", "checks.range_tolerance=100"))
    (warning,) = [w for w in result["warnings"] if not w.startswith("density check:")]  # that one: tested below
    assert "2 of 3 density map(s) do not integrate to N = 2: h²·Σn = " in warning and "3 (row 2)" in warning
    assert "; 1 of them look like potentials, not densities" in warning
    assert result["input_charge"][2] == pytest.approx(3.0, rel=1e-5)
    assert (tmp_path / "out" / "invert_metrics.json").exists()


@pytest.mark.parametrize("case", ["existing", "in_data_set"])
def test_outputs_over_files_or_into_a_data_set_are_refused_before_any_work(ckpt, tiny_data, tmp_path, case):
    np.save(tmp_path / "n.npy", open_dataset(tiny_data).n_int[:2])
    out = tmp_path / "out"
    if case == "existing":
        (out / "figures").mkdir(parents=True)
        (out / "figures" / "fig6.png").write_bytes(b"old")
        extra, match = ["n_panels=1"], r"fig6.png already exists; choose another name or set overwrite=true"
    else:
        extra, match = [f"output={tiny_data / 'vt.h5'}"], "lies in the data-set folder"
    before = sorted(p.name for p in tiny_data.iterdir())
    with pytest.raises(InputError, match=match):
        run_invert(invert_cfg(ckpt, tmp_path / "n.npy", out, *extra, "checkpoint=missing.ckpt"))
    assert sorted(p.name for p in tiny_data.iterdir()) == before
    if case == "existing":
        assert (out / "figures" / "fig6.png").read_bytes() == b"old"
        assert not (out / "invert_metrics.json").exists()


def test_physics_config_must_match_the_checkpoint(ckpt, tiny_data, tmp_path):
    np.save(tmp_path / "n.npy", open_dataset(tiny_data).n_int[:2])
    with pytest.raises(InputError, match=r"physics.length_nm=40.*h² = 0.3906.*h² = 0.2197"):
        run_invert(invert_cfg(ckpt, tmp_path / "n.npy", tmp_path / "out", "physics.length_nm=40"))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_forward_checkpoint_is_rejected_in_one_line_without_outputs(ckpt, tiny_data, tmp_path):
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    state["hyper_parameters"] |= {"mapping": "v_to_nint", "input_name": "potential", "target_name": "n_int"}
    torch.save(state, tmp_path / "forward.ckpt")
    np.save(tmp_path / "n.npy", open_dataset(tiny_data).n_int[:2])
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "qdgan.invert", f"checkpoint={tmp_path / 'forward.ckpt'}",
         f"input={tmp_path / 'n.npy'}", f"output={out / 'vt.npy'}", f"hydra.run.dir={out}", *TINY_PHYSICS],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines == [lines[-1]] and "Traceback" not in proc.stderr, proc.stderr
    assert lines[-1].startswith("qdgan.invert: error: checkpoint=") and "maps potential ↦ n_int" in lines[-1]
    assert not any(p.suffix in (".npy", ".h5", ".json", ".csv", ".png") for p in out.rglob("*"))


def test_two_blob_density_no_potential_made_is_inverted_and_checked(ckpt, tmp_path, capsys):
    """Item 4: a drawn two-Gaussian-blob density, normalized to N: Ṽ is proposed, solved by ED, and the
    run says how close ED(Ṽ) comes to the target (one instance: R² undefined, relative L2 given)."""
    from qdgan.apply.invert import blob_density

    n = blob_density(64, 30.0, 2, [(8.0, 15.0, 2.0, 1.0), (22.0, 15.0, 2.0, 1.0)])
    assert n.shape == (64, 64) and (30.0 / 64) ** 2 * n.sum(dtype=np.float64) == pytest.approx(2, rel=1e-5)
    assert n[17, 32] > 100 * n[32, 32] and n[46, 32] == pytest.approx(n[17, 32], rel=1e-3)  # two blobs along x
    np.save(tmp_path / "blobs.npy", n)
    result = run_invert(invert_cfg(ckpt, tmp_path / "blobs.npy", tmp_path / "out", "n_panels=1"))
    assert result["n"] == 1 and result["potential"] is None and result["density"]["r2"] is None
    assert not any("integrate" in w for w in result["warnings"])  # h²·Σn = N
    rel = result["relative_l2"][0]
    assert np.isfinite(rel) and rel > 0 and len(result["trust"]["estimated_r2"]) == 1
    with h5py.File(tmp_path / "out" / "inversion.h5") as f:
        np.testing.assert_array_equal(f["n_int"][0], n)
        got = f["n_int_r"][0]
    assert rel == pytest.approx(np.linalg.norm(got - n) / np.linalg.norm(n), rel=1e-5)
    assert "how close ED(Ṽ) comes" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["0", "1.5", "'much'"])
def test_seen_fraction_outside_zero_one_is_refused(ckpt, tiny_data, tmp_path, bad):
    with pytest.raises(InputError, match=r"seen_fraction=.*expected a number in \(0, 1\)"):
        run_invert(invert_cfg(ckpt, tiny_data, tmp_path, "split=test", f"seen_fraction={bad}"))


def test_density_check_flags_and_warns_by_the_measured_residual(ckpt, tiny_data, tmp_path):
    """Every Ṽ whose ED density misses n by more than the tolerance is flagged, named in a warning."""
    result = run_invert(invert_cfg(ckpt, tiny_data, tmp_path, "split=test", "checks.density_tolerance=1e-12"))
    assert result["density_check"]["n_flagged"] == 10 and all(result["density_check"]["flagged"])
    assert any(w.startswith("density check: 10 of 10 Ṽ do not reproduce their density") for w in result["warnings"])
    with pytest.raises(InputError, match=r"checks.density_tolerance=-1: expected a positive number"):
        run_invert(invert_cfg(ckpt, tiny_data, tmp_path / "b", "split=test", "checks.density_tolerance=-1"))
