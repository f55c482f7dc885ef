"""Train a pix2pix mapping on ED data: `python train.py mapping=v_to_nint [overrides]`.

Generates the data set first if `data.path` holds none; writes the resolved config, checkpoints
(best by validation R², last), metrics.json and figures into the Hydra run directory.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from physics.config import ConfigError


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from qdgan.training import run  # torch loads after Hydra has parsed the command line

    try:
        result = run(cfg, HydraConfig.get().runtime.output_dir)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    return result.get("r2")


if __name__ == "__main__":
    main()
