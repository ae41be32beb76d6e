"""Per-task losses from packed mixed batches, the trainer's per-task logs,
and one place deciding the loss normalization (packed == unpacked)."""
import json

import jax
import numpy as np
import optax
import pytest
import seqio

import t5mtl.data.registry  # noqa: F401  (registers the synthetic suite)
from t5mtl.data.batches import host_batches, scoring_batch
from t5mtl.data.data_config import DataConfig
from t5mtl.data.task_ids import task_names
from t5mtl.models import get_config, losses
from t5mtl.models.encoder_decoder import EncoderDecoderModel, LossConfig
from t5mtl.train.metrics_writer import period_scalars
from t5mtl.train.train_step import TrainState, make_train_step
from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train

MIXTURE = "test_task_metrics_mix"
TASKS = ["synth_uppercase", "synth_add", "synth_parity"]
LENGTHS = {"inputs": 64, "targets": 16}


@pytest.fixture(scope="module")
def packed_batch():
    if MIXTURE not in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.add(MIXTURE, [(t, r) for t, r in zip(TASKS, (1.0, 2.0, 3.0))])
    batch = next(host_batches(MIXTURE, LENGTHS, batch_size_per_host=8, seed=3, pack=True,
                              task_ids=True, shard_info=seqio.ShardInfo(0, 1)))
    return batch


def _segments(batch):
    """(task index, input ids, target ids) of every packed segment."""
    out = []
    for row in range(batch["encoder_input_tokens"].shape[0]):
        for seg in np.unique(batch["decoder_segment_ids"][row]):
            if seg == 0:
                continue
            enc = batch["encoder_input_tokens"][row][batch["encoder_segment_ids"][row] == seg]
            on = batch["decoder_segment_ids"][row] == seg
            task = set(batch["decoder_task_ids"][row][on].tolist())
            assert len(task) == 1
            out.append((task.pop(), enc.tolist(), batch["decoder_target_tokens"][row][on].tolist()))
    return out


def _model_and_params(**loss):
    model = EncoderDecoderModel(get_config("t5_tiny"), LossConfig(**loss))
    return model, model.init_params(jax.random.PRNGKey(0))


def test_per_task_losses_of_a_packed_batch_equal_each_tasks_own_loss(packed_batch):
    model, params = _model_and_params()
    names = task_names(MIXTURE)
    segments = _segments(packed_batch)
    assert {t for t, _, _ in segments} == {0, 1, 2}               # three tasks mixed
    assert max(len(np.unique(r[r > 0])) for r in packed_batch["decoder_segment_ids"]) > 1
    loss_fn = jax.jit(model.loss_fn, static_argnames="num_tasks")
    _, metrics = loss_fn(params, packed_batch, None, num_tasks=3)
    for t, name in enumerate(names):
        own = [(i, o) for task, i, o in segments if task == t]
        alone = scoring_batch([i for i, _ in own], [o for _, o in own], 64, 16)
        loss, m = loss_fn(params, alone, None)
        np.testing.assert_allclose(metrics["task/loss"][t], loss, rtol=1e-5, err_msg=name)
        assert float(metrics["task/target_tokens"][t]) == float(m["target_tokens"])
        np.testing.assert_allclose(metrics["task/accuracy"][t], m["accuracy"], rtol=1e-6)
    # The per-task vectors add up to the batch's counts.
    assert float(np.sum(metrics["task/target_tokens"])) == float(metrics["target_tokens"])


@pytest.mark.slow
def test_the_trainer_logs_each_tasks_loss(packed_batch, tmp_path):
    model, params = _model_and_params()
    train(str(tmp_path), model=model,
          data=DataConfig(mixture_or_task_name=MIXTURE, task_feature_lengths=LENGTHS,
                          batch_size=8, seed=3),
          num_steps=1, optimizer=optax.sgd(0.0), log_period=1,
          checkpoints=CheckpointConfig(async_save=False), evaluation=EvalConfig(),
          show_progress=False)
    row = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")][-1]
    _, metrics = model.loss_fn(params, packed_batch, None, num_tasks=3)
    for t, name in enumerate(task_names(MIXTURE)):
        np.testing.assert_allclose(row[f"task/{name}/loss"], metrics["task/loss"][t], rtol=1e-5)
        assert row[f"task/{name}/target_tokens"] == float(metrics["task/target_tokens"][t])
    assert json.load(open(tmp_path / "model.json"))["tasks"] == task_names(MIXTURE)


def test_period_scalars_weight_each_steps_task_loss_by_its_tokens():
    steps = [{"loss": np.float32(2.0), "task/loss": np.array([1.0, 4.0]),
              "task/target_tokens": np.array([3.0, 1.0]),
              "task/correct_tokens": np.array([3.0, 0.0])},
             {"loss": np.float32(4.0), "task/loss": np.array([2.0, 0.0]),
              "task/target_tokens": np.array([1.0, 0.0]),
              "task/correct_tokens": np.array([0.0, 0.0])}]
    out = period_scalars(steps, ["a", "b"])
    assert out["loss"] == 3.0
    assert out["task/a/loss"] == pytest.approx((1.0 * 3 + 2.0 * 1) / 4)
    assert out["task/a/accuracy"] == 0.75 and out["task/a/target_tokens"] == 4.0
    assert out["task/b/loss"] == 4.0          # the step without task b does not count


@pytest.mark.parametrize("normalization", ["average_per_sequence", "num_real_target_tokens"])
def test_train_step_loss_is_the_same_packed_and_unpacked(packed_batch, normalization):
    """The model decides the normalization, segment ids included: a packed
    batch and the same examples unpacked give one loss (the trainer's own
    denominator once divided packed rows, not segments)."""
    model, params = _model_and_params(normalization=normalization)
    segments = _segments(packed_batch)
    unpacked = scoring_batch([i for _, i, _ in segments], [o for _, _, o in segments])
    step = jax.jit(make_train_step(model.loss_fn, optax.sgd(0.0),
                                   loss_denominator_fn=model.loss_denominator))
    state = TrainState.create(params, optax.sgd(0.0), jax.random.PRNGKey(0))
    packed = {k: v for k, v in packed_batch.items() if "task_ids" not in k}
    _, m_packed = step(state, packed)
    _, m_unpacked = step(state, unpacked)
    np.testing.assert_allclose(m_packed["loss"], m_unpacked["loss"], rtol=1e-5)
    assert float(m_packed["num_sequences"]) == pytest.approx(len(segments), rel=1e-5)
    if normalization == "average_per_sequence":
        # A denominator blind to segment ids (what the trainer once built)
        # counts rows, not sequences, and the packed loss comes out wrong.
        blind = losses.loss_denominator_fn(normalization=normalization)
        rows = jax.jit(make_train_step(model.loss_fn, optax.sgd(0.0),
                                       loss_denominator_fn=lambda b: {"loss": blind(b)}))
        _, m_blind = rows(state, packed)
        assert abs(float(m_blind["loss"]) / float(m_unpacked["loss"]) - 1) > 0.1
