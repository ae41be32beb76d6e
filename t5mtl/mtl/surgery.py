"""Gradient surgery: per-task gradients [num_tasks, ...] -> one update direction.

The train step (t5mtl.train.train_step, ``gradient_surgery=``) hands every
method the *shared* task gradients G_t = s_t g_t, where g_t is the gradient
of task t's own loss (t5mtl.mtl.task_gradients) and s_t its share of the
batch loss (the task's loss denominator over the whole batch's: its share of
the target tokens under the default normalization). So sum_t G_t is exactly
the plain step's gradient, and each method returns a direction on that
scale (the learning rate means what it meant without surgery).

Every method here keeps the direction in the span of the task gradients, so
it computes only coefficients alpha [num_tasks] from the Gram matrix
G G^T [num_tasks, num_tasks] and the step forms sum_t alpha_t G_t leaf by
leaf: no flattened copy of the gradients, and the whole-model inner
products are the only cross-task work.

- ``Sum``: alpha = 1 for every present task (the plain step's gradient).
- ``PCGrad`` (Yu et al. 2020): for each task i, in a fresh random order of
  the other tasks j, if g_i' . g_j < 0 then g_i' -= (g_i' . g_j / |g_j|^2) g_j;
  the direction is sum_i g_i'.
- ``CAGrad`` (Liu et al. 2021): with g0 the mean of the K present task
  gradients, w the minimizer over the simplex of
  F(w) = g_w . g0 + c |g0| |g_w| (g_w = sum_i w_i g_i), the direction is
  d = g0 + (c |g0| / |g_w|) g_w, times K (the sum's scale), divided by
  (1 + c^2) with ``rescale`` (the authors' code's default, not the paper's).
  The inner problem is solved in jit by ``pgd_steps`` projected-gradient
  steps (step 1 / the local curvature bound) then ``newton_steps`` Newton
  steps on the support found, each with a 20-point backtracking line
  search. Tolerance: F(w) - min F <= 1e-5 |g0|^2 in float32 on random
  gradients (tests/mtl/test_surgery.py checks it against scipy's SLSQP).
- ``GradVac`` (Wang et al. 2021): for each task i, in a random order of the
  others, phi = cos(g_i', g_j); if phi < phi_hat_ij (the EMA target),
  g_i' += g_j |g_i'| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2)) /
  (|g_j| sqrt(1 - phi_hat^2)); then phi_hat_ij = (1 - beta) phi_hat_ij +
  beta phi. Whole model: one [num_tasks, num_tasks] target matrix (not the
  paper's per-layer variant), starting at 0, kept in the optimizer state
  (:func:`with_state`).

Absent tasks (no target tokens in the batch) take no part: their
coefficient is 0, nothing is projected on them, CAGrad's simplex and mean
are over the present tasks, GradVac's targets for their pairs stay.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax
import gin
import jax
import jax.numpy as jnp
import optax

from t5mtl.errors import T5mtlError
from t5mtl.mtl.task_gradients import DEFAULT_MAX_TASKS

_TINY = 1e-30


# -- the methods ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Surgery:
    """A gradient-surgery method. ``max_tasks`` bounds the number of tasks
    (each costs a float32 copy of the trainable parameters' gradient)."""
    max_tasks: int = DEFAULT_MAX_TASKS
    name: ClassVar[str] = ""
    stateful: ClassVar[bool] = False

    def init_state(self, num_tasks: int) -> Any:
        return ()

    def coefficients(self, gram: jax.Array, present: jax.Array, state: Any,
                     key: jax.Array) -> tuple[jax.Array, Any]:
        """(alpha [num_tasks], new state) from the Gram matrix of the shared
        task gradients and the present flags."""
        raise NotImplementedError


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Sum(Surgery):
    name: ClassVar[str] = "sum"

    def coefficients(self, gram, present, state, key):
        return present.astype(jnp.float32), state


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PCGrad(Surgery):
    name: ClassVar[str] = "pcgrad"

    def coefficients(self, gram, present, state, key):
        return pcgrad_coefficients(gram, present, random_orders(key, gram.shape[0])), state


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CAGrad(Surgery):
    c: float = 0.5
    rescale: bool = False
    pgd_steps: int = 100
    newton_steps: int = 10
    name: ClassVar[str] = "cagrad"

    def __post_init__(self):
        if not self.c >= 0:
            raise T5mtlError(f"CAGrad.c must be >= 0, got {self.c!r}")

    def coefficients(self, gram, present, state, key):
        return cagrad_coefficients(gram, present, self.c, self.rescale, self.pgd_steps,
                                   self.newton_steps), state


@gin.configurable
@dataclasses.dataclass(frozen=True)
class GradVac(Surgery):
    beta: float = 0.01
    name: ClassVar[str] = "gradvac"
    stateful: ClassVar[bool] = True

    def __post_init__(self):
        if not 0 < self.beta <= 1:
            raise T5mtlError(f"GradVac.beta must be in (0, 1], got {self.beta!r}")

    def init_state(self, num_tasks):
        return jnp.zeros((num_tasks, num_tasks), jnp.float32)

    def coefficients(self, gram, present, state, key):
        return gradvac_coefficients(gram, present, state, random_orders(key, gram.shape[0]),
                                    self.beta)


METHODS = {cls.name: cls for cls in (Sum, PCGrad, CAGrad, GradVac)}


def resolve(surgery: Any) -> Surgery | None:
    """None, a Surgery, or a method's name ('sum', 'pcgrad', 'cagrad', 'gradvac')."""
    if surgery is None or isinstance(surgery, Surgery):
        return surgery
    if isinstance(surgery, str) and surgery.lower() in METHODS:
        return METHODS[surgery.lower()]()
    raise T5mtlError(f"unknown gradient surgery {surgery!r}; choose from "
                     f"{', '.join(METHODS)} or bind e.g. @PCGrad()")


# -- the arithmetic -----------------------------------------------------------------

def random_orders(key: jax.Array, num_tasks: int) -> jax.Array:
    """[num_tasks, num_tasks]: row i is task i's random order of all tasks."""
    keys = jax.random.split(key, num_tasks)
    return jax.vmap(lambda k: jax.random.permutation(k, num_tasks))(keys)


def combine(task_grads: Any, alpha: jax.Array) -> Any:
    """sum_t alpha_t G_t, leaf by leaf (leaves [num_tasks, ...])."""
    return jax.tree.map(
        lambda g: jnp.tensordot(alpha.astype(g.dtype), g, axes=1), task_grads)


def pcgrad_coefficients(gram, present, orders):
    num_tasks = gram.shape[0]
    sq = jnp.diagonal(gram)
    eye = jnp.eye(num_tasks, dtype=jnp.float32)

    def one(i, order):
        def body(k, coef):
            j = order[k]
            dot = coef @ gram[:, j]
            conflict = present[j] & (j != i) & (dot < 0) & (sq[j] > 0)
            scale = jnp.where(conflict, dot / jnp.where(sq[j] > 0, sq[j], 1.0), 0.0)
            return coef - scale * eye[j]
        return jax.lax.fori_loop(0, num_tasks, body, eye[i] * present[i])

    return jax.vmap(one)(jnp.arange(num_tasks), orders).sum(axis=0)


def gradvac_coefficients(gram, present, targets, orders, beta):
    num_tasks = gram.shape[0]
    sq = jnp.diagonal(gram)
    eye = jnp.eye(num_tasks, dtype=jnp.float32)

    def one(i, order, row):
        def body(k, carry):
            coef, row = carry
            j = order[k]
            valid = present[i] & present[j] & (j != i)
            norm_i = jnp.sqrt(jnp.maximum(coef @ gram @ coef, 0.0))
            norm_j = jnp.sqrt(jnp.maximum(sq[j], 0.0))
            nonzero = (norm_i > 0) & (norm_j > 0)
            phi = jnp.clip((coef @ gram[:, j]) / jnp.where(nonzero, norm_i * norm_j, 1.0),
                           -1.0, 1.0)
            target = row[j]
            root_t = jnp.sqrt(jnp.maximum(1.0 - target ** 2, _TINY))
            step = (norm_i * (target * jnp.sqrt(1.0 - phi ** 2) - phi * root_t)
                    / jnp.where(nonzero, norm_j * root_t, 1.0))
            apply = valid & nonzero & (phi < target)
            coef = coef + jnp.where(apply, step, 0.0) * eye[j]
            row = row.at[j].set(jnp.where(valid & nonzero,
                                          (1.0 - beta) * target + beta * phi, target))
            return coef, row
        return jax.lax.fori_loop(0, num_tasks, body, (eye[i] * present[i], row))

    coefs, targets = jax.vmap(one)(jnp.arange(num_tasks), orders, targets)
    return coefs.sum(axis=0), targets


def project_simplex(v: jax.Array, mask: jax.Array) -> jax.Array:
    """Euclidean projection of v onto the simplex over the entries of `mask`
    (the others 0); sort-based (Held et al.; Duchi et al. 2008)."""
    masked = jnp.where(mask, v, -1e30)
    u = jnp.sort(masked)[::-1]
    css = jnp.cumsum(jnp.where(u > -1e29, u, 0.0)) - 1.0
    k = jnp.arange(1, v.shape[0] + 1, dtype=v.dtype)
    rho = jnp.maximum(jnp.sum((u - css / k > 0) & (u > -1e29)), 1)
    theta = css[rho - 1] / rho
    return jnp.where(mask, jnp.maximum(v - theta, 0.0), 0.0)


def cagrad_objective(w, a, u, c):
    """F(w) / |g0|^2 = w^T A u + c sqrt(w^T A w), with A = Gram / |g0|^2."""
    return w @ a @ u + c * jnp.sqrt(jnp.maximum(w @ a @ w, 0.0))


def cagrad_weights(gram, present, c, pgd_steps=100, newton_steps=10):
    """(w, A, u): CAGrad's simplex weights over the present tasks, the
    normalized Gram matrix and the uniform weights u (see the module doc)."""
    num_tasks = gram.shape[0]
    mask = present
    k = jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32)
    u = mask.astype(jnp.float32) / k
    g0_sq = u @ gram @ u
    a = gram / jnp.maximum(g0_sq, _TINY)
    lmax = jnp.maximum(jnp.linalg.eigvalsh(a)[-1], _TINY)

    def h(w):
        return jnp.sqrt(jnp.maximum(w @ a @ w, 1e-12))

    def grad_f(w):
        return a @ u + c * (a @ w) / h(w)

    def pgd(_, w):
        return project_simplex(w - grad_f(w) / (lmax * (1.0 + c / h(w))), mask)

    w = jax.lax.fori_loop(0, pgd_steps, pgd, u)
    halvings = 0.5 ** jnp.arange(20, dtype=jnp.float32)

    def newton(_, w):
        active = (w > 1e-9) & mask
        m = active.astype(jnp.float32)
        hw, aw = h(w), a @ w
        hess = c * (a / hw - jnp.outer(aw, aw) / hw ** 3) + 1e-12 * jnp.eye(num_tasks)
        hess = hess * jnp.outer(m, m) + jnp.diag(1.0 - m)
        kkt = jnp.zeros((num_tasks + 1, num_tasks + 1), jnp.float32)
        kkt = kkt.at[:num_tasks, :num_tasks].set(hess)
        kkt = kkt.at[:num_tasks, num_tasks].set(m).at[num_tasks, :num_tasks].set(m)
        rhs = jnp.concatenate([-grad_f(w) * m, jnp.zeros((1,), jnp.float32)])
        dw = jnp.linalg.solve(kkt, rhs)[:num_tasks] * m
        dw = jnp.where(jnp.all(jnp.isfinite(dw)), dw, 0.0)
        neg = dw < 0
        t_max = jnp.minimum(1.0, jnp.min(jnp.where(neg, -w / jnp.where(neg, dw, -1.0), 1.0)))
        candidates = jnp.maximum(w[None] + (t_max * halvings)[:, None] * dw[None], 0.0)
        candidates = candidates / jnp.maximum(candidates.sum(axis=1, keepdims=True), _TINY)
        values = jax.vmap(lambda x: cagrad_objective(x, a, u, c))(candidates)
        best = jnp.argmin(values)
        better = values[best] < cagrad_objective(w, a, u, c)
        return jnp.where(better, candidates[best], w)

    w = jax.lax.fori_loop(0, newton_steps, newton, w)
    return w, a, u


