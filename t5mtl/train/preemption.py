"""Stopping cleanly on SIGTERM (preemption), with one or several processes."""
from __future__ import annotations

import logging
import signal

import jax
import numpy as np

log = logging.getLogger(__name__)


class StopFlag:
    """SIGTERM: the loop saves a checkpoint and stops cleanly.

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
    Python handler is all-gathered every step instead.
    """

    def __init__(self):
        self.set = False            # agreed by every process: stop now
        self._signalled = False     # this process received SIGTERM (Python handler)
        self._previous = None
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
        if self._mode == "sync_point":
            return self             # jax.distributed's notifier handles SIGTERM
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:          # not the main thread: no handler
            self._previous = None
        return self

    def _handle(self, signum, frame):
        log.warning("SIGTERM: saving a checkpoint and stopping")
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
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
