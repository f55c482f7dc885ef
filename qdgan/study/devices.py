"""One GPU per job of a local multirun: n jobs at a time on a node with k GPUs (Hydra's joblib or basic launcher).

Each job process leases one device for its whole life — an exclusive lock on `<lock_dir>/<device>.lock`, taken
from its job number modulo k onwards, released by the OS when the process ends — and shows CUDA only that
device (CUDA_VISIBLE_DEVICES, set before torch initializes CUDA). Jobs that run at the same time so get distinct
devices; when more run at once than there are devices, the extra ones share them round-robin (job number mod k).
Loky workers run several jobs one after another: they keep their device, as a CUDA context cannot move.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Lease:
    """A device this process trains on; `fd` holds its lock (None: shared, every device was taken)."""

    device: str
    fd: int | None

    @property
    def shared(self) -> bool:
        return self.fd is None

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)


def visible_devices(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The GPUs this process may use, found without initializing CUDA (which reads CUDA_VISIBLE_DEVICES once
    and for good): CUDA_VISIBLE_DEVICES when set (up to its first invalid entry, as CUDA reads it), else the GPUs
    `nvidia-smi -L` lists, else none."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is not None:
        devices = []
        for entry in (e.strip() for e in value.split(",")):
            if not entry or entry.startswith("-"):
                break
            devices.append(entry)
        return devices
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", listing, flags=re.MULTILINE)]


def lease(devices: Sequence[str], lock_dir: Path, job_num: int) -> Lease:
    """The first free device of `devices`, trying job_num mod k first, locked until `release` or the end of the
    process; when every device is locked, device job_num mod k without a lock (round-robin sharing)."""
    if not devices:
        raise ValueError("lease: no devices to choose from")
    lock_dir.mkdir(parents=True, exist_ok=True)
    k = len(devices)
    for i in ((job_num + j) % k for j in range(k)):
        name = re.sub(r"[^\w.-]", "_", devices[i]) + ".lock"  # ids may be UUIDs (GPU-…, MIG-…)
        fd = os.open(lock_dir / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return Lease(devices[i], fd)
    return Lease(devices[job_num % k], None)


def uses_one_device(trainer: Mapping) -> bool:
    """Whether a run of this trainer config trains on one device (trainer=cpu|gpu; not ddp or a device list)."""
    return trainer.get("devices") == 1 and trainer.get("num_nodes", 1) == 1


def require_local_gpu(accelerator: str, launcher_target: str) -> None:
    """Refuse trainer=gpu before launching runs on this machine when it has no CUDA GPU (one line, SystemExit);
    jobs sent to SLURM are checked where they run."""
    if accelerator not in ("gpu", "cuda") or "Slurm" in launcher_target:
        return
    import torch  # only for a GPU sweep

    if not torch.cuda.is_available():
        raise SystemExit(f"error: trainer.accelerator={accelerator}: no CUDA GPU is visible here (torch "
                         f"{torch.__version__}{'' if torch.version.cuda else ', a CPU-only build'}); use trainer=cpu, "
                         "or run on a GPU node (README: the ml extra)")
