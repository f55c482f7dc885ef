"""Fixtures shared by the test modules (helpers they build on: tests/tiny.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny import make_tiny_set


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The tiny data set, generated once per session."""
    return make_tiny_set(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: on this shared 2-core machine two threads mostly wait for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
