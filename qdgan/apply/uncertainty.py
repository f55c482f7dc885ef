"""The torch side of the per-instance trust estimate (qdgan/apply/trust.py): MC-dropout spread, symmetry
disagreement, bottleneck features and the network-input encoding. Imported lazily by the torch-side code
(checkpoint users) only, so the apply modules that ED workers import stay free of torch.

MC dropout: the U-Net's noise γ is dropout on its innermost decoder layers; K passes with only those
layers stochastic (norms in eval mode) give a per-pixel variance whose sum, relative to the
prediction's distance from the training-mean target image, estimates 1 − R²_i of the instance.
Symmetry disagreement (tta): the same spread over the 8 maps g⁻¹ G(g α), g the symmetries of the square
grid, under which ED's potential ↦ density maps are exactly equivariant (8 deterministic passes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qdgan.apply import trust
from qdgan.pix2pix import Pix2Pix
from qdgan.scaling import is_density


def has_dropout(model: Pix2Pix) -> bool:
    """Whether the generator has any active dropout layer (dropout=0 builds none)."""
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.eval_generator.modules())


@torch.no_grad()
def mc_spread(model: Pix2Pix, values: np.ndarray, k: int, batch_size: int = 100, seed: int = 0,
              n_electrons: float | None = None) -> np.ndarray:
    """Per instance Σ_pixels Var_k(ỹ) / Σ_pixels (ȳ_k − β̄)² over `k` stochastic passes (dropout on, norms
    in eval mode); 0 for k < 2 or a generator without dropout. Seeded, and the global RNG is restored.
    `n_electrons`: the inputs' N, for a model of several N."""
    n = len(values)
    if k < 2 or not has_dropout(model) or n == 0:
        return np.zeros(n)
    mean_image = model.target_mean.to(model.device).double()
    out = np.empty(n)
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model.eval()
        drops = [m for m in model.eval_generator.modules() if isinstance(m, nn.Dropout)]  # the EMA when on
        try:
            for m in drops:
                m.train()
            for a in range(0, n, batch_size):
                x = torch.from_numpy(np.ascontiguousarray(values[a:a + batch_size], dtype=np.float32))
                x = model.network_input(x.to(model.device), n_electrons)
                ys = torch.stack([model.unscale_target(model(x)).squeeze(1).double() for _ in range(k)])
                var = ys.var(dim=0, unbiased=True).sum(dim=(1, 2))
                spread = ((ys.mean(dim=0) - mean_image) ** 2).sum(dim=(1, 2))
                out[a:a + len(x)] = (var / spread.clamp_min(1e-30)).cpu().numpy()
        finally:
            model.eval()
    return out


def symmetries(square: bool = True) -> list[tuple[Callable[[torch.Tensor], torch.Tensor], ...]]:
    """(g, g⁻¹) on the last two axes for the 8 symmetries of a square in trust.SYMMETRY_ORDER (identity
    first: the first P of them are tta's P passes); the 4 of a rectangle (no quarter turns) when not `square`."""
    def op(flip: bool, turns: int, inverse: bool) -> Callable[[torch.Tensor], torch.Tensor]:
        def apply(a: torch.Tensor) -> torch.Tensor:
            if inverse:
                a = torch.rot90(a, -turns, (-2, -1))
                return a.flip(-1) if flip else a
            return torch.rot90(a.flip(-1) if flip else a, turns, (-2, -1))
        return apply

    group = [(op(f, t, False), op(f, t, True)) for f in (False, True) for t in range(4)]
    return [group[i] for i in trust.SYMMETRY_ORDER if square or i % 2 == 0]


