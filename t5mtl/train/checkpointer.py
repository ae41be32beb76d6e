"""Train-state checkpoints with orbax's CheckpointManager.

Each step directory under model_dir/checkpoints holds three items:

  params     the model params (what `t5mtl.load` and finetuning read)
  opt_state  the optimizer state
  progress   {"step", "rng", "data_position"}: the data position is the number
             of batches this run's input pipeline has yielded, so a resumed run
             skips exactly that many and sees the same batches again.

orbax writes a step to a temporary directory and renames it when complete
(on gs://, where nothing renames, into the step directory itself, writing
its commit_success.txt last), so a save killed midway leaves no step
directory that `latest_step` trusts; the next start removes such a torn
directory (with a warning). A step directory
that still fails to restore (truncated files) is skipped with a warning and
the previous step is used. A step written by another model or optimizer
(other shapes) is an error, raised before anything is written.

Saves are idempotent (a step that exists is not saved again), and a save
that fails (disk full, permissions, quota) is a `SaveError` naming the step
directory and the cause: raised by `save` itself, or for an async save by
the next `check()` once the background write has failed. orbax removes
older steps (keep-N) only after a save has committed, so a failed save
loses none of them.
"""
from __future__ import annotations

import logging
import os
import re
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from t5mtl import paths
from t5mtl.errors import T5mtlError
from t5mtl.models import param_names
from t5mtl.train import model_dir as model_dir_lib
from t5mtl.train.train_step import TrainState

log = logging.getLogger(__name__)

TMP_MARKER = ".orbax-checkpoint-tmp"
COMMIT_FILE = "commit_success.txt"       # what marks a gs:// step complete


class SaveError(T5mtlError):
    """A checkpoint could not be written: one line naming the path and the cause."""


