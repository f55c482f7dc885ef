"""An exponential moving average (EMA) of the generator's weights (`model.ema_decay`; 0 = off).

After generator step t (t = 1, 2, …) every parameter and floating-point buffer (batch-norm statistics) of the
average moves toward the trained network's: e ← d_t·e + (1 − d_t)·w with d_t = min(decay, (1 + t)/(10 + t)),
the usual warm-up so the initial weights do not linger for ~1/(1 − decay) steps; integer buffers are copied.
The average starts as a copy of the initial weights. It lives in the model as a second generator, so it travels in
every checkpoint (resume continues it) and serves validation, test and predictions (`Pix2Pix.eval_generator`).
"""

from __future__ import annotations

import torch
from torch import nn


def check(decay: float) -> None:
    """ValueError unless 0 ≤ decay < 1."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"model.ema_decay={decay}: expected 0 (off) or a decay in (0, 1), e.g. 0.999")


def decay_at(decay: float, step: int) -> float:
    """The decay used after generator step `step` (≥ 1): min(decay, (1 + step)/(10 + step))."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def update(average: nn.Module, net: nn.Module, decay: float) -> None:
    """average ← decay·average + (1 − decay)·net, parameters and floating buffers; integer buffers copied."""
    pairs = list(zip(average.buffers(), net.buffers(), strict=True))
    floats = [pair for pair in pairs if pair[0].is_floating_point()]
    ints = [pair for pair in pairs if not pair[0].is_floating_point()]
    for group in (list(zip(average.parameters(), net.parameters(), strict=True)), floats):
        if group:
            torch._foreach_lerp_([a for a, _ in group], [b for _, b in group], 1.0 - decay)  # one call for all
    if ints:
        torch._foreach_copy_([a for a, _ in ints], [b for _, b in ints])


def start(average: nn.Module, net: nn.Module) -> nn.Module:
    """The average as a copy of `net`'s weights, not trained by any optimizer."""
    average.load_state_dict(net.state_dict())
    average.requires_grad_(False)
    return average
