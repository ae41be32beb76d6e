"""T5's attention through `jax.nn.dot_product_attention`: JAX's fused
attention entry point, which runs cuDNN's flash attention on NVIDIA GPUs
where the inputs allow it (bfloat16/float16, supported shapes) and its own
XLA formulation everywhere else.

T5 has no 1/sqrt(d) factor (it is folded into the query init), so the scale
is 1; the relative-position bias and the additive 0 / NEG_INF mask are summed
into the one `bias` JAX takes ([b or 1, h, q or 1, k] each, broadcast).
Values and gradients equal `reference.attention` (tests/models/kernels).

Pitfall: cuDNN needs the summed bias materialized as [b, h, q, k]; with
float32 inputs JAX uses its XLA path, which is the reference's arithmetic.
"""
from __future__ import annotations

import jax


def attention(q, k, v, bias, mask):
    """softmax(q k^T + bias + mask) v; q [b, q, h, d], k and v [b, k, h, d]."""
    if bias is None:
        total = mask
    elif mask is None:
        total = bias
    else:
        total = bias + mask
    if total is not None:
        total = total.astype(q.dtype)
    return jax.nn.dot_product_attention(q, k, v, bias=total, scale=1.0)
