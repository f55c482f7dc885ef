"""A trained model applied: predict, invert, their inputs and outputs, checkpoints, ED batches.

Kept free of torch at import time (except `checkpoint`): ED worker processes re-import the apps."""


class InputError(ValueError):
    """An input, checkpoint or output request is unusable; the message names the file and the problem."""
