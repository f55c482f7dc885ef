"""One GPU per run on a multi-GPU node, without GPUs: device leases (n jobs on k devices: distinct, then
round-robin), the devices a process may use, the Hydra callback's scope, the early one-line errors of sweep.py
(trainer=gpu without a GPU, a launcher plugin that is not installed), and a 2-job joblib study that runs both
jobs at once on two (declared) devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_sweep import NAME_BY_SWEEP, TINY
from tiny import make_tiny_set

from qdgan.study import devices, hooks
from qdgan.study.cli import main
from qdgan.study.plan import plan_study


@pytest.mark.parametrize(("n", "k"), [(1, 4), (4, 4), (2, 3), (6, 4), (9, 2)])
def test_n_jobs_at_once_on_k_devices_get_distinct_devices_then_round_robin(tmp_path, n, k):
    ids = [str(i) for i in range(k)]
    leases = [devices.lease(ids, tmp_path, job) for job in range(n)]  # held at once, as n live workers hold them
    got = [lease.device for lease in leases]
    assert len(set(got[:k])) == min(n, k)  # the first k jobs: one device each
    assert got[:k] == ids[:n]  # job j starts at device j mod k, which is free
    assert got[k:] == [ids[j % k] for j in range(k, n)]  # the rest share round-robin
    assert [lease.shared for lease in leases] == [j >= k for j in range(n)]
    for lease in leases:
        lease.release()


def test_a_released_device_is_taken_by_the_next_job_and_ids_may_be_uuids(tmp_path):
    ids = ["GPU-6f0c/a", "GPU-77b1/b"]
    first, second = devices.lease(ids, tmp_path, 0), devices.lease(ids, tmp_path, 1)
    assert (first.device, second.device) == (ids[0], ids[1])
    first.release()
    third = devices.lease(ids, tmp_path, 3)  # prefers 3 mod 2 = device 1, held: takes the free device 0
    assert third.device == ids[0] and not third.shared
    with pytest.raises(ValueError, match="no devices"):
        devices.lease([], tmp_path, 0)


@pytest.mark.parametrize(("env", "expected"), [
    ({"CUDA_VISIBLE_DEVICES": "0,1,3"}, ["0", "1", "3"]), ({"CUDA_VISIBLE_DEVICES": ""}, []),
    ({"CUDA_VISIBLE_DEVICES": "2,-1,3"}, ["2"]),
    ({"CUDA_VISIBLE_DEVICES": "GPU-ab12, GPU-cd34"}, ["GPU-ab12", "GPU-cd34"]),
])
def test_visible_devices_read_cuda_visible_devices(env, expected):
    assert devices.visible_devices(env) == expected


def test_visible_devices_without_nvidia_smi_are_none(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert devices.visible_devices({}) == []


def job_config(tmp_path: Path, job: int, trainer: dict):
    """The parts of a multirun job's config the callback reads."""
    from hydra.types import RunMode

    return OmegaConf.create({"trainer": trainer, "hydra": {
        "mode": RunMode.MULTIRUN, "sweep": {"dir": str(tmp_path)}, "job": {"num": job},
        "runtime": {"output_dir": str(tmp_path / f"run{job}")}}})


@pytest.mark.parametrize(("visible", "trainer", "leased"), [
    ("0,1", {"devices": 1, "num_nodes": 1}, True),
    ("3", {"devices": 1, "num_nodes": 1}, False),  # a SLURM task's own GPU: left alone
    ("0,1", {"devices": -1, "num_nodes": 1}, False),  # trainer=ddp spans the devices
    ("0,1", {"devices": 1, "num_nodes": 2}, False),
])
def test_the_callback_gives_one_device_jobs_a_gpu_and_leaves_others_alone(tmp_path, monkeypatch, visible, trainer,
                                                                          leased):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setattr(hooks, "_lease", None)
    (tmp_path / "run1").mkdir()
    hooks.OneDevicePerJob().on_job_start(job_config(tmp_path, 1, trainer))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ("1" if leased else visible)
    record = tmp_path / "run1" / hooks.DEVICE_RECORD
    assert record.is_file() == leased
    if leased:
        assert json.loads(record.read_text())["device"] == "1"
        hooks._lease.release()


def test_sweep_refuses_trainer_gpu_without_a_gpu_in_one_line(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as err:
        main(["study=architecture", "discriminator=pixelgan1", "trainer=gpu", "hydra.sweep.dir=/nonexistent/x"])
    message = str(err.value)
    assert message.startswith("error: trainer.accelerator=gpu: no CUDA GPU is visible here") and "\n" not in message
    devices.require_local_gpu("gpu", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher")  # there


@pytest.mark.parametrize(("override", "expected"), [
    ("hydra/launcher=ray", "hydra/launcher=ray: this Hydra plugin is not installed; this project runs with "
                           "hydra/launcher=joblib|submitit_local|submitit_slurm"),
    ("hydra/sweeper=nope", "hydra/sweeper=nope: this Hydra plugin is not installed"),
])
def test_a_launcher_plugin_that_is_not_installed_is_named_in_one_line(override, expected):
    with pytest.raises(SystemExit, match=expected.replace("|", r"\|")) as err:
        plan_study("architecture", ["discriminator=pixelgan1", override])
    assert "\n" not in str(err.value)


HIDE_PLUGIN = """
import sys, tempfile
from pathlib import Path
import hydra_plugins
hidden, kept = sys.argv[1], Path(tempfile.mkdtemp())
for plugin in Path(list(hydra_plugins.__path__)[0]).iterdir():  # every installed plugin but the hidden one
    if plugin.name != hidden:
        (kept / plugin.name).symlink_to(plugin)
hydra_plugins.__path__ = [str(kept)]
from qdgan.study.plan import plan_study
from qdgan.study.search import plan_search
try:
    plan_search("nint_to_v", []) if sys.argv[2] == "search" else plan_study("architecture", [sys.argv[2]])
except SystemExit as err:
    print(err)
"""


NOT_INSTALLED = "this Hydra plugin is not installed; install it with pip install -e"


@pytest.mark.parametrize(("hidden", "args", "expected"), [
    ("hydra_submitit_launcher", "hydra/launcher=submitit_slurm",
     f'hydra/launcher=submitit_slurm: {NOT_INSTALLED} ".[cluster]"'),
    ("hydra_optuna_sweeper", "search", f'hydra/sweeper=optuna: {NOT_INSTALLED} ".[search]"'),
])
def test_a_plugin_that_is_not_installed_names_the_extra_to_install(hidden, args, expected):
    proc = subprocess.run([sys.executable, "-c", HIDE_PLUGIN, hidden, args], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout.strip() == f"error: {expected}", proc.stderr[-2000:]


@pytest.mark.slow
def test_two_job_local_multirun_runs_both_at_once_on_distinct_devices(tmp_path):
    make_tiny_set(tmp_path / "tiny")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"}  # two declared devices; CPU torch ignores them
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "sweep.py"), "study=ntrain",
                           "data.n_train=20,40", *TINY, NAME_BY_SWEEP, "hydra/launcher=joblib",
                           "hydra.launcher.n_jobs=2"], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "outputs" / "studies" / "ntrain"
    records = [json.loads((out / run / hooks.DEVICE_RECORD).read_text()) for run in
               ("data.n_train=20", "data.n_train=40")]
    assert sorted(r["device"] for r in records) == ["0", "1"] and not any(r["shared"] for r in records)
    assert records[0]["pid"] != records[1]["pid"]
    a, b = records
    assert a["started"] < b["ended"] and b["started"] < a["ended"]  # both at once
