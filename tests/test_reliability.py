"""Training that loses nothing and is never silently wrong: runs interrupted any number of times resume to
the same metrics as uninterrupted ones, damaged checkpoints fall back, run dirs are locked, bad data and
impossible settings end before any work (issue 14, training side; the SIGKILL versions are in
benchmarks/reliability_train.py and the slow test below)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import torch
from tiny import ROOT, compose_train, make_tiny_set, run_tiny, tiny_overrides

from physics.files import LockError, dir_lock
from physics.shards import DatasetError
from qdgan.train import callbacks
from qdgan.train.checkpoints import AtomicCheckpointIO
from qdgan.train.rundir import intact, resume_checkpoint

# jitter, flips and dropout all draw random numbers: a resume that lost their state would drift
RANDOM = ("data.resize=72", "data.flip=true", "max_steps=12", "val_every_n_steps=3")
VOLATILE = ("train_seconds", "run_dir", "best_checkpoint")


def results(run_dir: Path) -> tuple[dict, dict, list[list[str]]]:
    """metrics.json less paths and times, history.json, and the CSV log's rows."""
    metrics = {k: v for k, v in json.loads((run_dir / "metrics.json").read_text()).items() if k not in VOLATILE}
    logs = list((run_dir / "csv").rglob("metrics.csv"))
    assert len(logs) == 1, f"expected one CSV log, found {logs}"
    with logs[0].open() as f:  # Lightning's own `epoch` counter runs one ahead after a resume from a checkpoint
        rows = [{k: v for k, v in r.items() if k != "epoch"} for r in csv.DictReader(f)]  # at an epoch's end
    return metrics, json.loads((run_dir / "history.json").read_text()), rows


def crash_at(monkeypatch, steps: set[int]) -> None:
    """Make the next training attempts die right after the given generator steps (one each)."""
    original = callbacks.History.on_train_batch_end

    def dying(self, trainer, pl_module, *args):
        original(self, trainer, pl_module, *args)
        step = int(pl_module.generator_steps)
        if step in steps:
            steps.discard(step)
            raise RuntimeError(f"simulated crash after generator step {step}")

    monkeypatch.setattr(callbacks.History, "on_train_batch_end", dying)


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    run_tiny(compose_train(tiny_overrides(tiny_data, run_dir, *RANDOM)), run_dir)
    return run_dir


def test_a_run_crashed_twice_and_resumed_equals_the_uninterrupted_run(tiny_data, uninterrupted, tmp_path, monkeypatch):
    def attempt() -> dict:
        return run_tiny(compose_train(tiny_overrides(tiny_data, tmp_path, *RANDOM)), tmp_path)

    crash_at(monkeypatch, {5, 10})
    for _ in range(2):
        with pytest.raises(RuntimeError, match="simulated crash"):
            attempt()
        assert "simulated crash" in json.loads((tmp_path / "failed.json").read_text())["error"]
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    before = saved["callbacks"]["RunState"]["train_seconds"]
    attempt()
    assert results(tmp_path) == results(uninterrupted)
    assert json.loads((tmp_path / "metrics.json").read_text())["train_seconds"] > before > 0  # summed attempts
    assert not (tmp_path / "failed.json").exists()


def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(tiny_data, uninterrupted, tmp_path, monkeypatch,
                                                                   caplog):
    def attempt() -> dict:
        return run_tiny(compose_train(tiny_overrides(tiny_data, tmp_path, *RANDOM)), tmp_path)

    crash_at(monkeypatch, {8})
    with pytest.raises(RuntimeError, match="simulated crash"):
        attempt()
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert intact(last) and intact(last.with_name("last.prev.ckpt"))
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 4])  # what a kill during a copy leaves
    assert not intact(last)
    assert resume_checkpoint(last.parent) == last.with_name("last.prev.ckpt")
    assert "damaged" in caplog.text
    attempt()  # from the checkpoint at step 3, not 6
    assert results(tmp_path) == results(uninterrupted)


def test_checkpoints_are_written_beside_their_target_not_in_tmpdir(tmp_path, monkeypatch):
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr("tempfile.tempdir", None)
    io = AtomicCheckpointIO()
    target = tmp_path / "run" / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)
    io.save_checkpoint({"step": 2}, target)
    assert torch.load(target, weights_only=False)["step"] == 2
    assert torch.load(target.with_name("last.prev.ckpt"), weights_only=False)["step"] == 1
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt", "last.prev.ckpt"]
    assert not list(tmpdir.iterdir())


