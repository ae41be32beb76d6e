"""Gradient surgery against numpy references written from the papers'
formulas (vectors, not the coefficient form the library uses), on random
gradients; absent tasks; CAGrad's inner problem against scipy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from t5mtl.errors import T5mtlError
from t5mtl.mtl import surgery
from t5mtl.mtl.task_gradients import gram

DIM = 40


def _gradients(seed, num_tasks, conflict=True):
    """Random task gradients with a shared component; with `conflict`, task 1
    points mostly against task 0."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(num_tasks, DIM)) + rng.normal(size=DIM) * rng.uniform(0.2, 1.5)
    if conflict:
        g[1] = -0.8 * g[0] + 0.6 * rng.normal(size=DIM)
    return g.astype(np.float32)


def _tree(g):
    """The same gradients as a two-leaf tree with a leading task axis."""
    return {"a": jnp.asarray(g[:, :15].reshape(-1, 3, 5)), "b": {"c": jnp.asarray(g[:, 15:])}}


def _direction(method, g, present, state=(), key=jax.random.PRNGKey(0)):
    tree = _tree(g)
    alpha, state = method.coefficients(gram(tree), jnp.asarray(present), state, key)
    out = surgery.combine(tree, alpha)
    return np.concatenate([np.asarray(out["a"]).reshape(-1), np.asarray(out["b"]["c"])]), state


# -- numpy references, from the papers ----------------------------------------------

def pcgrad_reference(g, present, orders):
    """Yu et al. 2020, Algorithm 1: g_i^PC <- g_i; for each j (random order)
    if g_i^PC . g_j < 0: g_i^PC -= (g_i^PC . g_j / |g_j|^2) g_j; sum."""
    g = g.astype(np.float64)
    out = np.zeros(g.shape[1])
    for i in np.flatnonzero(present):
        gi = g[i].copy()
        for j in orders[i]:
            if j == i or not present[j]:
                continue
            dot = gi @ g[j]
            if dot < 0:
                gi = gi - dot / (g[j] @ g[j]) * g[j]
        out += gi
    return out


def gradvac_reference(g, present, targets, orders, beta):
    """Wang et al. 2021, Algorithm 1 (whole model)."""
    g = g.astype(np.float64)
    targets = targets.astype(np.float64).copy()
    out = np.zeros(g.shape[1])
    for i in np.flatnonzero(present):
        gi = g[i].copy()
        for j in orders[i]:
            if j == i or not present[j]:
                continue
            phi = gi @ g[j] / (np.linalg.norm(gi) * np.linalg.norm(g[j]))
            t = targets[i, j]
            if phi < t:
                gi = gi + (np.linalg.norm(gi) * (t * np.sqrt(1 - phi ** 2)
                                                 - phi * np.sqrt(1 - t ** 2))
                           / (np.linalg.norm(g[j]) * np.sqrt(1 - t ** 2))) * g[j]
            targets[i, j] = (1 - beta) * t + beta * phi
        out += gi
    return out, targets


def cagrad_reference(g, present, c):
    """Liu et al. 2021: w = argmin over the simplex of g_w.g0 + c|g0||g_w|
    (scipy SLSQP from several starts), d = g0 + c|g0|/|g_w| g_w; times K."""
    g = g[present].astype(np.float64)
    k = len(g)
    g0 = g.mean(axis=0)

    def f(w):
        gw = w @ g
        return gw @ g0 + c * np.linalg.norm(g0) * np.linalg.norm(gw)

    best = None
    rng = np.random.default_rng(0)
    for start in [np.full(k, 1 / k)] + [rng.dirichlet(np.ones(k)) for _ in range(4)]:
        r = scipy.optimize.minimize(f, start, method="SLSQP", bounds=[(0, 1)] * k,
                                    constraints={"type": "eq", "fun": lambda w: w.sum() - 1},
                                    options={"ftol": 1e-15, "maxiter": 1000})
        if best is None or r.fun < best.fun:
            best = r
    gw = best.x @ g
    d = g0 + c * np.linalg.norm(g0) / np.linalg.norm(gw) * gw
    return k * d, best.fun / (g0 @ g0)


# -- tests ----------------------------------------------------------------------------

PRESENCE = {"all": [True] * 5, "two absent": [True, True, False, True, False]}


