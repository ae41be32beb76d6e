"""Dense layers whose weight gradient runs as a row-major matmul (CPU kernel
of `reference.dense`).

A dense layer's weight gradient is ``x^T @ dy``: its left operand is the
activation read column by column. XLA CPU hands that transposed-operand dot
to Eigen, slower than YNNPACK's row-major kernel on the same shapes
(``bench/weight_grad.py``), and giving YNNPACK ``x^T`` as a separate
transpose does not help by itself: XLA fuses the transpose with the
elementwise ops that produce ``x`` (an RMS norm, the gated GELU) into one
strided loop, much slower than a plain transpose copy.

Here, on CPU only, the transpose sits inside a conditional whose two
branches are identical. XLA fuses nothing across a conditional, so its
operand ``x`` is materialized and the transpose becomes a plain layout copy;
the dot is then row-major (the gain is in docs/performance.md). On a sharded
CPU mesh the predicate's one element costs a scalar exchange between
devices. Other platforms keep the plain ``dot_general``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _plain_weight_grad(x, dy):
    return jax.lax.dot_general(x, dy, (((0,), (0,)), ((), ())))


def _cpu_weight_grad(x, dy):
    # Both branches are the same transpose, so the predicate's value does not
    # matter; it only has to be unknown at compile time (a constant one would
    # be folded away, and the fusion barrier with it).
    x_t = jax.lax.cond(x[0, 0] > 0, jnp.transpose, jnp.transpose, x)
    return jnp.dot(x_t, dy)


def weight_grad(x, dy):
    """``x^T @ dy`` for x [tokens, in] and dy [tokens, out]: [in, out]."""
    return jax.lax.platform_dependent(x, dy, cpu=_cpu_weight_grad,
                                      default=_plain_weight_grad)


@jax.custom_vjp
def dense(x, kernel):
    """``x @ kernel`` for x [tokens, in] and kernel [in, out], differentiated
    with `weight_grad`."""
    return jnp.dot(x, kernel)


def _forward(x, kernel):
    return jnp.dot(x, kernel), (x, kernel)


def _backward(residuals, dy):
    x, kernel = residuals
    return jnp.dot(dy, kernel.T), weight_grad(x, dy).astype(kernel.dtype)


dense.defvjp(_forward, _backward)
