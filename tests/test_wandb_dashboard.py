"""W&B study dashboards without the network: a finished run's offline W&B files hold its validation R² curve,
its test panels (images) and final metrics (a table and the summary), in the study's group; sweep.py prints the
one command that uploads a whole study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_sweep import TINY
from tiny import ROOT, compose_train, make_tiny_set

from qdgan.study.cli import sync_command

METRICS = {"mapping": "v_to_nint", "r2": 0.91, "best_val_r2": 0.93, "generator_steps": 6, "train_seconds": 12.0,
           "units": {"l1": "nm^-2"}, "mean": {"l1": 0.01, "l2": 0.02, "linf": 0.03, "ssim": 0.8, "mssim": 0.7,
                                              "charge_error": 0.05}, "finished": True}


def offline_run(run_dir: Path) -> Path:
    (run,) = (run_dir / "wandb").glob("offline-run-*")
    return run


def logged_keys(run: Path, keys: list[str]) -> dict[str, bool]:
    """Which keys the run's offline log (run-<id>.wandb: protobuf records, keys stored verbatim) holds."""
    (log,) = run.glob("run-*.wandb")
    data = log.read_bytes()
    return {key: key.encode() in data for key in keys}


def check_results(run_dir: Path, metrics: dict, group: str) -> None:
    run = offline_run(run_dir)
    media = run / "files" / "media"
    assert list((media / "images" / "test").glob("panels_*.png"))
    (table,) = (media / "table" / "test").glob("metrics_*.table.json")
    content = json.loads(table.read_text())
    row = dict(zip(content["columns"], content["data"][0], strict=True))
    assert row["test_r2"] == metrics["r2"] and row["best_val_r2"] == metrics["best_val_r2"]
    assert row["ssim"] == metrics["mean"]["ssim"] and row["generator_steps"] == metrics["generator_steps"]
    keys = ["val/r2", "test/panels", "test/metrics", "final/test_r2", "final/best_val_r2", group]
    assert logged_keys(run, keys) == dict.fromkeys(keys, True)


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_a_finished_run_logs_its_panels_and_final_metrics(tmp_path, offline):
    import matplotlib.pyplot as plt
    from lightning.pytorch.loggers import WandbLogger

    from qdgan.train.logs import finish_wandb

    (tmp_path / "figures").mkdir()
    plt.imsave(tmp_path / "figures" / "panels.png", np.random.default_rng(0).random((16, 16)))
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    logger = WandbLogger(project="qdgan", offline=True, save_dir=str(tmp_path), name="ntrain data.n_train=40",
                         group="ntrain")
    logger.experiment.log({"val/r2": 0.5})
    finish_wandb([logger])
    check_results(tmp_path, METRICS, "ntrain")


def test_sync_command_uploads_every_offline_run_of_a_study(tmp_path):
    study = tmp_path / "outputs" / "studies" / "architecture"
    assert sync_command(study) is None
    for run in ("discriminator=pixelgan1", "discriminator=patchgan4"):
        (study / run / "wandb" / "offline-run-20260101_000000-abc").mkdir(parents=True)
    command = sync_command(study)
    assert command == f"wandb sync {study}/*/wandb/offline-run-*"
    assert len(sorted(study.glob(command.split(" ", 2)[2].removeprefix(f"{study}/")))) == 2


def test_a_study_is_one_wandb_group_and_each_run_is_named_by_its_overrides():
    from omegaconf import OmegaConf

    cfg = compose_train(["study=architecture", "logger=wandb"])
    assert cfg.logger.wandb.group == "architecture" and cfg.logger.wandb.offline
    assert OmegaConf.to_container(cfg)["run_name"] == "${study.name} ${hydra:job.override_dirname}"


@pytest.mark.slow
def test_a_study_run_with_wandb_holds_its_dashboard_offline(tmp_path):
    make_tiny_set(tmp_path / "tiny")
    tiny = [o for o in TINY if not o.startswith("logger=")]
    names = ("hydra.job.config.override_dirname.exclude_keys=[study,logger,"
             + ",".join(o.split("=")[0] for o in tiny) + "]")
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"} | {"WANDB_SILENT": "true"}
    proc = subprocess.run([sys.executable, str(ROOT / "sweep.py"), "study=ntrain", "data.n_train=40", *tiny, names,
                           "logger=wandb"], capture_output=True, text=True, cwd=tmp_path, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = tmp_path / "outputs" / "studies" / "ntrain"
    run_dir = study / "data.n_train=40"
    check_results(run_dir, json.loads((run_dir / "metrics.json").read_text()), "ntrain")
    assert f"wandb sync {study.relative_to(tmp_path)}/*/wandb/offline-run-*" in proc.stdout
