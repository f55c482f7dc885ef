"""Optimizers and learning-rate schedules of `Pix2Pix` (conf/model).

Adam as in pix2pix (2e-4, β = (0.5, 0.999)), fused where torch supports it. Schedules (`model.lr_schedule`), each
constant for the first `lr_decay_start` of `max_steps` generator steps, then decaying to 0 at `max_steps`:
`linear` (pix2pix) or `cosine` (half a cosine). `lr_decay_start` = 1 keeps the rate constant.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

SCHEDULES = ("linear", "cosine")


def _nhwc(p: torch.Tensor) -> bool:
    return p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()


class DenseAdam(torch.optim.Adam):
    """Adam that steps each channels-last parameter through its dense NHWC view (the same numbers, in another
    order): the fused CPU kernel takes ~2.5× as long on channels-last tensors. Its state has the views' shapes."""

    def __init__(self, params: list[nn.Parameter], **kwargs: Any) -> None:
        self.pairs = [(p, p.detach().permute(0, 2, 3, 1) if _nhwc(p) else p) for p in params]
        super().__init__([view for _, view in self.pairs], **kwargs)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for p, view in self.pairs:
            if view is not p:
                view.grad = None if p.grad is None else p.grad.permute(0, 2, 3, 1).contiguous()
        try:
            return super().step(closure)
        finally:
            for p, view in self.pairs:
                if view is not p:
                    view.grad = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        for p, view in self.pairs:
            if view is not p and p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()


def adam(net: nn.Module, lr: float, betas: Any, fused: bool) -> torch.optim.Adam:
    """Adam (`DenseAdam` for channels-last parameters); the fused kernel (torch ≥ 2.4 on CPU, any CUDA) saves
    ~25 % per step at small widths."""
    params = list(net.parameters())
    kind = DenseAdam if any(_nhwc(p) for p in params) else torch.optim.Adam
    if fused:
        try:
            return kind(params, lr=lr, betas=tuple(betas), fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass  # older torch or unsupported device: the default (foreach) implementation
    return kind(params, lr=lr, betas=tuple(betas))


def check(schedule: str, decay_start: float) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(f"model.lr_schedule={schedule!r}: expected one of {SCHEDULES}")
    if not 0.0 <= decay_start <= 1.0:
        raise ValueError(f"model.lr_decay_start={decay_start}: expected a fraction of max_steps in [0, 1]")


def lr_factor(schedule: str, decay_start: float, max_steps: int) -> Callable[[int], float]:
    """The factor on the base rate after `step` generator steps: 1 until decay_start·max_steps, then to 0."""
    start = int(decay_start * max_steps)
    span = max(1, max_steps - start)

    def factor(step: int) -> float:
        done = min(1.0, max(0, step - start) / span)
        return 1.0 - done if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * done))

    return factor


def schedulers(opts: list[torch.optim.Optimizer], schedule: str, decay_start: float,
               max_steps: int) -> list[torch.optim.lr_scheduler.LambdaLR]:
    """One LambdaLR per optimizer (stepped once per generator step), none for a constant rate."""
    if decay_start >= 1.0 or max_steps <= 0:
        return []
    return [torch.optim.lr_scheduler.LambdaLR(o, lr_factor(schedule, decay_start, max_steps)) for o in opts]
