"""Studies: plans of Hydra multiruns over train.py (plan), their summaries and figures, the sweep.py CLI."""
