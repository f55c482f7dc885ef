"""PNG maps for the apply apps: grey levels ↔ physical values over an explicit range [lo, hi].

Grey level 0 ↦ lo, the largest level (255 or 65535) ↦ hi. Orientation as in every figure of the
project: x to the right, y up (image row 0 is the top, y = L), so an (x, y) map is the image
flipped and transposed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qdgan.apply import InputError

_PNG_MAX = {"1": 1, "L": 255, "LA": 255, "I": 65535, "I;16": 65535, "I;16B": 65535, "I;16L": 65535}


def check_range(value_range: Sequence[float]) -> tuple[float, float]:
    """`png_range` as two finite numbers lo < hi."""
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise InputError(f"png_range={value_range!r}: expected two numbers [lo,hi]") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise InputError(f"png_range={value_range!r}: expected finite lo < hi")
    return lo, hi


def png_shape(path: Path) -> tuple[int, int]:
    """The (x, y) map shape of a PNG, from its header (pixels are not decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"input={path}: not a readable PNG image ({err})") from None


def read_png(path: Path, value_range: tuple[float, float]) -> np.ndarray:
    """One grey-scale PNG (8 or 16 bit; RGB only with equal channels) as an (x, y) map in physical units."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode == "P":
                img, mode = img.convert("RGBA"), "RGBA"
            pixels = np.asarray(img)
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"input={path}: not a readable PNG image ({err})") from None
    if mode in ("RGB", "RGBA"):
        rgb = pixels[..., :3].astype(np.int64)
        if not ((rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])).all():
            raise InputError(f"input={path}: a colour image; expected grey levels (a colour map cannot be "
                             "inverted to values)")
        pixels, top = rgb[..., 0], 255
    elif mode in _PNG_MAX:
        pixels, top = (pixels[..., 0] if pixels.ndim == 3 else pixels), _PNG_MAX[mode]
    else:
        raise InputError(f"input={path}: PNG mode {mode!r} is not supported; expected 8- or 16-bit grey")
    lo, hi = value_range
    values = lo + (pixels.astype(np.float64) / top) * (hi - lo)
    return np.ascontiguousarray(values[::-1].T, dtype=np.float32)


def write_png(path: str | os.PathLike[str], values: np.ndarray, value_range: tuple[float, float]) -> Path:
    """An (x, y) map as a 16-bit grey PNG that `read_png` with the same range reads back (clipped to it)."""
    from PIL import Image

    lo, hi = value_range
    level = np.rint(np.clip((np.asarray(values, dtype=np.float64) - lo) / (hi - lo), 0, 1) * 65535)
    path = Path(path)
    Image.fromarray(np.ascontiguousarray(level.T[::-1]).astype(np.uint16)).save(path, format="PNG")
    return path
