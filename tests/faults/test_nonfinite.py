"""NaN injected at a chosen step: never saved, the run stops naming the last
finite checkpoint (or that there is none); or, asked to, the step is skipped
and counted. log_period 50 > num_steps: the check does not wait for a log."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import t5mtl.data.registry  # noqa: F401  (registers the synthetic suite)
from t5mtl.data.data_config import DataConfig
from t5mtl.models import get_config
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.train.checkpointer import TrainCheckpointer
from t5mtl.train.nonfinite import NonFiniteError
from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
from tests.faults.runs import steps


def _train(model_dir, optimizer=None, model=None, **kwargs):
    return train(str(model_dir), model=model or EncoderDecoderModel(get_config("t5_tiny")),
                 data=DataConfig(mixture_or_task_name="synth_parity",
                                 task_feature_lengths={"inputs": 32, "targets": 8},
                                 batch_size=8),
                 optimizer=optimizer, evaluation=EvalConfig(), show_progress=False,
                 **{"num_steps": 8, "log_period": 50,
                    "checkpoints": CheckpointConfig(period=2, keep=10, async_save=False),
                    **kwargs})


@jax.jit
def _poison(params):
    return jax.tree.map(lambda x: x * jnp.nan, params)


def _nan_params_after(monkeypatch, at_step):
    """The real train step, whose output parameters after step `at_step` are
    replaced by NaN (as a diverging update would leave them): the loss is
    NaN from the next step on. The step program itself is unchanged."""
    from t5mtl.train import trainer
    jit_train_step = trainer.jit_train_step

    def patched(*args, **kwargs):
        run = jit_train_step(*args, **kwargs)

        class Lowered:
            def __init__(self, lowered):
                self.lowered = lowered

            def compile(self):
                return Poisoning(self.lowered.compile())

        class Poisoning:
            def __init__(self, compiled):
                self.compiled, self.calls = compiled, 0

            def __getattr__(self, name):        # memory_analysis, ...
                return getattr(self.compiled, name)

            def __call__(self, state, batch):
                state, metrics = self.compiled(state, batch)
                self.calls += 1
                if self.calls == at_step:
                    state = state.replace(params=_poison(state.params))
                return state, metrics
        run.lower = lambda state, batch, lower=run.lower: Lowered(lower(state, batch))
        return run
    monkeypatch.setattr(trainer, "jit_train_step", patched)


def _all_finite(model_dir, step):
    ckpt = TrainCheckpointer(str(model_dir), async_save=False)
    try:
        restored = ckpt.manager.restore(step)
    finally:
        ckpt.close()
    return all(np.all(np.isfinite(x)) for x in jax.tree.leaves(restored["params"]))


@pytest.mark.parametrize("nan_after,message,saved", [
    (3, r"the loss or gradient norm is NaN or Inf at step 4; stopping without saving it\. "
        r"The last finite checkpoint is step 2 in .*/checkpoints\. To skip", [2]),
    (4, r"the parameters or optimizer state are NaN or Inf after step 4; stopping without "
        r"saving them\. The last finite checkpoint is step 2 in", [2]),
    (1, r"NaN or Inf at step 2; stopping without saving it\. There is no checkpoint yet in", []),
], ids=["loss-between-checkpoints", "params-on-checkpoint-step", "no-checkpoint-yet"])
def test_a_nonfinite_step_is_never_saved(tmp_path, monkeypatch, nan_after, message, saved):
    _nan_params_after(monkeypatch, nan_after)
    with pytest.raises(NonFiniteError, match=message):
        _train(tmp_path)
    assert steps(tmp_path) == saved
    for step in saved:
        assert _all_finite(tmp_path, step)


class _NanLossAtStep(EncoderDecoderModel):
    """T5 whose loss is NaN at one step, recognized by its dropout key
    (fold_in(train rng, step index), t5mtl.train.train_step)."""

    def __init__(self, step, seed=0):
        super().__init__(get_config("t5_tiny"))
        object.__setattr__(self, "_key", jax.random.fold_in(jax.random.PRNGKey(seed + 1),
                                                            step - 1))

    def loss_fn(self, params, batch, dropout_rng, num_tasks=0):
        loss, metrics = super().loss_fn(params, batch, dropout_rng, num_tasks)
        bad = jnp.all(dropout_rng == self._key)
        metrics = dict(metrics, loss=jnp.where(bad, jnp.nan, metrics["loss"]))
        return jnp.where(bad, jnp.nan, loss), metrics


def test_skip_nonfinite_steps_leaves_the_state_and_counts_the_step(tmp_path):
    summary = _train(tmp_path, model=_NanLossAtStep(3), num_steps=4, log_period=1,
                     checkpoints=CheckpointConfig(period=1, keep=10, async_save=False),
                     skip_nonfinite_steps=True)
    assert summary["step"] == 4 and summary["skipped_steps"] == 1
    rows = {r["step"]: r for r in map(json.loads, open(os.path.join(tmp_path, "metrics.jsonl")))
            if r["split"] == "train"}
    assert [rows[s]["skipped_steps"] for s in (1, 2, 3, 4)] == [0.0, 0.0, 1.0, 0.0]
    assert "loss" not in rows[3] and np.isfinite(rows[4]["loss"])
    ckpt = TrainCheckpointer(str(tmp_path), async_save=False)
    try:
        params = {s: jax.tree.leaves(ckpt.manager.restore(s)["params"]) for s in (2, 3, 4)}
    finally:
        ckpt.close()
    assert all(np.array_equal(a, b) for a, b in zip(params[2], params[3]))      # skipped
    assert not all(np.array_equal(a, b) for a, b in zip(params[3], params[4]))  # trained