def tta_spread(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, mean_image: torch.Tensor,
               passes: int = 8, identity: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_pixels Var_g(g⁻¹ predict(g x)) / Σ_pixels (mean_g − β̄)² per instance of x (B, …, H, W) over the first
    `passes` (≥ 2) of `symmetries`: 0 for an exactly equivariant `predict` (B, H, W). `identity`: predict(x)
    where the caller has it (that pass is then not run again)."""
    group = symmetries(x.shape[-1] == x.shape[-2])[:passes]
    first = predict(x) if identity is None else identity.to(x.device)
    ys = torch.stack([first.double()] + [inv(predict(g(x))).double() for g, inv in group[1:]])
    spread = ((ys.mean(dim=0) - mean_image.double()) ** 2).sum(dim=(1, 2))
    return ys.var(dim=0, unbiased=True).sum(dim=(1, 2)) / spread.clamp_min(1e-30)


def bottleneck_module(model: Pix2Pix) -> nn.Module | None:
    """The generator's innermost encoder layer (a U-Net's), whose output is the bottleneck; None otherwise."""
    down = getattr(model.eval_generator, "down", None)
    return down[-1] if isinstance(down, nn.ModuleList) and len(down) else None


@contextlib.contextmanager
def bottleneck_capture(model: Pix2Pix, enabled: bool = True) -> Iterator[list[torch.Tensor]]:
    """Within the block, every forward pass of the generator appends its bottleneck features (B, C) to the
    yielded list (nothing for a generator without a bottleneck, or when not `enabled`)."""
    layer, found = bottleneck_module(model) if enabled else None, []
    hook = layer.register_forward_hook(lambda m, i, o: found.append(o.flatten(1).float().cpu())) if layer else None
    try:
        yield found
    finally:
        if hook:
            hook.remove()


@torch.no_grad()
def symmetry_passes(model: Pix2Pix, values: np.ndarray, batch_size: int = 100, n_electrons: float | None = None,
                    passes: int = 8, pred: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """tta (n,) of physical inputs over `passes` symmetries, the identity pass's bottleneck features (n, C)
    (None for a generator without one, or when `pred`, the caller's predictions of `values`, stands in for that
    pass) and the identity pass's predictions (n, H, W) float32."""
    model.eval()
    mean_image, out = model.target_mean.to(model.device), np.empty(len(values))
    ident = np.empty(values.shape, np.float32) if pred is None else np.asarray(pred, np.float32)

    def predict(v: torch.Tensor) -> torch.Tensor:
        return model.physical_prediction(model.network_input(v, n_electrons))

    found: list[torch.Tensor] = []
    for a in range(0, len(values), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(values[a:a + batch_size], dtype=np.float32)).to(model.device)
        if pred is None:  # the identity pass, whose bottleneck features are kept
            with bottleneck_capture(model) as got:
                ident[a:a + len(x)] = predict(x).cpu().numpy()
            found += got
        out[a:a + len(x)] = tta_spread(predict, x, mean_image, passes,
                                       torch.from_numpy(ident[a:a + len(x)])).cpu().numpy()
    return out, torch.cat(found).numpy() if found else None, ident


@torch.no_grad()
def encoded(model: Pix2Pix, values: np.ndarray) -> np.ndarray:
    """Physical inputs (n, H, W) → the network's input encoding, flattened (n, H·W) float32."""
    x = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(model.device)
    return model.scale_input(x).reshape(len(values), -1).cpu().numpy().astype(np.float32)


def can_localize(model: Any) -> bool:
    """Whether the local features (trust.LOCAL) exist for this model: a U-Net generator of one N."""
    return isinstance(model, Pix2Pix) and not model.conditioned and bottleneck_module(model) is not None


def reference(model: Pix2Pix, x: np.ndarray, passes: int, batch_size: int = 100) -> dict[str, np.ndarray]:
    """`trust.fit_reference` of physical training inputs x: their bottleneck features, tta (of `passes`) and
    charge."""
    tta, points, pred = symmetry_passes(model, x, batch_size, passes=passes)
    return trust.fit_reference(points, tta, charge_error(model, pred)) | {"ref_passes": np.array(passes)}


def charge_error(model: Pix2Pix, pred: np.ndarray, n_electrons: float | None = None) -> np.ndarray | None:
    """|h²·Σñ − N| per predicted density; None for a potential output."""
    if not is_density(model.hparams.target_name):
        return None
    from qdgan.apply.checkpoint import charge

    n = float(model.physics[1] if n_electrons is None else n_electrons)
    return np.abs(charge(pred, float(model.physics[0])) - n)


def reference_inputs(model: Pix2Pix, run_cfg: Any) -> np.ndarray:
    """N_REFERENCE training inputs of the run (physical), drawn with seed 0 from the training split of
    data.path (one set, or each listed set's rows of the run's split); raises when they cannot be read."""
    from qdgan.apply.inputs import load_inputs
    from qdgan.datasets import as_paths, split_selection

    sets = []
    for path in as_paths(run_cfg.data.path):
        indices, split = split_selection(run_cfg, path, "train", None)
        sets.append(load_inputs(str(path), model.hparams.input_name, split=split, indices=indices,
                                run_config=run_cfg))
    total = sum(len(t) for t in sets)
    rows = np.sort(np.random.default_rng(0).choice(total, min(total, trust.N_REFERENCE), replace=False))
    xs, offset = [], 0
    for train in sets:
        xs += [train.read(a, b)[rows[(rows >= offset + a) & (rows < offset + b)] - offset - a]
               for a, b in train.chunks(1000)]
        offset += len(train)
    return np.concatenate(xs)


def input_stats(checkpoint: str, model: Pix2Pix, run_cfg: Any,
                passes: int = trust.TTA_PASSES) -> tuple[dict[str, Any] | None, str]:
    """The principal components of the run's training inputs and (`can_localize`) the reference of the local
    features with tta of `passes` symmetries, of the `reference_inputs` (cached as `<run dir>/trust_inputs.npz`;
    a cache of other passes is computed again), and a note; None when the run's config.yaml or its data set
    (data.path, split train) cannot be read."""
    cache = trust.run_dir(checkpoint) / trust.INPUT_STATS
    stats = trust.load_input_stats(cache)
    if stats is not None and (trust.reference_passes(stats) == passes or not can_localize(model)):
        return stats, f"training-input statistics from {cache}"
    if run_cfg is None or "data" not in run_cfg:  # an older cache without the local features' reference still serves
        return stats, (f"training-input statistics from {cache}" if stats is not None else
                       f"no input distance: no config.yaml next to {Path(checkpoint).parent} names the training data")
    try:
        x = reference_inputs(model, run_cfg)
    except Exception as err:  # a moved or missing data set: the distance features are then left out
        return stats, (f"training-input statistics from {cache}" if stats is not None else
                       f"no input distance: training data {run_cfg.data.path} unreadable ({err})")
    stats = trust.fit_input_stats(encoded(model, x)) | (reference(model, x, passes) if can_localize(model) else {})
    with contextlib.suppress(OSError):  # a read-only run folder: computed again next time
        trust.save_input_stats(cache, stats)
    return stats, f"training-input statistics of {len(x)} training inputs of {run_cfg.data.path}, cached in {cache}"


