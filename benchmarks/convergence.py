"""Convergence of E and n_int with `n_orbitals` and `n_basis` on random paper potentials.

    python benchmarks/convergence.py --potentials 5 --out docs/results/convergence.md
    python benchmarks/convergence.py --electrons 3 --potentials 4 --orbitals 6 8 10 12 16 20 24 30 42 --bases

Reference for each potential: the largest n_orbitals and n_basis of the scan (not listed). Reported per setting:
mean and max over potentials of |E − E_ref| (meV), the relative L1 density error
‖n − n_ref‖₁/‖n_ref‖₁ (= displaced charge / N), the peak error max|n − n_ref|/max n_ref, and the
median solve time. `--electrons` sets N; `--bases` with no values skips the n_basis scan.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from physics.config import PhysicsConfig
from physics.ed import solve
from physics.potentials import random_potential


def scan(cfg: PhysicsConfig, potentials: list[np.ndarray], field: str, values: list[int],
         reference: dict) -> list[dict]:
    rows = []
    refs = [solve(v, dataclasses.replace(cfg, **reference)) for v in potentials]
    for value in (v for v in values if v != reference[field]):  # the reference itself is not solved again
        c = dataclasses.replace(cfg, **{field: value})
        de, l1, peak, times = [], [], [], []
        for v, ref in zip(potentials, refs, strict=True):
            t = time.perf_counter()
            gs = solve(v, c)
            times.append(time.perf_counter() - t)
            de.append(abs(gs.energy - ref.energy) * 1e3)
            l1.append(np.abs(gs.n_int - ref.n_int).sum() / np.abs(ref.n_int).sum())
            peak.append(np.abs(gs.n_int - ref.n_int).max() / ref.n_int.max())
        rows.append({field: value, "dE_mean_meV": np.mean(de), "dE_max_meV": np.max(de),
                     "L1_mean": np.mean(l1), "L1_max": np.max(l1), "peak_max": np.max(peak),
                     "time_ms": 1e3 * np.median(times)})
        print(rows[-1], flush=True)
    return rows


def table(rows: list[dict], field: str) -> str:
    head = (f"| {field} | mean abs ΔE (meV) | max abs ΔE (meV) | mean L1 rel. | max L1 rel. "
            "| max peak rel. | solve (ms) |\n|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r[field]} | {r['dE_mean_meV']:.3f} | {r['dE_max_meV']:.3f} | {r['L1_mean']:.2e} | "
        f"{r['L1_max']:.2e} | {r['peak_max']:.2e} | {r['time_ms']:.0f} |\n" for r in rows)
    return head + body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--potentials", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--orbitals", type=int, nargs="+", default=[6, 8, 10, 12, 16, 20, 24, 30, 36, 42])
    parser.add_argument("--bases", type=int, nargs="*", default=[16, 20, 24, 28, 32, 36, 40])
    parser.add_argument("--electrons", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    base = PhysicsConfig(n_electrons=args.electrons)
    rng = np.random.default_rng(args.seed)
    potentials = [random_potential(rng, base) for _ in range(args.potentials)]
    ref_orb = max(args.orbitals)
    orb_rows = scan(base, potentials, "n_orbitals", args.orbitals, {"n_orbitals": ref_orb})
    text = (f"Potentials: {args.potentials} random paper potentials (seed {args.seed}), N = "
            f"{base.n_electrons}.\n\n### n_orbitals (n_basis = {base.n_basis}; reference n_orbitals = "
            f"{ref_orb})\n\n{table(orb_rows, 'n_orbitals')}")
    if args.bases:
        ref_basis = max(args.bases)
        basis_rows = scan(base, potentials, "n_basis", args.bases, {"n_basis": ref_basis})
        text += (f"\n### n_basis (n_orbitals = {base.n_orbitals}; reference n_basis = {ref_basis})\n\n"
                 f"{table(basis_rows, 'n_basis')}")
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
