"""The suite's XLA compile setting (tests/conftest.py) and an environment
without it, for the few subprocesses whose cost is running, not compiling
(the quickstart's 150 training steps, 128 MiB host buffers per step)."""
import os

SPEED_FLAG = "--xla_backend_optimization_level=0"


def default_level_env() -> dict:
    """os.environ with XLA_FLAGS minus SPEED_FLAG."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if f != SPEED_FLAG]
    env["XLA_FLAGS"] = " ".join(flags)
    return env
