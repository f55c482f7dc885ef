"""Checkpoints that survive a kill at any moment, and the choice of the one to resume from.

Lightning's own writer stages a checkpoint in $TMPDIR and moves it into place; across file systems (usual
on clusters) that move is a copy, so a kill leaves a torn `last.ckpt` in the run dir and an orphan in
$TMPDIR. `AtomicCheckpointIO` writes next to the target through `physics.files.atomic_path` (fsync, rename)
and keeps the previous `last.ckpt` as `last.prev.ckpt` (a hard link, no copy), from which
`rundir.resume_checkpoint` resumes when `last.ckpt` is damaged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from physics.files import atomic_path, temporary_path
from qdgan.train.rundir import LAST, PREVIOUS


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary file beside the target, fsync, rename; the replaced `last.ckpt` stays as
    `last.prev.ckpt`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name == LAST and path.exists():
            keep = temporary_path(path.with_name(PREVIOUS))
            os.link(path, keep)  # the previous state, complete, under its own name: no copy, no torn file
            os.replace(keep, path.with_name(PREVIOUS))
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