def test_a_run_dir_in_use_is_refused_without_touching_it(tiny_data, tmp_path):
    cfg = compose_train(tiny_overrides(tiny_data, tmp_path))
    with dir_lock(tmp_path, what="run directory"):
        with pytest.raises(LockError, match=f"run directory {tmp_path} is in use by pid {os.getpid()}"):
            run_tiny(cfg, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no failed.json, no config.yaml


def test_a_run_shorter_than_the_history_interval_finishes(tiny_data, tmp_path):
    run_tiny(compose_train(tiny_overrides(tiny_data, tmp_path, "max_steps=2", "history_every_n_steps=10")), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["finished"] and metrics["generator_steps"] == 2
    assert (tmp_path / "figures" / "losses.png").stat().st_size > 1000


@pytest.mark.parametrize(("override", "match"), [
    ("max_steps=-1", r"max_steps=-1: expected an integer ≥ 1"),
    ("max_steps=0", r"max_steps=0: expected an integer ≥ 1"),
    ("val_every_n_steps=0", r"val_every_n_steps=0: expected an integer ≥ 1"),
    ("physics.grid=63", r"physics.grid=63, but generator.image_size=64"),
    pytest.param("trainer=gpu", r"trainer.accelerator=gpu: no CUDA GPU is visible here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")),
])
def test_impossible_settings_end_before_any_work(tmp_path, override, match):
    data = tmp_path / "never_made"
    cfg = compose_train(tiny_overrides(data, tmp_path / "run", override))
    with pytest.raises(ValueError, match=match):
        run_tiny(cfg, tmp_path / "run")
    assert not data.exists()


def test_corrupted_data_is_named_by_shard_before_training(tmp_path):
    data = make_tiny_set(tmp_path / "bad")
    shard = sorted(data.glob("shard-*.h5"))[1]
    with h5py.File(shard, "r+") as f:  # bytes flipped inside the data, headers intact
        f["n_int"][3, 10, 10] += 0.01
    cfg = compose_train(tiny_overrides(data, tmp_path / "run"))
    with pytest.raises(DatasetError, match=shard.name):
        run_tiny(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_interrupted_set_of_another_config_is_named_not_generated(tmp_path, capsys):
    from omegaconf import OmegaConf
    from tiny import CONF

    from physics.generate import generate, plan_from_config

    data = tmp_path / "other"
    gen = OmegaConf.load(CONF / "generate.yaml")
    gen.physics = OmegaConf.load(CONF / "physics" / "paper.yaml")
    gen.physics.n_basis, gen.physics.n_orbitals, gen.physics.n_wells = 10, 4, 7
    gen.n_samples, gen.shard_size, gen.workers, gen.out_dir, gen.shards = 60, 30, 1, str(data), "0:1"
    del gen["defaults"], gen["hydra"]
    generate(plan_from_config(gen), progress=False)  # one shard of two: interrupted
    cfg = compose_train(tiny_overrides(data, tmp_path / "run"))
    with pytest.raises(ValueError, match=r"interrupted data set of another config \(physics.n_wells: there 7"):
        run_tiny(cfg, tmp_path / "run")
    assert "generating" not in capsys.readouterr().out


@pytest.mark.slow
def test_train_py_killed_three_times_resumes_to_the_uninterrupted_metrics(tiny_data, tmp_path):
    """SIGKILL the real `train.py` three times mid-run (after a checkpoint), rerun the same command each time."""
    def command(run_dir: Path) -> list[str]:
        return [sys.executable, "train.py",
                *tiny_overrides(tiny_data, run_dir, *RANDOM, "max_steps=60", "val_every_n_steps=6")]

    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(command(reference), check=True, cwd=ROOT, capture_output=True)
    args = command(killed)
    kills = 0
    for _ in range(20):
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kills < 3:
            seen = _last_mtime(killed)
            while proc.poll() is None and _last_mtime(killed) == seen:
                time.sleep(0.05)
            time.sleep(0.3 * kills)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += proc.returncode == -signal.SIGKILL
            continue
        assert proc.wait() == 0
        break
    assert kills == 3
    assert results(killed) == results(reference)


def _last_mtime(run_dir: Path) -> float:
    path = run_dir / "checkpoints" / "last.ckpt"
    return path.stat().st_mtime if path.exists() else 0.0


def test_a_crash_after_training_resumes_to_the_test_with_the_whole_log(tiny_data, uninterrupted, tmp_path,
                                                                         monkeypatch):
    from qdgan.train import run as run_module

    figures = run_module._figures

    def dying(*args):
        monkeypatch.setattr(run_module, "_figures", figures)
        raise RuntimeError("simulated crash after training")

    monkeypatch.setattr(run_module, "_figures", dying)
    with pytest.raises(RuntimeError, match="after training"):
        run_tiny(compose_train(tiny_overrides(tiny_data, tmp_path, *RANDOM)), tmp_path)
    run_tiny(compose_train(tiny_overrides(tiny_data, tmp_path, *RANDOM)), tmp_path)  # nothing left to train
    assert results(tmp_path) == results(uninterrupted)


def test_a_set_of_another_potential_family_is_refused_by_name(tiny_data, tmp_path):
    cfg = compose_train(["data=gates", *tiny_overrides(tiny_data, tmp_path)])  # tiny_data holds paper maps
    family = r"another potential family .*potential.family: data set 'paper', config 'gates'"
    with pytest.raises(ValueError, match=family):
        run_tiny(cfg, tmp_path)
