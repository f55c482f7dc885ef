"""Speed switches of the training step that leave its arithmetic as it was (docs/training.md, "Speed").

- `SplitBatchNorm2d`: batch norm that normalizes each of `groups` equal parts of a batch with that part's own
  statistics, exactly as separate passes would. It lets D see real and fake pairs in one pass (one conv call per
  layer instead of two) while every number it computes stays that of the reference's two separate passes: D's
  batch norm never mixes real and fake statistics.
- `fp32_output`: the generator's output layer runs in fp32 under bf16 autocast, so the outputs (and the L1 loss
  and the SSIM of the predictions) are not quantized to bf16's 8 bits (a bf16 output step is 0.4 % of the target
  range, visible in low densities).
- `autocast_dtype`: the autocast dtype of a `model.autocast` setting on a device (`auto`: bf16 on a CPU that
  computes it natively, else none; on a GPU the trainer's precision decides, conf/trainer/gpu.yaml).
- `channels_last`: NHWC strides that layers recognize also for one-channel maps.
- `FoldConvTranspose2d`: a transposed convolution as matmul + col2im (G's output layer, `model.fold_output`).
- `host_value`: a small buffer's numbers (data statistics, the step count) read without a GPU sync per step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AUTOCAST = ("none", "bf16", "auto")


def channels_last(x: Tensor) -> Tensor:
    """`x` (B, C, H, W) in NHWC memory with NHWC strides also for C = 1: `contiguous(channels_last)` keeps a
    one-channel map's NCHW strides (both layouts at once), and layers then pick NCHW for it and all that follows
    from it (G's first layer, the last skip connection and the output layer)."""
    if x.is_contiguous(memory_format=torch.channels_last) and (x.shape[1] != 1 or x.stride(1) == 1):
        return x
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode forward normalizes each of `groups` equal batch parts on its own (the
    running statistics updated part by part, in order). `groups` = 1: plain BatchNorm2d. Same state-dict keys."""

    groups: int = 1

    def forward(self, x: Tensor) -> Tensor:
        if self.groups == 1 or not self.training:
            return super().forward(x)
        return torch.cat([super(SplitBatchNorm2d, self).forward(part) for part in x.chunk(self.groups)])


def split_batch_norms(net: nn.Module) -> nn.Module:
    """Turn every BatchNorm2d of `net` into a `SplitBatchNorm2d` in place (same parameters and buffers)."""
    for m in net.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = SplitBatchNorm2d
    return net


@contextlib.contextmanager
def batch_groups(net: nn.Module, groups: int) -> Iterator[None]:
    """Within the block, `net`'s split batch norms normalize `groups` equal parts of each batch separately."""
    norms = [m for m in net.modules() if isinstance(m, SplitBatchNorm2d)]
    for m in norms:
        m.groups = groups
    try:
        yield
    finally:
        for m in norms:
            m.groups = 1


def output_layer(generator: nn.Module) -> nn.Module:
    """The generator's output layer: its `head` (UNetGenerator), else its last child module."""
    head = getattr(generator, "head", None)
    if isinstance(head, nn.Module):
        return head
    children = list(generator.children())
    if not children:
        raise ValueError(f"{type(generator).__name__} has no output layer to run in fp32")
    return children[-1]


def fp32_output(generator: nn.Module) -> nn.Module:
    """Run the generator's output layer in fp32 even under autocast (inputs cast up, autocast off inside).
    The parameters and state-dict keys are unchanged; only that layer's forward is wrapped."""
    layer = output_layer(generator)
    if getattr(layer, "_fp32_output", False):
        return generator
    inner = layer.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(args[0].device.type, enabled=False):
            return inner(*(a.float() if torch.is_tensor(a) else a for a in args), **kwargs)

    layer.forward = forward
    layer._fp32_output = True
    return generator


class FoldConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d (same parameters, the same sums) as one matmul and a col2im (`F.fold`): the CPU's
    transposed convolution to one channel is slow (G's fp32 output layer, 32 → 1 channels at 64×64, one thread:
    forward + backward 2.3 ms, as matmul and fold 1.6 ms)."""

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if output_size is not None or self.groups != 1 or self.dilation != (1, 1) or self.output_padding != (0, 0):
            return super().forward(x, output_size)
        (b, c, h, w), (kh, kw), (sh, sw), (ph, pw) = x.shape, self.kernel_size, self.stride, self.padding
        taps = self.out_channels * kh * kw
        cols = x.permute(0, 2, 3, 1).reshape(b * h * w, c) @ self.weight.reshape(c, taps)  # (B·H·W, O·kh·kw)
        size = ((h - 1) * sh - 2 * ph + kh, (w - 1) * sw - 2 * pw + kw)
        out = F.fold(cols.view(b, h * w, taps).transpose(1, 2), size, (kh, kw), padding=(ph, pw), stride=(sh, sw))
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)


def fold_output(generator: nn.Module) -> nn.Module:
    """G's output layer's transposed convolutions as `FoldConvTranspose2d` (in place; same parameters)."""
    for m in output_layer(generator).modules():
        if type(m) is nn.ConvTranspose2d:
            m.__class__ = FoldConvTranspose2d
    return generator


def bf16_native(device: torch.device) -> bool:
    """Whether `device` computes bf16 convolutions natively (CUDA with bf16; CPU with AVX-512 BF16 / AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def autocast_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """bf16 for `bf16`, and for `auto` on a CPU where `bf16_native`; None (fp32) otherwise. (On a GPU these small
    networks are launch-bound: bf16 did not speed the step up on an H200; trainer=gpu sets its own precision.)"""
    if setting not in AUTOCAST:
        raise ValueError(f"model.autocast={setting!r}: expected one of {AUTOCAST}")
    if setting == "bf16" or (setting == "auto" and device.type == "cpu" and bf16_native(device)):
        return torch.bfloat16
    return None


def autocast(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    """torch.autocast to `dtype` on `device`, or nothing when dtype is None."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


class UniformDropout(nn.Dropout):
    """nn.Dropout with its mask drawn as uniform numbers ≥ p (the same Bernoulli(1 − p) keep-mask, other draws):
    CPU's bernoulli_ takes ~10 ns per element, four times torch.rand's. Same module, same state."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand_like(x, dtype=torch.float32) >= self.p
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


def uniform_dropout(net: nn.Module) -> nn.Module:
    """Turn every nn.Dropout of `net` into a `UniformDropout` in place."""
    for m in net.modules():
        if type(m) is nn.Dropout:
            m.__class__ = UniformDropout
    return net


class _ReLU(torch.autograd.Function):
    """ReLU whose backward first copies its incoming gradient into the output's memory format."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = torch.relu(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        nhwc = out.dim() == 4 and out.is_contiguous(memory_format=torch.channels_last)
        grad = grad.contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
        return torch.ops.aten.threshold_backward(grad, out, 0)


class DenseGradReLU(nn.ReLU):
    """nn.ReLU (same results) for NHWC U-Net decoders: the gradient a ReLU gets back through a skip connection's
    torch.cat is a channel slice of an NHWC tensor, strided, and bf16's ReLU backward on strided gradients is ~20×
    slower than a copy plus the dense kernel."""

    def forward(self, x: Tensor) -> Tensor:
        return _ReLU.apply(x)


def dense_grad_relus(net: nn.Module) -> nn.Module:
    """Turn every nn.ReLU of `net` into a `DenseGradReLU` in place."""
    for m in net.modules():
        if type(m) is nn.ReLU:
            m.__class__ = DenseGradReLU
    return net


def host_value(module: nn.Module, name: str) -> Any:
    """`module.<name>`, a small buffer, as Python numbers (`tolist`), read from its device again only when the
    buffer changed: in place (its version counter: `copy_`, `+=`, `load_state_dict`) or moved. On a GPU each
    `.item()`/`int()` of a device tensor waits for all queued work; the training step reads these every batch."""
    t = getattr(module, name)
    key = (t._version, t.data_ptr(), t.device)
    cache = module.__dict__.setdefault("_host_values", {})
    if name not in cache or cache[name][0] != key:
        cache[name] = (key, t.tolist())
    return cache[name][1]


def host_add_(module: nn.Module, name: str, value: int | float = 1) -> None:
    """`module.<name> += value` on its device, and the same on `host_value`'s copy, without a sync."""
    new = host_value(module, name) + value
    t = getattr(module, name)
    t += value
    module.__dict__["_host_values"][name] = ((t._version, t.data_ptr(), t.device), new)