def features(model: Pix2Pix, values: np.ndarray, pred: np.ndarray, k: int, batch_size: int,
             stats: dict[str, Any] | None, seed: int = 0, n_electrons: float | None = None,
             tta: bool = True, passes: int = trust.TTA_PASSES, points: np.ndarray | None = None
             ) -> dict[str, np.ndarray]:
    """The raw trust features of `trust.FEATURES` for physical inputs of N = `n_electrons` (default: the
    model's one N) and their predictions; mc only for k ≥ 2, tta (of `passes` symmetries) and the local
    features only with `tta`. `points`: the bottleneck features of the passes that made `pred`
    (`bottleneck_capture`); without them, and with local features to compute, the identity pass runs again."""
    out = {"mc": mc_spread(model, values, k, batch_size, seed, n_electrons)}
    mean = model.target_mean.cpu().numpy().astype(np.float64)
    out["contrast"] = ((np.asarray(pred, np.float64) - mean) ** 2).sum(axis=(1, 2)) / max((mean**2).sum(), 1e-30)
    if (charge := charge_error(model, pred, n_electrons)) is not None:
        out["charge"] = charge
    if stats is not None:
        out["d_pca"], out["d_res"] = trust.input_distance(stats, encoded(model, values))
    if tta:
        local = stats is not None and "ref_points" in stats
        out["tta"], found, _ = symmetry_passes(model, values, batch_size, n_electrons, passes,
                                               pred if points is not None or not local else None)
        points = points if points is not None else found
        if local and points is not None:
            out |= trust.local_features(stats, points, out["tta"], charge)
    return out


def prepare(cfg: Any, checkpoint: str, model: Pix2Pix, run_cfg: Any) -> dict[str, Any] | None:
    """The trust settings of an apply run (`cfg` = its `trust` group): calibration, input statistics and
    a note saying whether the estimate is calibrated; None when `trust.enabled` is false."""
    if not cfg.enabled:
        return None
    path = Path(cfg.calibration) if cfg.calibration else trust.run_dir(checkpoint) / trust.CALIBRATION
    try:
        cal = trust.load_calibration(path)
    except ValueError as err:
        from qdgan.apply import InputError

        raise InputError(f"trust.calibration={path}: {err}") from None
    used = set(cal["features"]) if cal is not None else set()  # uncalibrated: MC only
    need_stats, passes = bool(used & {"d_pca", "d_res", *trust.LOCAL}), trust.calibration_passes(cal)
    stats, stats_note = input_stats(checkpoint, model, run_cfg, passes) if need_stats else (None, "")
    note = (f"calibrated by {path} (features {'+'.join(cal['features'])})" if cal is not None else
            f"uncalibrated: estimated R²_i = 1 − MC-dropout spread; no {path} (python -m qdgan.apply.calibrate)")
    k = int(cfg.k) if cal is None or "mc" in cal["features"] else 0  # MC passes cost ~k forward passes: only if used
    from qdgan.apply.recheck import settings

    redo = settings(cal, bool(cfg.get("recheck", True)) and model.hparams.input_name == "potential")
    if redo:
        note += f"; flags rechecked by a reduced-basis ED ({redo['n_basis']}, {redo['n_orbitals']})"
    return {"cal": cal, "stats": stats, "k": k, "tta": bool(used & {"tta", *trust.LOCAL}), "passes": passes,
            "recheck": redo,
            "local": bool(used & set(trust.LOCAL)), "seed": int(cfg.seed),
            "threshold": cfg.threshold, "note": note, "stats_note": stats_note, "path": str(path)}


def assess_chunk(state: dict[str, Any], model: Pix2Pix, values: np.ndarray, pred: np.ndarray,
                 batch_size: int, n_electrons: float | None = None, points: np.ndarray | None = None
                 ) -> dict[str, Any]:
    """`trust.assess` of one chunk (inputs of N = `n_electrons`): its features, estimated R²_i and flags.
    `points`: the bottleneck features of the passes that made `pred` (saves a pass; `bottleneck_capture`)."""
    feats = features(model, values, pred, state["k"], batch_size, state["stats"], state["seed"], n_electrons,
                     state.get("tta", False), state.get("passes", 8), points)
    return trust.assess(state["cal"], feats, state["threshold"]) | {"features": feats}
