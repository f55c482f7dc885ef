"""A hyperparameter search (conf/search/<name>.yaml): Hydra's Optuna sweeper over train.py, started, continued and
tabulated by `python sweep.py search=<name>`.

Each trial is one training run in `<sweep dir>/<its overrides>/`, scored by its best validation R²
(`hooks.SearchObjective`; the test set is never used to choose). The trials are kept in the Optuna study
`<sweep dir>/optuna.db` (sqlite). Running the same command again continues the search: finished trials stay,
trials that a kill interrupted are asked again with the same parameters (so their runs continue from their last
checkpoints, or are skipped if they had finished), and only the trials missing from `hydra.sweeper.n_trials`
are run. The search space is checked first: an unknown key or an empty range ends in one line naming it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from qdgan.study.plan import CONF, compose_errors

_UNSET = object()


@dataclass(frozen=True)
class Search:
    """A search as conf/search/<name>.yaml and the command line define it."""

    name: str
    sweep_dir: Path
    storage: str  # Optuna storage URL (sqlite file in the sweep dir)
    study_name: str
    n_trials: int  # trials to finish in all (finished ones count, across reruns)
    space: dict[str, str]  # key → its sweep (interval, choice, range): the search space
    fixed: list[str]  # `key=value` every trial gets, as the sweeper passes them (and names run dirs by)
    hydra_args: list[str]  # hydra.* overrides of the command line (launcher, sweeper settings)
    batch: int | None  # trials launched at once when the command line does not set hydra.sweeper.n_jobs
    seed: int | None  # the sampler's seed (hydra.sweeper.sampler.seed)
    accelerator: str  # trainer.accelerator of the runs
    launcher: str  # _target_ of Hydra's launcher


def plan_search(name: str, overrides: Sequence[str]) -> Search:
    """Compose the search's config with the command line and check its search space."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(list(overrides))
    hydra_args = [o.input_line for o in parsed if o.is_hydra_override()]
    task = [o for o in parsed if not o.is_hydra_override()]
    fixed_lines = [o.input_line for o in task if not o.is_sweep_override()]
    GlobalHydra.instance().clear()
    with compose_errors(), initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("train", overrides=[f"+search={name}", *hydra_args, *fixed_lines], return_hydra_config=True)
    GlobalHydra.instance().clear()
    sweeper = base.hydra.sweeper
    # as Hydra's Optuna sweeper reads them: its params, then the command line (a later key wins; a fixed value
    # takes its key out of the search space)
    space: dict[str, str] = {}
    fixed: dict[str, str] = {"+search": name}
    for o in [*_parse(parser, sweeper.get("params") or {}, name), *task]:
        key = o.get_key_element()
        if o.is_sweep_override():
            space[key] = o.input_line.partition("=")[2]
            fixed.pop(key, None)
        else:
            fixed[key] = o.get_value_element_as_str()
            space.pop(key, None)
    check_space(base, {**space, **{k: v for k, v in fixed.items() if k != "+search"}}, name)
    launcher = base.hydra.launcher
    n_jobs = launcher.get("n_jobs") if "n_jobs" in launcher else None
    return Search(name=name, sweep_dir=Path(base.hydra.sweep.dir), storage=str(sweeper.storage),
                  study_name=str(sweeper.study_name), n_trials=int(sweeper.n_trials), space=space,
                  fixed=[f"{k}={v}" for k, v in fixed.items()], hydra_args=hydra_args,
                  batch=int(n_jobs) if isinstance(n_jobs, int) and n_jobs > 0 else None,
                  seed=sweeper.sampler.get("seed") if "sampler" in sweeper else None,
                  accelerator=str(base.trainer.get("accelerator", "cpu")), launcher=str(launcher._target_))


def _parse(parser: OverridesParser, params: Any, name: str) -> list[Override]:
    out = []
    for key, value in params.items():
        try:
            out.append(parser.parse_override(f"{key}={value}"))
        except HydraException as err:
            raise SystemExit(f"error: search {name}: {key}={value}: {str(err).splitlines()[0]}") from None
    return out


