"""The CPU weight-gradient path equals autodiff of a plain matmul."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5mtl.models.kernels.cpu_dense import dense, weight_grad


def _inputs(dtype, first):
    rng = np.random.RandomState(0)
    x = rng.randn(40, 24)
    x[0, 0] = first                     # the conditional's predicate: both branches
    kernel = rng.randn(24, 56) * 0.2
    ct = rng.randn(40, 56)
    return tuple(jnp.asarray(a, dtype) for a in (x, kernel, ct))


@pytest.mark.parametrize("first", [1.5, -1.5])
def test_dense_values_and_gradients_match_autodiff(first):
    x, kernel, ct = _inputs(jnp.float32, first)
    np.testing.assert_allclose(dense(x, kernel), x @ kernel, rtol=1e-6)
    loss = lambda f: (lambda x, k: jnp.sum(f(x, k) * ct))
    got = jax.jit(jax.grad(loss(dense), argnums=(0, 1)))(x, kernel)
    want = jax.jit(jax.grad(loss(jnp.dot), argnums=(0, 1)))(x, kernel)
    # The weight gradient against numpy in float64 too: x^T ct.
    np.testing.assert_allclose(got[1], np.asarray(x, np.float64).T @ np.asarray(ct, np.float64),
                               rtol=1e-5, atol=1e-5)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_bfloat16_gradients_keep_the_dtype_and_match_float32():
    x, kernel, ct = _inputs(jnp.bfloat16, 0.5)
    gx, gk = jax.grad(lambda x, k: jnp.sum(dense(x, k).astype(jnp.float32)
                                           * ct.astype(jnp.float32)), argnums=(0, 1))(x, kernel)
    assert gx.dtype == gk.dtype == jnp.bfloat16
    want = np.asarray(x, np.float32).T @ np.asarray(ct, np.float32)
    np.testing.assert_allclose(np.asarray(gk, np.float32), want, rtol=0.05, atol=0.1)


def test_cpu_lowering_transposes_through_a_conditional_into_a_row_major_dot():
    x, _, ct = _inputs(jnp.float32, 1.0)
    hlo = jax.jit(weight_grad).lower(x, ct).compile().as_text()
    assert " conditional(" in hlo
    # No dot contracts its left operand's leading (token) axis any more.
    assert not re.search(r" dot\([^)]*\), lhs_contracting_dims=\{0\}", hlo), hlo
