"""Hydra callbacks of study and search multiruns (`hydra.callbacks` in conf/study/base.yaml, conf/search/base.yaml).

They run in the job's process, around train.py's task function, on any launcher. Kept free of torch at import:
`OneDevicePerJob` must set CUDA_VISIBLE_DEVICES before anything initializes CUDA.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from physics.files import atomic_write_bytes
from qdgan.study import devices
from qdgan.train import rundir

log = logging.getLogger(__name__)
DEVICE_RECORD = "device.json"  # in the run dir: the device a job trained on, its process and its times

_lease: devices.Lease | None = None  # this process's device, kept for every job it runs


class OneDevicePerJob(Callback):
    """Give each job of a local multirun that trains on one device a GPU of its own (qdgan/study/devices.py).
    Nothing to do when one GPU or none is visible (a SLURM array task sees its own) or a run spans several
    devices (trainer=ddp). `lock_dir` (relative: inside the sweep dir) holds the device locks."""

    def __init__(self, lock_dir: str = ".devices") -> None:
        self.lock_dir = lock_dir

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _lease
        if config.hydra.mode != RunMode.MULTIRUN or not devices.uses_one_device(config.get("trainer") or {}):
            return
        if _lease is None:
            visible = devices.visible_devices()
            if len(visible) < 2:
                return
            _lease = devices.lease(visible, Path(config.hydra.sweep.dir) / self.lock_dir, config.hydra.job.num)
            os.environ["CUDA_VISIBLE_DEVICES"] = _lease.device
            log.info("job %s: GPU %s%s", config.hydra.job.num, _lease.device,
                     " (shared: more jobs at once than devices)" if _lease.shared else "")
        record = {"device": _lease.device, "shared": _lease.shared, "job": int(config.hydra.job.num),
                  "pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        _write(Path(config.hydra.runtime.output_dir) / DEVICE_RECORD, record)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        path = Path(config.hydra.runtime.output_dir) / DEVICE_RECORD
        if _lease is not None and path.is_file():
            _write(path, json.loads(path.read_text()) | {"ended": time.time()})


class SearchObjective(Callback):
    """What a search job returns to Hydra's Optuna sweeper: `key` of its run's metrics.json — a validation
    score (the best validation R²), never a test metric, so the test set plays no part in the choice.
    A run that did not finish returns None, which the sweeper records as a failed trial."""

    def __init__(self, key: str = "best_val_r2") -> None:
        if not key.startswith("best_val"):
            raise ValueError(f"hydra.callbacks.objective.key={key!r}: a search is scored on validation metrics "
                             "(best_val_r2), never on test ones")
        self.key = key

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.COMPLETED:
            return
        metrics = rundir.read_metrics(Path(config.hydra.runtime.output_dir))
        job_return.return_value = None if metrics is None else metrics.get(self.key)


def _write(path: Path, record: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(record, indent=1).encode())
