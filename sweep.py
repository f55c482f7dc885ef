"""Run a study (conf/study/) and summarize it: `python sweep.py study=architecture [overrides]`.

A Hydra multirun of train.py, one run dir per point in outputs/studies/<study>/<overrides>/, then
summary.csv, summary.md and figures next to them. Rerun the same command to finish an interrupted
study; `aggregate_only=true` only rewrites the summary; `copy_to=docs/results` also copies it there.
`python sweep.py search=nint_to_v` runs a hyperparameter search (conf/search/, Hydra's Optuna sweeper)
in outputs/searches/<name>/ the same way. Details: qdgan/study/cli.py (`python sweep.py --help`), docs/sweeps.md.
"""

import sys

from qdgan.study.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
