"""Stopping cleanly on SIGTERM (preemption) or SIGINT, with one or several processes."""
from __future__ import annotations

import logging
import os
import signal

import jax
import numpy as np

log = logging.getLogger(__name__)


class StopFlag:
    """SIGTERM or SIGINT (Ctrl-C): the loop saves a checkpoint and stops cleanly.

    A second SIGINT interrupts at once (KeyboardInterrupt), as usual.

    With one process a Python SIGTERM handler sets the flag; nothing else
    runs per step. With several processes (jax.distributed) SIGTERM reaches
    each one at its own time (or only some of them), so they must agree on
    the step to stop at: leaving the loop at different steps deadlocks the
    next collective or the checkpoint save. They use JAX's preemption sync
    point: jax.distributed installs a SIGTERM handler (the preemption
    notifier), the notice reaches every process through the coordination
    service, and `reached_preemption_sync_point(step)` turns True at the
    same step everywhere (the largest step any process had reached, plus
    one) with no collective per step. Where the preemption service is
    disabled (`jax_enable_preemption_service=False`) the flag set by the
    Python handler is all-gathered every step instead. SIGINT takes the same
    way: under the sync point its handler passes it on as a SIGTERM to this
    process, which the notifier then reports to every process.
    """

    def __init__(self):
        self.set = False            # agreed by every process: stop now
        self._signalled = False     # this process received SIGTERM (Python handler)
        self._previous = {}
        self._mode = "local"
        if jax.process_count() > 1:
            self._mode = "allgather"
            if jax.distributed.is_initialized():
                from jax.experimental import multihost_utils
                try:        # a step id no loop has passed yet (they start at >= 0)
                    multihost_utils.reached_preemption_sync_point(-1)
                    self._mode = "sync_point"
                except RuntimeError:    # the preemption service is disabled
                    pass

    def __enter__(self):
        # Under the sync point jax.distributed's notifier handles SIGTERM.
        signals = (signal.SIGINT,) if self._mode == "sync_point" else (signal.SIGTERM,
                                                                       signal.SIGINT)
        for signum in signals:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:      # not the main thread: no handler
                pass
        return self

    def _handle(self, signum, frame):
        if signum == signal.SIGINT:
            # A second Ctrl-C interrupts at once.
            signal.signal(signal.SIGINT, self._previous.get(signal.SIGINT,
                                                            signal.default_int_handler))
        log.warning("%s: saving a checkpoint and stopping", signal.Signals(signum).name)
        if self._mode == "sync_point":
            os.kill(os.getpid(), signal.SIGTERM)    # to jax's preemption notifier
        self._signalled = True

    def reached(self, step: int) -> bool:
        """Whether to stop now, having completed `step` (called once per step,
        in order, by every process)."""
        if self.set:
            return True
        if self._mode == "local":
            self.set = self._signalled
        elif self._mode == "sync_point":
            from jax.experimental import multihost_utils
            if multihost_utils.reached_preemption_sync_point(step):
                log.warning("SIGTERM (preemption notice) on some process: all processes save "
                            "a checkpoint at step %d and stop", step)
                self.set = True
        else:
            from jax.experimental import multihost_utils
            self.set = bool(np.any(multihost_utils.process_allgather(
                np.asarray(self._signalled))))
        return self.set

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}