@pytest.mark.parametrize("presence", sorted(PRESENCE))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pcgrad_equals_the_reference(seed, presence):
    g, present = _gradients(seed, 5), np.array(PRESENCE[presence])
    g[~present] = 0.0
    key = jax.random.PRNGKey(seed)
    got, _ = _direction(surgery.PCGrad(), g, present, key=key)
    orders = np.asarray(surgery.random_orders(key, 5))
    want = pcgrad_reference(g, present, orders)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(want, g.sum(axis=0), atol=1e-3)       # something was projected


def test_pcgrad_orders_are_fresh_per_task_and_step():
    orders = np.asarray(surgery.random_orders(jax.random.PRNGKey(3), 6))
    assert all(sorted(row) == list(range(6)) for row in orders)
    assert len({tuple(r) for r in orders}) > 1
    other = np.asarray(surgery.random_orders(jax.random.PRNGKey(4), 6))
    assert not np.array_equal(orders, other)


def test_pcgrad_without_conflict_is_the_sum():
    g = np.abs(_gradients(5, 3, conflict=False))          # all dot products positive
    got, _ = _direction(surgery.PCGrad(), g, np.ones(3, bool))
    np.testing.assert_allclose(got, g.sum(axis=0), rtol=1e-6)


@pytest.mark.parametrize("presence", sorted(PRESENCE))
def test_gradvac_equals_the_reference_over_steps(presence):
    present = np.array(PRESENCE[presence])
    method = surgery.GradVac(beta=0.3)
    state = method.init_state(5)
    targets = np.zeros((5, 5))
    for step in range(3):                              # the EMA carries across steps
        g = _gradients(10 + step, 5)
        g[~present] = 0.0
        key = jax.random.PRNGKey(step)
        got, state = _direction(method, g, present, state, key)
        want, targets = gradvac_reference(g, present, targets,
                                          np.asarray(surgery.random_orders(key, 5)), 0.3)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(state), targets, atol=1e-5)
    assert np.abs(targets).max() > 0.05                 # the targets moved
    assert np.all(targets[~present] == 0) and np.all(targets[:, ~present] == 0)


@pytest.mark.parametrize("presence", sorted(PRESENCE))
@pytest.mark.parametrize("c", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("seed", range(4))
def test_cagrad_equals_the_reference(seed, c, presence):
    present = np.array(PRESENCE[presence])
    g = _gradients(20 + seed, 5, conflict=seed % 2 == 0)
    g[~present] = 0.0
    got, _ = _direction(surgery.CAGrad(c=c), g, present)
    want, f_star = cagrad_reference(g, present, c)
    # The inner problem to the documented tolerance: F(w) - min F <= 1e-5 |g0|^2.
    w, a, u = surgery.cagrad_weights(gram(_tree(g)), jnp.asarray(present), c)
    f = float(surgery.cagrad_objective(w, a, u, c))
    assert f - f_star <= 1e-5
    assert np.all(np.asarray(w)[~present] == 0) and abs(float(w.sum()) - 1) < 1e-5
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * np.abs(want).max())


def test_cagrad_rescale_and_c_zero():
    g = _gradients(7, 3)
    plain, _ = _direction(surgery.CAGrad(c=0.0), g, np.ones(3, bool))
    np.testing.assert_allclose(plain, g.sum(axis=0), rtol=1e-5, atol=1e-5)  # c = 0: the sum
    a, _ = _direction(surgery.CAGrad(c=0.5), g, np.ones(3, bool))
    b, _ = _direction(surgery.CAGrad(c=0.5, rescale=True), g, np.ones(3, bool))
    np.testing.assert_allclose(b, a / 1.25, rtol=1e-5, atol=1e-6)


def test_sum_is_the_sum_of_present_tasks():
    g = _gradients(8, 4)
    got, _ = _direction(surgery.Sum(), g, np.array([True, False, True, True]))
    np.testing.assert_allclose(got, g[[0, 2, 3]].sum(axis=0), rtol=1e-6)


def test_resolve_names_and_bad_values():
    assert isinstance(surgery.resolve("PCGrad"), surgery.PCGrad)
    assert surgery.resolve(None) is None
    with pytest.raises(T5mtlError, match="unknown gradient surgery 'pcgard'"):
        surgery.resolve("pcgard")
    with pytest.raises(T5mtlError, match="CAGrad.c must be >= 0, got -1"):
        surgery.CAGrad(c=-1)
    with pytest.raises(T5mtlError, match=r"GradVac.beta must be in \(0, 1\], got 0"):
        surgery.GradVac(beta=0)
