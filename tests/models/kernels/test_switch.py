"""The kernel switch: "xla" and "cpu" compute the same loss and gradients;
"xla" supports forward-mode differentiation through the whole model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5mtl.data.batches import scoring_batch
from t5mtl.errors import T5mtlError
from t5mtl.models import get_config, kernels
from t5mtl.models.encoder_decoder import EncoderDecoderModel


def _batch():
    rng = np.random.RandomState(0)
    enc = rng.randint(2, 300, (4, 12)).tolist()
    enc[1] = enc[1][:7]
    tgt = rng.randint(2, 300, (4, 6)).tolist()
    tgt[2] = tgt[2][:4]
    return scoring_batch(enc, tgt, 12, 6)


def _loss(name, kind, **overrides):
    model = EncoderDecoderModel(get_config(name, kernels=kind, **overrides))
    return model, lambda p: model.loss_fn(p, _batch(), None)[0]


@pytest.mark.parametrize("name", ["t5_tiny", "t5_tiny_v1_0"])
def test_xla_and_cpu_kernels_give_the_same_loss_and_gradients(name):
    model, xla_loss = _loss(name, "xla")
    _, cpu_loss = _loss(name, "cpu")
    params = model.init_params(jax.random.PRNGKey(1))
    (lx, gx), (lc, gc) = (jax.jit(jax.value_and_grad(f))(params) for f in (xla_loss, cpu_loss))
    np.testing.assert_allclose(lc, lx, rtol=1e-5)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(gx), jax.tree.leaves(gc)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5, err_msg=jax.tree_util.keystr(path))
    # The two really are different programs: the CPU one has its custom VJPs.
    assert "custom_vjp" in str(jax.make_jaxpr(jax.grad(cpu_loss))(params))
    assert "custom_vjp" not in str(jax.make_jaxpr(jax.grad(xla_loss))(params))


def test_forward_mode_through_the_model_under_xla():
    model, loss = _loss("t5_tiny", "xla")
    params = model.init_params(jax.random.PRNGKey(1))
    tangent = jax.tree.map(lambda p: jnp.asarray(np.random.RandomState(p.size % 97).randn(
        *p.shape), p.dtype), params)
    value, derivative = jax.jit(lambda p, t: jax.jvp(loss, (p,), (t,)))(params, tangent)
    # The directional derivative equals the gradient's inner product with it.
    grads = jax.jit(jax.grad(loss))(params)
    dot = sum(jnp.vdot(g, t) for g, t in zip(jax.tree.leaves(grads), jax.tree.leaves(tangent)))
    np.testing.assert_allclose(derivative, dot, rtol=1e-4)
    np.testing.assert_allclose(value, jax.jit(loss)(params), rtol=1e-6)
    # Forward-over-reverse Hessian-vector product equals reverse-over-reverse.
    fwd = jax.jit(lambda p, t: jax.jvp(jax.grad(loss), (p,), (t,))[1])(params, tangent)
    rev = jax.jit(jax.grad(lambda p: sum(jnp.vdot(g, t) for g, t in zip(
        jax.tree.leaves(jax.grad(loss)(p)), jax.tree.leaves(tangent)))))(params)
    for a, b in zip(jax.tree.leaves(fwd), jax.tree.leaves(rev)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    # The CPU kernels' custom VJPs have no forward-mode rule: why "xla" exists.
    _, cpu_loss = _loss("t5_tiny", "cpu")
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(cpu_loss, (params,), (tangent,))   # fails while tracing, before any compute


def test_auto_picks_cpu_only_when_jax_runs_on_cpu_alone(monkeypatch):
    assert all(d.platform == "cpu" for d in jax.devices())
    assert kernels.resolve("auto") == "cpu"
    assert kernels.resolve("xla") == "xla" and kernels.get("xla") is kernels.XLA

    class Gpu:
        platform = "gpu"
    monkeypatch.setattr(jax, "devices", lambda: [Gpu()])
    assert kernels.resolve("auto") == "xla"
    with pytest.raises(T5mtlError, match="'fast'"):
        get_config("t5_tiny", kernels="fast")
