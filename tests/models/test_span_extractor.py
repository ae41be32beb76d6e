"""PMR's span extractor (t5mtl.models.span_extractor): span logits, valid
spans, loss and top-k decoding against direct numpy/loop computations."""
import itertools
import math

import flax.linen as nn
import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np
import pytest

from t5mtl.errors import T5mtlError
from t5mtl.models.span_extractor import SpanExtractor, best_spans, span_loss, valid_span_mask


def _gelu(x):
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


def _random_params(model, hidden, seed=1, scale=0.5):
    """(boxed abstract params, params with every leaf, biases too, drawn from
    N(0, scale^2)): init is only traced, which keeps the tests fast."""
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), hidden)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda x: jnp.asarray(scale * rng.normal(size=x.shape), x.dtype),
                          nn.unbox(boxed)["params"])
    return boxed, params


def test_span_logits_equal_the_formula_by_loops():
    b, length, d, inner = 2, 5, 6, 4
    hidden = np.random.default_rng(3).normal(size=(b, length, d)).astype(np.float32)
    model = SpanExtractor(hidden_dim=d, intermediate_dim=inner)
    boxed, params = _random_params(model, hidden)
    # Names, shapes and logical axes of the parameters.
    assert nn.get_partition_spec(boxed)["params"] == {
        "transform": {"kernel": jax.sharding.PartitionSpec("embed", "mlp"),
                      "bias": jax.sharding.PartitionSpec("mlp")},
        "out": {"kernel": jax.sharding.PartitionSpec("mlp", "embed"),
                "bias": jax.sharding.PartitionSpec("embed")}}
    got = np.asarray(jax.jit(model.apply)({"params": params}, hidden))
    assert got.shape == (b, length, length) and got.dtype == np.float32

    w1, b1 = (np.asarray(params["transform"][k], np.float64) for k in ("kernel", "bias"))
    w2, b2 = (np.asarray(params["out"][k], np.float64) for k in ("kernel", "bias"))
    h = np.asarray(hidden, np.float64)
    want = np.zeros((b, length, length))
    for r, i, j in itertools.product(range(b), range(length), range(length)):
        mid = [_gelu(sum(h[r, i, e] * w1[e, m] for e in range(d)) + b1[m]) for m in range(inner)]
        start = [sum(mid[m] * w2[m, e] for m in range(inner)) + b2[e] for e in range(d)]
        want[r, i, j] = sum(start[e] * h[r, j, e] for e in range(d))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(T5mtlError, match="width 6, expected hidden_dim=5"):
        jax.eval_shape(SpanExtractor(hidden_dim=5).init, jax.random.PRNGKey(0), hidden)


def test_extractor_builds_nothing_of_size_l_l_d():
    """Every intermediate of the forward and backward pass has rank <= 3:
    the span scores are one batched matmul, never a [b, L, L, d'] tensor."""
    hidden = jnp.ones((2, 8, 6))
    model = SpanExtractor(hidden_dim=6, intermediate_dim=5, dropout_rate=0.1)
    _, params = _random_params(model, hidden)

    def loss(p, h):
        logits = model.apply({"params": p}, h, deterministic=False,
                             rngs={"dropout": jax.random.PRNGKey(1)})
        return jnp.sum(logits ** 2)

    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(params, hidden)

    def ranks(jp):
        for eqn in jp.eqns:
            yield from (len(v.aval.shape) for v in eqn.outvars)
        for sub in jax_core.subjaxprs(jp):
            yield from ranks(sub)
    assert max(ranks(jaxpr.jaxpr)) == 3


def test_valid_span_mask_by_loops():
    ctx = np.array([[0, 0, 0, 1, 1, 1, 1, 0],
                    [0, 1, 1, 0, 1, 1, 1, 1]], bool)
    masks = jax.jit(lambda c, rows: (valid_span_mask(c), valid_span_mask(c, 2, rows),
                                     valid_span_mask(c, 1, False)))(ctx, np.array([True, False]))
    for got, (max_len, cls) in zip(masks, ((None, True), (2, np.array([True, False])),
                                           (1, False))):
        got = np.asarray(got)
        cls_rows = np.broadcast_to(cls, (2,))
        for r, i, j in itertools.product(range(2), range(8), range(8)):
            want = bool(ctx[r, i] and ctx[r, j] and i <= j
                        and (max_len is None or j - i < max_len))
            want |= bool(i == j == 0 and cls_rows[r])
            assert got[r, i, j] == want, (max_len, cls, r, i, j)
    # Hand count: row 0 has 4 context tokens -> 10 spans, + (0, 0).
    assert int(masks[0][0].sum()) == 11
    with pytest.raises(T5mtlError, match="max_span_length must be >= 1, got 0"):
        valid_span_mask(ctx, 0)


