"""Model properties: relative buckets, packing, scan/remat, bfloat16, param counts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5mtl.cli import main
from t5mtl.models.layout import stack_layers
from t5mtl.errors import T5mtlError
from t5mtl.models import Transformer, get_config, init_params
from t5mtl.models.layers import relative_position_bucket


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_bucket_matches_transformers(bidirectional):
    torch = pytest.importorskip("torch")
    from transformers.models.t5.modeling_t5 import T5Attention
    rel = np.arange(-400, 401, dtype=np.int64)[None, :]
    ref = T5Attention._relative_position_bucket(torch.tensor(rel), bidirectional=bidirectional,
                                                num_buckets=32, max_distance=128).numpy()
    ours = np.asarray(relative_position_bucket(jnp.asarray(rel, jnp.int32), bidirectional, 32, 128))
    np.testing.assert_array_equal(ours, ref)
    # Hand-checked anchors: exact buckets near 0, the last bucket far away.
    if bidirectional:
        assert ours[0, 400 + 3] == 16 + 3 and ours[0, 400 - 3] == 3
        assert ours[0, -1] == 31 and ours[0, 0] == 15
    else:
        assert ours[0, 400 - 5] == 5 and ours[0, 400 + 5] == 0 and ours[0, 0] == 31


def _random_model(name="t5_tiny", **overrides):
    cfg = get_config(name, **overrides)
    return cfg, init_params(cfg, jax.random.PRNGKey(1))


@pytest.mark.parametrize("name", ["t5_tiny", "t5_tiny_v1_0"])
def test_packed_row_equals_examples_alone(name):
    cfg, params = _random_model(name)
    model = Transformer(cfg)
    apply = jax.jit(model.apply)       # one program per call, not op by op
    rng = np.random.RandomState(0)
    a, b = rng.randint(2, 300, 5), rng.randint(2, 300, 4)
    ta = np.concatenate([[0], rng.randint(2, 300, 2)])
    tb = np.concatenate([[0], rng.randint(2, 300, 3)])
    pad = lambda x, n: np.concatenate([x, np.zeros(n - len(x), x.dtype)])
    enc = pad(np.concatenate([a, b]), 12)[None].astype(np.int32)
    enc_seg = pad(np.array([1] * 5 + [2] * 4), 12)[None]
    enc_pos = pad(np.concatenate([np.arange(5), np.arange(4)]), 12)[None]
    dec = pad(np.concatenate([ta, tb]), 9)[None].astype(np.int32)
    dec_seg = pad(np.array([1] * 3 + [2] * 4), 9)[None]
    dec_pos = pad(np.concatenate([np.arange(3), np.arange(4)]), 9)[None]
    packed = apply({"params": params}, enc, dec, enc_seg, dec_seg, enc_pos, dec_pos)
    alone_a = apply({"params": params}, a[None].astype(np.int32), ta[None].astype(np.int32))
    alone_b = apply({"params": params}, b[None].astype(np.int32), tb[None].astype(np.int32))
    np.testing.assert_allclose(packed[0, :3], alone_a[0], atol=1e-5)
    np.testing.assert_allclose(packed[0, 3:7], alone_b[0], atol=1e-5)


def _batch():
    rng = np.random.RandomState(3)
    enc = rng.randint(2, 300, (2, 10)).astype(np.int32)
    enc[1, 7:] = 0
    dec = rng.randint(2, 300, (2, 6)).astype(np.int32)
    dec[:, 0] = 0
    return enc, dec


@pytest.mark.parametrize("scan,remat", [(True, "none"), (False, "full"), (True, "dots_saveable")])
def test_scan_and_remat_equal_plain_loop(scan, remat):
    cfg, params = _random_model(num_decoder_layers=3)
    enc, dec = _batch()
    plain = jax.jit(Transformer(cfg).apply)({"params": params}, enc, dec)
    cfg2 = cfg.replace(scan_layers=scan, remat_policy=remat)
    params2 = stack_layers(params, cfg2) if scan else params
    other = jax.jit(Transformer(cfg2).apply)({"params": params2}, enc, dec)
    np.testing.assert_allclose(other, plain, atol=1e-5)
    # Gradients flow through remat/scan identically too.
    loss = lambda m, p: jnp.sum(jax.nn.log_softmax(m.apply({"params": p}, enc, dec))[..., 5])
    g_plain = jax.jit(jax.grad(lambda p: loss(Transformer(cfg), p)))(params)
    g_other = jax.jit(jax.grad(lambda p: loss(Transformer(cfg2), p)))(params2)
    np.testing.assert_allclose(g_other["token_embedder"]["embedding"],
                               g_plain["token_embedder"]["embedding"], atol=1e-5)


def test_scanned_params_carry_layers_axis_name():
    cfg = get_config("t5_tiny", scan_layers=True)
    from t5mtl.models.init import init_boxed
    boxed = jax.eval_shape(lambda: init_boxed(cfg, jax.random.PRNGKey(0)))
    q = boxed["encoder"]["layers"]["attention"]["query"]["kernel"]
    assert q.names == ("layers", "embed", "heads", "kv")
    assert boxed["token_embedder"]["embedding"].names == ("vocab", "embed")


def test_bfloat16_activations_within_tolerance():
    """bfloat16 keeps 8 mantissa bits (relative step 2**-8 = 0.4%). Through 2+2
    layers of a random model with logits of magnitude ~20, errors of a few
    tenths are expected; we bound the worst logit error by 3% of the logit
    range and require the same argmax on >= 90% of positions."""
    cfg, params = _random_model()
    enc, dec = _batch()
    f32 = np.asarray(jax.jit(Transformer(cfg).apply)({"params": params}, enc, dec))
    bf16 = np.asarray(jax.jit(Transformer(cfg.replace(dtype="bfloat16")).apply)(
        {"params": params}, enc, dec))
    assert bf16.dtype == np.float32
    span = f32.max() - f32.min()
    assert np.abs(bf16 - f32).max() <= 0.03 * span
    assert (bf16.argmax(-1) == f32.argmax(-1)).mean() >= 0.9


EXPECTED_COUNTS = {
    "t5_1_0_small": "60,506,624", "t5_1_0_base": "222,903,552", "t5_1_0_large": "737,668,096",
    "t5_1_0_3b": "2,851,598,336", "t5_1_0_11b": "11,307,321,344",
    "t5_1_1_small": "76,961,152", "t5_1_1_base": "247,577,856", "t5_1_1_large": "783,150,080",
    "t5_1_1_xl": "2,849,757,184", "t5_1_1_xxl": "11,135,332,352",
}


def test_params_command_prints_hf_counts(capsys):
    argv = ["params"]
    for name in EXPECTED_COUNTS:
        argv += ["--model", name]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert dict(line.split("\t") for line in lines) == EXPECTED_COUNTS


def test_params_command_unknown_name(capsys):
    assert main(["params", "--model", "t5_1_1_huge"]) == 2
    assert "unknown model name 't5_1_1_huge'" in capsys.readouterr().err
    with pytest.raises(T5mtlError, match="t5_9"):
        get_config("t5_9")
