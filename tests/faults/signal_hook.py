"""Imported by a gin file (signal_hook.gin) in a test's subprocess: sends
this process a signal right after step T5MTL_TEST_SIGNAL_STEP completes, on
the process T5MTL_TEST_SIGNAL_PROCESS (default 0). The signal is real; only
its timing is chosen."""
import os
import signal

from t5mtl.train import nonfinite

_STEP = int(os.environ.get("T5MTL_TEST_SIGNAL_STEP", "0"))
_PROCESS = os.environ.get("T5MTL_TEST_SIGNAL_PROCESS", "0")
_SIGNAL = getattr(signal, os.environ.get("T5MTL_TEST_SIGNAL", "SIGTERM"))
_add = nonfinite.NonFiniteGuard.add


def _add_then_signal(self, step, flag):
    _add(self, step, flag)
    if step == _STEP and os.environ.get("T5MTL_PROCESS_ID", "0") == _PROCESS:
        os.kill(os.getpid(), _SIGNAL)


if _STEP:
    nonfinite.NonFiniteGuard.add = _add_then_signal
