"""`EDDataModule`: ED data sets (physics.dataset) as in-memory tensors for one mapping α ↦ β.

The split and the scaling are `qdgan.scaling`'s: each quantity is scaled to [−1, 1] by the min/max
of its *training* values; `stats` carries those numbers and the training-set mean target image β̄
(for R², eqs. 14–16) to the model, which stores them in its checkpoint.
Random jitter (resize to `resize`² then random crop back, paper §IV) and optional flips run on whole
batches after transfer to the device; batches are index gathers from resident tensors — no per-step
file I/O and no per-sample Python. Data of several N (a list of sets, issue 11) carry each instance's N as a
second input channel (`scaling.with_electrons`); data of one N have the one channel they always had.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from physics.config import PhysicsConfig, describe, diff
from qdgan import datasets
from qdgan.scaling import QUANTITIES, DataStats, encode_input, fit_stats, to_unit_range, with_electrons

log = logging.getLogger(__name__)

class TensorBatches:
    """Mini-batches gathered from resident tensors; reshuffled each pass from (seed, pass number).

    Under DDP each rank takes every world_size-th batch of the same permutation (equal counts).
    Stateful (`state_dict`/`load_state_dict`): a run resumed mid-pass continues with the very batch
    an uninterrupted run would have drawn next.
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, shuffle: bool,
                 seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = False) -> None:
        self.inputs, self.targets = inputs, targets
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0  # pass number of the next shuffle
        self._pass, self._served, self._resume = 0, 0, None

    def _n_batches(self) -> int:
        n = len(self.inputs)
        total = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        return total // self.world_size if self.world_size > 1 else total

    def __len__(self) -> int:
        return self._n_batches()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.inputs)
        first = 0
        if self._resume is not None:
            self.epoch, first = self._resume["epoch"], self._resume["served"]
            self._resume = None
        self._pass, self._served = self.epoch, first
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
            self.epoch += 1
        else:
            order = torch.arange(n)
        for b in range(first, self._n_batches()):
            idx = order[(b * self.world_size + self.rank) * self.batch_size:][: self.batch_size]
            self._served = b + 1
            yield self.inputs[idx], self.targets[idx]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._pass, "served": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = dict(state)