def test_span_loss_is_bce_over_valid_spans():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (2, 6, 6)).astype(np.float32)
    logits[0, 3, 4], logits[1, 2, 2] = 30.0, -30.0            # far tails stay exact
    labels = (rng.random((2, 6, 6)) < 0.2).astype(np.int32)
    labels[0, 3, 4], labels[1, 2, 2] = 0, 1
    ctx = np.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]], bool)
    x, y = logits.astype(np.float64), labels.astype(np.float64)
    p, q = 1.0 / (1.0 + np.exp(-x)), 1.0 / (1.0 + np.exp(x))      # sigmoid(x), 1 - sigmoid(x)
    bce = -(y * np.log(p) + (1 - y) * np.log(q))

    @jax.jit
    def run(logits, labels, ctx):
        valid = valid_span_mask(ctx)
        return (valid, span_loss(logits, labels, valid),
                span_loss(logits, labels, valid, 1.0),   # the whole batch's count, microbatching
                jax.grad(span_loss)(logits, labels, valid))
    valid, got, got_sum, grad = run(logits, labels, ctx)
    valid = np.asarray(valid)
    assert float(got) == pytest.approx(bce[valid].sum() / valid.sum(), rel=1e-5)
    assert float(got_sum) == pytest.approx(bce[valid].sum(), rel=1e-5)
    # Gradient: (sigmoid(x) - y) / count on valid spans, 0 elsewhere.
    np.testing.assert_allclose(grad, np.where(valid, (p - y) / valid.sum(), 0.0), atol=1e-7)


def test_best_spans_equal_brute_force():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 7, 7)).astype(np.float32)
    ctx = np.array([[0, 0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 0, 0]], bool)
    k = 4

    @jax.jit
    def run(logits, ctx):
        valid = valid_span_mask(ctx, 3, cls_span=np.array([False, True, False]))
        return (valid,) + best_spans(logits, valid, k)
    valid, starts, ends, scores = (np.asarray(a) for a in run(logits, ctx))
    for r in range(3):
        ranked = sorted(((logits[r, i, j], i, j) for i in range(7) for j in range(7)
                         if valid[r, i, j]), reverse=True)[:k]
        n = len(ranked)
        assert [(int(i), int(j)) for i, j in zip(starts[r, :n], ends[r, :n])] == \
            [(i, j) for _, i, j in ranked]
        np.testing.assert_allclose(scores[r, :n], [s for s, _, _ in ranked])
        assert np.all(np.isneginf(scores[r, n:]))
    assert np.isneginf(scores[2, 1])            # row 2: one context token, one span
    with pytest.raises(T5mtlError, match="k must be in"):
        best_spans(jnp.asarray(logits), jnp.asarray(valid), 0)


def test_extractor_learns_a_gold_span():
    """Loss, mask and decoding together: gradient steps on fixed hidden
    states make the gold span the best one and [CLS] relevant."""
    hidden = np.random.default_rng(5).normal(size=(1, 9, 8)).astype(np.float32)
    ctx = np.zeros((1, 9), bool)
    ctx[0, 3:8] = True
    labels = np.zeros((1, 9, 9), np.int32)
    labels[0, 4, 6] = labels[0, 0, 0] = 1
    model = SpanExtractor(hidden_dim=8, intermediate_dim=8, dropout_rate=0.0)
    _, params = _random_params(model, hidden, scale=0.1)

    @jax.jit
    def train(params, ctx, labels):
        valid = valid_span_mask(ctx, 4)

        def step(p, _):
            loss, grads = jax.value_and_grad(
                lambda p: span_loss(model.apply({"params": p}, hidden), labels, valid))(p)
            return jax.tree.map(lambda a, g: a - 0.5 * g, p, grads), loss
        params, losses = jax.lax.scan(step, params, None, length=60)
        logits = model.apply({"params": params}, hidden)
        return losses, logits, best_spans(logits, valid_span_mask(ctx, 4, cls_span=False), 1)

    losses, logits, (starts, ends, _) = train(params, ctx, labels)
    assert float(losses[-1]) < 0.05 * float(losses[0])
    assert (int(starts[0, 0]), int(ends[0, 0])) == (4, 6)
    assert float(logits[0, 0, 0]) > 0
