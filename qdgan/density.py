"""A density output layer (`model.density_output`): the generator's raw output r → n = N·f(r) / (h²·Σ f(r)) with
f = softplus or exp, so every predicted density is ≥ 0 and integrates to its instance's N by construction
(instead of projecting the predictions afterwards, `train.evaluate.normalize_charge`). The density is then mapped
to the [−1, 1] scaled space the losses and D work in, so training is unchanged apart from the output layer.

Only for density targets; the generator's final tanh is dropped (the scaled density of a peak may exceed 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qdgan.scaling import to_unit_range

DENSITY_OUTPUTS = (None, "softplus", "exp")


def check(kind: str | None, target: str, is_density: bool) -> None:
    """ValueError (one line) for an unknown kind, or a density output for a target that is not a density."""
    if kind not in DENSITY_OUTPUTS:
        raise ValueError(f"model.density_output={kind!r}: expected one of {DENSITY_OUTPUTS}")
    if kind is not None and not is_density:
        raise ValueError(f"model.density_output={kind}: the target {target or '(none)'} is not a density "
                         "(n ≥ 0, ∫n dA = N); use model.density_output=null for this mapping")


def drop_tanh(generator: nn.Module) -> nn.Module:
    """Replace the final tanh of the generator's `head` by the identity (the raw output r); ValueError when the
    generator has no `head` ending in tanh."""
    head = getattr(generator, "head", None)
    if not (isinstance(head, nn.Sequential) and len(head) and isinstance(head[-1], nn.Tanh)):
        raise ValueError(f"model.density_output needs a generator whose `head` ends in tanh "
                         f"({type(generator).__name__} has none)")
    head[-1] = nn.Identity()
    return generator


def positive(raw: Tensor, kind: str) -> Tensor:
    """f(r) ≥ 0: softplus, or exp (shifted by each map's max: the normalization removes the shift)."""
    if kind == "softplus":
        return F.softplus(raw)
    return torch.exp(raw - raw.amax(dim=(-2, -1), keepdim=True))


def density(raw: Tensor, kind: str, n_electrons: Tensor | float, pixel_area: float) -> Tensor:
    """Raw outputs (B, 1, H, W) → physical densities (B, 1, H, W), ≥ 0, with h²·Σn = N per instance (N one number
    or each instance's (B,)). Computed in fp32."""
    f = positive(raw.float(), kind)
    total = f.sum(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(f.dtype).tiny) * pixel_area
    if isinstance(n_electrons, Tensor):
        n_electrons = n_electrons.to(f).reshape(-1, 1, 1, 1)
    return f * (n_electrons / total)


def scaled_density(raw: Tensor, kind: str, n_electrons: Tensor | float, pixel_area: float, lo: float,
                   hi: float) -> Tensor:
    """`density` in the training scale: [lo, hi] (the training targets' min/max) → [−1, 1]."""
    return to_unit_range(density(raw, kind, n_electrons, pixel_area), lo, hi)