class EDDataModule(L.LightningDataModule):
    """One mapping `input` ↦ `target` over an ED data set at `path` (generated first if missing), or over the
    concatenation of a list of sets of one physics (`qdgan.datasets`; each generated first on its own)."""

    def __init__(
        self,
        path: str | list[str],
        input: str,
        target: str,
        physics: Any,
        n_train: int = 4800,
        n_val: int = 100,
        n_test: int = 100,
        split_seed: int = 0,
        batch_size: int = 1,
        eval_batch_size: int = 100,
        resize: int = 64,
        flip: bool = False,
        shuffle_seed: int = 0,
        input_log_floor: float = 0.0,
        generate: Any = None,
        extra_train: str | list[str] | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("input", input), ("target", target)):
            if value not in QUANTITIES:
                raise ValueError(f"data.{name}={value!r}: expected one of {QUANTITIES}")
        if input == target:
            raise ValueError(f"data.input and data.target are both {input!r}: a mapping needs two quantities")
        for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test),
                            ("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{name}={value!r}: expected a positive integer")
        self.paths, self.listed = datasets.as_paths(path), datasets.is_list(path)
        self.path = self.paths[0]  # the set of a single `path`, the first one of a list
        self.extra_train = datasets.as_paths(extra_train) if extra_train else []  # sets of training rows only
        self.input, self.target = input, target
        self.physics = PhysicsConfig.from_mapping(physics)
        self.potential = None if generate is None else _family_spec(generate, self.physics)
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.split_seed, self.shuffle_seed = split_seed, shuffle_seed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.grid = self.physics.grid
        if not isinstance(resize, int) or resize < self.grid:
            raise ValueError(f"data.resize={resize!r}: expected an integer ≥ the image size {self.grid} "
                             "(resize then random-crop back; equal means no jitter)")
        self.resize, self.flip = resize, flip
        if not (isinstance(input_log_floor, (int, float)) and 0 <= input_log_floor < 1):
            raise ValueError(f"data.input_log_floor={input_log_floor!r}: expected 0 (linear input) or a floor in "
                             "(0, 1) relative to the largest training input")
        if input_log_floor > 0 and input == "potential":
            raise ValueError("data.input_log_floor > 0 applies to density inputs; the input here is the potential")
        self.input_log_floor = float(input_log_floor)
        self.generate_cfg = generate
        self.stats: DataStats | None = None
        self.splits: dict[str, np.ndarray] = {}
        self.family: dict[str, np.ndarray] = {}  # per split: each instance's family, codes into families.FAMILIES
        self.n_electrons: dict[str, np.ndarray] = {}  # per split: each instance's N
        self.electrons: tuple[int, ...] = ()  # the N of the data; several: the model takes N as an input channel
        self._tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._physical: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # --- data ------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Generate the data set through `physics.generate` when `path` holds none, or complete one whose
        generation was interrupted (manifest not finalized) if it was started with this config (else
        ValueError naming the differences); a finished set is used as it is (rank 0 only). A list of sets is
        read, never generated: a set missing from it is refused with the command that makes it."""
        from physics import manifest

        datasets.require_complete(self.extra_train, self.physics)
        if self.listed:
            datasets.require_complete(self.paths, self.physics)
            return
        path = self.path / manifest.MANIFEST
        if datasets.complete(self.path):
            return
        if self.generate_cfg is None:
            raise FileNotFoundError(f"data.path={self.path}: no complete data set there and data.generate is "
                                    "null; run python -m physics.generate first")
        from physics.generate import generate, plan_from_config

        gen = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(self.generate_cfg), resolve=True))
        gen.out_dir = str(self.path)
        gen.physics = self.physics.to_dict()
        plan = plan_from_config(gen)
        if path.exists() and (differences := diff(manifest.load(self.path)["identity"], plan.identity.to_dict())):
            raise ValueError(f"data.path={self.path}: holds an interrupted data set of another config "
                             f"({describe(differences, 'there', 'requested')}); point data.path at another "
                             "directory, or finish that set with its own physics.generate command")
        print(f"No complete data set at {self.path}: generating {gen.n_samples} instances with physics.generate "
              f"(seed {gen.seed}; an interrupted set is completed); later runs reuse it.", flush=True)
        generate(plan)

    def setup(self, stage: str | None = None) -> None:
        if self.stats is not None:
            return
        sets = datasets.open_sets([str(p) for p in self.paths] if self.listed else self.path,
                                  [str(p) for p in self.extra_train])
        own = sets.varying()  # fields the listed sets differ in (N, n_orbitals) are each set's own
        for k, ds in enumerate(sets.sets):
            _check_same_physics(ds.config, self.physics, sets.label(k) if self.listed else ds.directory, own)
        if not self.listed:
            self._check_same_family(sets.sets[0].identity.potential)
        for ds in sets.sets:  # checksums, shapes, finiteness, ∫n = N (~0.4 s per 5000): DatasetError names the shard
            ds.validate()
        try:
            self.splits = sets.split(self.split_seed, self.n_train, self.n_val, self.n_test)
        except ValueError as err:
            raise ValueError(f"data.path={sets.where}: {err} (data.n_train, data.n_val, data.n_test)") from None
        inputs, targets = torch.from_numpy(sets.read(self.input)), torch.from_numpy(sets.read(self.target))
        train, electrons = torch.from_numpy(self.splits["train"]), sets.electrons()
        self.electrons = tuple(int(n) for n in np.unique(electrons))
        try:
            self.stats = fit_stats(inputs[train], targets[train], self.input_log_floor, self.physics.h_nm**2,
                                   self.electrons[0] if len(self.electrons) == 1 else 0)
        except ValueError as err:
            raise ValueError(f"data.path={sets.where}: {err} ({self.input} ↦ {self.target})") from None
        s, family = self.stats, sets.family()
        for split, idx in self.splits.items():
            self.family[split], self.n_electrons[split] = family[idx], electrons[idx]
            i = torch.from_numpy(idx)
            x, y = inputs[i], targets[i]
            self._physical[split] = (x, y)
            x = encode_input(x, *s.input_code).unsqueeze(1)
            if len(self.electrons) > 1:
                x = with_electrons(x, torch.from_numpy(electrons[idx]), max(self.electrons))
            self._tensors[split] = (x, to_unit_range(y, s.target_min, s.target_max).unsqueeze(1))
        log.info("data %s: %s ↦ %s, train/val/test = %d/%d/%d", sets.where, self.input, self.target,
                 self.n_train, self.n_val, self.n_test)

    def _check_same_family(self, found: Any) -> None:
        """A set of another potential family than data.generate.potential would be trained on silently."""
        from physics import families

        if self.potential is None:
            return
        wanted = self.potential
        if differences := diff(families.to_dict(found), families.to_dict(wanted), "potential."):
            raise ValueError(f"data.path={self.path}: holds a data set of another potential family than "
                             f"data.generate.potential ({describe(differences, 'data set', 'config')}); choose the "
                             "data=<family> that matches it, or point data.path at another directory")

    def physical(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Unscaled (input, target) of a split, physical units, shape (n, H, W)."""
        return self._physical[split]

    def scaled(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Network-scale (input, target) of a split, shape (n, C, H, W): C = 1, or 2 with N for data of several N."""
        return self._tensors[split]

    def _batches(self, split: str, train: bool) -> TensorBatches:
        x, y = self._tensors[split]
        rank, world = 0, 1
        if self.trainer is not None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
        if train:
            return TensorBatches(x, y, self.batch_size, True, self.shuffle_seed, rank, world, drop_last=world > 1)
        return TensorBatches(x, y, self.eval_batch_size, False, rank=rank, world_size=world)

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", train=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", train=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", train=False)

    # --- augmentation ----------------------------------------------------------------------------

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training:
            return jitter(*batch, resize=self.resize, flip=self.flip)
        return batch


def jitter(x: torch.Tensor, y: torch.Tensor, resize: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """pix2pix random jitter on a batch: bilinear resize to resize², the same random crop back to the
    original size for input and target (per sample), and optional random mirror flips."""
    size = x.shape[-1]
    if resize > size:
        both = F.interpolate(torch.cat([x, y], 1), size=(resize, resize), mode="bilinear",
                             align_corners=False)
        b = both.shape[0]
        off = torch.randint(0, resize - size + 1, (b, 2), device=both.device)
        ar = torch.arange(size, device=both.device)
        rows = (off[:, 0:1] + ar)[:, :, None]  # (B, size, 1)
        cols = (off[:, 1:2] + ar)[:, None, :]  # (B, 1, size)
        crop = both[torch.arange(b, device=both.device)[:, None, None], :, rows, cols]  # (B, s, s, C)
        crop = crop.permute(0, 3, 1, 2).contiguous()
        x, y = crop[:, : x.shape[1]], crop[:, x.shape[1] :]
    if flip:
        b = x.shape[0]
        for dim in (2, 3):
            mask = (torch.rand(b, device=x.device) < 0.5).view(b, 1, 1, 1)
            x = torch.where(mask, x.flip(dim), x)
            y = torch.where(mask, y.flip(dim), y)
    return x, y


def _family_spec(generate: Any, physics: PhysicsConfig) -> Any:
    """The potential family `data.generate` asks for (none given: the paper's); ConfigError naming
    `data.generate.potential` and the field when it is unknown, out of range or impossible in this box."""
    from physics import families

    potential = OmegaConf.create(generate).get("potential")
    spec = families.from_mapping(None if potential is None else OmegaConf.to_container(potential, resolve=True),
                                 "data.generate.potential")
    families.check(spec, physics, "data.generate.potential")
    return spec


def _check_same_physics(found: PhysicsConfig, wanted: PhysicsConfig, path: Path | str, own: list[str]) -> None:
    """A set of other physics than the config's, in any field but the `own` ones (each listed set's N)."""
    if differences := [d for d in diff(found.to_dict(), wanted.to_dict(), "physics.") if d[0][8:] not in own]:
        raise ValueError(f"{path}: data set was generated with a different physics config "
                         f"({describe(differences, 'data set', 'config')}); point data.path at another "
                         "directory to generate a matching one")
