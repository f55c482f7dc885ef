"""The plan of a study (conf/study/): its runs, each with its overrides, run dir and place in the figure.

The runs of a study are the product of the study's `hydra.sweeper.params` and any sweeps on the command
line (a command-line key replaces the study's), expanded as Hydra's basic sweeper does. Each run lives in
`<hydra.sweep.dir>/<its overrides>`, so the same command finds its runs again.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf

from qdgan.train import rundir

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
X_SCALES = ("linear", "log", "category")
# Hydra plugins this project runs with: config group → option → the pyproject extra that installs it
PLUGINS = {"hydra/launcher": {"joblib": "", "submitit_local": "cluster", "submitit_slurm": "cluster"},
           "hydra/sweeper": {"optuna": "search"}}


@dataclass(frozen=True)
class Job:
    """One run of a study: its swept overrides, its directory and where it sits in the study's figure."""

    swept: dict[str, str]
    run_dir: Path
    settings: rundir.Settings = field(repr=False)  # to tell a finished run of another config (stale)
    n_pt: int | None  # patch size of D; None without a discriminator (adv_weight 0)
    n_train: int
    x: Any
    series: str
    annotation: str

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.swept.items()) or "(base config)"


@dataclass(frozen=True)
class Study:
    """A study as conf/study/<name>.yaml and the command line define it (its `study:` node)."""

    name: str
    sweep_dir: Path
    jobs: list[Job]
    x_label: str
    x_scale: str
    metrics: list[str]
    transfer: dict[str, Any] | None = None  # {"sets": {name: data-set path}, "split": {...}}: study/transfer.py
    accelerator: str = "cpu"  # trainer.accelerator of the runs
    launcher: str = ""  # _target_ of Hydra's launcher


@dataclass(frozen=True)
class Command:
    study: str  # the name of the study (conf/study/) or, with `search`, of the search (conf/search/)
    aggregate_only: bool
    copy_to: Path | None
    overrides: list[str]  # passed on to train.py -m
    search: bool = False  # search=<name> rather than study=<name>


def parse_command_line(argv: Sequence[str]) -> Command:
    """Split sweep.py's own keys (study or search, aggregate_only, copy_to) from the overrides meant for
    train.py."""
    own: dict[str, str] = {}
    rest: list[str] = []
    for arg in argv:
        if arg.startswith("-"):
            raise SystemExit(f"error: {arg}: sweep.py takes key=value arguments only (see python sweep.py --help)")
        key, _, value = arg.partition("=")
        if key in ("study", "search", "aggregate_only", "copy_to"):
            own[key] = value
        else:
            rest.append(arg)
    kind = "search" if "search" in own else "study"
    if "study" in own and "search" in own:
        raise SystemExit("error: study= and search= together: sweep.py runs one study or one search")
    if not own.get(kind):
        raise SystemExit(f"error: study=<name> is required (or search=<name>); one of {', '.join(available_studies())}")
    choices = available_studies() if kind == "study" else available(CONF / "search")
    if own[kind] not in choices:
        raise SystemExit(f"error: {kind}={own[kind]}: no conf/{kind}/{own[kind]}.yaml; "
                         f"expected one of {', '.join(choices)}")
    flag = own.get("aggregate_only", "false").lower()
    if flag not in ("true", "false"):
        raise SystemExit(f"error: aggregate_only={flag}; expected true or false")
    copy_to = Path(own["copy_to"]) if own.get("copy_to") else None
    return Command(own[kind], flag == "true", copy_to, rest, search=kind == "search")


def available(folder: Path) -> list[str]:
    """The configs of a folder of conf/ (its base.yaml is what they share)."""
    return sorted(p.stem for p in folder.glob("*.yaml") if p.stem != "base")


def available_studies() -> list[str]:
    return available(CONF / "study")


@contextlib.contextmanager
def compose_errors() -> Iterator[None]:
    """Hydra's composition errors as one line (SystemExit); a launcher or sweeper plugin that is not installed
    names the extra that installs it."""
    try:
        yield
    except MissingConfigException as err:
        if m := re.search(r"'(hydra/(?:launcher|sweeper))/([\w.-]+)'", str(err)):
            group, option = m.groups()
            known = PLUGINS[group]
            if option in known:
                extra = f"[{known[option]}]" if known[option] else ""
                hint = f'install it with pip install -e ".{extra}"'
            else:
                hint = f"this project runs with {group}=" + "|".join(known) + " (README: extras)"
            raise SystemExit(f"error: {group}={option}: this Hydra plugin is not installed; {hint}") from None
        raise SystemExit(f"error: {str(err).splitlines()[0]}") from None
    except HydraException as err:
        raise SystemExit(f"error: {str(err).splitlines()[0]}") from None


