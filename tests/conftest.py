import os

import pytest

from tests.xla_level import SPEED_FLAG

# The suite compiles thousands of tiny programs, where XLA's LLVM
# optimizations cost more than they save. Set before JAX starts its backend;
# subprocesses inherit it (tests/xla_level.py gives the few run-bound ones
# XLA's default back). Codegen only: the programs' meaning is the same, and
# runs compared with each other share the flag.
if SPEED_FLAG not in os.environ.get("XLA_FLAGS", "").split():
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {SPEED_FLAG}".strip()

# The test extra installs libtpu (for `t5mtl compile --topology`); JAX would
# then look for a TPU in every process, and log that it found none.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


@pytest.fixture(scope="session")
def shared_data_dir():
    if not os.path.isdir(SHARED_DATA):
        pytest.fail(f"../shared/data not found at {SHARED_DATA}")
    return SHARED_DATA


_CACHE_NAMES = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """Many tests build the same tiny programs, in this process and in
    subprocesses (CLI runs, killed and resumed trainings, notebooks): XLA
    compiles each once into JAX's persistent compilation cache, in a
    directory of this session's own, and later builds read it. A cached
    executable is the compiled program itself, so every result is the same.
    Subprocesses inherit the cache through the environment."""
    import jax
    cache = str(tmp_path_factory.mktemp("xla_cache"))
    previous = {n: getattr(jax.config, n) for n in _CACHE_NAMES}
    for n, v in zip(_CACHE_NAMES, (cache, 0.0, 0)):
        jax.config.update(n, v)
    saved_env = {k: os.environ.get(k) for k in (n.upper() for n in _CACHE_NAMES)}
    os.environ.update({n.upper(): str(v) for n, v in zip(_CACHE_NAMES, (cache, 0, 0))})
    yield cache
    for k, v in saved_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    for n, v in previous.items():
        jax.config.update(n, v)


@pytest.fixture(autouse=True)
def _clear_gin_after_test():
    """CLI commands called in-process parse gin; no binding may leak into the
    next test (e.g. a run file's learning-rate schedule into optimizer tests)."""
    yield
    import gin
    gin.clear_config()


def pytest_configure(config):
    """The suite's budget is 30 minutes on 2 cores (README's test command):
    every run lists its 25 slowest tests, so a new slow one shows at once.

    The two workers get whole files (--dist loadfile) in collection order,
    which `pytest_collection_modifyitems` starts with the files holding a
    test marked `slow`: the long ones start first and the many short ones
    even out the end (xdist's own reordering, by number of tests, would put
    the one-test end-to-end files last)."""
    if config.option.durations is None:
        config.option.durations = 25
    config.addinivalue_line("markers", "slow: tens of seconds or more (a training run, "
                                       "subprocesses); its file is scheduled first")
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    slow_files = {item.nodeid.split("::")[0] for item in items
                  if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow_files)   # stable
