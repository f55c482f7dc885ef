"""Hydra app `python -m qdgan.predict checkpoint=<ckpt> input=<file> [output=<file>] [verify=true]`.

Applies a trained mapping to a batch of inputs in physical units (formats: qdgan/apply/inputs.py) and writes
the predictions (.npy and/or .h5), a PNG of panels and `predict_metrics.json`. It reports the
model's throughput; with `verify=true` it also solves every input potential by ED (paper §III.1),
reports the errors of the predictions against those ground states (§III.3) and the measured
speed-up of the network over ED — the paper's case for the method. Errors end in one line and
leave no output file behind. Torch loads inside `run_predict`, so ED worker processes (which
re-import this module under 'spawn') start without it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from omegaconf import DictConfig

from physics.files import Staging
from qdgan.apply.ed_batch import solve_all
from qdgan.apply.inputs import InputError
from qdgan.apply.outputs import as_paths, check_output_paths, check_writable, write_arrays
from qdgan.scaling import UNITS, is_density

log = logging.getLogger("qdgan.predict")


def run_predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict, optionally verify by ED, write the outputs; return the report (also `cfg.report`)."""
    from qdgan.apply import checkpoint
    from qdgan.train import figures

    outputs = check_output_paths(as_paths(checkpoint.plain(cfg.output)), [cfg.input, cfg.checkpoint])
    check_writable([cfg.report, cfg.panels])
    model = checkpoint.load_model(cfg.checkpoint, cfg.device)
    hp = model.hparams
    if cfg.verify and hp.input_name != "potential":
        raise InputError(f"verify=true solves the inputs by ED, so it needs potential inputs; checkpoint "
                         f"{cfg.checkpoint} maps {checkpoint.mapping_text(model)}"
                         + (": use python -m qdgan.invert to verify a generated potential"
                            if hp.target_name == "potential" else ""))
    run_cfg = checkpoint.run_config(cfg.checkpoint)
    inputs, warnings = checkpoint.load_checked_inputs(cfg, model, run_cfg)
    physics = source = None
    if cfg.verify:
        physics, source, more = checkpoint.ed_physics(cfg.physics, inputs, model, run_cfg)
        warnings += more
    for w in warnings:
        log.warning(w)

    pred, seconds = checkpoint.timed_predictions(model, inputs.values, cfg.batch_size)
    n = len(inputs)
    speed = {"instances": n, "model_seconds": seconds, "model_per_second": n / max(seconds, 1e-12),
             "batch_size": cfg.batch_size, **checkpoint.device_info(model)}
    report: dict[str, Any] = {
        "mapping": hp.mapping, "input_name": hp.input_name, "target_name": hp.target_name,
        "checkpoint": str(cfg.checkpoint), "input": str(cfg.input), "n": n, "labels": inputs.labels,
        "rows": inputs.rows.tolist(), "speed": speed, "warnings": warnings, "verify": None,
    }
    arrays = {hp.input_name: inputs.values, hp.target_name: pred, "index": inputs.rows}
    if is_density(hp.target_name):
        q = checkpoint.charge(pred, float(model.physics[0]))
        report["predicted_charge"] = {"n_electrons": float(model.physics[1]), "mean": float(q.mean()),
                                      "max_abs_error": float(np.abs(q - float(model.physics[1])).max()),
                                      "per_sample": q.tolist()}
    ed = None
    if cfg.verify:
        ed = solve_all(inputs.values, physics, cfg.ed.workers, cfg.ed.progress, inputs.labels)
        reference = ed.n_int if hp.target_name == "n_int" else ed.n0
        report["verify"] = checkpoint.compare(pred, reference, model.target_mean.cpu().numpy(), hp.target_name)
        report["verify"] |= {"reference": "ED of the input potentials", "physics_source": source,
                             "r2_mean_image": "the training-set mean target image (checkpoint target_mean)",
                             "physics": physics.to_dict()}
        speed |= {"ed_seconds": ed.wall_seconds, "ed_per_second": ed.per_second, "ed_workers": ed.workers,
                  "ed_seconds_per_solve": float(ed.solve_seconds.mean()),
                  "speedup": speed["model_per_second"] / ed.per_second}
        arrays |= {f"ed_{hp.target_name}": reference, "ed_energy": ed.energy}

    units = {k: UNITS[k.removeprefix("ed_")] for k in arrays if k.removeprefix("ed_") in UNITS}
    units |= {"ed_energy": "eV"}
    attrs = {"mapping": hp.mapping, "predicted": hp.target_name, "checkpoint": str(cfg.checkpoint),
             "input": str(cfg.input)}
    with Staging() as stage:
        for path in outputs:
            write_arrays(stage.path(path), hp.target_name, arrays, units, attrs, inputs.single)
        if cfg.panels and cfg.n_panels > 0:
            k = min(cfg.n_panels, n)
            if ed is not None:
                figures.panels(inputs.values[:k], reference[:k], pred[:k], hp.input_name, hp.target_name,
                             checkpoint.length_nm(model), stage.path(cfg.panels), inputs.labels[:k])
            else:
                figures.prediction_panels(inputs.values[:k], pred[:k], hp.input_name, hp.target_name,
                                        checkpoint.length_nm(model), stage.path(cfg.panels), inputs.labels[:k])
        report["outputs"] = [str(p) for p in outputs] + ([str(cfg.panels)] if cfg.panels and cfg.n_panels > 0 else [])
        if cfg.report:
            stage.path(cfg.report).write_text(json.dumps(report, indent=1))
    print(summary(report), flush=True)
    return report


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
    if report["warnings"]:
        lines.append(f"  {len(report['warnings'])} warning(s): logged above and listed in the report")
    if report.get("outputs"):
        lines.append(f"  wrote {', '.join(report['outputs'])}")
    return "\n".join(lines)
