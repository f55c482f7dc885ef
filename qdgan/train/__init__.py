"""One training run: run (data module → Pix2Pix → Trainer → test), callbacks, evaluation, run dirs, figures."""
