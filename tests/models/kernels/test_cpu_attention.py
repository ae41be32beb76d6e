"""The hand-written attention backward pass equals autodiff of the plain formula."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5mtl.models.kernels import cpu_attention as attention
from t5mtl.models.kernels.cpu_attention import dot_product_attention
from t5mtl.models.kernels.reference import attention as attention_reference
from t5mtl.models.layers import NEG_INF


def _inputs(b=2, q=5, k=7, h=3, d=4, bias_batch=1, mask_q=1, dtype=jnp.float32):
    rng = np.random.RandomState(0)
    arr = lambda *s: jnp.asarray(rng.randn(*s), jnp.float32)
    qs, ks, vs = arr(b, q, h, d).astype(dtype), arr(b, k, h, d).astype(dtype), arr(b, k, h, d)
    bias = arr(bias_batch, h, q, k)
    keep = rng.rand(b, 1, mask_q, k) > 0.3
    keep[..., 0] = True                              # every row keeps one key
    mask = jnp.where(keep, 0.0, NEG_INF).astype(jnp.float32)
    return qs, ks, vs.astype(dtype), bias, mask, arr(b, q, h, d).astype(dtype)


@pytest.mark.parametrize("keep_probabilities", [True, False])
@pytest.mark.parametrize("bias_batch,mask_q", [(1, 1), (2, 1), (2, 5), (1, 5)])
def test_values_and_gradients_match_autodiff(bias_batch, mask_q, keep_probabilities,
                                              monkeypatch):
    # Both residual strategies (probabilities kept, or recomputed from the
    # row log-normalizers as for bfloat16) give autodiff's gradients.
    monkeypatch.setattr(attention, "keeps_probabilities", lambda dtype: keep_probabilities)
    q, k, v, bias, mask, ct = _inputs(bias_batch=bias_batch, mask_q=mask_q)

    def loss(fn, q, k, v, bias):
        return jnp.sum(fn(q, k, v, bias, mask) * ct)

    out = dot_product_attention(q, k, v, bias, mask)
    np.testing.assert_allclose(out, attention_reference(q, k, v, bias, mask), atol=1e-6)
    got = jax.grad(lambda *a: loss(dot_product_attention, *a), argnums=(0, 1, 2, 3))(q, k, v, bias)
    want = jax.grad(lambda *a: loss(attention_reference, *a), argnums=(0, 1, 2, 3))(q, k, v, bias)
    for name, g, w in zip(("q", "k", "v", "bias"), got, want):
        assert g.shape == w.shape, name
        np.testing.assert_allclose(g, w, atol=2e-5, rtol=1e-5, err_msg=name)
    # The bias gradient really is summed over the batch when the bias is shared.
    assert got[3].shape == (bias_batch, 3, 5, 7)


def test_no_bias_and_masked_keys_get_no_weight():
    q, k, v, _, mask, _ = _inputs()
    out = dot_product_attention(q, k, v, None, mask)
    # Changing a masked key's value must not change the output.
    masked = np.asarray(mask[0, 0, 0] < 0)
    v2 = v.at[0, masked].set(100.0)
    np.testing.assert_allclose(out[0], dot_product_attention(q, k, v2, None, mask)[0], atol=1e-6)
    g = jax.grad(lambda v: jnp.sum(dot_product_attention(q, k, v, None, mask)))(v)
    assert np.all(np.asarray(g[0, masked]) == 0)


def test_bfloat16_close_to_float32():
    q, k, v, bias, mask, ct = _inputs(dtype=jnp.bfloat16)
    f32 = lambda x: x.astype(jnp.float32)
    got = jax.grad(lambda q: jnp.sum(f32(dot_product_attention(q, k, v, bias, mask)) * f32(ct)))(q)
    want = jax.grad(lambda q: jnp.sum(attention_reference(q, f32(k), f32(v), bias, mask) * f32(ct)))(
        f32(q))
    assert got.dtype == jnp.bfloat16
    # bf16 has 8 bits of mantissa: agree to a few percent of the gradient's scale.
    np.testing.assert_allclose(f32(got), want, atol=0.03 * float(jnp.max(jnp.abs(want))))
