"""Hydra app `python -m qdgan.predict checkpoint=<ckpt> input=<file> [output=<file>] [verify=true]`.

Applies a trained mapping to a batch of inputs in physical units (formats: qdgan/apply/inputs.py) and writes
the predictions (.npy and/or .h5), a PNG of panels and `predict_metrics.json`. It reports the
model's throughput; with `verify=true` it also solves every input potential by ED (paper §III.1),
reports the errors of the predictions against those ground states (§III.3) and the measured
speed-up of the network over ED — the paper's case for the method. Every prediction gets an estimated
R²_i (qdgan/apply/trust.py; calibrated by `<run dir>/trust.json` when present) and is flagged below
`trust.threshold`; `verify=auto` re-solves exactly the flagged instances by ED and returns those. It
streams: inputs are read, predicted, verified and written `chunk_size` maps at a time, so memory stays
bounded for any N.
Errors end in one line and leave no output file behind. Torch loads inside `run_predict`, so ED
worker processes (which re-import this module under 'spawn') start without it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any

import numpy as np
from omegaconf import DictConfig

from physics.files import Staging
from qdgan.apply import InputError, recheck
from qdgan.apply.ed_batch import Solver
from qdgan.apply.inputs import Inputs
from qdgan.apply.outputs import ArrayWriter, as_paths, check_outputs
from qdgan.apply.trust import trust_report
from qdgan.scaling import UNITS, is_density

log = logging.getLogger("qdgan.predict")


def chunk_rows(chunk_size: Any, batch_size: int) -> int:
    """Maps per chunk: `chunk_size` rounded down to whole batches (at least one), so every forward
    pass sees the same batches as an unchunked run and the predictions do not depend on it."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InputError(f"chunk_size={chunk_size!r}: expected a positive integer (maps held in memory at a time)")
    return max(batch_size, chunk_size - chunk_size % batch_size)


def verify_mode(value: Any) -> bool | str:
    """`verify`: false, true (ED of every input) or 'auto' (ED of the flagged instances only)."""
    if value == "auto" or isinstance(value, bool):
        return value
    raise InputError(f"verify={value!r}: expected false, true or auto")


