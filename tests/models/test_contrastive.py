"""t5mtl/models/contrastive.py: InfoNCE over the global batch, against a
float64 numpy version written from the formula (loss and gradients), a
hand-computed case, padding, and 8 CPU devices against one."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5mtl.errors import T5mtlError
from t5mtl.models import contrastive

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCALE = 2.5


def _log_softmax(x, axis):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def numpy_info_nce(q, k, scale, symmetric):
    """(loss, dq, dk, dscale) in float64: rows = mean_i -log softmax_j(L)_ii,
    columns the same over i, L = scale q k^T; dL = (softmax - I) / N per
    direction, then dq = scale dL k, dk = scale dL^T q, dscale = sum(dL * q k^T)."""
    q, k = q.astype(np.float64), k.astype(np.float64)
    n = len(q)
    sim = q @ k.T
    logits = scale * sim
    rows = -np.mean(np.diag(_log_softmax(logits, 1)))
    d_logits = (np.exp(_log_softmax(logits, 1)) - np.eye(n)) / n
    if symmetric:
        cols = -np.mean(np.diag(_log_softmax(logits, 0)))
        d_cols = (np.exp(_log_softmax(logits, 0)) - np.eye(n)) / n
        loss, d_logits = 0.5 * (rows + cols), 0.5 * (d_logits + d_cols)
    else:
        loss = rows
    return loss, scale * d_logits @ k, scale * d_logits.T @ q, np.sum(d_logits * sim)


def _inputs(n=16, d=6, seed=0):
    rng = np.random.RandomState(seed)
    q, k = rng.randn(n, d).astype(np.float32), rng.randn(n, d).astype(np.float32)
    valid = np.ones(n, bool)
    valid[[3, 12]] = False
    return q, k, valid


def _value_and_grads(q, k, scale, symmetric, valid=None):
    fn = lambda a, b, s: contrastive.info_nce(a, b, s, symmetric, valid)   # noqa: E731
    loss, grads = jax.value_and_grad(fn, argnums=(0, 1, 2))(q, k, jnp.float32(scale))
    return float(loss), [np.asarray(g) for g in grads]


@pytest.mark.parametrize("symmetric", [True, False])
def test_loss_and_gradients_equal_numpy(symmetric):
    q, k, _ = _inputs()
    loss, grads = _value_and_grads(q, k, SCALE, symmetric)
    ref = numpy_info_nce(q, k, SCALE, symmetric)
    np.testing.assert_allclose(loss, ref[0], rtol=1e-6)
    for got, want in zip(grads, ref[1:]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_hand_computed_two_pairs():
    # q = k = the two unit vectors: L = s I, so each row and column loses
    # log(e^s + 1) - s, the same in both directions.
    eye = np.eye(2, dtype=np.float32)
    s = 3.0
    want = np.log(np.exp(s) + 1.0) - s
    for symmetric in (True, False):
        np.testing.assert_allclose(float(contrastive.info_nce(eye, eye, s, symmetric)), want,
                                   rtol=1e-6)


def test_padding_pairs_are_neither_queries_nor_negatives():
    q, k, valid = _inputs()
    for symmetric in (True, False):
        loss, grads = _value_and_grads(q, k, SCALE, symmetric, jnp.asarray(valid))
        kept, kept_grads = _value_and_grads(q[valid], k[valid], SCALE, symmetric)
        np.testing.assert_allclose(loss, kept, rtol=1e-6)
        for got, want in zip(grads[:2], kept_grads[:2]):
            np.testing.assert_allclose(got[valid], want, rtol=1e-5, atol=1e-6)
            assert not got[~valid].any()
        np.testing.assert_allclose(grads[2], kept_grads[2], rtol=1e-5)


def test_bfloat16_embeddings_score_in_float32():
    q, k, _ = _inputs()
    got = contrastive.info_nce(jnp.asarray(q, jnp.bfloat16), jnp.asarray(k, jnp.bfloat16), SCALE)
    assert got.dtype == jnp.float32
    rounded = [np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32)) for x in (q, k)]
    np.testing.assert_allclose(float(got), numpy_info_nce(*rounded, SCALE, True)[0], rtol=1e-5)


def test_normalize_and_logit_scale():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(np.asarray(contrastive.l2_normalize(x)), [[0.6, 0.8], [0, 0]])
    np.testing.assert_allclose(float(contrastive.logit_scale(jnp.float32(np.log(1 / 0.07)))),
                               1 / 0.07, rtol=1e-6)                    # CLIP's initial value
    assert float(contrastive.logit_scale(jnp.float32(10.0))) == contrastive.MAX_LOGIT_SCALE


def test_bad_shapes_are_named():
    q, k, _ = _inputs()
    with pytest.raises(T5mtlError, match=r"\(16, 6\) and \(16, 5\)"):
        contrastive.info_nce(q, k[:, :5])
    with pytest.raises(T5mtlError, match=r"valid must be \[16\], got \(15,\)"):
        contrastive.info_nce(q, k, valid=np.ones(15, bool))
    mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "model"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 3)
    with pytest.raises(T5mtlError, match=r"mesh axes \['batch'\]"):
        contrastive.info_nce_sharded(q, k, 1.0, mesh, ("batch",))


def test_eight_devices_equal_one_device(tmp_path):
    """The loss over the global batch sharded 8 ways (shard_map with gathered
    keys, and the global form under GSPMD) equals the 1-device loss: 1e-6."""
    q, k, valid = _inputs()
    path = str(tmp_path / "inputs.npz")
    np.savez(path, q=q, k=k, valid=valid, scale=np.float32(SCALE))
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
                          + " --xla_force_host_platform_device_count=8").strip(),
               PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "models",
                                                        "contrastive_devices.py"), path],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("devices") == 8
    assert len(out) == 8
    for key, got in out.items():
        _, symmetric, masked = key.split("/")
        v = jnp.asarray(valid) if masked == "True" else None
        loss, grads = _value_and_grads(q, k, SCALE, symmetric == "True", v)
        np.testing.assert_allclose(got["loss"], loss, rtol=1e-6, atol=1e-6, err_msg=key)
        for g8, g1 in zip(got["grads"], grads):
            np.testing.assert_allclose(np.asarray(g8, np.float32), g1, rtol=1e-5, atol=1e-6,
                                       err_msg=key)