def save_failure(path: str, error: BaseException) -> str:
    """The cause of a failed write of `path` ("<other path>: <cause>" where
    the error names another file): the OS error's text where the error carries one (orbax/tensorstore report `[os_error_code='28']`)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    code = re.search(r"os_error_code='?(\d+)", text)
    if isinstance(error, OSError) and error.errno:
        cause = f"{error.strerror or os.strerror(error.errno)} (errno {error.errno})"
        where = error.filename or path
    elif code:
        cause = f"{os.strerror(int(code.group(1)))} (errno {code.group(1)})"
        where = path
    else:
        cause, where = f"{type(error).__name__}: {text[:300]}", path
    return cause if where == path else f"{where}: {cause}"


class TrainCheckpointer:
    """Save/restore the TrainState plus the data position; keep-N or keep-best."""

    def __init__(self, model_dir: str, *, keep: int = 3, keep_best_metric: str | None = None,
                 best_mode: str = "max", async_save: bool = True,
                 saved_params: list[str] | None = None):
        """`saved_params`: the parameter names a checkpoint holds (None: all);
        `restore` then expects exactly those in its abstract state."""
        self.saved_params = saved_params
        options = dict(max_to_keep=keep, enable_async_checkpointing=async_save,
                       create=True, cleanup_tmp_directories=True)
        if keep_best_metric:
            options.update(best_fn=lambda metrics: metrics[keep_best_metric],
                           best_mode=best_mode, keep_checkpoints_without_metrics=False)
        self.directory = paths.join(model_dir, model_dir_lib.CHECKPOINTS)
        self._warn_about_partial_saves()
        try:
            self.manager = model_dir_lib.checkpoint_manager(model_dir, **options)
        except OSError as e:
            raise SaveError(f"cannot write checkpoints: {save_failure(self.directory, e)}") \
                from e
        self._pending: int | None = None        # the step an async save is writing
        self._failed_save = False
        self._unreadable: set[int] = set()      # steps restore skipped

    def _warn_about_partial_saves(self):
        for name in paths.listdir(self.directory):
            torn = TMP_MARKER in name or (
                paths.is_cloud(self.directory) and name.isdigit()
                and not paths.exists(paths.join(self.directory, name, COMMIT_FILE)))
            if torn:
                log.warning("removing torn checkpoint %s (a save that did not finish)",
                            paths.join(self.directory, name))

    def save(self, state: TrainState, data_position: int, metrics: dict | None = None,
             force: bool = False) -> bool:
        """Saves `state` as its step (async if so configured); False, and
        nothing written, where that step is already saved. Raises SaveError
        if this or the previous async save failed."""
        step = int(jax.device_get(state.step))
        self.check(wait=True)
        if step in self._unreadable:
            self._move_aside(step)
        elif step in self.manager.all_steps():
            log.info("checkpoint %s/%d exists; not saving it again", self.directory, step)
            return False
        progress = {"step": step, "rng": np.asarray(jax.device_get(state.rng)).tolist(),
                    "data_position": int(data_position)}
        params = state.params
        if self.saved_params is not None:
            params = param_names.subset(params, self.saved_params)
        try:
            saved = self.manager.save(step, args=ocp.args.Composite(
                params=ocp.args.StandardSave(params),
                opt_state=ocp.args.StandardSave(state.opt_state),
                progress=ocp.args.JsonSave(progress)), metrics=metrics, force=force)
        except Exception as e:  # noqa: BLE001 - any failed write (ENOSPC, EACCES, quota)
            raise self._failed(step, e) from e
        if saved:
            self._pending = step
        return saved

    def _move_aside(self, step: int) -> None:
        """An unreadable step about to be saved again: renamed (kept, not
        deleted) to <step>.unreadable, so the new save can take its place."""
        old = paths.join(self.directory, str(step))
        if jax.process_index() == 0 and paths.isdir(old):
            new = f"{old}.unreadable"
            if paths.exists(new):
                new = f"{new}.{int(time.time())}"
            log.warning("moving unreadable checkpoint %s aside to %s", old, new)
            paths.move_dir(old, new)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"t5mtl_move_aside_{step}")
        self.manager.reload()
        self._unreadable.discard(step)

    def check(self, wait: bool = False) -> None:
        """Raises SaveError if the async save in flight has failed; with
        `wait`, waits for it first. Without, costs nothing while it runs."""
        if self._pending is None:
            return
        if not wait and self.manager.is_saving_in_progress():
            return
        step, self._pending = self._pending, None
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._failed(step, e) from e

    def _failed(self, step: int, error: BaseException) -> SaveError:
        self._failed_save = True
        kept = [s for s in self.manager.all_steps() if s != step]
        earlier = f"latest kept: step {max(kept)}" if kept else "no earlier checkpoint"
        partial = (f"{step} directory (no {COMMIT_FILE})" if paths.is_cloud(self.directory)
                   else f"{step}{TMP_MARKER} directory")
        return SaveError(f"checkpoint {self.directory}/{step} was not saved: "
                         f"{save_failure(paths.join(self.directory, str(step)), error)}. "
                         f"Training stopped; earlier checkpoints are unchanged ({earlier}) and "
                         f"the next start removes the partial {partial}")

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, abstract_state: TrainState) -> tuple[TrainState, int] | None:
        """The newest restorable (state, data_position), or None if there is none.

        `abstract_state` holds jax.ShapeDtypeStructs with shardings, so the
        restored arrays land directly in their shards. A step whose saved
        shapes do not fit `abstract_state` (another model or optimizer wrote
        it) raises T5mtlError naming the parameters, before anything is read
        or written; a step that cannot be read is skipped with a warning.
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                metadata = self.manager.item_metadata(step)
            except Exception as e:  # noqa: BLE001 - any unreadable step is skipped
                log.warning("skipping unreadable checkpoint %s/%d: %s", self.directory, step, e)
                self._unreadable.add(step)
                continue
            self._check_fits(step, metadata, abstract_state)
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(abstract_state.params),
                    opt_state=ocp.args.StandardRestore(abstract_state.opt_state),
                    progress=ocp.args.JsonRestore()))
            except Exception as e:  # noqa: BLE001 - any unreadable step is skipped
                log.warning("skipping unreadable checkpoint %s/%d: %s", self.directory, step, e)
                self._unreadable.add(step)
                continue
            progress = restored["progress"]
            rng = np.asarray(progress["rng"], np.uint32)
            state = TrainState(
                step=jax.device_put(np.int32(progress["step"]), abstract_state.step.sharding),
                params=restored["params"], opt_state=restored["opt_state"],
                rng=jax.device_put(rng, abstract_state.rng.sharding))
            return state, int(progress["data_position"])
        return None

    def _check_fits(self, step: int, metadata, abstract_state: TrainState) -> None:
        """Raises T5mtlError unless checkpoint `step` holds params and optimizer
        state of exactly the shapes in `abstract_state`."""
        where = f"{self.directory}/{step}"
        model_dir = paths.dirname(self.directory)
        advice = (f"Nothing in {model_dir} was changed. Resume it with the model and optimizer "
                  f"that wrote it, or train in a new --model_dir with "
                  f"CheckpointConfig.init_from={model_dir!r}")
        saved = {item: _item_metadata(metadata, item) for item in ("params", "opt_state")}
        if saved["params"] is None:
            return          # no params metadata: restore fails and the step is skipped
        params = leaf_shapes(abstract_state.params)
        diffs = shape_differences(leaf_shapes(saved["params"]), params)
        if diffs:
            more = f"; and {len(diffs) - 5} more" if len(diffs) > 5 else ""
            raise T5mtlError(f"{where} does not fit this run: {len(diffs)} parameter shape(s) "
                             f"differ: {'; '.join(diffs[:5])}{more}. {advice}")
        if saved["opt_state"] is None:
            raise T5mtlError(f"{where} holds params only (no optimizer state), so there is no "
                             f"training run to resume. {advice}")
        saved_opt, opt = leaf_shapes(saved["opt_state"]), leaf_shapes(abstract_state.opt_state)
        diffs = shape_differences(saved_opt, opt)
        if diffs:
            # Name the optimizer's slots ("0/mu", "0/v_row") rather than each array.
            before, now = _slots(saved_opt, params), _slots(opt, params)
            detail = (f"its slots are {', '.join(before)} but this run's are {', '.join(now)}"
                      if before != now else "; ".join(diffs[:5]))
            raise T5mtlError(f"{where} does not fit this run's optimizer (another optimizer or "
                             f"another set of frozen parameters wrote it): {detail}. {advice}")

    def wait(self):
        self.check(wait=True)

    def close(self):
        """Waits for the save in flight (SaveError if it failed) and closes."""
        try:
            if not self._failed_save:
                self.check(wait=True)
        finally:
            try:
                self.manager.close()
            except Exception:  # noqa: BLE001 - the failure was raised once already
                if not self._failed_save:
                    raise


