"""The per-instance trust estimate (qdgan/apply/trust.py, uncertainty.py, calibrate.py) and `verify=auto`:
MC-dropout spread, input distances, calibration round trip, flags, and ED for exactly the flagged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from tiny import ROOT, TINY_PHYSICS, compose_app, train_tiny

from physics.dataset import open_dataset
from qdgan.apply import InputError, calibrate, checkpoint, trust
from qdgan.apply.predict import run_predict
from qdgan.apply.uncertainty import bottleneck_capture, features, input_stats, mc_spread, symmetries, tta_spread

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpt(tiny_data, tmp_path_factory) -> Path:
    return train_tiny(tiny_data, tmp_path_factory.mktemp("v_to_nint"), "v_to_nint")


def predict_cfg(ckpt: Path, inp: Path | str, out: Path, *extra: str):
    return compose_app("predict", [f"checkpoint={ckpt}", f"input={inp}", f"output={out / 'p.h5'}",
                                   f"report={out / 'report.json'}", "panels=null", "ed.workers=1", "ed.progress=false",
                                   *TINY_PHYSICS, *extra])


def test_mc_spread_is_zero_without_dropout_and_positive_with_it(ckpt, tiny_data):
    model = checkpoint.load_model(ckpt)
    x = open_dataset(tiny_data).potential[:6]
    spread = mc_spread(model, x, k=4, batch_size=4)
    assert spread.shape == (6,) and (spread > 0).all()
    np.testing.assert_array_equal(mc_spread(model, x, k=4, batch_size=4), spread)  # seeded
    assert not mc_spread(model, x, k=1).any()  # one pass has no spread
    assert not any(m.training for m in model.modules())  # the dropout layers are back in eval mode
    for m in model.eval_generator.modules():  # the EMA copy where there is one (MC dropout samples it)
        if isinstance(m, torch.nn.Dropout):  # UniformDropout too (model.uniform_dropout)
            m.p = 0.0
    assert not mc_spread(model, x, k=4).any()


def test_input_distance_is_larger_for_alien_inputs(ckpt, tiny_data):
    model = checkpoint.load_model(ckpt)
    stats, note = input_stats(ckpt, model, checkpoint.run_config(ckpt))
    assert stats is not None and (trust.run_dir(ckpt) / trust.INPUT_STATS).is_file(), note
    x = open_dataset(tiny_data).potential[50:60]  # the tiny run's test split lies in 50:60 or so; unseen maps
    noise = np.random.default_rng(0).uniform(0, 0.5, (10, 64, 64)).astype(np.float32)  # in range, alien
    out_of_range = (3 * x - 0.5).astype(np.float32)  # wells at −0.5 eV, steps at 1 eV

    def feats(v: np.ndarray) -> dict[str, np.ndarray]:
        return features(model, v, model.predict_maps(torch.from_numpy(v)).numpy(), 2, 10, stats)

    near, far, wide = feats(x), feats(noise), feats(out_of_range)
    assert np.median(far["d_res"]) > 1.5 * np.median(near["d_res"])
    assert np.median(wide["d_res"]) > 2 * np.median(near["d_res"])
    assert np.median(wide["d_pca"]) > 2 * np.median(near["d_pca"])
    cached, _ = input_stats(ckpt, model, None)  # read back from the cache, no config needed
    np.testing.assert_array_equal(cached["components"], stats["components"])
    # the local features: the bottleneck reference of the training inputs is cached with the components
    assert set(trust.LOCAL) <= set(near) and len(stats["ref_points"]) == len(stats["ref_own"]) > trust.K_NEIGHBOURS
    assert 0.7 < np.median(near["knn"]) < 1.4  # unseen maps of the training kind: as close as training maps are
    assert np.median(wide["knn"]) > 2 * np.median(near["knn"]) and np.median(far["knn"]) > np.median(near["knn"])
    assert all(np.isfinite(near[f]).all() and (near[f] >= 0).all() for f in ("tta", *trust.LOCAL))
    cache = trust.run_dir(ckpt) / trust.INPUT_STATS  # a cache from before the local features, no training data
    trust.save_input_stats(cache, {k: v for k, v in stats.items() if not k.startswith("ref_")})
    older, note = input_stats(ckpt, model, None)
    assert "ref_points" not in older and np.array_equal(older["components"], stats["components"]), note
    trust.save_input_stats(cache, stats)


def test_tta_is_zero_for_an_equivariant_map_and_not_for_others():
    x = torch.rand(5, 16, 16, dtype=torch.float64)
    group = symmetries()
    assert len(group) == 8 and all(torch.equal(inv(g(x)), x) for g, inv in group)
    assert len({tuple(g(torch.arange(16.0).reshape(1, 4, 4)).flatten().tolist()) for g, _ in group}) == 8  # distinct
    blur = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=torch.float64)[None, None] / 16  # D4-symmetric

    def equivariant(v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(v[:, None] ** 2, blur, padding=1)[:, 0]

    mean = torch.zeros(16, 16, dtype=torch.float64)
    assert tta_spread(equivariant, x, mean).abs().max() < 1e-12
    assert (tta_spread(lambda v: torch.roll(v, 1, dims=-1), x, mean) > 1e-3).all()  # a shift is not equivariant
    ramp = torch.linspace(0, 1, 16, dtype=torch.float64)
    assert (tta_spread(lambda v: v * ramp, x, mean) > 1e-3).all()
    assert len(symmetries(square=False)) == 4


def test_tta_takes_the_first_passes_and_the_callers_identity_pass():
    x = torch.rand(3, 8, 8, dtype=torch.float64)
    group = symmetries()
    assert torch.equal(group[0][0](x), x)  # identity first: its pass is the caller's prediction
    assert [g(torch.arange(4.0).reshape(2, 2)).flatten().tolist() for g, _ in group[:4]] == \
        [[0, 1, 2, 3], [3, 2, 1, 0], [0, 2, 1, 3], [3, 1, 2, 0]]  # trust.SYMMETRY_ORDER: e, r180, the 2 diagonals
    calls = []

    def ramp(v: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return v * torch.linspace(0, 1, 8, dtype=torch.float64)

    mean = torch.zeros(8, 8, dtype=torch.float64)
    full = tta_spread(ramp, x, mean, passes=4)
    assert len(calls) == 4 and (full > 1e-3).all()
    calls.clear()
    assert torch.equal(tta_spread(ramp, x, mean, passes=4, identity=ramp(x)), full) and len(calls) == 1 + 3
    assert not torch.equal(tta_spread(ramp, x, mean, passes=2), full)


def test_knn_ratio_is_one_for_training_like_points_and_large_far_away():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(2000, 6)) * np.array([1, 1, 3, 3, 0.3, 0.3])  # anisotropic: the ratio is local
    stats = trust.fit_reference(ref, np.full(2000, 0.01), np.full(2000, 0.05))
    near = trust.local_features(stats, rng.normal(size=(400, 6)) * np.array([1, 1, 3, 3, 0.3, 0.3]),
                                np.full(400, 0.02), np.full(400, 0.05))
    assert 0.85 < np.median(near["knn"]) < 1.2
    np.testing.assert_allclose(near["tta_local"], 2.0)  # twice the neighbours' typical tta
    np.testing.assert_allclose(near["charge_local"], 1.0)
    far = trust.local_features(stats, ref[:50] + 20.0, np.ones(50), np.ones(50))
    assert np.median(far["knn"]) > 10
    scaled = trust.local_features(trust.fit_reference(7 * ref, stats["ref_tta"], stats["ref_charge"]),
                                  7 * (ref[:50] + 20.0), np.ones(50), np.ones(50))
    np.testing.assert_allclose(scaled["knn"], far["knn"], rtol=1e-6)  # a ratio: no unit
    own, idx = trust.knn_distance(ref[:5], ref, k=3, exclude_self=True)
    assert not (idx == np.arange(5)[:, None]).any() and (own > 0).all()  # a point is not its own neighbour


def test_forward_selection_finds_the_features_that_make_the_error():
    rng = np.random.default_rng(2)
    a, b, noise = 10 ** rng.uniform(-3, -1, 600), 10 ** rng.uniform(-1, 0, 600), rng.uniform(1, 2, 600)
    err = a * b * 10 ** rng.normal(0, 0.05, 600)
    chosen, scores = trust.select({"mc": a, "tta": b, "d_res": noise}, err, ["mc", "tta", "d_res"])
    assert sorted(chosen) == ["mc", "tta"] and scores["+".join(chosen)] > 0.95
    assert scores[chosen[0]] < scores["+".join(chosen)]  # the second feature was added for a gain


def test_calibration_recovers_a_monotone_error_and_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    err = 10 ** rng.uniform(-3, 0, 400)
    feats = {"mc": err * 10 ** rng.normal(0, 0.1, 400), "d_res": rng.uniform(1, 2, 400)}
    r2 = 1 - err
    fam = np.arange(400) < 200
    cal = trust.calibrate(feats, r2, fam, recall=0.95)
    assert "mc" in cal["features"] and cal["spearman_raw"]["mc"] > 0.95
    assert cal["fit"]["recall"] >= 0.95
    trust.save_calibration(tmp_path / "trust.json", cal)
    back = trust.load_calibration(tmp_path / "trust.json")
    np.testing.assert_allclose(trust.estimate_r2(back, feats), trust.estimate_r2(cal, feats))
    assert trust.spearman(1 - trust.estimate_r2(back, feats), err) > 0.95
    got = trust.assess(back, feats, None)
    assert got["calibrated"] and got["threshold"] == cal["threshold"]
    assert trust.flag_rates(got["flagged"], r2, fam)["recall"] >= 0.9
    fixed = trust.calibrate(feats, r2, fam, recall=0.95, names=["d_res"])  # calibrate --features d_res
    assert fixed["features"] == ["d_res"] and list(fixed["spearman_cv"]) == ["d_res"]
    with pytest.raises(ValueError, match=r"\['tta'\] not available"):
        trust.calibrate(feats, r2, fam, names=["tta"])
    (tmp_path / "bad.json").write_text('{"features": ["mc"]}')
    with pytest.raises(ValueError, match=r"bad\.json: not a trust calibration"):
        trust.load_calibration(tmp_path / "bad.json")


def test_threshold_without_bad_calibration_instances_comes_from_the_residuals():
    rng = np.random.default_rng(3)
    err = 10 ** rng.uniform(-4, -1.5, 500)  # every R²_i above 0.968: no instance below BAD_R2 to set a recall
    feats = {"tta": err * 10 ** rng.normal(0, 0.2, 500)}
    cal = trust.calibrate(feats, 1 - err, np.ones(500, bool), recall=0.98)
    rules = cal["threshold_rules"]
    assert rules["recall"] is None and cal["threshold"] == rules["residual_quantile"]
    # flagged where an error underestimated like the worst 2 % of the fit's residuals would exceed 1 − BAD_R2
    # (noise of 0.2 decades: its 98 % quantile, ~0.4 decades, puts the threshold near 1 − 0.1·10^−0.4 = 0.96)
    assert 1 - (1 - trust.BAD_R2) * 10 ** -0.25 < cal["threshold"] < 1 - (1 - trust.BAD_R2) * 10 ** -0.6
    bad = trust.assess(cal, {"tta": np.array([0.1, 0.3, 1e-3])}, None)["flagged"]
    assert bad.tolist() == [True, True, False]
    noisier = trust.calibrate({"tta": err * 10 ** rng.normal(0, 0.6, 500)}, 1 - err, np.ones(500, bool))
    assert noisier["threshold"] > cal["threshold"]  # a worse estimate flags earlier


def test_calibrate_command_and_calibrated_predictions(ckpt, tiny_data, tmp_path):
    with pytest.raises(InputError, match="test split is for evaluation"):
        calibrate.parse_set(f"{tiny_data}@test")
    out = tmp_path / "trust.json"
    cal = calibrate.main(["--checkpoint", str(ckpt), "--set", f"{tiny_data}@val", "--set", f"{tiny_data}@0:30",
                          "--k", "4", "--out", str(out)])
    assert out.is_file() and cal["n"] == 40 and cal["sets"][0].endswith("@val")
    report = run_predict(predict_cfg(ckpt, tiny_data, tmp_path, "indices=0:8", f"trust.calibration={out}"))
    t = report["trust"]
    assert t["calibrated"] and "calibrated by" in t["note"] and len(t["estimated_r2"]) == 8
    assert t["threshold"] == pytest.approx(cal["threshold"])
    with h5py.File(tmp_path / "p.h5") as f:
        np.testing.assert_array_equal(f["estimated_r2"][...], t["estimated_r2"])
    local = cal | {"features": ["tta", "knn", "charge_local"], "coef": [-3.0, 0.5, 1.0, 0.5], "threshold": 0.5}
    trust.save_calibration(tmp_path / "local.json", local)  # the new features, computed at predict time
    report = run_predict(predict_cfg(ckpt, tiny_data, tmp_path / "local", "indices=0:8",
                                     f"trust.calibration={tmp_path / 'local.json'}"))
    assert report["trust"]["k"] == 0 and np.isfinite(report["trust"]["estimated_r2"]).all()  # no MC passes needed


def test_prediction_pass_serves_as_tta_identity_and_passes_follow_the_calibration(ckpt, tiny_data, tmp_path):
    model = checkpoint.load_model(ckpt)
    x = open_dataset(tiny_data).potential[:6]
    stats, _ = input_stats(ckpt, model, checkpoint.run_config(ckpt), passes=3)
    assert trust.reference_passes(stats) == 3  # a cache of other passes (the default) was computed again
    with bottleneck_capture(model) as found:
        pred = model.predict_maps(torch.from_numpy(x), 4).numpy()
    calls = []
    hook = model.eval_generator.register_forward_hook(lambda *_: calls.append(1))
    try:
        reused = features(model, x, pred, 0, 4, stats, passes=3, points=torch.cat(found).numpy())
        assert len(calls) == 2 * 2  # two batches of 4 and 2, each 3 passes less the caller's identity pass
        again = features(model, x, pred, 0, 4, stats, passes=3)  # no bottleneck given: the identity pass runs
        assert len(calls) == 4 + 2 * 3
    finally:
        hook.remove()
    assert set(reused) >= {"tta", *trust.LOCAL}
    for f in ("tta", *trust.LOCAL):
        np.testing.assert_allclose(reused[f], again[f], rtol=1e-5, err_msg=f)
    cal = calibrate.main(["--checkpoint", str(ckpt), "--set", f"{tiny_data}@val", "--set", f"{tiny_data}@0:30",
                          "--k", "0", "--passes", "3", "--features", "tta+knn", "--recheck", "none",
                          "--out", str(tmp_path / "t.json")])
    assert cal["passes"] == 3 and trust.calibration_passes(trust.load_calibration(tmp_path / "t.json")) == 3
    assert trust.calibration_passes({"features": ["tta"]}) == 8  # a calibration from before the setting
    report = run_predict(predict_cfg(ckpt, tiny_data, tmp_path, "indices=0:6",
                                     f"trust.calibration={tmp_path / 't.json'}"))
    np.testing.assert_allclose(report["trust"]["estimated_r2"], trust.estimate_r2(cal, reused), rtol=1e-5)


def test_uncalibrated_estimate_is_noted_and_threshold_flags(ckpt, tiny_data, tmp_path):
    report = run_predict(predict_cfg(ckpt, tiny_data, tmp_path, "indices=0:6", "trust.threshold=2.0",
                                     "trust.calibration=" + str(tmp_path / "none.json")))
    t = report["trust"]
    assert not t["calibrated"] and t["note"].startswith("uncalibrated")
    assert t["n_flagged"] == 6 and t["n_from_ed"] == 0  # every estimate is below 2; no ED without verify=auto
    assert any(w.startswith("trust: 6 of 6") and "uncalibrated" in w for w in report["warnings"])
    off = run_predict(predict_cfg(ckpt, tiny_data, tmp_path / "off", "indices=0:6", "trust.enabled=false"))
    assert off["trust"] is None


def test_verify_auto_returns_ed_maps_exactly_for_the_flagged(ckpt, tiny_data, tmp_path):
    first = run_predict(predict_cfg(ckpt, tiny_data, tmp_path / "a", "indices=0:10", "batch_size=4", "chunk_size=4"))
    est = np.array(first["trust"]["estimated_r2"])
    threshold = float(np.median(est))
    report = run_predict(predict_cfg(ckpt, tiny_data, tmp_path / "b", "indices=0:10", "batch_size=4", "chunk_size=4",
                                     "verify=auto", f"trust.threshold={threshold}"))
    flagged = est < threshold
    assert 0 < flagged.sum() < 10
    ds = open_dataset(tiny_data)
    with h5py.File(tmp_path / "a" / "p.h5") as a, h5py.File(tmp_path / "b" / "p.h5") as b:
        np.testing.assert_array_equal(b["from_ed"][...], flagged)
        np.testing.assert_array_equal(b["flagged"][...], flagged)
        np.testing.assert_allclose(b["n_int"][...][flagged], ds.n_int[:10][flagged], atol=1e-5, rtol=0)
        np.testing.assert_array_equal(b["n_int"][...][~flagged], a["n_int"][...][~flagged])
        assert not np.allclose(a["n_int"][...][flagged], ds.n_int[:10][flagged], atol=1e-5)
    t = report["trust"]
    assert t["n_from_ed"] == flagged.sum() and t["ed_seconds"] > 0 and report["verify"] is None
    assert json.loads((tmp_path / "b" / "report.json").read_text())["trust"]["from_ed"] == flagged.tolist()
    with pytest.raises(InputError, match="verify='maybe'"):
        run_predict(predict_cfg(ckpt, tiny_data, tmp_path / "c", "verify=maybe"))


@pytest.mark.slow
def test_calibrate_command_refuses_a_test_split_in_one_line(ckpt, tiny_data):
    run = subprocess.run([sys.executable, "-m", "qdgan.apply.calibrate", "--checkpoint", str(ckpt), "--set",
                          f"{tiny_data}@test"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.strip().count("\n") == 0
    assert "test split is for evaluation" in run.stderr and not (trust.run_dir(ckpt) / trust.CALIBRATION).exists()


def _manifest(folder: Path, potential: dict | None, n_wells: int = 25) -> Path:
    folder.mkdir(parents=True)
    ident = {"physics": {"grid": 64, "n_wells": n_wells}} | ({"potential": potential} if potential else {})
    (folder / "manifest.json").write_text(json.dumps({"identity": ident}))
    return folder


def test_in_family_means_the_same_generator_distribution(tmp_path):
    from qdgan.apply.calibrate import distributions

    gates = {"family": "gates", "n_dips": [1, 3]}
    mix = {"family": "mix", "weights": {"paper": 0.5, "gates": 0.5, "parabolic": 0.0},
           "components": {"paper": {"family": "paper"}, "gates": gates, "parabolic": {"family": "parabolic"}}}
    home = distributions(_manifest(tmp_path / "mix", mix))
    assert distributions(_manifest(tmp_path / "paper", None)) <= home       # a mixture component
    assert distributions(_manifest(tmp_path / "gates", gates)) <= home
    assert not distributions(_manifest(tmp_path / "parab", {"family": "parabolic"})) <= home  # weight 0
    assert not distributions(_manifest(tmp_path / "gates4", gates | {"n_dips": [4, 6]})) <= home  # other params
    assert not distributions(_manifest(tmp_path / "sparse", None, n_wells=10)) <= home  # other physics
    both = distributions([tmp_path / "paper", tmp_path / "parab"])
    assert distributions(tmp_path / "parab") <= both and home - both
    assert distributions(tmp_path / "missing") is None


def test_ed_pool_starts_only_when_something_is_solved():
    from physics.config import PhysicsConfig
    from qdgan.apply.ed_batch import Solver

    with Solver(PhysicsConfig(n_basis=10, n_orbitals=4), 1, 10, progress=False) as solver:
        solver.solve(np.zeros((0, 64, 64)))
        assert solver._pool is None  # verify=auto with nothing flagged: no worker processes
