"""Hydra app `python -m qdgan.invert checkpoint=<nint_to_v ckpt> input=<densities>`: the inverse problem.

Paper Fig. 6 and §IV: a density ↦ potential generator proposes Ṽ = G(n_int); Ṽ (raw, or projected
onto the admissible potentials: clipped to [V0, Vs] or snapped to {V0, Vs}) is solved by ED with the
same PhysicsConfig, and the recomputed density n_int^(r) is compared with the input n_int. When the
original V is known (a data-set input, an .h5 input holding 'potential', or `reference=`), Ṽ is
compared with V too. Writes `invert_metrics.json` (R², L1/L2/L∞, SSIM, MSSIM of both comparisons),
`invert_instances.csv` (the same per instance), `inversion.h5` and `figures/fig6.png`. Each Ṽ gets an
estimated R²_i against the V that made n_int (qdgan/apply/trust.py), flagged below `trust.threshold`; for a
density no training potential made (a drawn one) the ED check n_int^(r) vs n_int is the answer.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from physics.files import Staging
from qdgan.apply import InputError
from qdgan.apply.ed_batch import solve_all
from qdgan.apply.inputs import read_reference
from qdgan.apply.outputs import ArrayWriter, as_paths, check_outputs
from qdgan.apply.trust import trust_report
from qdgan.scaling import DENSITIES, UNITS

log = logging.getLogger("qdgan.invert")

PROJECTIONS = ("none", "clip", "snap")


def project(potential: np.ndarray, mode: str, v_well: float, v_step: float) -> np.ndarray:
    """The admissible potential nearest to Ṽ: `none` keeps the generator's output (the paper's
    choice), `clip` limits it to [V0, Vs], `snap` sets each pixel to V0 or Vs, whichever is closer."""
    if mode == "none":
        return potential
    lo, hi = min(v_well, v_step), max(v_well, v_step)
    if mode == "clip":
        return np.clip(potential, lo, hi)
    if mode == "snap":
        return np.where(potential < 0.5 * (lo + hi), lo, hi).astype(potential.dtype)
    raise InputError(f"projection={mode!r}: expected one of {PROJECTIONS}")


def blob_density(grid: int, length_nm: float, n_electrons: float,
                 blobs: list[tuple[float, float, float, float]]) -> np.ndarray:
    """A synthetic target density (grid, grid) in nm⁻², h²·Σn = N: a sum of Gaussian blobs (x_nm, y_nm,
    sigma_nm, weight), maps indexed [x, y] as physics/basis.py's (0 at the box's corner) — a density no
    training potential made, to design a potential for (`qdgan.invert input=<its .npy>`)."""
    h = length_nm / grid
    c = (np.arange(grid) + 0.5) * h
    xx, yy = np.meshgrid(c, c, indexing="ij")
    n = sum(w * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s**2)) for x, y, s, w in blobs)
    return (n_electrons * n / (h * h * n.sum())).astype(np.float32)


def check_mapping(model: Any, checkpoint: str) -> None:
    """qdgan.invert needs a density ↦ potential checkpoint (e.g. mapping=nint_to_v)."""
    hp = model.hparams
    if hp.target_name != "potential" or hp.input_name not in DENSITIES:
        raise InputError(f"checkpoint={checkpoint} maps {hp.input_name} ↦ {hp.target_name} ({hp.mapping}); "
                         "qdgan.invert needs a density ↦ potential mapping (train with mapping=nint_to_v); "
                         "forward mappings are verified with python -m qdgan.predict … verify=true")


def run_invert(cfg: DictConfig) -> dict[str, Any]:
    """Generate Ṽ, project it, re-solve it by ED, compare, write the outputs; return the metrics."""
    import torch

    from qdgan.apply import checkpoint
    from qdgan.apply.uncertainty import assess_chunk, bottleneck_capture, prepare
    from qdgan.train import figures

    if cfg.projection not in PROJECTIONS:
        raise InputError(f"projection={cfg.projection!r}: expected one of {PROJECTIONS}")
    tol = cfg.checks.density_tolerance
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise InputError(f"checks.density_tolerance={tol!r}: expected a positive number (relative L2 of n^(r) − n)")
    if isinstance(cfg.seen_fraction, bool) or not isinstance(cfg.seen_fraction, (int, float)) \
            or not 0 < cfg.seen_fraction < 1:
        raise InputError(f"seen_fraction={cfg.seen_fraction!r}: expected a number in (0, 1), a fraction of each "
                         "input density's peak")
    out_dir = Path(cfg.out_dir)
    files = [out_dir / name for name in ("inversion.h5", "invert_instances.csv", "invert_metrics.json")]
    outputs = check_outputs(as_paths(checkpoint.plain(cfg.output)),
                            [*files, out_dir / "figures" / "fig6.png" if cfg.n_panels > 0 else None],
                            [cfg.input, cfg.checkpoint], bool(cfg.overwrite))
    model = checkpoint.load_model(cfg.checkpoint, cfg.device)
    check_mapping(model, cfg.checkpoint)
    density = model.hparams.input_name
    run_cfg = checkpoint.run_config(cfg.checkpoint)
    state = prepare(cfg.trust, cfg.checkpoint, model, run_cfg)
    inputs, warnings, n_el = checkpoint.load_checked_inputs(cfg, model, run_cfg)
    physics, source, more = checkpoint.ed_physics(cfg.physics, inputs, model, run_cfg, n_el)
    warnings += more
    if cfg.reference:
        known = read_reference(cfg.reference, "potential", len(inputs), inputs.rows)
        known_from = str(cfg.reference)
    else:
        known = inputs.companion("potential")
        known_from = f"{inputs.source} ('potential')" if known is not None else None
    for w in warnings:
        log.warning(w)

    values = inputs.read()  # ED of every Ṽ dominates the time; invert holds its set in memory
    checkpoint.warm_up(model, values, len(values), checkpoint.check_batch_size(cfg.batch_size), n_electrons=n_el)
    with bottleneck_capture(model, bool(state and state.get("local"))) as found:  # the local features' identity pass
        raw, seconds = checkpoint.timed(model, values, cfg.batch_size, n_el)
    points = torch.cat(found).numpy() if found else None
    est = assess_chunk(state, model, values, raw, cfg.batch_size, n_el, points) if state else None
    generated = project(raw, cfg.projection, physics.v_well_ev, physics.v_step_ev)
    ed = solve_all(generated, physics, cfg.ed.workers, cfg.ed.progress, inputs.labels)
    recomputed = ed.n_int if density == "n_int" else ed.n0

    result: dict[str, Any] = {
        "mapping": model.hparams.mapping, "checkpoint": str(cfg.checkpoint), "input": str(cfg.input),
        "n": len(inputs), "labels": inputs.labels, "rows": inputs.rows.tolist(), "projection": cfg.projection,
        "n_electrons": n_el,
        "physics": physics.to_dict(), "physics_source": source,
        "density": checkpoint.compare(recomputed, values, values.mean(axis=0), density),
        "potential": None, "potential_seen": None, "energy": None,
        "r2_mean_image": {
            "density": f"mean of the input {density} maps over the {len(inputs)} evaluated instance(s) "
                       "(the checkpoint holds no training-mean density)",
            "potential": "the training-set mean potential (checkpoint target_mean)"},
        "reference_potential": known_from,
        "timing": {"generator_seconds": seconds, "generator_per_second": len(inputs) / max(seconds, 1e-12),
                   "ed_seconds": ed.wall_seconds, "ed_per_second": ed.per_second, "ed_workers": ed.workers,
                   "ed_seconds_per_solve": float(ed.solve_seconds.mean()), **checkpoint.device_info(model)},
        "input_charge": checkpoint.charge(values, float(model.physics[0])).tolist(),
        "relative_l2": (np.linalg.norm((recomputed - values).reshape(len(values), -1), axis=1)
                        / np.maximum(np.linalg.norm(values.reshape(len(values), -1), axis=1), 1e-30)).tolist(),
        "warnings": warnings, "trust": None,
    }
    result["density_check"] = density_check(np.asarray(result["relative_l2"]), inputs.labels,
                                            float(cfg.checks.density_tolerance))
    if result["density_check"]["warning"]:
        log.warning(result["density_check"]["warning"])
        warnings.append(result["density_check"]["warning"])
    if est is not None:
        result["trust"] = trust_report(state, est | {"from_ed": np.zeros(len(inputs), bool)}, inputs.labels,
                                       0.0, None, "ED's n^(r) vs n says how far each Ṽ gets")
        if result["trust"]["warning"]:
            log.warning(result["trust"]["warning"])
            warnings.append(result["trust"]["warning"])
    if known is not None:
        result["potential"] = checkpoint.compare(generated, known, model.target_mean.cpu().numpy(), "potential")
        result["potential_seen"] = seen(generated, known, values, model.target_mean.cpu().numpy(),
                                        float(cfg.seen_fraction))
    energy = inputs.companion("energy")
    if energy is not None:
        err = ed.energy - energy
        result["energy"] = {"unit": "eV", "mean_abs_error": float(np.abs(err).mean()),
                            "per_sample": err.tolist(), "note": "E(Ṽ) − E(V), many-body ground-state energies"}

    arrays = {density: values, "potential": generated, f"{density}_r": recomputed, "energy_r": ed.energy,
              "index": inputs.rows}
    if cfg.projection != "none":
        arrays["potential_raw"] = raw
    if known is not None:
        arrays["potential_ref"] = known
    units = {density: UNITS[density], f"{density}_r": UNITS[density], "potential": "eV", "potential_raw": "eV",
             "potential_ref": "eV", "energy_r": "eV"}
    attrs = {"mapping": model.hparams.mapping, "checkpoint": str(cfg.checkpoint), "input": str(cfg.input),
             "projection": cfg.projection}
    fields = {k: (np.shape(v)[1:], np.float32 if np.ndim(v) == 3 else np.asarray(v).dtype) for k, v in arrays.items()}
    with Staging() as stage:
        with ArrayWriter(stage, [*outputs, files[0]], "potential", len(inputs), fields, units, attrs,
                         inputs.single) as writer:
            writer.write(0, len(inputs), arrays)
        stage.path(out_dir / "invert_instances.csv").write_text(instance_table(result))
        if cfg.n_panels > 0:
            k = min(cfg.n_panels, len(inputs))
            figures.inversion_panels(values[:k], generated[:k], recomputed[:k], checkpoint.length_nm(model),
                                   stage.path(out_dir / "figures" / "fig6.png"),
                                   None if known is None else known[:k], density, inputs.labels[:k])
        stage.path(out_dir / "invert_metrics.json").write_text(json.dumps(result, indent=1))
        written = [str(p.relative_to(out_dir.absolute())) if p.is_relative_to(out_dir.absolute()) else str(p)
                   for p in stage.finals]
    print(summary(result, out_dir, written), flush=True)
    return result


def density_check(relative_l2: np.ndarray, labels: list[str], tolerance: float) -> dict[str, Any]:
    """The measured check of each Ṽ: flagged when ED's n^(r) misses the input n by more than `tolerance` (relative
    L2). Unlike the trust estimate of Ṽ vs V it needs no calibration, and it is what inverse design asks."""
    flagged = relative_l2 > tolerance
    idx = np.flatnonzero(flagged)
    warning = None
    if idx.size:
        shown = ", ".join(f"{labels[i]} ({relative_l2[i]:.3f})" for i in idx[:3])
        warning = (f"density check: {idx.size} of {len(labels)} Ṽ do not reproduce their density: ED's n^(r) misses n "
                   f"by more than {tolerance:.3g} (relative L2) ({shown}{', ...' if idx.size > 3 else ''})")
    return {"tolerance": tolerance, "n_flagged": int(idx.size), "flagged": flagged.tolist(), "warning": warning}


def seen(generated: np.ndarray, known: np.ndarray, density: np.ndarray, mean: np.ndarray,
         fraction: float) -> dict[str, Any]:
    """Ṽ vs V where the input density determines V (`metrics.seen_r2`): per-instance R²_i, median, worst."""
    import torch

    from qdgan.metrics import seen_r2

    r2 = seen_r2(*(torch.from_numpy(np.asarray(a, np.float64)) for a in (generated, known, density, mean)),
                 fraction=fraction).numpy()
    return {"fraction_of_peak": fraction, "median": float(np.median(r2)), "worst": float(r2.min()),
            "n_below_0.9": int((r2 < 0.9).sum()), "per_sample": r2.tolist(),
            "note": "R²_i of Ṽ vs V over the pixels where n > fraction_of_peak of its peak, after removing the mean "
                    "difference there: the part of V a density determines (docs/inverse.md)"}


def instance_table(result: dict[str, Any]) -> str:
    """CSV, one row per instance: label, row, the measures of Ṽ vs V (v_*) and n^(r) vs n (n_*), energies."""
    cols: dict[str, list[Any]] = {"label": result["labels"], "row": result["rows"],
                                  "input_charge": result["input_charge"], "n_relative_l2": result["relative_l2"],
                                  "n_flagged": result["density_check"]["flagged"]}
    for prefix, key in (("v", "potential"), ("n", "density")):
        if result[key] is not None:
            cols |= {f"{prefix}_{m}": v for m, v in result[key]["per_sample"].items()}
    if result.get("potential_seen"):
        cols["v_r2_seen"] = result["potential_seen"]["per_sample"]
    if result["energy"] is not None:
        cols["energy_error_ev"] = result["energy"]["per_sample"]
    if result.get("trust"):
        cols |= {"v_estimated_r2": result["trust"]["estimated_r2"], "v_flagged": result["trust"]["flagged"]}
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(cols)
    writer.writerows(zip(*cols.values(), strict=True))
    return buf.getvalue()


def summary(result: dict[str, Any], out_dir: Path, written: list[str]) -> str:
    """Lines printed at the end: both comparisons over the set, timing, warnings, where the files are."""
    from qdgan.metrics import report_line  # torch: loaded by the run already, not by ED workers

    t = result["timing"]
    lines = [f"{result['mapping']}: {result['n']} instance(s) from {result['input']}, projection "
             f"{result['projection']}, ED with {result['physics_source']}"]
    for name, key in (("Ṽ vs V      ", "potential"), ("n^(r) vs n  ", "density")):
        m = result[key]
        if m is None:
            lines.append(f"  {name}(V unknown: give reference=<potentials> to compare)")
            continue
        lines.append(f"  {name}{report_line(m)}")
    if sn := result.get("potential_seen"):
        lines.append(f"  Ṽ vs V where n > {sn['fraction_of_peak']:.0%} of its peak, up to a constant: R²_i median "
                     f"{sn['median']:.4f}, worst {sn['worst']:.4f}, {sn['n_below_0.9']} of {result['n']} below 0.9")
    rel = np.asarray(result["relative_l2"])
    check = result["density_check"]
    lines.append(f"  how close ED(Ṽ) comes: ||n^(r) − n||₂/||n||₂ mean {rel.mean():.3g}, worst {rel.max():.3g}; "
                 f"{check['n_flagged']} of {result['n']} beyond {check['tolerance']:.3g} (flagged)")
    if result["energy"] is not None:
        lines.append(f"  |E(Ṽ) − E(V)| mean {result['energy']['mean_abs_error']:.4g} eV")
    lines.append(f"  generator {t['generator_per_second']:.1f}/s, ED {t['ed_per_second']:.1f}/s "
                 f"({t['ed_workers']} worker(s), {1000 * t['ed_seconds_per_solve']:.1f} ms per solve)")
    if t := result.get("trust"):
        lines.append(f"  trust  {t['n_flagged']} of {result['n']} Ṽ flagged (estimated R²_i < {t['threshold']:.3g}); "
                     f"{t['note']}")
    if result["warnings"]:
        lines.append(f"  {len(result['warnings'])} warning(s): logged above and listed in invert_metrics.json")
    lines.append(f"  wrote {', '.join(written)} in {out_dir}")
    return "\n".join(lines)
