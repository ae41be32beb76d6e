"""Adafactor against an independent numpy Adafactor, schedules at given steps,
freezing by name, clipping and bad names."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from t5mtl.errors import T5mtlError
from t5mtl.train import optimizers


def _np_adafactor(params, grads_per_step, lr_fn, min_dim=128):
    """Shazeer & Stern (2018), Algorithm 4 and 5 with T5's settings:
    beta2_t = 1 - t^-0.8, eps1 = 1e-30, eps2 = 1e-3, update clipping d = 1,
    relative step size alpha_t = max(eps2, RMS(X_{t-1})) * rho_t, no momentum.
    Factored matrices use row sums R and column sums C: V = R C / (1^T R)."""
    params = {k: v.astype(np.float64) for k, v in params.items()}
    state = {}
    for t, grads in enumerate(grads_per_step, start=1):
        beta2 = 1.0 - t ** -0.8
        for k, x in params.items():
            g = grads[k].astype(np.float64)
            g2 = g * g + 1e-30
            if x.ndim == 2 and min(x.shape) >= min_dim:
                r, c = state.get(k, (np.zeros(x.shape[0]), np.zeros(x.shape[1])))
                r = beta2 * r + (1 - beta2) * g2.sum(axis=1)
                c = beta2 * c + (1 - beta2) * g2.sum(axis=0)
                state[k] = (r, c)
                v = np.outer(r, c) / r.sum()
            else:
                v = beta2 * state.get(k, np.zeros_like(x)) + (1 - beta2) * g2
                state[k] = v
            u = g / np.sqrt(v)
            u = u / max(1.0, np.sqrt(np.mean(u * u)) / 1.0)
            alpha = max(1e-3, np.sqrt(np.mean(x * x))) * lr_fn(t - 1)
            params[k] = x - alpha * u
    return params


def test_adafactor_matches_numpy_algorithm():
    rng = np.random.default_rng(0)
    params = {
        "dense": {"kernel": rng.normal(size=(128, 160)).astype(np.float32) * 0.05},
        "bias": np.full((160,), 1e-4, np.float32),  # RMS below eps2: the floor applies
        "small": rng.normal(size=(4, 6)).astype(np.float32),  # too small to factor
    }
    grads = [{"dense": {"kernel": rng.normal(size=(128, 160)).astype(np.float32)},
              "bias": rng.normal(size=(160,)).astype(np.float32) * 3,
              "small": rng.normal(size=(4, 6)).astype(np.float32)} for _ in range(3)]
    sched = optimizers.learning_rate_schedule("rsqrt", base_learning_rate=1.0, warmup_steps=2)
    tx = optimizers.create_optimizer("adafactor", learning_rate=sched)
    p = jax.tree.map(jnp.asarray, params)
    state = tx.init(p)
    # Factored: a row and a column vector instead of a full matrix.
    shapes = sorted(tuple(x.shape) for x in jax.tree.leaves(state))
    assert (128,) in shapes and (160,) in shapes and (128, 160) not in shapes
    for g in grads:
        updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, p)
        p = optax.apply_updates(p, updates)

    flat = lambda t: {"dense": t["dense"]["kernel"], "bias": t["bias"], "small": t["small"]}
    expected = _np_adafactor(flat(params), [flat(g) for g in grads],
                             lambda s: 1.0 / math.sqrt(max(s, 2)))
    for k, v in flat(p).items():
        np.testing.assert_allclose(np.asarray(v), expected[k], rtol=2e-5, atol=1e-7, err_msg=k)
        assert not np.allclose(np.asarray(v), flat(params)[k])  # it moved


def test_schedules_at_steps():
    rsqrt = optimizers.learning_rate_schedule()  # T5: base 1.0, 10k warmup
    assert float(rsqrt(0)) == pytest.approx(0.01)
    assert float(rsqrt(10_000)) == pytest.approx(0.01)
    assert float(rsqrt(40_000)) == pytest.approx(0.005)
    const = optimizers.learning_rate_schedule("constant", 1e-3, warmup_steps=0)
    assert float(const(0)) == float(const(12345)) == pytest.approx(1e-3)
    const_w = optimizers.learning_rate_schedule("constant", 1e-3, warmup_steps=10)
    assert float(const_w(5)) == pytest.approx(5e-4) and float(const_w(50)) == pytest.approx(1e-3)
    lin = optimizers.learning_rate_schedule("linear", 1.0, warmup_steps=10, decay_steps=110,
                                            end_learning_rate=0.1)
    for step, want in [(0, 0.0), (5, 0.5), (10, 1.0), (60, 0.55), (110, 0.1), (500, 0.1)]:
        assert float(lin(step)) == pytest.approx(want, abs=1e-6), step
    cos = optimizers.learning_rate_schedule("cosine", 2.0, warmup_steps=10, decay_steps=110)
    for step, want in [(0, 0.0), (5, 1.0), (10, 2.0), (35, 1.0 + math.cos(math.pi / 4)),
                       (60, 1.0), (110, 0.0), (200, 0.0)]:
        assert float(cos(step)) == pytest.approx(want, abs=1e-5), step


def _tree():
    return {"encoder": {"kernel": jnp.ones((3, 4)), "scale": jnp.ones((4,))},
            "decoder": {"kernel": jnp.ones((4, 5)), "prompt": {"emb": jnp.ones((2, 4))}}}


def test_freezing_moved_to_the_train_step():
    """Freezing is the step's trainable subset (tests/train/test_trainable.py);
    the optimizer's old arguments name the new bindings."""
    for kwargs in ({"frozen_patterns": ["encoder/.*"]}, {"trainable_patterns": [".*prompt.*"]}):
        with pytest.raises(T5mtlError, match="train.frozen_patterns / train.trainable_patterns"):
            optimizers.create_optimizer("adamw", learning_rate=0.1, **kwargs)


