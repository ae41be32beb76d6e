import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


@pytest.fixture(scope="session")
def shared_data_dir():
    if not os.path.isdir(SHARED_DATA):
        pytest.fail(f"../shared/data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _clear_gin_after_test():
    """CLI commands called in-process parse gin; no binding may leak into the
    next test (e.g. a run file's learning-rate schedule into optimizer tests)."""
    yield
    import gin
    gin.clear_config()


def pytest_configure(config):
    """The suite's budget is 30 minutes on 2 cores (README's test command):
    every run lists its 25 slowest tests, so a new slow one shows at once."""
    if not config.option.durations:
        config.option.durations = 25
