"""kernels="jax_attention" (jax.nn.dot_product_attention) computes T5's
attention: values and gradients equal the plain reference in float32 (1e-5),
alone and through the whole model (loss, gradients, greedy decoding)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5mtl.models import get_config
from t5mtl.models.encoder_decoder import DecodeConfig, EncoderDecoderModel
from t5mtl.models.kernels import get, jax_attention
from t5mtl.models.kernels.reference import NEG_INF, attention as reference
from tests.models.kernels.test_switch import _batch


def _inputs(bias_batch, mask_q, b=2, q=5, k=7, h=3, d=4):
    rng = np.random.RandomState(0)
    arr = lambda *s: jnp.asarray(rng.randn(*s), jnp.float32)     # noqa: E731
    keep = rng.rand(b, 1, mask_q, k) > 0.3
    keep[..., 0] = True
    keep[1, 0, -1, :] = False                # one fully masked row: uniform, not NaN
    mask = jnp.where(keep, 0.0, NEG_INF).astype(jnp.float32)
    return arr(b, q, h, d), arr(b, k, h, d), arr(b, k, h, d), arr(bias_batch, h, q, k), mask, \
        arr(b, q, h, d)


@pytest.mark.parametrize("bias_batch,mask_q", [(1, 1), (2, 5), (1, 5)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_values_and_gradients_equal_the_reference(bias_batch, mask_q, with_bias):
    q, k, v, bias, mask, ct = _inputs(bias_batch, mask_q)
    bias = bias if with_bias else None

    def loss(fn, q, k, v):
        return jnp.sum(fn(q, k, v, bias, mask) * ct)

    np.testing.assert_allclose(jax_attention.attention(q, k, v, bias, mask),
                               reference(q, k, v, bias, mask), atol=1e-5, rtol=1e-5)
    got = jax.grad(lambda *a: loss(jax_attention.attention, *a), argnums=(0, 1, 2))(q, k, v)
    want = jax.grad(lambda *a: loss(reference, *a), argnums=(0, 1, 2))(q, k, v)
    for name, g, w in zip("qkv", got, want):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5, err_msg=name)


def test_the_model_under_jax_attention_equals_xla(monkeypatch):
    calls = []
    fused = jax.nn.dot_product_attention
    monkeypatch.setattr(jax.nn, "dot_product_attention",
                        lambda *a, **k: calls.append(1) or fused(*a, **k))
    assert get("jax_attention").attention is jax_attention.attention
    batch = _batch()
    losses, grads, decoded = {}, {}, {}
    for kind in ("xla", "jax_attention"):
        model = EncoderDecoderModel(get_config("t5_tiny", kernels=kind))
        params = model.init_params(jax.random.PRNGKey(1))
        losses[kind], grads[kind] = jax.jit(jax.value_and_grad(
            lambda p: model.loss_fn(p, batch, None)[0]))(params)
        decoded[kind] = np.asarray(jax.jit(lambda p: model.predict_batch(
            p, {"encoder_input_tokens": batch["encoder_input_tokens"]},
            DecodeConfig(max_decode_length=6)))(params))
    assert calls                         # the setting really went through JAX's entry point
    np.testing.assert_allclose(losses["jax_attention"], losses["xla"], rtol=1e-6)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads["xla"]),
                            jax.tree.leaves(grads["jax_attention"])):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5, err_msg=jax.tree_util.keystr(path))
    np.testing.assert_array_equal(decoded["jax_attention"], decoded["xla"])
