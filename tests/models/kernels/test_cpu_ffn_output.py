"""The recomputing feed-forward VJP equals autodiff of act(h) @ wo."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5mtl.models.kernels.cpu_ffn_output import activation_dense
from t5mtl.models.kernels.reference import activation


@pytest.mark.parametrize("gated", [True, False])
def test_values_and_gradients_match_autodiff(gated):
    rng = np.random.RandomState(0)
    pre = tuple(jnp.asarray(rng.randn(6, 8), jnp.float32) for _ in range(2 if gated else 1))
    kernel = jnp.asarray(rng.randn(8, 5), jnp.float32)
    ct = jnp.asarray(rng.randn(6, 5), jnp.float32)

    def reference(pre, kernel):
        return activation(gated, pre) @ kernel

    np.testing.assert_allclose(activation_dense(gated, pre, kernel), reference(pre, kernel),
                               atol=1e-6)
    loss = lambda f: (lambda pre, kernel: jnp.sum(f(pre, kernel) * ct))
    got = jax.grad(loss(lambda p, k: activation_dense(gated, p, k)), argnums=(0, 1))(pre, kernel)
    want = jax.grad(loss(reference), argnums=(0, 1))(pre, kernel)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)
    if not gated:   # relu: no gradient where the pre-activation is negative
        assert np.all(np.asarray(got[0][0])[np.asarray(pre[0]) < 0] == 0)
