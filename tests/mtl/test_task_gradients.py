"""Per-task gradients from one mixed batch equal each task's gradient on its
own examples; the train step's surgery path on a tiny T5 (sum == plain
step, PCGrad == its coefficients applied by hand, microbatches, trainable
subsets, GradVac's state, the error lines)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from t5mtl.errors import T5mtlError
from t5mtl.models import get_config, param_names
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.mtl import surgery
from t5mtl.mtl.surgery_step import SURGERY_STREAM
from t5mtl.mtl.task_gradients import check_task_memory, gram, task_gradients
from t5mtl.train.train_step import TrainState, make_train_step

NUM_TASKS = 3
ROW_TASKS = np.array([0, 0, 1, 1, 1, 0])          # task 2 is absent from the batch


def _batch(seed=0):
    rng = np.random.RandomState(seed)
    b, enc, dec = len(ROW_TASKS), 12, 6
    tokens = rng.randint(2, 384, size=(b, enc)).astype(np.int32)
    targets = rng.randint(2, 384, size=(b, dec)).astype(np.int32)
    lengths = rng.randint(2, dec + 1, size=b)               # padded, unequal lengths
    targets[np.arange(dec)[None, :] >= lengths[:, None]] = 0
    dec_in = np.concatenate([np.zeros((b, 1), np.int32), targets[:, :-1]], axis=1)
    task_ids = np.where(targets > 0, ROW_TASKS[:, None], -1).astype(np.int32)
    return {"encoder_input_tokens": tokens, "decoder_input_tokens": dec_in,
            "decoder_target_tokens": targets,
            "decoder_loss_weights": (targets > 0).astype(np.float32),
            "decoder_task_ids": task_ids}


@pytest.fixture(scope="module")
def model_and_params():
    model = EncoderDecoderModel(get_config("t5_tiny", dropout_rate=0.0))
    return model, model.init_params(jax.random.PRNGKey(0))


def test_per_task_gradients_equal_each_tasks_examples_alone(model_and_params):
    model, params = model_and_params
    batch = _batch()
    loss_fn = functools.partial(model.loss_fn, num_tasks=NUM_TASKS)
    grads, present, loss, metrics = jax.jit(
        lambda p, b: task_gradients(loss_fn, p, b, None, NUM_TASKS))(params, batch)
    assert list(np.asarray(present)) == [True, True, False]
    alone_grad = jax.jit(jax.grad(lambda p, b: model.loss_fn(p, b, None)[0]))
    for t in (0, 1):
        rows = ROW_TASKS == t
        alone = {k: v[rows] for k, v in batch.items() if k != "decoder_task_ids"}
        want = param_names.flatten(alone_grad(params, alone))
        got = param_names.flatten(jax.tree.map(lambda g: g[t], grads))
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5,
                                       atol=1e-5 * np.abs(want[name]).max(), err_msg=name)
    assert all(float(jnp.abs(g[2]).max()) == 0.0 for g in jax.tree.leaves(grads))
    # The shares rebuild the batch gradient: sum_t (n_t / N) g_t.
    shares = np.asarray(metrics["task/target_tokens"]) / float(metrics["target_tokens"])
    plain = param_names.flatten(jax.jit(jax.grad(lambda p: loss_fn(p, batch, None)[0]))(params))
    for name, g in param_names.flatten(grads).items():
        np.testing.assert_allclose(np.tensordot(shares, g, axes=1), plain[name], rtol=1e-4,
                                   atol=1e-6 * np.abs(plain[name]).max() + 1e-9)


def _step(model, tx, **kwargs):
    return jax.jit(make_train_step(
        functools.partial(model.loss_fn, num_tasks=NUM_TASKS), tx,
        loss_denominator_fn=functools.partial(model.loss_denominator, num_tasks=NUM_TASKS),
        **kwargs))


def _leaves_close(a, b, rtol=2e-5):
    a, b = param_names.flatten(a), param_names.flatten(b)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("microbatches", [1, 2])
def test_sum_surgery_equals_the_plain_step(model_and_params, microbatches):
    model, params = model_and_params
    tx = optax.sgd(0.5)
    state = TrainState.create(params, tx, jax.random.PRNGKey(1))
    batch = _batch(1)
    plain, m_plain = _step(model, tx)(state, batch)
    summed, m_sum = _step(model, tx, gradient_surgery="sum", num_tasks=NUM_TASKS,
                          num_microbatches=microbatches)(state, batch)
    _leaves_close(summed.params, plain.params)
    np.testing.assert_allclose(m_sum["loss"], m_plain["loss"], rtol=1e-5)
    np.testing.assert_allclose(m_sum["grad_norm"], m_plain["grad_norm"], rtol=1e-4)
    np.testing.assert_allclose(m_sum["task/loss"], m_plain["task/loss"], rtol=1e-5)


def test_pcgrad_step_applies_its_coefficients_to_the_trainable_subset(model_and_params):
    model, params = model_and_params
    names = [n for n in param_names.flatten(params) if n.startswith("decoder/")]
    tx = optax.sgd(1.0)
    state = TrainState.create(params, tx, jax.random.PRNGKey(2), names)
    batch = _batch(2)
    new, _ = _step(model, tx, gradient_surgery=surgery.PCGrad(), num_tasks=NUM_TASKS,
                   trainable_names=names)(state, batch)
    # By hand: the trainable subtree's task gradients, shared by tokens.
    trainable = param_names.subset(params, names)
    frozen = {k: v for k, v in params.items() if k != "decoder"}
    loss_fn = functools.partial(model.loss_fn, num_tasks=NUM_TASKS)
    denom = model.loss_denominator(batch, NUM_TASKS)
    grads, present, _, _ = task_gradients(
        lambda t, b, r: loss_fn(param_names.merge(frozen, t), {**b, "loss_denominator": denom},
                                r), trainable, batch, None, NUM_TASKS)
    shares = denom["task"] / denom["loss"]
    shared = jax.tree.map(lambda g: g * shares.reshape((-1,) + (1,) * (g.ndim - 1)), grads)
    key = jax.random.fold_in(jax.random.fold_in(state.rng, 0), SURGERY_STREAM)
    alpha, _ = surgery.PCGrad().coefficients(gram(shared), present, (), key)
    assert float(alpha[2]) == 0.0
    want = jax.tree.map(lambda p, d: p - d, trainable, surgery.combine(shared, alpha))
    _leaves_close(param_names.subset(new.params, names), want, rtol=1e-4)
    for name, value in param_names.flatten(new.params).items():
        if name not in names:                                   # frozen leaves unchanged
            np.testing.assert_array_equal(value, param_names.flatten(params)[name])


def test_gradvac_keeps_its_targets_in_the_optimizer_state(model_and_params):
    model, params = model_and_params
    method = surgery.GradVac(beta=0.5)
    tx = surgery.with_state(optax.sgd(0.1), method, NUM_TASKS)
    state = TrainState.create(params, tx, jax.random.PRNGKey(3))
    assert isinstance(state.opt_state, surgery.SurgeryOptState)
    step = _step(model, tx, gradient_surgery=method, num_tasks=NUM_TASKS)
    state, metrics = step(state, _batch(3))
    targets = np.asarray(state.opt_state.surgery)
    assert targets[0, 1] != 0 and targets[1, 0] != 0          # the pair present was measured
    assert np.all(targets[2] == 0) and np.all(targets[:, 2] == 0)   # absent task 2
    assert int(metrics["nonfinite"]) == 0
    with pytest.raises(T5mtlError, match="build the optimizer with t5mtl.mtl.surgery.with_state"):
        _step(model, optax.sgd(0.1), gradient_surgery=method, num_tasks=NUM_TASKS)(
            TrainState.create(params, optax.sgd(0.1), jax.random.PRNGKey(3)), _batch(3))


def test_bad_surgery_settings_are_one_line_errors(model_and_params):
    model, params = model_and_params
    with pytest.raises(T5mtlError, match="needs a mixture of at least 2 tasks, got num_tasks=1"):
        make_train_step(model.loss_fn, optax.sgd(0.1), gradient_surgery="pcgrad", num_tasks=1,
                        loss_denominator_fn=model.loss_denominator)
    with pytest.raises(T5mtlError, match="max_tasks=2"):
        check_task_memory(3, params, max_tasks=2)
    tx = optax.sgd(0.1)
    step = make_train_step(functools.partial(model.loss_fn, num_tasks=NUM_TASKS), tx,
                           loss_denominator_fn=model.loss_denominator,   # no per-task part
                           gradient_surgery="sum", num_tasks=NUM_TASKS)
    with pytest.raises(T5mtlError, match="needs the loss denominators of the whole batch and "
                                         "of each task"):
        jax.jit(step)(TrainState.create(params, tx, jax.random.PRNGKey(0)), _batch())
