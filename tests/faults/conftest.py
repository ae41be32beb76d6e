import os
import shutil

import jax
import pytest

from tests.faults import runs
from tests.faults.runs import ROOT, cli_train, tiny_args


@pytest.fixture(scope="package", autouse=True)
def compilation_cache(tmp_path_factory):
    """The suite starts the same tiny run dozens of times, in this process
    and in subprocesses: XLA compiles each program once (JAX's persistent
    compilation cache, in a directory of this suite's own), then reads it.
    The compiled programs, and so every result, are the same."""
    cache = str(tmp_path_factory.mktemp("xla_cache"))
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    previous = {n: getattr(jax.config, n) for n in names}
    for n, v in zip(names, (cache, 0.0, 0)):
        jax.config.update(n, v)
    runs.SUBPROCESS_ENV.update(JAX_COMPILATION_CACHE_DIR=cache,
                               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    yield cache
    runs.SUBPROCESS_ENV.clear()
    for n, v in previous.items():
        jax.config.update(n, v)

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
