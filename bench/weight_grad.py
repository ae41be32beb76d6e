"""Weight-gradient micro-benchmark: ``x^T @ dy`` as XLA CPU runs it by default
(a transposed-operand dot, Eigen) against t5mtl's CPU path
(`t5mtl.models.weight_grad`: the transpose materialized through a
conditional, then a row-major YNNPACK dot).

    python bench/weight_grad.py                  # the train step's shapes
    python bench/weight_grad.py --repeats 40

Each case also runs with an elementwise producer in front (``x * s``, as an
RMS norm or the gated GELU feeds the real layers): that is where a plain
transpose before the dot goes wrong, since XLA fuses the producer and the
transpose into one strided loop. Like `t5mtl train`, the script first
restarts itself with t5mtl's malloc policy. Results: docs/performance.md
("Why the CPU train step is fast").
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

# t5_1_1_small at batch 8: encoder tokens x (d_model -> d_ff, d_ff -> d_model,
# d_model -> heads*d_kv), at 128/32 and 512/114, and the 512/114 decoder's
# vocabulary projection.
SHAPES = "1024x512x1024,1024x1024x512,1024x512x384,4096x512x1024,4096x1024x512,4096x512x384,912x512x32128"


def measure(tokens: int, d_in: int, d_out: int, repeats: int) -> dict:
    import jax
    import numpy as np
    from t5mtl.models import weight_grad as wg

    r = np.random.RandomState(0)
    x = jax.numpy.asarray(r.randn(tokens, d_in), jax.numpy.float32)
    dy = jax.numpy.asarray(r.randn(tokens, d_out), jax.numpy.float32)
    s = jax.numpy.asarray(r.rand(tokens, 1) + 0.5, jax.numpy.float32)
    cases = {"plain": lambda x, s, dy: wg._plain_weight_grad(x, dy),
             "t5mtl": lambda x, s, dy: wg._cpu_weight_grad(x, dy),
             "plain, producer": lambda x, s, dy: wg._plain_weight_grad(x * s, dy),
             "t5mtl, producer": lambda x, s, dy: wg._cpu_weight_grad(x * s, dy)}
    out = {}
    for name, fn in cases.items():
        compiled = jax.jit(fn).lower(x, s, dy).compile()
        jax.block_until_ready(compiled(x, s, dy))
        times = [common.timed(lambda: jax.block_until_ready(compiled(x, s, dy)))
                 for _ in range(repeats)]
        out[name] = 1e3 * statistics.median(times)
    return out


def main(argv=None) -> int:
    if argv is None:
        from t5mtl.host_memory import reexec_with_malloc_policy
        reexec_with_malloc_policy()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default=SHAPES, help="tokens x in x out, comma separated")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    print("x^T @ dy, float32, median ms (speed-up of t5mtl's path)")
    measure(1024, 512, 512, 5)          # warm-up: the first compiled calls run slow
    for item in args.shapes.split(","):
        tokens, d_in, d_out = (int(v) for v in item.split("x"))
        m = measure(tokens, d_in, d_out, args.repeats)
        print(f"  {tokens:5d} x {d_in:4d} -> {d_out:5d}:"
              f"  plain {m['plain']:7.2f}  t5mtl {m['t5mtl']:7.2f} ({m['plain'] / m['t5mtl']:.2f}x)"
              f"   with producer: plain {m['plain, producer']:7.2f}"
              f"  t5mtl {m['t5mtl, producer']:7.2f} ({m['plain, producer'] / m['t5mtl, producer']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
