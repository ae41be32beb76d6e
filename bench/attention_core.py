"""Attention core micro-benchmark: forward + backward of t5mtl's attention.

    python bench/attention_core.py                 # t5_1_1_small shapes, batch 8
    python bench/attention_core.py --shapes 512/512 --repeats 20

Times `t5mtl.models.attention.dot_product_attention` (scores, softmax, P V and
the hand-written VJP, with a batch-shared relative-position bias and a key
mask) at the train step's three attention shapes: encoder self-attention
(inputs x inputs), decoder cross-attention (targets x inputs) and decoder
self-attention (targets x targets). The compiled function returns the output
as well as the gradients, as the train step does (otherwise XLA recomputes
P V inside the backward pass). GFLOP/s counts the six matmuls (2 forward,
4 backward). Like `t5mtl train`, the script first restarts itself with
t5mtl's malloc policy for XLA's buffers (t5mtl/host_memory.py). Results:
docs/performance.md ("Where the time goes").
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402


def measure(batch: int, heads: int, d_kv: int, q_len: int, k_len: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from t5mtl.models.attention import dot_product_attention

    r = np.random.RandomState(0)
    q, ct = (jnp.asarray(r.randn(batch, q_len, heads, d_kv) * .3, jnp.float32) for _ in range(2))
    k, v = (jnp.asarray(r.randn(batch, k_len, heads, d_kv) * .3, jnp.float32) for _ in range(2))
    bias = jnp.asarray(r.randn(1, heads, q_len, k_len), jnp.float32)
    mask = jnp.where(jnp.asarray(r.rand(batch, 1, 1, k_len) > 0.1), 0.0, -1e10)

    def fwd_bwd(q, k, v, bias, ct):
        out, vjp = jax.vjp(lambda *a: dot_product_attention(*a, mask), q, k, v, bias)
        return out, vjp(ct)

    args = (q, k, v, bias, ct)
    compiled = jax.jit(fwd_bwd).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    times = [common.timed(lambda: jax.block_until_ready(compiled(*args)))
             for _ in range(repeats)]
    flops = 6 * 2 * batch * heads * q_len * k_len * d_kv
    best = min(times)
    return {"q": q_len, "k": k_len, "best_ms": 1e3 * best,
            "median_ms": 1e3 * sorted(times)[len(times) // 2], "gflops_per_s": flops / best / 1e9}


def main(argv=None) -> int:
    if argv is None:
        from t5mtl.host_memory import reexec_with_malloc_policy
        reexec_with_malloc_policy()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--d-kv", type=int, default=64)
    p.add_argument("--shapes", default="512/512,114/512,114/114", help="q/k lengths")
    p.add_argument("--repeats", type=int, default=12)
    args = p.parse_args(argv)
    print(f"batch {args.batch}, {args.heads} heads of {args.d_kv}, float32, forward + backward")
    for item in args.shapes.split(","):
        q_len, k_len = (int(x) for x in item.split("/"))
        m = measure(args.batch, args.heads, args.d_kv, q_len, k_len, args.repeats)
        print(f"  q {m['q']:4d} x k {m['k']:4d}: best {m['best_ms']:6.1f} ms, median "
              f"{m['median_ms']:6.1f} ms, {m['gflops_per_s']:5.0f} GFLOP/s (6 matmuls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
