"""`python -m qdgan.invert checkpoint=<nint_to_v ckpt> input=<densities>` (qdgan/apply/invert.py).

The Hydra entry point lives here, in the file run as `__main__`, so `config_path` is this file's `../conf`."""

import hydra
from omegaconf import DictConfig

from qdgan.apply.inputs import one_line_errors
from qdgan.apply.invert import run_invert


@hydra.main(version_base="1.3", config_path="../conf", config_name="invert")
def main(cfg: DictConfig) -> None:
    one_line_errors("qdgan.invert", run_invert, cfg)


if __name__ == "__main__":
    main()
