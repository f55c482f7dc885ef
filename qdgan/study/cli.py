"""`python sweep.py study=<name> [aggregate_only=true] [copy_to=DIR] [train.py and hydra overrides ...]`

Runs a study (conf/study/) as a Hydra multirun of train.py, then summarizes every run it holds. The same
command finds its runs again: finished ones are skipped (train.py's `resume: auto`), interrupted ones
continue from their last checkpoint, failed and missing ones are redone. The launcher is Hydra's:
`hydra/launcher=joblib hydra.launcher.n_jobs=2` for parallel CPU runs, `hydra/launcher=submitit_slurm ...`
on a cluster. `aggregate_only=true` only rewrites the summary; pass the same overrides as the run.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

from qdgan.study import summary
from qdgan.study.plan import ROOT, available_studies, parse_command_line, plan_study
from qdgan.train import rundir

TRAIN = ROOT / "train.py"


def launch(name: str, overrides: Sequence[str]) -> int:
    """`python train.py -m study=<name> ...` in this working directory; its return code."""
    return subprocess.run([sys.executable, str(TRAIN), "-m", f"study={name}", *overrides], check=False).returncode


def main(argv: Sequence[str]) -> int:
    """Run (unless aggregate_only) and summarize a study; 0 when every run finished, else 1."""
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip() + f"\n\nStudies: {', '.join(available_studies())}")
        return 0
    cmd = parse_command_line(argv)
    study = plan_study(cmd.study, cmd.overrides)
    if not cmd.aggregate_only:
        todo = [j for j in study.jobs if rundir.status(j.run_dir, j.settings)[0] != rundir.FINISHED]
        if todo:
            print(f"study {study.name}: {len(todo)} of {len(study.jobs)} runs to do, in {study.sweep_dir}", flush=True)
            rc = launch(cmd.study, cmd.overrides)
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
    done = sum(r.status == rundir.FINISHED for r in rows)
    if done < len(rows):
        print(f"{len(rows) - done} of {len(rows)} runs not finished (see the status column)")
        return 1
    return 0
