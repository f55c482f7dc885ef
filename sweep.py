"""Run a study (conf/study/) and summarize it: `python sweep.py study=architecture [overrides]`.

A Hydra multirun of train.py, one run dir per point in outputs/studies/<study>/<overrides>/, then
summary.csv, summary.md and figures next to them. Rerun the same command to finish an interrupted
study; `aggregate_only=true` only rewrites the summary; `copy_to=docs/results` also copies it there.
Details: qdgan/study/cli.py (`python sweep.py --help`).
"""

import sys

from qdgan.study.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