def cagrad_coefficients(gram, present, c, rescale=False, pgd_steps=100, newton_steps=10):
    w, a, u = cagrad_weights(gram, present, c, pgd_steps, newton_steps)
    k = jnp.sum(present).astype(jnp.float32)
    h = jnp.sqrt(jnp.maximum(w @ a @ w, 0.0))
    lam = jnp.where(h > 1e-12, c / jnp.maximum(h, 1e-12), 0.0)
    alpha = k * (u + lam * w)
    if rescale:
        alpha = alpha / (1.0 + c ** 2)
    return alpha


# -- state in the optimizer --------------------------------------------------------

@flax.struct.dataclass
class SurgeryOptState:
    """The optimizer state of a run with a stateful surgery (GradVac's
    targets) next to the optimizer's own."""
    surgery: Any
    inner: Any


def with_state(tx: optax.GradientTransformation, surgery: Surgery | None,
               num_tasks: int) -> optax.GradientTransformation:
    """`tx` whose state also holds `surgery`'s (only for a stateful method;
    `tx` itself otherwise). Its update passes through to `tx`; the train
    step replaces the surgery part."""
    if surgery is None or not surgery.stateful:
        return tx

    def init(params):
        return SurgeryOptState(surgery.init_state(num_tasks), tx.init(params))

    def update(updates, state, params=None):
        updates, inner = tx.update(updates, state.inner, params)
        return updates, state.replace(inner=inner)

    return optax.GradientTransformation(init, update)
