"""Training stack: configs compose, data module splits/scales/jitters, few-step runs per mapping,
resume, data generation on first use, W&B offline, DDP on CPU (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tiny import MAPPINGS, ROOT, TINY_PHYSICS, compose_train, run_tiny, tiny_overrides

from physics.dataset import open_dataset
from qdgan.datamodule import EDDataModule, TensorBatches, jitter
from qdgan.scaling import encode_input, from_unit_range, to_unit_range
from qdgan.train.run import build_model, instantiate

# --- configs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mapping", "discriminator"),
                         [(m, "imagegan70") for m in MAPPINGS]
                         + [("v_to_nint", d) for d in ("patchgan34", "patchgan16", "patchgan7", "patchgan4",
                                                       "pixelgan1")])
def test_every_mapping_and_discriminator_composes_and_builds(mapping, discriminator):
    cfg = compose_train([f"mapping={mapping}", f"discriminator={discriminator}", "generator.ngf=4",
                         "discriminator.ndf=4"])
    model = build_model(cfg)
    assert model.hparams.mapping == mapping
    assert model.hparams.is_density == (cfg.mapping.target != "potential")
    # the data statistics setup() copies in: a density output layer needs N, the pixel area and the target range
    model.scale.copy_(torch.tensor([0.0, 1.0, 0.0, 1.0]))
    model.physics.copy_(torch.tensor([1.0, 2.0]))
    x = torch.zeros(2, 1, 64, 64)
    assert model(x).shape == x.shape


@pytest.mark.parametrize("group,option", [("trainer", "cpu"), ("trainer", "gpu"), ("trainer", "ddp"),
                                          ("logger", "wandb"), ("logger", "csv"), ("logger", "tensorboard")])
def test_trainer_and_logger_options_compose(group, option):
    cfg = compose_train([f"{group}={option}"])
    assert cfg[group]
    if group == "logger":
        assert "csv" in cfg.logger  # CSV always


# --- data module --------------------------------------------------------------------------------


def make_dm(tiny_data: Path, mapping: str = "v_to_nint", **kw) -> EDDataModule:
    cfg = compose_train([*TINY_PHYSICS, f"mapping={mapping}", f"data.path={tiny_data}", "data.n_train=40",
                         "data.n_val=10", "data.n_test=10", *[f"data.{k}={v}" for k, v in kw.items()]])
    dm = instantiate(cfg.data, _recursive_=False)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_datamodule_shapes_and_scaling_round_trip(tiny_data, mapping):
    dm = make_dm(tiny_data, mapping)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (dm.batch_size, 1, 64, 64)
    xs, ys = dm._tensors["train"]
    assert float(xs.min()) == pytest.approx(-1) and float(xs.max()) == pytest.approx(1)
    assert float(ys.min()) == pytest.approx(-1) and float(ys.max()) == pytest.approx(1)
    s = dm.stats
    px, py = dm.physical("train")
    torch.testing.assert_close(from_unit_range(ys.squeeze(1), s.target_min, s.target_max), py,
                               atol=1e-6 * float(py.abs().max()), rtol=0)
    torch.testing.assert_close(encode_input(px, *s.input_code), xs.squeeze(1))
    if mapping.startswith("v_"):  # potentials: plain linear scaling by the training min/max
        torch.testing.assert_close(to_unit_range(px, s.input_min, s.input_max), xs.squeeze(1))
    torch.testing.assert_close(s.target_mean, py.mean(0), atol=1e-7 * float(py.abs().max()), rtol=1e-5)
    ds = open_dataset(tiny_data)
    field = {"v_to_n0": "n0", "v_to_nint": "n_int", "n0_to_nint": "n_int", "nint_to_v": "potential"}[mapping]
    np.testing.assert_array_equal(py.numpy(), ds[field][:][dm.splits["train"]])


def test_log_input_code_is_shared_by_data_module_and_model(tiny_data):
    dm = make_dm(tiny_data, "nint_to_v", input_log_floor=1e-6)
    offset, lo, hi = dm.stats.input_code
    assert hi > lo
    px, _ = dm.physical("train")
    assert offset == pytest.approx(1e-6 * float(px.max()))
    xs = dm._tensors["train"][0].squeeze(1)
    assert float(xs.min()) == pytest.approx(-1) and float(xs.max()) == pytest.approx(1)
    # the tails are resolved: far more distinct input levels below 1 % of the peak than linearly
    small = px < 0.01 * px.max()
    assert float(xs[small].std()) > 10 * float(to_unit_range(px, dm.stats.input_min, dm.stats.input_max)[small].std())
    cfg = compose_train(["mapping=nint_to_v", "generator.ngf=4", "discriminator.ndf=4"])
    model = build_model(cfg)
    model.set_data_stats(dm.stats)
    torch.testing.assert_close(model.scale_input(px), xs)
    with pytest.raises(ValueError, match="input_log_floor"):
        make_dm(tiny_data, "v_to_nint", input_log_floor=1e-6)


def test_splits_are_disjoint_and_stable_when_n_train_shrinks(tiny_data):
    full, small = make_dm(tiny_data), make_dm(tiny_data, n_train=20)
    s = full.splits
    assert len(s["train"]) == 40 and len(s["val"]) == 10 and len(s["test"]) == 10
    assert not set(s["train"]) & set(s["val"]) and not set(s["train"]) & set(s["test"])
    assert not set(s["val"]) & set(s["test"])
    np.testing.assert_array_equal(small.splits["val"], s["val"])
    np.testing.assert_array_equal(small.splits["test"], s["test"])
    assert set(small.splits["train"]) < set(s["train"])


def test_datamodule_rejects_bad_requests(tiny_data):
    with pytest.raises(ValueError, match="n_train"):
        make_dm(tiny_data, n_train=1000)
    with pytest.raises(ValueError, match="resize"):
        make_dm(tiny_data, resize=60)
    with pytest.raises(ValueError, match=r"physics\.n_orbitals"):
        cfg = compose_train(["physics.n_basis=10", "physics.n_orbitals=5", f"data.path={tiny_data}"])
        instantiate(cfg.data, _recursive_=False).setup("fit")


def test_normalize_charge_projects_onto_physical_densities():
    from qdgan.train.evaluate import normalize_charge

    d = torch.rand(3, 8, 8) - 0.2
    fixed = normalize_charge(d, n_electrons=2.0, pixel_area=0.25)
    assert float(fixed.min()) >= 0.0
    torch.testing.assert_close(fixed.sum(dim=(1, 2)) * 0.25, torch.full((3,), 2.0))
    positive = d.clamp(min=0)
    shape = lambda t: t / t.sum(dim=(1, 2), keepdim=True)  # noqa: E731
    torch.testing.assert_close(shape(fixed), shape(positive))  # each sample only rescaled


def test_batches_resume_mid_pass_and_split_across_ranks():
    x = torch.arange(20.0).view(20, 1, 1, 1)
    full = TensorBatches(x, x, batch_size=3, shuffle=True, seed=5)
    uninterrupted = [b[0].flatten().tolist() for _ in range(2) for b in full]
    first = TensorBatches(x, x, batch_size=3, shuffle=True, seed=5)
    it = iter(first)
    seen = [next(it)[0].flatten().tolist() for _ in range(4)]
    resumed = TensorBatches(x, x, batch_size=3, shuffle=True, seed=5)
    resumed.load_state_dict(first.state_dict())
    seen += [b[0].flatten().tolist() for b in resumed] + [b[0].flatten().tolist() for b in resumed]
    assert seen == uninterrupted
    ranks = [TensorBatches(x, x, 3, True, seed=1, rank=r, world_size=2, drop_last=True) for r in range(2)]
    got = [[v for b in rk for v in b[0].flatten().tolist()] for rk in ranks]
    assert len(got[0]) == len(got[1]) == 9 and not set(got[0]) & set(got[1])


def test_jitter_crops_input_and_target_identically():
    x = torch.rand(5, 1, 64, 64)
    same_x, same_y = jitter(x, x.clone(), resize=64, flip=False)
    assert torch.equal(same_x, x) and torch.equal(same_y, x)
    jx, jy = jitter(x, x.clone(), resize=72, flip=True)
    assert jx.shape == x.shape and torch.equal(jx, jy)
    assert not torch.equal(jx, x)


# --- training runs -------------------------------------------------------------------------------


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_few_step_run_per_mapping(tiny_data, tmp_path, mapping):
    cfg = compose_train(tiny_overrides(tiny_data, tmp_path, f"mapping={mapping}"))
    result = run_tiny(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["mapping"] == mapping and metrics["n"] == 10
    assert metrics["generator_steps"] == 6  # max_steps counts generator steps, not Lightning's 2×
    assert np.isfinite(metrics["r2"]) and result["r2"] == metrics["r2"]
    assert len(metrics["per_sample"]["l1"]) == 10
    assert ("charge_error" in metrics["mean"]) == (mapping != "nint_to_v")
    assert ("charge_normalized" in metrics) == (mapping != "nint_to_v")
    if "charge_normalized" in metrics:  # the projection onto n ≥ 0, ∫n = N fixes the charge exactly
        assert metrics["charge_normalized"]["mean"]["charge_error"] < 1e-4
    for name in ("panels", "losses", "val_r2", "ssim_evolution"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 1000
    assert (tmp_path / "checkpoints" / "best.ckpt").exists() and (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert OmegaConf.load(tmp_path / "config.yaml").mapping.name == mapping


def test_adv_weight_zero_trains_plain_unet(tiny_data, tmp_path):
    cfg = compose_train(tiny_overrides(tiny_data, tmp_path, "model.adv_weight=0"))
    run_tiny(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["generator_steps"] == 6
    hist = json.loads((tmp_path / "history.json").read_text())
    assert "train/loss_d" not in hist["losses"]


def test_resume_continues_the_same_curves(tiny_data, tmp_path):
    first = tmp_path / "first"
    run_tiny(compose_train(tiny_overrides(tiny_data, first, "max_steps=6")), first)
    last = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert int(last["state_dict"]["generator_steps"]) == 6  # the latest state, whether or not R² improved
    resumed = tmp_path / "resumed"
    ckpt = first / "checkpoints" / "last.ckpt"
    run_tiny(compose_train(tiny_overrides(tiny_data, resumed, "max_steps=12", f"ckpt_path={ckpt}")), resumed)
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["generator_steps"] == 12
    hist = json.loads((resumed / "history.json").read_text())
    steps = hist["losses"]["step"]
    assert steps == list(range(1, 13))  # 1..6 restored from the checkpoint, 7..12 new
    assert hist["val"]["step"] == [3, 6, 9, 12]


@pytest.mark.slow
def test_train_py_generates_missing_data_and_prints_metrics(tmp_path):
    data = tmp_path / "fresh"
    proc = subprocess.run([sys.executable, "train.py", *tiny_overrides(data, tmp_path / "run")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "generating 60 instances" in proc.stdout
    assert "R²" in proc.stdout and "SSIM" in proc.stdout
    assert len(open_dataset(data)) == 60


@pytest.mark.slow
def test_train_py_reports_bad_config_in_one_line(tiny_data, tmp_path):
    proc = subprocess.run([sys.executable, "train.py", *tiny_overrides(tiny_data, tmp_path, "data.n_train=999")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode != 0
    assert "n_train" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_wandb_logger_runs_offline(tiny_data, tmp_path):
    env = {**os.environ, "WANDB_SILENT": "true"}
    env.pop("WANDB_MODE", None)
    proc = subprocess.run([sys.executable, "train.py", *tiny_overrides(tiny_data, tmp_path, "logger=wandb")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((tmp_path / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tiny_data, tmp_path):
    proc = subprocess.run(
        [sys.executable, "train.py", *tiny_overrides(tiny_data, tmp_path, "trainer=ddp", "trainer.accelerator=cpu",
                                                     "trainer.devices=2")],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["generator_steps"] == 6 and np.isfinite(metrics["r2"])
    assert "distributed_backend=gloo" in proc.stderr + proc.stdout
