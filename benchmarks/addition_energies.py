"""Addition energies E(N+1) − E(N) of the paper's potentials from the N = 1…4 data sets (issue 11), how well a
simple baseline predicts them, and (`--density-figure`) one potential's ground-state density for N = 1…4 by ED.

    python benchmarks/addition_energies.py --sets data/paper_n1 data/paper data/paper_n3 data/paper_n4 \
        --out docs/results/electrons
    python benchmarks/addition_energies.py --density-figure docs/figures/electrons_density.png --instance 0

The sets must hold N = 1, 2, … (one each, consecutive) and the same potentials row by row (generated with one
seed): both are checked, and a mismatch ends in one line naming the sets and the first differing row.
Writes `addition_energies.csv` (per potential: E(N) and E(N+1) − E(N), eV), `addition_energies.md` (statistics
and baselines) and `addition_energies.png` (histograms, baseline vs truth).

No model of this project predicts an energy: the pix2pix networks map maps to maps. So "how well could a model
predict the addition energy?" is answered here only by baselines, K-fold cross-validated least squares on
(a) features of the potential map alone (well-area fraction, number of wells, largest well's area and its
inverse, mean and spread of V), and (b) the single-particle addition energy E₀(N+1) − E₀(N) (the next orbital's
energy; `energy_nonint` of the sets, which costs the single-particle solve, two thirds of an ED at N ≤ 3).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

MEV = 1000.0
ORBITALS = {4: 20}  # n_orbitals per N where it is not the default 16 (docs/physics.md: the data sets' choice)


@dataclasses.dataclass(frozen=True)
class Sets:
    """The sets' energies by N, their shared potentials and where they came from."""

    paths: list[Path]
    electrons: list[int]  # N of each set, ascending
    energy: np.ndarray  # (k, n) E(N), eV
    energy_nonint: np.ndarray  # (k, n) E₀(N), eV
    potential: np.ndarray  # (n, grid, grid), eV


def load(paths: list[str | Path]) -> Sets:
    """Open the sets, order them by N, and refuse (ValueError, one line) sets of other N than 1, 2, … (one each),
    of other sizes, or whose potentials differ in any row."""
    from physics.dataset import open_dataset

    sets = sorted(((Path(p), open_dataset(p)) for p in paths), key=lambda s: s[1].config.n_electrons)
    found = [ds.config.n_electrons for _, ds in sets]
    if len(found) < 2 or found != list(range(found[0], found[0] + len(found))):
        raise ValueError(f"--sets {' '.join(str(p) for p, _ in sets)}: hold N = {found}; expected consecutive N, one "
                         "set each (addition energies compare N and N + 1)")
    (first, ref), sizes = sets[0], {len(ds) for _, ds in sets}
    if len(sizes) > 1:
        raise ValueError(f"--sets: the sets hold {sorted(sizes)} instances; expected the same potentials in each")
    potential = np.asarray(ref.potential[:])
    for path, ds in sets[1:]:
        other = np.asarray(ds.potential[:])
        if (rows := np.flatnonzero((other != potential).reshape(len(other), -1).any(axis=1))).size:
            raise ValueError(f"--sets: {path} and {first} differ in {rows.size} potential(s), first row {rows[0]} "
                             f"(seeds {ds.seed} and {ref.seed}); expected the same potentials row by row")
    return Sets([p for p, _ in sets], found, np.stack([np.asarray(ds.energy[:]) for _, ds in sets]),
                np.stack([np.asarray(ds.energy_nonint[:]) for _, ds in sets]), potential)


def addition_energies(energy: np.ndarray) -> np.ndarray:
    """E(N+1) − E(N) for each consecutive pair of rows of `energy` (k, n) → (k − 1, n)."""
    return np.diff(energy, axis=0)


