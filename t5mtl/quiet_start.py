"""A quiet start on hosts without an accelerator.

TensorFlow (behind seqio, for the input pipeline only) prints C++ notices
while it loads (oneDNN, "Could not find cuda drivers", twice: from two of
its libraries) and, once a tf.data pipeline runs, logs a failed cuInit
as an error on a machine without a GPU. None of them is about the user's
run. `prepare` is called by the CLI before a command that reads data:

* TensorFlow is imported, and told to use no GPU (the accelerator is
  JAX's; the t5x idiom), with the process's stderr (file descriptor 2) held
  aside: its device probe, and the cuInit error it logs without a GPU,
  happen then. If that fails, what it printed is shown with the error.

With --verbose or T5MTL_DEBUG=1 nothing is hidden.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile


def debug_requested(environ=os.environ) -> bool:
    """T5MTL_DEBUG=1 (or true/yes): tracebacks and every notice."""
    return environ.get("T5MTL_DEBUG", "").strip().lower() in ("1", "true", "yes")


@contextlib.contextmanager
def native_stderr_held():
    """Sends what C/C++ code writes to fd 2 to a temporary file meanwhile;
    replays it on an exception."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            os.write(2, held.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def prepare(verbose: bool) -> None:
    """Quiet TensorFlow's start-up (see the module docstring) unless `verbose`."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    try:
        with native_stderr_held():
            import tensorflow as tf
            tf.config.set_visible_devices([], "GPU")
    except ImportError:
        pass
