import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


@pytest.fixture(scope="session")
def shared_data_dir():
    if not os.path.isdir(SHARED_DATA):
        pytest.fail(f"../shared/data not found at {SHARED_DATA}")
    return SHARED_DATA
