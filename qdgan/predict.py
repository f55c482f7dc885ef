"""`python -m qdgan.predict checkpoint=<ckpt> input=<file> [output=<file>] [verify=true]` (qdgan/apply/predict.py).

The Hydra entry point lives here, in the file run as `__main__`, so `config_path` is this file's `../conf`."""

import hydra
from omegaconf import DictConfig

from qdgan.apply.inputs import one_line_errors
from qdgan.apply.predict import run_predict


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    one_line_errors("qdgan.predict", run_predict, cfg)


if __name__ == "__main__":
    main()