def plan_study(name: str, overrides: Sequence[str]) -> Study:
    """Expand the study's sweep as Hydra's basic sweeper does and compose every run's config."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(list(overrides))
    hydra_args = [o.input_line for o in parsed if o.is_hydra_override()]
    task = [o for o in parsed if not o.is_hydra_override()]
    fixed = [o.input_line for o in task if not o.is_sweep_override()]
    GlobalHydra.instance().clear()
    with compose_errors(), initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("train", overrides=[f"study={name}", *hydra_args, *fixed], return_hydra_config=True)
        params = [f"{k}={v}" for k, v in (base.hydra.sweeper.params or {}).items()]
        product = parser.parse_overrides([f"study={name}", *params, *[o.input_line for o in task]])
        final = {o.get_key_element(): o for o in product}  # the last override of a key wins, as in Hydra
        swept = [k for k, o in final.items() if o.is_sweep_override()]
        combos = expand(product)
        jobs = [_job(compose("train", overrides=[*hydra_args, *combo], return_hydra_config=True), combo, swept)
                for combo in combos]
    GlobalHydra.instance().clear()
    _check_dir_names([j.run_dir.relative_to(base.hydra.sweep.dir) for j in jobs])
    s = base.study
    if s.x_scale not in X_SCALES:
        raise SystemExit(f"error: study.x_scale={s.x_scale}; expected one of {', '.join(X_SCALES)}")
    transfer = OmegaConf.to_container(s.transfer, resolve=True) if s.get("transfer") else None
    return Study(name=s.name, sweep_dir=Path(base.hydra.sweep.dir), jobs=jobs, x_label=str(s.x_label),
                 x_scale=s.x_scale, metrics=list(s.metrics), transfer=transfer,
                 accelerator=str(base.trainer.get("accelerator", "cpu")), launcher=str(base.hydra.launcher._target_))


def expand(overrides: Sequence[Override]) -> list[list[str]]:
    """Every combination of the overrides' values (`a=1,2 b=x,y` → 4 lists of `key=value`), exactly as
    Hydra's basic sweeper expands them (the last override of a key wins, in its first position), through
    the public override API (hydra.core.override_parser)."""
    choices: dict[str, list[str]] = {}
    for o in overrides:
        key = o.get_key_element()
        if not o.is_sweep_override():
            choices[key] = [f"{key}={o.get_value_element_as_str()}"]
        elif o.is_discrete_sweep():
            choices[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            raise SystemExit(f"error: {o.input_line}: only discrete sweeps (a,b,c or range(...)) can be run")
    return [list(combo) for combo in itertools.product(*choices.values())]


def _check_dir_names(subdirs: Sequence[Path], limit: int = 255) -> None:
    """Fail before launching when an override-named run dir would exceed the file-name limit."""
    for sub in subdirs:
        if long := [part for part in sub.parts if len(part) > limit]:
            raise SystemExit(
                f"error: run dir name {long[0][:80]}… has {len(long[0])} characters (limit {limit}): move fixed "
                "overrides into the study config, or leave them out of the name with "
                "hydra.job.config.override_dirname.exclude_keys=[...] (they still guard against stale results)")


def _job(cfg: DictConfig, combo: Sequence[str], swept: Sequence[str]) -> Job:
    from qdgan.networks import receptive_field  # torch: only once there is a study to plan

    values = dict(item.split("=", 1) for item in combo)
    d = cfg.discriminator
    n_pt = receptive_field(d.n_strided, d.n_plain, d.kernel_size) if cfg.model.adv_weight else None
    label = " ".join(f"{k}={values[k]}" for k in swept)
    study = cfg.study
    derived = {"patch_size": n_pt, "run": label or "(base config)"}
    x = derived[study.x] if study.x in derived else _value(cfg, study.x)
    HydraConfig.instance().set_config(cfg)  # for any ${hydra:...} among the settings
    return Job(
        swept={k: values[k] for k in swept},
        run_dir=Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir),
        settings=rundir.Settings.of(cfg),
        n_pt=n_pt,
        n_train=int(cfg.data.n_train),
        x=x,
        series=" ".join(f"{k}={_value(cfg, k)}" for k in study.series),
        annotation=str(_value(cfg, study.annotate)) if study.annotate else "",
    )


def _value(cfg: DictConfig, key: str) -> Any:
    """A config group's chosen option (discriminator → pixelgan1) or a config value (data.n_train → 400)."""
    choices = cfg.hydra.runtime.choices
    if key in choices:
        return choices[key]
    value = OmegaConf.select(cfg, key, default=None)
    if value is None or OmegaConf.is_config(value):
        raise SystemExit(f"error: study key {key!r} names neither a config group nor a config value")
    return value
