"""Shared fixtures. Real-data tests run only when AECFE_DATA points at the shared data folder."""
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real-data root (``AECFE_DATA``), or skip the test when it is not set or missing."""
    root = os.environ.get("AECFE_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("AECFE_DATA is not set to the shared real-data folder")
    return Path(root)
