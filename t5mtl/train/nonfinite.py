"""Non-finite steps: a NaN or Inf loss or gradient norm is never saved.

The train step flags each step on the device (`nonfinite` in its metrics,
t5mtl.train.train_step). The loop hands every step's flag to a
`NonFiniteGuard` without waiting for it, and the guard reads the flags it
holds only where the loop synchronizes with the host anyway: at a log step
and before a checkpoint. Before a save it also checks that the state about
to be written (params and optimizer state) is finite, since a finite step
with a huge update can still overflow the parameters.

Stopping (the default): the first flagged step stops the run with an error
naming that step and the last checkpoint, which is finite because every
save was checked. Skipping (`train.skip_nonfinite_steps=True`, as in t5x
and PaLM): the step itself left the state unchanged; the guard counts such
steps for the log.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from t5mtl.errors import T5mtlError


class NonFiniteError(T5mtlError):
    """A step's loss or gradient norm, or the state to save, is NaN or Inf."""


@jax.jit
def all_finite(tree) -> jax.Array:
    """Whether every floating-point leaf of `tree` is free of NaN and Inf."""
    checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.bool_(True)


class NonFiniteGuard:
    """Collects per-step flags; `check` raises (or counts, when skipping)."""

    def __init__(self, skip: bool, last_checkpoint):
        """`last_checkpoint()`: the newest saved step (None: none yet) and
        its directory, for the error message."""
        self.skip = skip
        self.skipped = 0                # steps skipped in this run
        self._last_checkpoint = last_checkpoint
        self._pending: list[tuple[int, jax.Array]] = []

    def add(self, step: int, flag: jax.Array) -> None:
        """Step `step`'s device flag; nothing is read from the device."""
        self._pending.append((step, flag))

    def check(self) -> int:
        """Reads the pending flags; returns how many of them were skipped
        steps, or raises NonFiniteError (stopping mode) at the first one."""
        if not self._pending:
            return 0
        steps = [s for s, _ in self._pending]
        flags = np.asarray(jax.device_get([f for _, f in self._pending]))
        self._pending = []
        bad = [s for s, f in zip(steps, flags) if f]
        if bad and not self.skip:
            raise NonFiniteError(
                f"the loss or gradient norm is NaN or Inf at step {bad[0]}; stopping without "
                f"saving it. {self._last_good()}. To skip such steps instead, set "
                f"--gin.train.skip_nonfinite_steps=True")
        self.skipped += len(bad)
        return len(bad)

    def check_state(self, step: int, state) -> None:
        """Raises NonFiniteError unless `state`'s params and optimizer state
        are finite (called before each save)."""
        if not bool(jax.device_get(all_finite((state.params, state.opt_state)))):
            raise NonFiniteError(
                f"the parameters or optimizer state are NaN or Inf after step {step}; "
                f"stopping without saving them. {self._last_good()}")

    def _last_good(self) -> str:
        step, directory = self._last_checkpoint()
        if step is None:
            return f"There is no checkpoint yet in {directory}"
        return f"The last finite checkpoint is step {step} in {directory}"