def run_predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict, optionally verify by ED, write the outputs; return the report (also `cfg.report`)."""
    from qdgan.apply import checkpoint
    from qdgan.apply.uncertainty import prepare

    panels = cfg.panels if cfg.panels and cfg.n_panels > 0 else None
    outputs = check_outputs(as_paths(checkpoint.plain(cfg.output)), [cfg.report, panels],
                            [cfg.input, cfg.checkpoint], bool(cfg.overwrite))
    chunk = chunk_rows(cfg.chunk_size, checkpoint.check_batch_size(cfg.batch_size))
    mode = verify_mode(cfg.verify)
    model = checkpoint.load_model(cfg.checkpoint, cfg.device)
    hp = model.hparams
    if mode and hp.input_name != "potential":
        raise InputError(f"verify={'true' if mode is True else mode} solves the inputs by ED, so it needs "
                         f"potential inputs; checkpoint {cfg.checkpoint} maps {checkpoint.mapping_text(model)}"
                         + (": use python -m qdgan.invert to verify a generated potential"
                            if hp.target_name == "potential" else ""))
    run_cfg = checkpoint.run_config(cfg.checkpoint)
    if mode == "auto" and not cfg.trust.enabled:
        raise InputError("verify=auto re-solves the instances the trust estimate flags; it needs trust.enabled=true")
    state = prepare(cfg.trust, cfg.checkpoint, model, run_cfg)
    inputs, warnings, n_el = checkpoint.load_checked_inputs(cfg, model, run_cfg, chunk)
    physics = source = None
    if mode or (state and state["recheck"]):
        try:
            physics, source, more = checkpoint.ed_physics(cfg.physics, inputs, model, run_cfg, n_el)
            warnings += more
        except InputError as err:
            if mode:
                raise
            state["recheck"] = None  # predictions without ED: the recheck is a bonus, not a requirement
            warnings.append(f"trust recheck off (flags stay the estimate's): {err}")
    for w in warnings:
        log.warning(w)

    n, target = len(inputs), hp.target_name
    report: dict[str, Any] = {
        "mapping": hp.mapping, "input_name": hp.input_name, "target_name": target,
        "checkpoint": str(cfg.checkpoint), "input": str(cfg.input), "n": n, "labels": inputs.labels,
        "rows": inputs.rows.tolist(), "n_electrons": n_el, "speed": None, "warnings": warnings, "verify": None,
        "trust": None,
    }
    fields = {hp.input_name: (inputs.shape, np.float32), target: (inputs.shape, np.float32), "index": ((), np.int64)}
    if state:
        fields |= {"estimated_r2": ((), np.float64), "flagged": ((), np.bool_), "from_ed": ((), np.bool_),
                   "rechecked": ((), np.bool_)}
    if mode is True:
        fields |= {f"ed_{target}": (inputs.shape, np.float32), "ed_energy": ((), np.float64)}
    units = {k: UNITS[k.removeprefix("ed_")] for k in fields if k.removeprefix("ed_") in UNITS} | {"ed_energy": "eV"}
    attrs = {"mapping": hp.mapping, "predicted": target, "checkpoint": str(cfg.checkpoint), "input": str(cfg.input)}
    with Staging() as stage:
        with ArrayWriter(stage, outputs, target, n, fields, units, attrs, inputs.single) as writer:
            shown = stream(cfg, model, inputs, chunk, writer, physics, report, state, mode, n_el)
        if panels:
            draw_panels(model, shown, inputs.labels, stage.path(panels))
        if mode is True:
            report["verify"] |= {"reference": "ED of the input potentials", "physics_source": source,
                                 "r2_mean_image": "the training-set mean target image (checkpoint target_mean)",
                                 "physics": physics.to_dict()}
        report["outputs"] = [str(p) for p in outputs] + ([str(panels)] if panels else [])
        if cfg.report:
            stage.path(cfg.report).write_text(json.dumps(report, indent=1))
    print(summary(report), flush=True)
    return report


def stream(cfg: DictConfig, model: Any, inputs: Inputs, chunk: int, writer: ArrayWriter, physics: Any,
           report: dict[str, Any], state: dict[str, Any] | None = None, mode: bool | str = False,
           n_el: int | None = None) -> dict[str, Any]:
    """Read, predict (inputs of N = `n_el`), estimate trust, (solve by ED: all with verify=true, the flagged with
    verify=auto,) write `chunk` maps at a time; fill the report's speed, charge, trust and verify entries; return
    the first `n_panels` inputs, predictions (and references)."""
    import torch

    from qdgan.apply import checkpoint
    from qdgan.apply.uncertainty import assess_chunk, bottleneck_capture
    from qdgan.metrics import Scores

    hp, n, bs = model.hparams, len(inputs), cfg.batch_size
    target_range = (float(model.scale[2]), float(model.scale[3]))  # the network's [−1, 1] (metrics.ssim_pm1)
    scores = Scores(model.target_mean.cpu().numpy(), UNITS[hp.target_name], bs, target_range) if mode is True else None
    n_el = model.electrons[0] if n_el is None else n_el
    charges, seconds, shown = [], 0.0, {"x": [], "pred": [], "ref": []}
    trusted: dict[str, list[Any]] = {"estimated_r2": [], "flagged": [], "from_ed": [], "rechecked": []}
    trust_seconds, recheck_seconds = 0.0, 0.0
    redo = state["recheck"] if state and mode is not True else None  # verify=true solves every instance anyway
    solver = Solver(physics, cfg.ed.workers, n, cfg.ed.progress) if mode or redo else contextlib.nullcontext()
    reduced, mean_image = recheck.reduced_of(redo, physics) if redo else None, model.target_mean.cpu().numpy()
    with solver:
        if redo or mode == "auto":  # workers start while the network runs
            solver.prestart(*([reduced] if redo else []))
        for a, b in inputs.chunks(chunk):
            x = inputs.read(a, b)
            if a == 0:
                checkpoint.warm_up(model, x, n, bs, n_electrons=n_el)
            with bottleneck_capture(model, bool(state and state.get("local"))) as found:  # for the local features
                pred, t = checkpoint.timed(model, x, bs, n_el)
            seconds += t
            arrays = {hp.input_name: x, hp.target_name: pred, "index": inputs.rows[a:b]}
            if is_density(hp.target_name):
                charges.append(checkpoint.charge(pred, float(model.physics[0])))
            if state:
                t0 = time.perf_counter()
                est = assess_chunk(state, model, x, pred, bs, n_el, torch.cat(found).numpy() if found else None)
                t1 = time.perf_counter()
                trust_seconds += t1 - t0
                rechecked = (recheck.apply(redo, solver, reduced, x, pred, est, mean_image, inputs.labels[a:b],
                                           hp.target_name) if redo else np.zeros(b - a, bool))
                recheck_seconds += time.perf_counter() - t1
                from_ed = np.zeros(b - a, bool)
                if mode == "auto" and (flagged := np.flatnonzero(est["flagged"])).size:
                    ed = solver.solve(x[flagged], [inputs.labels[a + i] for i in flagged])
                    pred = pred.copy()
                    pred[flagged] = ed.n_int if hp.target_name == "n_int" else ed.n0
                    from_ed[flagged] = True
                    arrays[hp.target_name] = pred
                arrays |= {"estimated_r2": est["estimated_r2"], "flagged": est["flagged"], "from_ed": from_ed,
                           "rechecked": rechecked}
                for key in trusted:
                    trusted[key].append(arrays[key])
            if mode is True:
                ed = solver.solve(x, inputs.labels[a:b])
                ref = ed.n_int if hp.target_name == "n_int" else ed.n0
                scores.add(pred, ref)
                arrays |= {f"ed_{hp.target_name}": ref, "ed_energy": ed.energy}
            if (k := min(cfg.n_panels, n) - a) > 0:  # copies: a view would keep the whole chunk alive
                for key, arr in (("x", x), ("pred", pred), ("ref", arrays.get(f"ed_{hp.target_name}"))):
                    if arr is not None:
                        shown[key].append(arr[:k].copy())
            writer.write(a, b, arrays)
    speed = report["speed"] = {"instances": n, "model_seconds": seconds, "model_per_second": n / max(seconds, 1e-12),
                               "batch_size": bs, "chunk_size": chunk, **checkpoint.device_info(model)}
    if charges:
        q, big_n = np.concatenate(charges), float(n_el)
        report["predicted_charge"] = {"n_electrons": big_n, "mean": float(q.mean()),
                                      "max_abs_error": float(np.abs(q - big_n).max()), "per_sample": q.tolist()}
    if state:
        report["trust"] = trust_report(state, {k: np.concatenate(v) for k, v in trusted.items()}, inputs.labels,
                                       trust_seconds, solver.wall_seconds if mode == "auto" else None)
        report["trust"] |= {"recheck": redo, "n_rechecked": int(np.concatenate(trusted["rechecked"]).sum()),
                            "recheck_seconds": recheck_seconds}
        if report["trust"]["warning"]:
            log.warning(report["trust"]["warning"])
            report["warnings"].append(report["trust"]["warning"])
    if mode is True:
        report["verify"] = scores.summary()
        ed_rate = n / max(solver.wall_seconds, 1e-12)
        speed |= {"ed_seconds": solver.wall_seconds, "ed_per_second": ed_rate, "ed_workers": solver.workers,
                  "ed_seconds_per_solve": solver.seconds_per_solve, "speedup": speed["model_per_second"] / ed_rate}
    return {k: np.concatenate(v) for k, v in shown.items() if v}


def draw_panels(model: Any, shown: dict[str, np.ndarray], labels: list[str], path: Any) -> None:
    """Input, ED reference, prediction and |error| (verify=true), or input and prediction."""
    from qdgan.apply.checkpoint import length_nm
    from qdgan.train import figures

    hp, k = model.hparams, len(shown["x"])
    if "ref" in shown:
        figures.panels(shown["x"], shown["ref"], shown["pred"], hp.input_name, hp.target_name, length_nm(model),
                       path, labels[:k])
    else:
        figures.prediction_panels(shown["x"], shown["pred"], hp.input_name, hp.target_name, length_nm(model), path,
                                  labels[:k])


def summary(report: dict[str, Any]) -> str:
    """The lines printed at the end of a run: throughput, ED time and speed-up, verification errors."""
    from qdgan.metrics import report_line  # torch: loaded by the run already, not by ED workers

    s = report["speed"]
    lines = [f"{report['mapping']} ({report['input_name']} ↦ {report['target_name']}): {report['n']} instance(s) "
             f"from {report['input']}",
             f"  model  {s['model_per_second']:.1f} instances/s ({s['model_seconds']:.3g} s; {s['device']}, "
             f"{s['torch_threads']} torch thread(s), batch {s['batch_size']}, scaling included)"]
    if "ed_per_second" in s:
        lines += [f"  ED     {s['ed_per_second']:.1f} instances/s ({s['ed_seconds']:.3g} s; {s['ed_workers']} "
                  f"worker(s), {1000 * s['ed_seconds_per_solve']:.1f} ms per solve on one core)",
                  f"  speed-up ×{s['speedup']:.3g} (model vs ED, wall clock, same inputs, this machine)"]
    v = report["verify"]
    if v:
        lines += [f"  ED with {v['physics_source']}", f"  vs ED  {report_line(v)}"]
    if "predicted_charge" in report:
        c = report["predicted_charge"]
        lines.append(f"  ∫ñ     mean {c['mean']:.4f}, largest |∫ñ − N| {c['max_abs_error']:.3g} electrons")
    if t := report.get("trust"):
        lines.append(f"  trust  {t['n_flagged']} of {report['n']} flagged (estimated R²_i < {t['threshold']:.3g}"
                     + (f"; {t['n_rechecked']} rechecked by a reduced-basis ED, R²_pc < "
                        f"{t['recheck']['threshold']:.3g}" if t.get("recheck") else "") + ")"
                     + (f", {t['n_from_ed']} re-solved by ED" if t["ed_seconds"] is not None else "")
                     + f"; {t['note']}")
    if report["warnings"]:
        lines.append(f"  {len(report['warnings'])} warning(s): logged above and listed in the report")
    if report.get("outputs"):
        lines.append(f"  wrote {', '.join(report['outputs'])}")
    return "\n".join(lines)
