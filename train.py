"""Train a pix2pix mapping on ED data: `python train.py mapping=v_to_nint [overrides]`.

Generates the data set first if `data.path` holds none; writes the resolved config, checkpoints
(best by validation R², last), metrics.json and figures into the Hydra run directory. Rerun in the
same directory, it skips a finished run and continues an interrupted one (`resume: auto`).
In a multirun (`-m`, used by sweep.py) a failing run is recorded in its failed.json and logged, and
the other runs go on; a single run reports a bad config in one line and exits non-zero.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from physics.choices import exit_on_bad_choice
from physics.files import LockError
from physics.shards import DatasetError

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from qdgan.fno import check_generator  # torch loads after Hydra has parsed the command line
    from qdgan.train.run import run

    hydra_cfg = HydraConfig.get()
    try:
        check_generator(str(cfg.generator.get("_target_", "")))  # an optional extra it needs: one line, no work
        result = run(cfg, hydra_cfg.runtime.output_dir)
    except Exception as err:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            where = "" if isinstance(err, LockError) else f" (failed.json in {hydra_cfg.runtime.output_dir})"
            log.error("run failed%s: %s", where, err)
            return None
        if isinstance(err, (ValueError, OSError, DatasetError, LockError)):  # ConfigError is a ValueError
            sys.exit(f"error: {err}")  # the traceback, if wanted, is in the run dir's failed.json
        raise
    return result.get("r2")


if __name__ == "__main__":
    exit_on_bad_choice(Path(__file__).resolve().parent / "conf", "train.py", {"potential": "data.generate.potential"})
    main()
