"""t5mtl/models/distillation.py and the cross-attention seam of
t5mtl/models/layers.py: each function against a float64 numpy computation of
its formula on hand-sized arrays, a few against values worked by hand; the
seam against numpy from the attention's own kernels, scanned and per-layer
stacks alike."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5mtl.errors import T5mtlError
from t5mtl.models import distillation as dist
from t5mtl.models import losses
from t5mtl.models import get_config
from t5mtl.models.layers import (CROSS_ATTENTION, NEG_INF, MultiHeadAttention,
                                 value_weighted_attention)
from t5mtl.models.init import param_shapes
from t5mtl.models.layout import stack_layers
from t5mtl.models.t5 import Transformer


def _softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


# -- the seam -----------------------------------------------------------------------
def test_value_weighted_attention_by_hand():
    # one head, one query, two keys: scores 0 and ln 3 -> alpha (1/4, 3/4);
    # values 2 and -4 -> norms 2 and 4 -> (0.5, 3.0)
    q = jnp.ones((1, 1, 1, 1))
    k = jnp.array([0.0, math.log(3.0)]).reshape(1, 2, 1, 1)
    v = jnp.array([2.0, -4.0]).reshape(1, 2, 1, 1)
    np.testing.assert_allclose(np.asarray(value_weighted_attention(q, k, v, None, None)),
                               [[[0.5, 3.0]]], rtol=1e-6)


def test_cross_attention_sows_alpha_times_value_norm_only_when_asked():
    rng = np.random.default_rng(0)
    x_q, x_kv = rng.normal(size=(2, 3, 8)), rng.normal(size=(2, 4, 8))
    mask = np.zeros((2, 1, 1, 4), np.float32)
    mask[1, ..., 3] = NEG_INF                                   # a padding key
    layer = MultiHeadAttention(num_heads=2, d_kv=5, dropout_rate=0.0, is_cross=True)
    params = nn.unbox(layer.init(jax.random.PRNGKey(0), x_q, x_kv, None, mask,
                                 deterministic=True)["params"])
    out, variables = layer.apply({"params": params}, x_q, x_kv, None, mask,
                                 deterministic=True, mutable=["intermediates"])
    got = np.asarray(variables["intermediates"][CROSS_ATTENTION][0])
    w = {n: np.asarray(params[n]["kernel"], np.float64) for n in ("query", "key", "value")}
    qp = np.einsum("bqe,ehd->bqhd", x_q, w["query"])
    kp = np.einsum("bke,ehd->bkhd", x_kv, w["key"])
    vp = np.einsum("bke,ehd->bkhd", x_kv, w["value"])
    alpha = _softmax(np.einsum("bqhd,bkhd->bhqk", qp, kp) + mask)
    norms = np.linalg.norm(vp, axis=-1).transpose(0, 2, 1)          # [b, h, k]
    want = np.mean(alpha * norms[:, :, None, :], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert got[1, :, 3].max() < 1e-6
    # not asked: nothing sown, the same output
    plain = layer.apply({"params": params}, x_q, x_kv, None, mask, deterministic=True)
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(out))
    self_attention = MultiHeadAttention(num_heads=2, d_kv=5, dropout_rate=0.0)
    _, variables = self_attention.apply({"params": params}, x_q, x_q, None, None,
                                        deterministic=True, mutable=["intermediates"])
    assert variables == {} or not variables.get("intermediates")


@pytest.mark.parametrize("remat", ["none", "full"])
def test_decoder_maps_are_the_same_scanned_and_per_layer(remat):
    cfg = get_config("t5_tiny", remat_policy=remat)
    enc = np.random.RandomState(0).randint(2, 300, (2, 7)).astype(np.int32)
    enc[1, 4:] = 0
    dec = np.random.RandomState(1).randint(2, 300, (2, 4)).astype(np.int32)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: rng.normal(0.0, 0.3, x.shape).astype(np.float32),
                          param_shapes(cfg))
    maps, logits = {}, {}
    for scan in (False, True):
        c = cfg.replace(scan_layers=scan)
        p = stack_layers(params, c) if scan else params
        module = Transformer(c)

        def collected(p):
            out, variables = module.apply({"params": p}, enc, dec, mutable=["intermediates"])
            return out, dist.cross_attention_maps(variables["intermediates"])
        logits[scan], maps[scan] = jax.jit(collected)(p)
        plain = jax.jit(lambda p: module.apply({"params": p}, enc, dec))(p)
        np.testing.assert_array_equal(np.asarray(plain), np.asarray(logits[scan]))
    assert maps[False].shape == (cfg.n_decoder_layers, 2, 4, 7)
    maps = {k: np.asarray(v) for k, v in maps.items()}
    np.testing.assert_allclose(maps[True], maps[False], rtol=1e-5, atol=1e-7)
    assert np.abs(maps[False][:, 1, :, 4:]).max() < 1e-6     # padding keys
    with pytest.raises(T5mtlError, match="mutable"):
        dist.cross_attention_maps({})


# -- ADist ----------------------------------------------------------------------------
def test_adist_by_hand():
    # one layer, one decoder token, two passages of two tokens, the last padding
    maps = jnp.array([0.1, 0.2, 0.3, 0.4]).reshape(1, 1, 1, 4)
    mask = np.array([[[True, True], [True, False]]])
    np.testing.assert_allclose(np.asarray(dist.adist_scores(maps, mask, np.ones((1, 1)))),
                               [[0.3, 0.3]], rtol=1e-6)


def test_adist_is_the_mean_over_layers_and_answer_tokens_of_the_passage_sum():
    rng = np.random.default_rng(1)
    layers, b, t, p, length = 2, 2, 3, 3, 4
    maps = rng.uniform(size=(layers, b, t, p * length))
    mask = rng.uniform(size=(b, p, length)) > 0.3
    weights = np.array([[1, 1, 0], [1, 1, 1]], np.float32)
    got = np.asarray(dist.adist_scores(jnp.asarray(maps, jnp.float32), mask, weights))
    want = np.zeros((b, p))
    for i in range(b):
        tokens = [j for j in range(t) if weights[i, j] > 0]
        for k in range(p):
            total = sum(maps[n, i, j, k * length + m] for n in range(layers) for j in tokens
                        for m in range(length) if mask[i, k, m])
            want[i, k] = total / (layers * len(tokens))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    grad = jax.grad(lambda m: jnp.sum(dist.adist_scores(m, mask, weights)))(
        jnp.asarray(maps, jnp.float32))
    assert not np.any(np.asarray(grad))                     # stop-gradient
    with pytest.raises(T5mtlError, match=r"\(2, 2, 3, 12\).*\(2, 3, 5\)"):
        dist.adist_scores(jnp.asarray(maps), np.ones((b, p, 5), bool), weights)
    with pytest.raises(T5mtlError, match=r"\(2, 3\), got \(2, 4\)"):
        dist.adist_scores(jnp.asarray(maps), mask, np.ones((2, 4)))


# -- PDist ----------------------------------------------------------------------------
def test_pdist_mean_and_sum_of_answer_log_likelihoods():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 3, 4, 11))
    targets = rng.integers(0, 11, (2, 3, 4))
    logp = np.asarray(losses.token_log_probs(jnp.asarray(logits, jnp.float32), targets))
    ref = np.log(_softmax(logits))
    want_logp = np.take_along_axis(ref, targets[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(logp, want_logp, rtol=1e-5)
    weights = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], np.float32)
    total = np.einsum("bpt,bt->bp", want_logp, weights)
    np.testing.assert_allclose(np.asarray(dist.pdist_scores(logp, weights, "sum")), total,
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(dist.pdist_scores(logp, weights)),
                               total / np.array([[3.0], [1.0]]), rtol=1e-5)
    with pytest.raises(T5mtlError, match="'max'"):
        dist.pdist_scores(logp, weights, "max")
    with pytest.raises(T5mtlError, match=r"\[b, passages, t\], got \(3, 4\)"):
        dist.pdist_scores(logp[0], weights)


# -- the target and the retriever's KL -------------------------------------------------
def test_target_distribution_is_a_masked_softmax_without_gradient():
    scores = np.array([[1.0, 2.0, 4.0], [0.5, -1.0, 3.0], [1.0, 1.0, 1.0]])
    valid = np.array([[True, True, True], [True, True, False], [False] * 3])
    got = np.asarray(dist.target_distribution(jnp.asarray(scores), valid, 0.5))
    want = np.zeros_like(scores)
    want[0] = _softmax(scores[0] / 0.5)
    want[1, :2] = _softmax(scores[1, :2] / 0.5)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)
    grad = jax.grad(lambda s: jnp.sum(dist.target_distribution(s, valid, 0.5) * s))(
        jnp.asarray(scores, jnp.float32))
    np.testing.assert_allclose(np.asarray(grad), got, rtol=1e-6)   # only the explicit s
    with pytest.raises(T5mtlError, match="positive, got 0"):
        dist.target_distribution(jnp.asarray(scores), valid, 0)


def test_retriever_kl_by_hand():
    # target (1/2, 1/2), retriever scores (ln 3, 0) at temperature 1 ->
    # p = (3/4, 1/4): KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    kl = dist.retriever_kl(jnp.array([[0.5, 0.5]]), jnp.array([[math.log(3.0), 0.0]]),
                           np.ones((1, 2), bool), 1.0)
    np.testing.assert_allclose(np.asarray(kl), [0.5 * math.log(4 / 3)], rtol=1e-6)


def test_retriever_kl_and_its_gradient_against_numpy():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(3, 4))
    valid = np.array([[True] * 4, [True, True, False, True], [False] * 4])
    target = np.asarray(dist.target_distribution(jnp.asarray(rng.normal(size=(3, 4))),
                                                 valid, 1.0), np.float64)
    theta = 0.3
    kl, grad = jax.value_and_grad(lambda s: jnp.sum(dist.retriever_kl(
        jnp.asarray(target, jnp.float32), s, valid, theta)))(jnp.asarray(scores, jnp.float32))
    per_question = dist.retriever_kl(jnp.asarray(target, jnp.float32),
                                     jnp.asarray(scores, jnp.float32), valid, theta)
    want, want_grad = np.zeros(3), np.zeros_like(scores)
    for i in range(2):
        v = valid[i]
        p = _softmax(scores[i, v] / theta)
        t = target[i, v]
        want[i] = np.sum(t * (np.log(t) - np.log(p)))
        want_grad[i, v] = (p - t) / theta                     # d KL / d s
    np.testing.assert_allclose(np.asarray(per_question), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(kl), want.sum(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-4, atol=1e-6)
    with pytest.raises(T5mtlError, match=r"\(3, 4\) and \(3, 3\)"):
        dist.retriever_kl(jnp.asarray(target), jnp.asarray(scores), valid[:, :3], theta)
