"""Train-state checkpoints with orbax's CheckpointManager.

Each step directory under model_dir/checkpoints holds three items:

  params     the model params (what `t5mtl.load` and finetuning read)
  opt_state  the optimizer state
  progress   {"step", "rng", "data_position"}: the data position is the number
             of batches this run's input pipeline has yielded, so a resumed run
             skips exactly that many and sees the same batches again.

orbax writes a step to a temporary directory and renames it when complete, so
a save killed midway leaves no step directory that `latest_step` trusts. A
step directory that still fails to restore (truncated files) is skipped with
a warning and the previous step is used.
"""
from __future__ import annotations

import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from t5mtl.train import model_dir as model_dir_lib
from t5mtl.train.train_step import TrainState

log = logging.getLogger(__name__)


class TrainCheckpointer:
    """Save/restore the TrainState plus the data position; keep-N or keep-best."""

    def __init__(self, model_dir: str, *, keep: int = 3, keep_best_metric: str | None = None,
                 best_mode: str = "max", async_save: bool = True):
        options = dict(max_to_keep=keep, enable_async_checkpointing=async_save,
                       create=True)
        if keep_best_metric:
            options.update(best_fn=lambda metrics: metrics[keep_best_metric],
                           best_mode=best_mode, keep_checkpoints_without_metrics=False)
        self.directory = os.path.join(model_dir, model_dir_lib.CHECKPOINTS)
        self._warn_about_partial_saves()
        self.manager = model_dir_lib.checkpoint_manager(model_dir, **options)

    def _warn_about_partial_saves(self):
        if not os.path.isdir(self.directory):
            return
        for name in sorted(os.listdir(self.directory)):
            if ".orbax-checkpoint-tmp" in name:
                log.warning("skipping torn checkpoint %s (a save that did not finish)",
                            os.path.join(self.directory, name))

    def save(self, state: TrainState, data_position: int, metrics: dict | None = None,
             force: bool = False) -> bool:
        step = int(jax.device_get(state.step))
        progress = {"step": step, "rng": np.asarray(jax.device_get(state.rng)).tolist(),
                    "data_position": int(data_position)}
        return self.manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            opt_state=ocp.args.StandardSave(state.opt_state),
            progress=ocp.args.JsonSave(progress)), metrics=metrics, force=force)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, abstract_state: TrainState) -> tuple[TrainState, int] | None:
        """The newest restorable (state, data_position), or None if there is none.

        `abstract_state` holds jax.ShapeDtypeStructs with shardings, so the
        restored arrays land directly in their shards.
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(abstract_state.params),
                    opt_state=ocp.args.StandardRestore(abstract_state.opt_state),
                    progress=ocp.args.JsonRestore()))
            except Exception as e:  # noqa: BLE001 - any unreadable step is skipped
                log.warning("skipping unreadable checkpoint %s/%d: %s", self.directory, step, e)
                continue
            progress = restored["progress"]
            rng = np.asarray(progress["rng"], np.uint32)
            state = TrainState(
                step=jax.device_put(np.int32(progress["step"]), abstract_state.step.sharding),
                params=restored["params"], opt_state=restored["opt_state"],
                rng=jax.device_put(rng, abstract_state.rng.sharding))
            return state, int(progress["data_position"])
        return None

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()
