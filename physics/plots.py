"""Pictures of potentials and densities on the cell-centred grid (axis 0 = x, shown horizontally)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from physics.shards import FIELDS

UNITS = {name: f.unit.replace("^-2", "⁻²") for name, f in FIELDS.items() if f.is_map}
"""Map units as figure labels, from the one units table (physics.shards.FIELDS)."""
LABELS = {"potential": "$V_{xy}$", "n0": "$n_0$", "n_int": "$n_{int}$"}
CMAPS = {"potential": "cividis", "n0": "inferno", "n_int": "inferno"}


def show_map(ax: plt.Axes, values: np.ndarray, length_nm: float, name: str, title: str | None = None) -> None:
    """One map with physical axes (nm) and a colour bar in the quantity's unit."""
    image = ax.imshow(values.T, origin="lower", extent=(0, length_nm, 0, length_nm),
                      cmap=CMAPS.get(name, "viridis"), interpolation="nearest")
    ax.set_title(title or LABELS.get(name, name))
    ax.set_xlabel("x (nm)")
    ax.set_ylabel("y (nm)")
    plt.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=UNITS.get(name, ""))


def plot_row(maps: Mapping[str, np.ndarray], length_nm: float, path: str | Path,
             title: str | None = None, titles: Sequence[str] | None = None) -> Path:
    """Save maps side by side (e.g. V, n0, n_int as in the paper's Figs. 1-2) as a PNG."""
    fig, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 3.8), squeeze=False)
    for i, (ax, (name, values)) in enumerate(zip(axes[0], maps.items(), strict=True)):
        show_map(ax, np.asarray(values), length_nm, name, titles[i] if titles else None)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=120)


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    """Tight layout, PNG at `path` (parent folders created), and the figure closed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