def potential_features(potential: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Per map: well-area fraction (pixels below the map's mid level), number of wells and the largest one's area
    (connected regions below it), 1/area, mean and std of V; (n, 6) and the names."""
    from scipy import ndimage

    n = len(potential)
    mid = 0.5 * (potential.min(axis=(1, 2)) + potential.max(axis=(1, 2)))
    out = np.empty((n, 6))
    for i, (v, m) in enumerate(zip(potential, mid, strict=True)):
        labels, count = ndimage.label(v < m)
        largest = np.bincount(labels.ravel())[1:].max(initial=0) / v.size
        out[i] = ((v < m).mean(), count, largest, 1.0 / max(largest, 1.0 / v.size), v.mean(), v.std())
    return out, ["well fraction", "wells", "largest well", "1/largest well", "mean V", "std V"]


def cross_validated(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> tuple[np.ndarray, float, float]:
    """Out-of-fold predictions of least squares y ≈ a + x·b (features standardized on each training fold),
    their R² (1 − SS_res/SS_tot about the mean of y) and mean |error|."""
    x = x.reshape(len(x), -1)
    pred = np.empty_like(y, dtype=np.float64)
    for part in np.array_split(np.random.default_rng(seed).permutation(len(y)), folds):
        train = np.setdiff1d(np.arange(len(y)), part)
        mu, sd = x[train].mean(axis=0), x[train].std(axis=0)
        sd[sd == 0] = 1.0
        a, b = (np.column_stack([np.ones(len(rows)), (x[rows] - mu) / sd]) for rows in (train, part))
        coef, *_ = np.linalg.lstsq(a, y[train], rcond=None)
        pred[part] = b @ coef
    r2 = 1.0 - float(((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    return pred, r2, float(np.abs(y - pred).mean())


def report(sets: Sets, out: Path, folds: int = 5) -> list[Path]:
    """The csv, markdown table and figure of the addition energies and their baselines, in `out`."""
    mu, mu0 = addition_energies(sets.energy), addition_energies(sets.energy_nonint)
    feats, names = potential_features(sets.potential)
    pairs = [f"E({n + 1}) − E({n})" for n in sets.electrons[:-1]]
    rows, fits = [], []
    for k, label in enumerate(pairs):
        from_v = cross_validated(feats, mu[k], folds)
        from_e0 = cross_validated(mu0[k], mu[k], folds)
        fits.append((from_v[0], from_e0[0]))
        q = np.percentile(mu[k] * MEV, [5, 50, 95])
        rows.append(f"| {label} | {mu[k].mean() * MEV:.2f} | {mu[k].std() * MEV:.2f} | {q[0]:.2f} | {q[1]:.2f} | "
                    f"{q[2]:.2f} | {from_v[1]:.3f} | {from_v[2] * MEV:.2f} | {from_e0[1]:.3f} | "
                    f"{from_e0[2] * MEV:.2f} |")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "addition_energies.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["row", *[f"E{n}_ev" for n in sets.electrons],
                         *[f"E{n + 1}-E{n}_ev" for n in sets.electrons[:-1]]])
        writer.writerows([i, *sets.energy[:, i], *mu[:, i]] for i in range(sets.energy.shape[1]))
    (out / "addition_energies.md").write_text("\n".join([
        "# Addition energies E(N+1) − E(N)", "",
        f"{sets.energy.shape[1]} potentials, sets {', '.join(map(str, sets.paths))} (N = "
        f"{', '.join(map(str, sets.electrons))}); meV. Baselines: {folds}-fold cross-validated least squares; "
        f"R² and mean |error| out of fold. From V: {', '.join(names)} of the potential map. From E₀: the "
        "single-particle addition energy E₀(N+1) − E₀(N) (needs the single-particle solve). No network here "
        "predicts energies.", "",
        "| | mean | std | 5 % | median | 95 % | R² from V | mean \\|err\\| from V | R² from E₀ | "
        "mean \\|err\\| from E₀ |", "|---" * 10 + "|", *rows, ""]))
    return [out / "addition_energies.csv", out / "addition_energies.md", figure(mu, fits, pairs, out)]


def figure(mu: np.ndarray, fits: list[tuple[np.ndarray, np.ndarray]], pairs: list[str], out: Path) -> Path:
    """Histograms of the addition energies, and the baselines' out-of-fold predictions against them."""
    import matplotlib.pyplot as plt

    from physics.plots import save_figure

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, label in enumerate(pairs):
        ax.hist(mu[k] * MEV, bins=60, histtype="step", label=label)
        bx.scatter(mu[k] * MEV, fits[k][0] * MEV, s=2, alpha=0.4, label=f"{label}, from V")
        bx.scatter(mu[k] * MEV, fits[k][1] * MEV, s=2, alpha=0.4, marker="x", label=f"{label}, from E₀")
    ax.set_xlabel("addition energy (meV)")
    ax.set_ylabel("potentials")
    ax.legend(fontsize=8)
    lo, hi = float(mu.min() * MEV), float(mu.max() * MEV)
    bx.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    bx.set_xlabel("ED (meV)")
    bx.set_ylabel("baseline, out of fold (meV)")
    bx.legend(fontsize=7, markerscale=4)
    return save_figure(fig, out / "addition_energies.png")


def density_figure(path: str | Path, instance: int = 0, seed: int = 0, electrons: tuple[int, ...] = (1, 2, 3, 4),
                   physics: dict | None = None) -> Path:
    """Potential `instance` of the paper's set of `seed` (row `instance` of every N = 1…4 set) and its interacting
    ground-state density for each N by `physics.ed.solve` (n_orbitals as the data sets: 20 for N = 4), with the
    density each added electron brings, n(N) − n(N − 1)."""
    import matplotlib.pyplot as plt

    from physics.config import PhysicsConfig
    from physics.ed import solve
    from physics.families import PAPER, random_potential_of
    from physics.instances import instance_seed
    from physics.plots import save_figure, show_map

    base = PhysicsConfig(**(physics or {}))
    potential, _ = random_potential_of(np.random.default_rng(instance_seed(seed, instance)), base, PAPER)
    states = [solve(potential, dataclasses.replace(base, n_electrons=n, n_orbitals=ORBITALS.get(n, base.n_orbitals)))
              for n in electrons]
    fig, axes = plt.subplots(2, len(states) + 1, figsize=(3.6 * (len(states) + 1), 6.4))
    show_map(axes[0, 0], potential, base.length_nm, "potential", f"V, instance {instance} (seed {seed})")
    energies = [f"E({s.n_electrons}) = {s.energy:.4f} eV" for s in states]
    axes[1, 0].axis("off")
    axes[1, 0].text(0.0, 0.5, "\n".join(energies + [f"E({b.n_electrons}) − E({a.n_electrons}) = "
                                                     f"{(b.energy - a.energy) * MEV:.1f} meV"
                                                     for a, b in itertools.pairwise(states)]),
                    va="center", fontsize=9, transform=axes[1, 0].transAxes)
    previous = np.zeros_like(potential)
    for j, s in enumerate(states, 1):
        show_map(axes[0, j], s.n_int, base.length_nm, "n_int",
                 f"$n_{{int}}$, N = {s.n_electrons}, S = {s.spin:g} ({s.n_orbitals} orbitals)")
        added = s.n_int - previous
        show_map(axes[1, j], added, base.length_nm, "n_int", f"n(N = {s.n_electrons}) − n(N = {s.n_electrons - 1})")
        scale = float(np.abs(added).max())
        axes[1, j].images[-1].set_cmap("RdBu_r")
        axes[1, j].images[-1].set_clim(-scale, scale)
        previous = s.n_int
    return save_figure(fig, path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", default=["data/paper_n1", "data/paper", "data/paper_n3", "data/paper_n4"])
    ap.add_argument("--out", default="outputs/addition_energies", help="folder of the csv, md and png")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--density-figure", default=None, help="draw this PNG (ED of one potential at N = 1…4) only")
    ap.add_argument("--instance", type=int, default=0, help="row of the paper's set drawn by --density-figure")
    args = ap.parse_args(argv)
    from physics.shards import DatasetError

    try:
        if args.density_figure:
            print(f"wrote {density_figure(args.density_figure, args.instance)}")
            return 0
        written = report(load(args.sets), Path(args.out), args.folds)
    except (ValueError, OSError, DatasetError) as err:
        print(f"addition_energies: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print((Path(args.out) / "addition_energies.md").read_text())
    print("wrote " + ", ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
