"""Shared test fixtures.

Real data lives beside the project in ``../shared/data`` (never committed);
point ``BRIDGING_TF_SHARED_DATA`` elsewhere if needed. Tests that need it use
the ``shared_data`` fixture and are skipped, with the reason, when absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BRIDGING_TF_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_path(*parts) -> Path:
    """Path under the shared real-data folder; skip the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set BRIDGING_TF_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_path()


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return shared_path("mnist")


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    yield