def check_space(cfg: DictConfig, space: dict[str, str], name: str) -> None:
    """Each key must name a config value or group of train.py's config, each range must hold a value
    (interval low < high, and low > 0 on a log scale; a non-empty choice or range); one line naming the key."""
    parser = OverridesParser.create()
    where = f"search {name}: hydra.sweeper.params (conf/search/{name}.yaml) or the command line"
    for key, value in space.items():
        plain = key.lstrip("+~")
        known = plain in cfg.hydra.runtime.choices or OmegaConf.select(
            cfg, plain, default=_UNSET, throw_on_resolution_failure=False) is not _UNSET
        if plain.startswith("hydra") or not known:
            raise SystemExit(f"error: {where}: {key}: no such key in train.py's config (a typo?)")
        try:
            o = parser.parse_override(f"{key}={value}")
            sweep = o.value()
            empty = (not list(o.sweep_string_iterator())) if o.is_discrete_sweep() else (
                isinstance(sweep, IntervalSweep) and not sweep.start < sweep.end)
        except HydraException as err:
            raise SystemExit(f"error: {where}: {key}={value}: {str(err).splitlines()[0]}") from None
        if empty:
            raise SystemExit(f"error: {where}: {key}={value}: an empty range (expected low < high, or values)")
        if isinstance(sweep, IntervalSweep) and "log" in sweep.tags and sweep.start <= 0:
            raise SystemExit(f"error: {where}: {key}={value}: a log scale needs low > 0")


def open_study(search: Search) -> Any:
    """The search's Optuna study (created empty when new), its sqlite file in the sweep dir."""
    search.sweep_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # optuna 2's storage on SQLAlchemy 1.4 (pinned <2: pyproject's search extra)
        warnings.filterwarnings("ignore", message="Deprecated API features detected")
        import optuna  # the search extra

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.create_study(study_name=search.study_name, storage=search.storage, direction="maximize",
                                   load_if_exists=True)


def continue_interrupted(study: Any) -> list[int]:
    """Trials a kill left running: mark them failed and ask their parameters again (enqueued), so the next
    trials are the same runs, which continue from their checkpoints. Their numbers."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState

    interrupted = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for t in interrupted:
        study.tell(t.number, state=TrialState.FAIL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # enqueue_trial: stable since optuna 3
            study.enqueue_trial(dict(t.params))
    return [t.number for t in interrupted]


def finished(study: Any) -> int:
    from optuna.trial import TrialState

    return sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))


def launch_args(search: Search, overrides: Sequence[str], n_trials: int, n_asked: int) -> list[str]:
    """train.py -m arguments that run `n_trials` more trials of a search that has asked `n_asked` so far. The
    sampler's seed moves on by `n_asked`: a rerun with the same seed would ask the same random points again."""
    args = [f"+search={search.name}", *overrides, f"hydra.sweeper.n_trials={n_trials}"]
    if search.seed is not None:
        args.append(f"hydra.sweeper.sampler.seed={search.seed + n_asked}")
    if search.batch and not any(a.startswith("hydra.sweeper.n_jobs=") for a in overrides):
        args.append(f"hydra.sweeper.n_jobs={search.batch}")  # a batch of trials as wide as the launcher's pool
    return args


def trial_overrides(search: Search, params: dict[str, Any]) -> list[str]:
    """A trial's overrides as the sweeper passes them to train.py (they name its run dir)."""
    return [*search.fixed, *(f"{k}={v}" for k, v in params.items())]


def run_dirs(search: Search, trials: Sequence[dict[str, Any]]) -> list[Path]:
    """The run dir of each trial (by its parameters), composed as Hydra composes the trial's job."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        dirs = []
        for params in trials:
            cfg = compose("train", overrides=[*search.hydra_args, *trial_overrides(search, params)],
                          return_hydra_config=True)
            dirs.append(Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir))
    GlobalHydra.instance().clear()
    return dirs
