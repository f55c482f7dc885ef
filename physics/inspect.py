"""`python -m physics.inspect DIR`: validate a data set, print a summary, draw Fig. A3 and examples.

Writes `averages.png` (the paper's Fig. A3: means of V, n0 and n_int over the set, here over all
instances rather than the 4800 training ones) and `examples.png` to --out: `--examples` random instances
for a set of one potential family, one random instance per family present for a mixture.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from physics import families
from physics.dataset import Dataset, open_dataset
from physics.shards import DatasetError

__all__ = ["averages", "main", "pick_examples", "plot_averages", "plot_examples", "summary"]

MAPS = {"potential": ("V", "eV"), "n0": ("n₀", "nm⁻²"), "n_int": ("n_int", "nm⁻²")}


def averages(ds: Dataset) -> dict[str, np.ndarray]:
    """Means over all instances of V (eV), n0 and n_int (nm⁻²), accumulated in float64 per shard."""
    total = {name: np.zeros((ds.config.grid,) * 2) for name in MAPS}
    for shard in ds.iter_shards(tuple(MAPS)):
        for name in MAPS:
            total[name] += shard[name].sum(axis=0, dtype=np.float64)
    return {name: t / len(ds) for name, t in total.items()}


def summary(ds: Dataset) -> str:
    """Count, configuration, provenance and energy statistics (eV) as printable text."""
    e, e0 = ds.energy[:], ds.energy_nonint[:]
    ident = ds.identity
    lines = [
        f"data set     {ds.directory}",
        f"instances    {len(ds)} in {ident.n_shards} shards of {ident.shard_size}, seed {ident.seed}, "
        f"manifest {'finalized' if ds.finalized else 'not finalized'}",
        f"code         {', '.join(ds.code_versions)}",
        "physics      " + " ".join(f"{k}={v}" for k, v in ds.config.to_dict().items()),
        "potential    " + " ".join(f"{k}={v}" for k, v in families.to_dict(ds.potential_spec).items()),
        "families     " + ", ".join(f"{name} {count}" for name, count in ds.family_counts.items()),
        f"{'energy (eV)':<18}{'mean':>10}{'std':>10}{'min':>10}{'median':>10}{'max':>10}",
    ]
    for label, x in (("E_int", e), ("E_nonint", e0), ("E_int - E_nonint", e - e0)):
        stats = (x.mean(), x.std(), x.min(), np.median(x), x.max())
        lines.append(f"{label:<18}" + "".join(f"{v:>10.5f}" for v in stats))
    return "\n".join(lines)


def _panel(fig: Figure, ax: object, image: np.ndarray, length: float, title: str, unit: str) -> None:
    """One map with axis 0 = x horizontal, origin lower left, axes in nm."""
    im = ax.imshow(image.T, origin="lower", extent=(0.0, length, 0.0, length), cmap="viridis")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x (nm)", fontsize=8)
    ax.set_ylabel("y (nm)", fontsize=8)
    ax.tick_params(labelsize=7)
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(unit, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def plot_averages(avg: dict[str, np.ndarray], length_nm: float, n: int, path: Path) -> None:
    """Fig. A3: the averages of V, n0 and n_int side by side."""
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    for ax, (name, (symbol, unit)) in zip(fig.subplots(1, 3), MAPS.items(), strict=True):
        _panel(fig, ax, avg[name], length_nm, f"mean {symbol} over {n} instances", unit)
    fig.savefig(path, dpi=120)


def pick_examples(ds: Dataset, count: int, seed: int) -> np.ndarray:
    """Instances to draw: `count` at random from a set of one family, else one at random per family present."""
    rng = np.random.default_rng(seed)
    codes = ds.family
    present = np.unique(codes)
    if len(present) == 1:
        return np.sort(rng.choice(len(ds), size=min(count, len(ds)), replace=False))
    return np.array([rng.choice(np.flatnonzero(codes == c)) for c in present], dtype=np.int64)


def plot_examples(ds: Dataset, indices: Sequence[int], path: Path) -> None:
    """One row per instance: V (with its family), n0 (with E_nonint), n_int (with E_int)."""
    idx = np.asarray(indices, dtype=np.int64)
    maps = {name: ds[name][idx] for name in MAPS}
    e, e0 = ds.energy[idx], ds.energy_nonint[idx]
    names = [ds.family_names[c] for c in ds.family[idx]]
    fig = Figure(figsize=(12, 3.1 * len(idx)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(idx), 3))
    for row, k in enumerate(idx):
        titles = (f"#{k} ({names[row]}): V", f"#{k}: n₀ (E₀ = {e0[row]:.4f} eV)", f"#{k}: n_int (E = {e[row]:.4f} eV)")
        for col, (name, (_, unit)) in enumerate(MAPS.items()):
            _panel(fig, axes[row, col], maps[name][row], ds.config.length_nm, titles[col], unit)
    fig.savefig(path, dpi=100)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m physics.inspect", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="data-set directory (with manifest.json)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the PNGs go (default: outputs/inspect/<directory name>)")
    parser.add_argument("--examples", type=int, default=4,
                        help="random instances to draw (default 4); a mixture shows one per family instead")
    parser.add_argument("--seed", type=int, default=0, help="seed choosing the examples (default 0)")
    parser.add_argument("--no-validate", action="store_true", help="skip the full validation pass")
    args = parser.parse_args(argv)
    try:
        ds = open_dataset(args.directory)
        report = None if args.no_validate else ds.validate()
        print(summary(ds))
        if report is not None:
            print(f"validation   ok: {report.n_instances} instances, {report.n_shards} shards, "
                  f"{report.seconds:.2f} s")
        out = args.out or Path("outputs/inspect") / args.directory.resolve().name
        out.mkdir(parents=True, exist_ok=True)
        plot_averages(averages(ds), ds.config.length_nm, len(ds), out / "averages.png")
        picks = pick_examples(ds, args.examples, args.seed)
        plot_examples(ds, picks, out / "examples.png")
        print(f"figures      {out / 'averages.png'}, {out / 'examples.png'} (instances {picks.tolist()})")
    except DatasetError as err:
        print(f"physics.inspect: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
