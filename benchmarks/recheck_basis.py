"""Reduced-basis ED for the trust recheck (qdgan/apply/recheck.py): time per solve and error against the stored
full-basis densities, per basis, on the same instances, one process (one BLAS thread), interleaved.

    python benchmarks/recheck_basis.py --set data/unseen_large/far_double_dot@0:200 --set data/mix_large@0:200 \
        --basis 32,16 24,12 20,10 16,8 --checkpoint <run>/checkpoints/best.ckpt   # the error's unit: its mean image

The error e = ‖n_reduced − n‖ / ‖n − β̄‖ (β̄: the checkpoint's training-mean density, or the sets' mean without
one) is what the recheck's threshold is set from (`calibrate`); the table gives its median, 99th percentile and
maximum, and the median time of one solve.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from physics.dataset import open_dataset  # noqa: E402
from physics.ed import solve  # noqa: E402
from qdgan.apply import recheck  # noqa: E402


def load(spec: str) -> tuple[np.ndarray, np.ndarray, object]:
    """Potentials, ED densities and physics of `PATH[@start:stop]`."""
    path, _, rows = spec.partition("@")
    ds = open_dataset(path)
    a, b = (int(v) for v in rows.split(":")) if rows else (0, len(ds))
    return ds.potential[a:b], ds.n_int[a:b], ds.config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", action="append", required=True, dest="sets", help="PATH[@start:stop]")
    ap.add_argument("--basis", nargs="+", default=["32,16", "24,12", "20,10", "16,8"], help="N_BASIS,N_ORBITALS")
    ap.add_argument("--checkpoint", default=None, help="its training-mean density is R²_i's reference")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    parts = [load(s) for s in args.sets]
    v, n = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    physics = parts[0][2]
    if args.checkpoint:
        from qdgan.apply import checkpoint

        mean = checkpoint.load_model(args.checkpoint, "cpu").target_mean.cpu().numpy()
    else:
        mean = n.mean(axis=0)
    bases = [tuple(int(x) for x in b.split(",")) for b in args.basis]
    cfgs = {b: recheck.reduced_config(physics, *b) for b in bases}
    for cfg in cfgs.values():
        solve(v[0], cfg)  # caches (basis, Coulomb kernel) before timing
    out = {b: (np.empty(n.shape, np.float32), np.empty(len(v))) for b in bases}
    for i in range(len(v)):  # interleaved: every basis sees the same machine state
        for b, cfg in cfgs.items():
            t0 = time.perf_counter()
            out[b][0][i] = solve(v[i], cfg).n_int
            out[b][1][i] = time.perf_counter() - t0
    rows = []
    print(f"{len(v)} instances of {', '.join(args.sets)}; one thread\n\n| basis (n_basis, n_orbitals) | ms per solve "
          "(median) | e median | e 99 % | e max | recheck threshold |\n|---|---|---|---|---|---|")
    for b in bases:
        e = recheck.reduced_error(out[b][0], n, mean)
        try:
            thr = f"{recheck.threshold(e):.3f}"
        except ValueError:
            thr = "too coarse"
        row = {"basis": b, "ms": 1e3 * float(np.median(out[b][1])), "e_median": float(np.median(e)),
               "e_99": float(np.quantile(e, 0.99)), "e_max": float(e.max()), "threshold": thr}
        rows.append(row)
        print(f"| {b} | {row['ms']:.1f} | {row['e_median']:.4f} | {row['e_99']:.4f} | {row['e_max']:.3f} | {thr} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"sets": args.sets, "n": len(v), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
