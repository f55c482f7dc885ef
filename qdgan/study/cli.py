"""`python sweep.py study=<name> | search=<name> [aggregate_only=true] [copy_to=DIR] [train.py and hydra overrides]`

Runs a study (conf/study/) as a Hydra multirun of train.py, then summarizes every run it holds. The same
command finds its runs again: finished ones are skipped (train.py's `resume: auto`), interrupted ones
continue from their last checkpoint, failed and missing ones are redone. The launcher is Hydra's:
`hydra/launcher=joblib hydra.launcher.n_jobs=2` for parallel runs (on a node with GPUs, one GPU each),
`hydra/launcher=submitit_slurm ...` on a cluster. `aggregate_only=true` only rewrites the summary; pass the
same overrides as the run. `search=<name>` runs a hyperparameter search (conf/search/, Hydra's Optuna
sweeper) the same way and tabulates its trials; rerun it to continue it. Details: docs/sweeps.md.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from qdgan.study import devices, summary
from qdgan.study.plan import CONF, ROOT, Command, available, available_studies, parse_command_line, plan_study
from qdgan.train import rundir

TRAIN = ROOT / "train.py"


def launch(args: Sequence[str]) -> int:
    """`python train.py -m <args>` in this working directory; its return code."""
    return subprocess.run([sys.executable, str(TRAIN), "-m", *args], check=False).returncode


def sync_command(sweep_dir: Path) -> str | None:
    """The one command that uploads every offline W&B run of a study's or search's runs (None without any)."""
    if not any(sweep_dir.glob("*/wandb/offline-run-*")):
        return None
    return f"wandb sync {shlex.quote(str(sweep_dir))}/*/wandb/offline-run-*"


def print_sync_command(sweep_dir: Path) -> None:
    if command := sync_command(sweep_dir):
        print(f"W&B (offline runs; group {sweep_dir.name!r}): upload them all with\n  {command}")


def main(argv: Sequence[str]) -> int:
    """Run (unless aggregate_only) and summarize a study or a search; 0 when every run finished, else 1."""
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip() + f"\n\nStudies: {', '.join(available_studies())}\n"
              f"Searches: {', '.join(available(CONF / 'search'))}")
        return 0
    cmd = parse_command_line(argv)
    if cmd.search:
        return run_search(cmd)
    study = plan_study(cmd.study, cmd.overrides)
    if not cmd.aggregate_only:
        todo = [j for j in study.jobs if rundir.status(j.run_dir, j.settings)[0] != rundir.FINISHED]
        if todo:
            devices.require_local_gpu(study.accelerator, study.launcher)
            print(f"study {study.name}: {len(todo)} of {len(study.jobs)} runs to do, in {study.sweep_dir}", flush=True)
            rc = launch([f"study={cmd.study}", *cmd.overrides])
            if rc:
                print(f"train.py -m exited with {rc}; summarizing the runs as they are", flush=True)
        else:
            print(f"study {study.name}: all {len(study.jobs)} runs finished, in {study.sweep_dir}", flush=True)
    rows = summary.collect(study)
    written = summary.write(study, rows)
    finished = [(str(r.job.x), r.job.series, r.job.run_dir) for r in rows if r.status == rundir.FINISHED]
    if study.transfer and finished:
        from qdgan.study import transfer  # torch: only for studies that cross-evaluate

        print(f"evaluating {len(finished)} run(s) on {len(study.transfer['sets'])} test set(s)", flush=True)
        cells = transfer.evaluate_runs(finished, study.transfer["sets"], study.transfer["split"])
        written += transfer.write(cells, study.sweep_dir)
        print(transfer.markdown(cells, ("r2",)))
    if cmd.copy_to:
        written = summary.copy(written, cmd.copy_to / study.name)
    print(summary.markdown_table(rows))
    print("wrote " + ", ".join(str(p) for p in written))
    print_sync_command(study.sweep_dir)
    done = sum(r.status == rundir.FINISHED for r in rows)
    if done < len(rows):
        print(f"{len(rows) - done} of {len(rows)} runs not finished (see the status column)")
        return 1
    return 0


def run_search(cmd: Command) -> int:
    """Run the trials a search still lacks (unless aggregate_only) and tabulate them; 0 when it has all."""
    from qdgan.study import search, trials  # optuna: the search extra

    plan = search.plan_search(cmd.study, cmd.overrides)
    if not cmd.aggregate_only:
        devices.require_local_gpu(plan.accelerator, plan.launcher)
    study = search.open_study(plan)
    if not cmd.aggregate_only:
        if again := search.continue_interrupted(study):
            print(f"search {plan.name}: trial(s) {', '.join(map(str, again))} were interrupted: asking their "
                  "parameters again (their runs continue from their checkpoints)", flush=True)
        todo = plan.n_trials - search.finished(study)
        if todo > 0:
            print(f"search {plan.name}: {todo} of {plan.n_trials} trials to do, in {plan.sweep_dir}", flush=True)
            rc = launch(search.launch_args(plan, cmd.overrides, todo, len(study.get_trials(deepcopy=False))))
            if rc:
                print(f"train.py -m exited with {rc}; tabulating the trials as they are", flush=True)
            study = search.open_study(plan)
        else:
            print(f"search {plan.name}: all {plan.n_trials} trials finished, in {plan.sweep_dir}", flush=True)
    rows = trials.collect(plan, study)
    written = trials.write(plan, rows)
    if cmd.copy_to:
        written = summary.copy(written, cmd.copy_to / plan.name)
    print(trials.markdown_table(rows, list(plan.space)))
    if command := trials.best_command(plan, rows):
        print(f"best trial as a single run: {command}")
    print("wrote " + ", ".join(str(p) for p in written))
    print_sync_command(plan.sweep_dir)
    done = search.finished(study)
    if done < plan.n_trials:
        print(f"{done} of {plan.n_trials} trials finished: run the same command again to continue the search")
        return 1
    return 0
