"""The feed-forward block's second half, ``act(h) @ wo``, with a hand-written VJP
(CPU kernel of `reference.activation_dense`).

Autodiff keeps the activation's intermediates for the backward pass (for
gated-GELU: the tanh, the GELU and the product, each [tokens, d_ff]) next to
the input projections' outputs. This VJP keeps only the projections' outputs
and recomputes the cheap elementwise activation when the cotangent arrives,
saving two [tokens, d_ff] float32 tensors per layer of peak memory.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from t5mtl.models.kernels.cpu_dense import weight_grad
from t5mtl.models.kernels.reference import activation


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def activation_dense(gated: bool, pre: tuple, kernel):
    """act(pre) @ kernel; pre: ([tokens, d_ff],) or two of them, kernel [d_ff, d_model]."""
    return jnp.dot(activation(gated, pre), kernel)


def _forward(gated, pre, kernel):
    return activation_dense(gated, pre, kernel), (pre, kernel)


def _backward(gated, residuals, d_out):
    pre, kernel = residuals
    # Depend on the cotangent so that XLA recomputes here, not in the forward
    # pass (where CSE would merge it and keep the tensors alive).
    zero = jnp.zeros((), d_out.dtype) * d_out[0, 0]
    pre = tuple(p + zero.astype(p.dtype) for p in pre)
    h, activation_vjp = jax.vjp(lambda *p: activation(gated, p), *pre)
    d_kernel = weight_grad(h, d_out)
    d_pre = activation_vjp(jnp.dot(d_out, kernel.T))
    return tuple(d_pre), d_kernel.astype(kernel.dtype)


activation_dense.defvjp(_forward, _backward)