def _item_metadata(metadata, item: str):
    try:
        return metadata[item]
    except (KeyError, TypeError):
        return None


def leaf_shapes(tree) -> dict[str, tuple[int, ...]]:
    """{"encoder/layers_0/mlp/wi_0/kernel": shape} of arrays, ShapeDtypeStructs
    or orbax ArrayMetadata. optax's named tuples and orbax's saved dicts of
    them give the same names ("0/v_row/...")."""
    return {name: tuple(getattr(leaf, "shape", ()))
            for name, leaf in param_names.named_leaves(tree).items()}


def _slots(opt_shapes: dict[str, tuple], params: dict[str, tuple]) -> list[str]:
    """Optimizer-state names with the parameter name cut off: "0/mu", "0/count"."""
    slots = set()
    for name in opt_shapes:
        slot = name
        for param in params:
            if name.endswith("/" + param):
                slot = name[:-len(param) - 1]
                break
        slots.add(slot)
    return sorted(slots)


def shape_differences(saved: dict[str, tuple], expected: dict[str, tuple]) -> list[str]:
    """One line per name whose shape differs or that only one side has."""
    diffs = []
    for name in sorted(saved.keys() | expected.keys()):
        if name not in saved:
            diffs.append(f"{name!r} {expected[name]} is not in the checkpoint")
        elif name not in expected:
            diffs.append(f"{name!r} {saved[name]} is in the checkpoint but not in this run")
        elif saved[name] != expected[name]:
            diffs.append(f"{name!r} is {saved[name]} in the checkpoint but {expected[name]} "
                         f"in this run")
    return diffs
