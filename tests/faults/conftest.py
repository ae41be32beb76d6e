import os
import shutil

import pytest

from tests.faults.runs import ROOT, cli_train, tiny_args


# The finished run most fault tests start from: 4 steps, checkpoints 2 and 4.
FINISHED_STEPS = 4


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("finished") / "run")
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert cli_train(run, *tiny_args(**{"train.num_steps": FINISHED_STEPS,
                                            "CheckpointConfig.period": 2,
                                            "CheckpointConfig.keep": 10})) == 0
    finally:
        os.chdir(cwd)
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path, monkeypatch):
    """A private copy of the finished run (the test's cwd is the checkout)."""
    monkeypatch.chdir(ROOT)
    run = str(tmp_path / "run")
    shutil.copytree(finished_run, run)
    return run
