"""The train step: the same losses on 1 device and on 8 fake devices in three
mesh layouts, gradient accumulation equal to one batch, donation."""
import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from t5mtl.errors import T5mtlError
from t5mtl.models import losses
from t5mtl.train import partitioning, train_step

from tests.train import toy_sharded_lm as toy

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LAYOUTS = ["8,1,1", "2,1,4", "1,4,2"]  # data=8; data=2 x model=4; fsdp=4 x model=2


def _toy_env(num_devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={num_devices}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


def _toy_command(*args):
    return [sys.executable, os.path.join(HERE, "toy_sharded_lm.py"), *args]


def _output(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def one_device_losses():
    losses_, _ = toy.run_losses((1, 1, 1), devices=jax.devices()[:1])
    assert losses_[-1] < losses_[0] * 0.5  # it trains
    return losses_


def test_losses_match_across_mesh_layouts(one_device_losses):
    proc = subprocess.run(_toy_command(*LAYOUTS), env=_toy_env(8), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _output(proc.stdout)
    one_device = one_device_losses
    for layout in LAYOUTS:
        got = results[layout]
        assert got["num_devices"] == 8, layout  # params really spread over 8 devices
        assert got["wi_kernel_spec"] == "P('fsdp', 'model')"
        np.testing.assert_allclose(got["losses"], one_device, rtol=1e-5, err_msg=layout)


def test_losses_match_on_two_processes(one_device_losses):
    """2 processes x 2 CPU devices (gloo); each process feeds the share of
    the batch that process_batch_shard names."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    layouts = ["4,1,1", "1,1,4"]
    procs = [subprocess.Popen(_toy_command(f"--distributed={port},2,{i}", *layouts),
                              env=_toy_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    outs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, stderr[-3000:]
            outs.append(_output(stdout))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for i, results in enumerate(outs):
        for layout in layouts:
            got = results[layout]
            assert got["num_devices"] == 4, layout
            np.testing.assert_allclose(got["losses"], one_device_losses, rtol=1e-5,
                                       err_msg=f"{layout} process {i}")
        # data=4 spans both processes: each feeds its own half. model=4
        # spans both too and the batch is not split: both feed all of it.
        assert results["4,1,1"]["batch_shard"] == [i, 2]
        assert results["1,1,4"]["batch_shard"] == [0, 1]


def _one_step(tx, num_microbatches, batch, params):
    step = train_step.make_train_step(
        toy.loss_fn, tx, num_microbatches=num_microbatches,
        loss_denominator_fn=losses.loss_denominator_fn("weights"))
    state = train_step.TrainState.create(params, tx, jax.random.PRNGKey(3))
    return jax.jit(step)(state, batch)


@pytest.mark.parametrize("name", ["sgd", "adafactor"])
def test_grad_accumulation_equals_one_batch(name):
    params = jax.tree.map(jnp.asarray, toy.nn.unbox(toy.init_params(jax.random.PRNGKey(0))))
    batch = {k: jnp.asarray(v) for k, v in toy.make_batch(7).items()}
    # Rows have different numbers of real targets, so per-microbatch
    # normalization would differ; the whole-batch denominator makes it exact.
    assert len({float(batch["weights"][i::4].sum()) for i in range(4)}) > 1
    tx = optax.sgd(1.0) if name == "sgd" else toy.make_optimizer()
    full_state, full_metrics = _one_step(tx, 1, batch, params)
    acc_state, acc_metrics = _one_step(tx, 4, batch, params)
    for a, b in zip(jax.tree.leaves(acc_state.params), jax.tree.leaves(full_state.params)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    if name == "sgd":  # the update is minus the gradient: compare it directly
        for p0, a, b in zip(jax.tree.leaves(params), jax.tree.leaves(acc_state.params),
                            jax.tree.leaves(full_state.params)):
            np.testing.assert_allclose(a - p0, b - p0, rtol=1e-5, atol=1e-7)
    for key in ("loss", "z_loss", "accuracy", "target_tokens", "correct_tokens", "grad_norm"):
        np.testing.assert_allclose(acc_metrics[key], full_metrics[key], rtol=1e-6, err_msg=key)
    assert int(acc_state.step) == 1


def test_grad_norm_metric_is_the_norm_of_the_gradient():
    params = jax.tree.map(jnp.asarray, toy.nn.unbox(toy.init_params(jax.random.PRNGKey(0))))
    batch = {k: jnp.asarray(v) for k, v in toy.make_batch(7).items()}
    _, metrics = _one_step(optax.adamw(1e-3), 1, batch, params)
    # The same loss, normalized as the step normalizes it, differentiated directly.
    denominator = losses.loss_denominator_fn("weights")(batch)
    ref_batch = dict(batch, **{train_step.LOSS_DENOMINATOR_KEY: denominator})
    grads = jax.grad(lambda p: toy.loss_fn(p, ref_batch, None)[0])(params)
    expected = np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64)))
                           for g in jax.tree.leaves(grads)))
    assert expected > 0
    np.testing.assert_allclose(metrics["grad_norm"], expected, rtol=1e-5)
    tree = {"a": jnp.array([3.0]), "b": {"c": jnp.array([[4.0]])}}
    assert float(train_step.grad_norm(tree)) == 5.0


def test_microbatches_must_divide_the_batch():
    params = toy.nn.unbox(toy.init_params(jax.random.PRNGKey(0)))
    batch = {k: jnp.asarray(v) for k, v in toy.make_batch(0).items()}
    with pytest.raises(T5mtlError, match="3 microbatches"):
        _one_step(optax.sgd(0.1), 3, batch, params)
    with pytest.raises(T5mtlError, match="0"):
        train_step.make_train_step(toy.loss_fn, optax.sgd(0.1), num_microbatches=0)


def test_jitted_step_donates_state_and_derives_dropout_keys():
    mesh = partitioning.create_mesh((1, 1, 1), jax.devices()[:1])
    seen = []

    def loss_fn(params, batch, rng):
        jax.debug.callback(lambda r: seen.append(np.asarray(r).tolist()), rng)
        return toy.loss_fn(params, batch, rng)

    tx = optax.sgd(0.1)
    state, shardings = train_step.create_train_state(
        toy.init_params, tx, jax.random.PRNGKey(0), rng=jax.random.key(5), mesh=mesh)
    assert state.rng.dtype == jnp.uint32  # stored raw, checkpoint friendly
    step = train_step.jit_train_step(train_step.make_train_step(loss_fn, tx), shardings,
                                     partitioning.batch_sharding(mesh), mesh)
    batch = partitioning.host_batch_to_global(toy.make_batch(0), mesh)
    old = state
    state, metrics = step(state, batch)
    assert old.params["wi"]["kernel"].is_deleted()  # donated
    state, _ = step(state, batch)
    jax.effects_barrier()
    assert int(state.step) == 2 and set(metrics) >= {"loss", "accuracy", "grad_norm"}
    base = jax.random.key_data(jax.random.key(5))
    assert seen == [np.asarray(jax.random.fold_in(base, i)).tolist() for i in range(2)]

