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


def _dense(t: torch.Tensor) -> torch.Tensor:
    """The view of `t` whose memory is dense in index order: (O, H, W, I) for a channels-last weight, else `t`."""
    return t.permute(0, 2, 3, 1) if _nhwc(t) else t


def _undense(t: torch.Tensor, nhwc: bool) -> torch.Tensor:
    return t.permute(0, 3, 1, 2) if nhwc else t


class FlatAdam(torch.optim.Adam):
    """Adam on one flat buffer that holds all the parameters (each a view of it, channels-last ones in their NHWC
    order) and one that holds their gradients: one kernel call and one step counter per step instead of one per
    tensor, and no gradient copies. The same element-wise updates as Adam for parameters that get a gradient
    every step (here all of G's or D's; a parameter without one would be stepped with a zero gradient).
    Gradients are zeroed, never set to None, so they stay views. `state_dict` lists per-parameter states in
    the parameters' dense shapes (as the per-tensor Adam of channels-last models wrote them): checkpoints load
    either way."""

    def __init__(self, params: list[nn.Parameter], **kwargs: Any) -> None:
        self.params = list(params)
        first = self.params[0]
        flat = first.detach().new_empty(sum(p.numel() for p in self.params))
        grads = torch.zeros_like(flat)
        self.segments: list[tuple[int, int, bool]] = []  # offset, size, channels-last
        self.grad_views: list[torch.Tensor] = []
        offset = 0
        with torch.no_grad():
            for p in self.params:
                n, nhwc, shape = p.numel(), _nhwc(p), _dense(p).shape
                flat[offset : offset + n].view(shape).copy_(_dense(p))
                p.data = _undense(flat[offset : offset + n].view(shape), nhwc)
                self.grad_views.append(_undense(grads[offset : offset + n].view(shape), nhwc))
                self.segments.append((offset, n, nhwc))
                offset += n
        self.flat = flat.requires_grad_()
        self.flat.grad = grads
        super().__init__([self.flat], **kwargs)
        self._link()

    @torch.no_grad()
    def _link(self) -> None:
        """Make every parameter's gradient its view of the buffer again, keeping the values of a gradient that was
        set elsewhere (a None one becomes zeros: e.g. Lightning's module.zero_grad() at the start of a fit)."""
        for p, view in zip(self.params, self.grad_views, strict=True):
            if p.grad is None or p.grad.data_ptr() != view.data_ptr():
                view.copy_(p.grad) if p.grad is not None else view.zero_()
                p.grad = view

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the gradient buffer (whatever `set_to_none` says: the parameters' gradients are its views)."""
        self.flat.grad.zero_()
        self._link()

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        self._link()
        return super().step(closure)

    def _pieces(self, t: torch.Tensor) -> list[torch.Tensor]:
        return [t[o : o + n].view(_dense(p).shape) for (o, n, _), p in zip(self.segments, self.params, strict=True)]

    def state_dict(self) -> dict[str, Any]:
        """Adam's per-parameter state dict (states in the dense shapes), built from the flat state."""
        state = self.state.get(self.flat, {})
        per = {i: {"step": state["step"].clone()} | {k: v.clone() for k, v in zip(
            ("exp_avg", "exp_avg_sq"), (piece[i] for piece in (self._pieces(state["exp_avg"]),
                                                                 self._pieces(state["exp_avg_sq"]))), strict=True)}
               for i in range(len(self.params))} if state else {}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"state": per, "param_groups": [group | {"params": list(range(len(self.params)))}]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a per-parameter Adam state dict (this class's, or a per-tensor Adam's of the same parameters)."""
        groups = state_dict["param_groups"]
        ids = [i for g in groups for i in g["params"]]
        if len(ids) != len(self.params):
            raise ValueError(f"optimizer state of {len(ids)} parameters, expected {len(self.params)}")
        self.param_groups[0].update({k: v for k, v in groups[0].items() if k != "params"})
        saved = state_dict["state"]
        if not saved:
            return
        state: dict[str, Any] = {"step": torch.as_tensor(saved[ids[0]]["step"], dtype=torch.float32).clone()}
        for key in ("exp_avg", "exp_avg_sq"):
            buf = torch.zeros_like(self.flat)
            for piece, i in zip(self._pieces(buf), ids, strict=True):
                if saved[i][key].shape != piece.shape:
                    raise ValueError(f"optimizer state {key} of parameter {i}: shape {tuple(saved[i][key].shape)}, "
                                     f"expected {tuple(piece.shape)}")
                piece.copy_(saved[i][key])
            state[key] = buf
        self.state[self.flat] = state


def adam(net: nn.Module, lr: float, betas: Any, fused: bool, flat: bool = False) -> torch.optim.Adam:
    """Adam (`FlatAdam` with `flat`); the fused kernel (torch ≥ 2.4 on CPU, any CUDA) saves ~25 % per step at
    small widths."""
    params = list(net.parameters())
    kind = FlatAdam if flat else torch.optim.Adam
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