def test_global_norm_clipping():
    params = {"w": jnp.zeros((2,))}
    tx = optimizers.create_optimizer("adamw", learning_rate=1.0, max_grad_norm=1.0)
    clip_only = optax.clip_by_global_norm(1.0)
    g = {"w": jnp.array([30.0, 40.0])}
    clipped, _ = clip_only.update(g, clip_only.init(params))
    np.testing.assert_allclose(clipped["w"], [0.6, 0.8], rtol=1e-6)
    updates, _ = tx.update(g, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], [-1.0, -1.0], rtol=1e-5)  # Adam step is sign-like


def test_bad_names():
    with pytest.raises(T5mtlError, match="'adam'"):
        optimizers.create_optimizer("adam", learning_rate=0.1)
    with pytest.raises(T5mtlError, match="'exp'"):
        optimizers.learning_rate_schedule("exp")
    with pytest.raises(T5mtlError, match="decay_steps"):
        optimizers.learning_rate_schedule("cosine", warmup_steps=10)


def test_gin_configures_the_optimizer():
    import gin
    gin.clear_config()
    try:
        gin.parse_config("""
            create_optimizer.name = "adamw"
            adamw.b1 = 0.5
            learning_rate_schedule.name = "constant"
            learning_rate_schedule.base_learning_rate = 0.25
            learning_rate_schedule.warmup_steps = 0
        """)
        tx = optimizers.create_optimizer()
        assert float(optimizers.learning_rate_schedule()(7)) == 0.25
        params = _tree()
        state = tx.init(params)
        grads = jax.tree.map(jnp.ones_like, params)
        updates, _ = tx.update(grads, state, params)
        # First Adam step is lr * sign(g) whatever b1 is; decay off by default.
        np.testing.assert_allclose(updates["decoder"]["kernel"], -0.25, rtol=1e-5)
        np.testing.assert_allclose(updates["encoder"]["kernel"], -0.25, rtol=1e-5)
    finally:
        gin.clear_config()
