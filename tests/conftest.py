"""Shared fixtures. Real-data tests run only when AECFE_DATA points at the shared data folder."""
import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The tests use tiny tensors: one intra-op thread (two threads on a shared two-core machine cost 10-50x
    in spin waits). Subprocesses the tests start set their own."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real-data root (``AECFE_DATA``), or skip the test when it is not set or missing."""
    root = os.environ.get("AECFE_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("AECFE_DATA is not set to the shared real-data folder")
    return Path(root)
