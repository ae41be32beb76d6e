"""The model's seams: encode = encode_embedded(embed), the attention kv_prefix,
an encoder-input module that prepends vectors, decoding with the carried mask."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5mtl.errors import T5mtlError
from t5mtl.models import Transformer, get_config
from t5mtl.models.encoder_decoder import DecodeConfig, EncoderDecoderModel
from t5mtl.models.encoder_inputs import PrependVectors
from t5mtl.models.layers import KVPrefix
from t5mtl.models.t5 import EncoderInputs


def _tokens():
    rng = np.random.RandomState(0)
    enc = rng.randint(2, 300, (3, 10)).astype(np.int32)
    enc[1, 6:] = 0
    enc[2, 8:] = 0
    dec = rng.randint(2, 300, (3, 7)).astype(np.int32)
    dec[:, 0] = 0
    return enc, dec


def _init(module, enc, dec):
    return nn.unbox(jax.jit(module.init)(jax.random.PRNGKey(3), enc, dec)["params"])


@pytest.mark.parametrize("scan,packed", [(False, False), (True, True)])
def test_encode_equals_encode_embedded_of_embed_bit_for_bit(scan, packed):
    cfg = get_config("t5_tiny", scan_layers=scan)
    module = Transformer(cfg)
    enc, dec = _tokens()
    params = _init(module, enc, dec)
    seg = None
    if packed:   # row 0 holds two segments
        seg = (enc != 0).astype(np.int32)
        seg[0, 5:] = 2

    @jax.jit
    def both(params):
        whole = module.apply({"params": params}, enc, seg, method=Transformer.encode)

        def by_parts(m):
            embedded = m.embed(enc)
            segment_ids = seg if packed else (enc != 0).astype(jnp.int32)
            return m.encode_embedded(EncoderInputs(embedded, segment_ids, None, packed))
        return whole, module.apply({"params": params}, method=by_parts)

    whole, parts = both(params)
    np.testing.assert_array_equal(np.asarray(whole.hidden), np.asarray(parts.hidden))
    np.testing.assert_array_equal(np.asarray(whole.segment_ids), np.asarray(parts.segment_ids))


def _prefix(cfg, layers, length, rng, mask=None, batch=1):
    shape = (layers, batch, length, cfg.num_heads, cfg.d_kv)
    k = jnp.asarray(rng.randn(*shape), jnp.float32)
    v = jnp.asarray(rng.randn(*shape), jnp.float32)
    mask = np.ones((layers, batch, length), bool) if mask is None else mask
    return KVPrefix(k, v, jnp.asarray(mask))


def _logits_with_jax(cfg, params, enc, dec, enc_prefix, dec_prefix):
    def run(m):
        encoded = m.encode_embedded(m.encoder_inputs(enc), kv_prefix=enc_prefix)
        return m.decode(encoded, dec, kv_prefix=dec_prefix)
    return Transformer(cfg).apply({"params": params}, method=run)


_logits_jit = jax.jit(_logits_with_jax, static_argnums=0)


def _logits_with(*args):
    return np.asarray(_logits_jit(*args))


@pytest.mark.parametrize("scan", [False, True])
def test_empty_or_fully_masked_prefix_changes_nothing(scan):
    cfg = get_config("t5_tiny", scan_layers=scan, num_decoder_layers=3)
    enc, dec = _tokens()
    params = _init(Transformer(cfg), enc, dec)
    none = _logits_with(cfg, params, enc, dec, None, None)
    rng = np.random.RandomState(1)
    for length, mask in ((0, None), (4, np.zeros((1, 1, 4), bool))):
        enc_mask = None if mask is None else np.repeat(mask, cfg.num_layers, 0)
        dec_mask = None if mask is None else np.repeat(mask, 3, 0)
        got = _logits_with(cfg, params, enc, dec, _prefix(cfg, cfg.num_layers, length, rng,
                                                          enc_mask),
                           _prefix(cfg, 3, length, rng, dec_mask))
        np.testing.assert_allclose(got, none, atol=1e-6, err_msg=f"length {length}")


def test_prefix_is_live_masked_slots_drop_out_and_scan_slices_per_layer():
    cfg = get_config("t5_tiny")
    enc, dec = _tokens()
    params = _init(Transformer(cfg), enc, dec)
    rng = np.random.RandomState(2)
    full = _prefix(cfg, cfg.num_layers, 3, rng, batch=3)      # per example and per layer
    dec_full = _prefix(cfg, cfg.n_decoder_layers, 2, rng)
    none = _logits_with(cfg, params, enc, dec, None, None)
    with_prefix = _logits_with(cfg, params, enc, dec, full, dec_full)
    assert np.max(np.abs(with_prefix - none)) > 1e-2
    # Masking slot 2 of every example equals a prefix without slot 2.
    masked = KVPrefix(full.key, full.value, full.mask.at[:, :, 2].set(False))
    cut = jax.tree.map(lambda x: x[:, :, :2], full)
    np.testing.assert_allclose(_logits_with(cfg, params, enc, dec, masked, None),
                               _logits_with(cfg, params, enc, dec, cut, None), atol=1e-5)
    # nn.scan hands each layer its own slice: same logits as the loop; remat
    # changes nothing either, and gradients reach the prefix through both.
    from t5mtl.models.layout import stack_layers
    for scan, remat in ((True, "none"), (False, "full"), (True, "dots_saveable")):
        ocfg = cfg.replace(scan_layers=scan, remat_policy=remat)
        oparams = stack_layers(params, ocfg) if scan else params
        np.testing.assert_allclose(_logits_with(ocfg, oparams, enc, dec, full, dec_full),
                                   with_prefix, atol=1e-5, err_msg=f"{scan} {remat}")
        grad = jax.jit(jax.grad(lambda k: jnp.sum(_logits_with_jax(
            ocfg, oparams, enc, dec, KVPrefix(k, full.value, full.mask), dec_full) ** 2)))(
            full.key)
        assert float(jnp.max(jnp.abs(grad))) > 0


class FixedPrefix(nn.Module):
    """A test attention-prefix module: learned per-layer keys and values."""
    length: int
    num_heads: int
    d_kv: int

    @nn.compact
    def __call__(self, stack, num_layers, batch_size, task_ids, deterministic=True):
        shape = (num_layers, 1, self.length, self.num_heads, self.d_kv)
        init = nn.initializers.normal(1.0)
        return KVPrefix(self.param(f"{stack}_key", init, shape),
                        self.param(f"{stack}_value", init, shape),
                        jnp.ones((num_layers, 1, self.length), bool))


def _greedy_without_cache(model, params, enc, n):
    """Step-by-step argmax over a full recomputation of the decoder (no cache)."""
    out = np.zeros((enc.shape[0], n), np.int32)
    done = np.zeros(enc.shape[0], bool)
    full_logits = jax.jit(model.logits)
    for i in range(n):
        # Decoder inputs: start token, then the tokens chosen so far (padded
        # to n so that one compiled program serves every step).
        dec_in = np.concatenate([np.zeros((enc.shape[0], 1), np.int32), out[:, :n - 1]], axis=1)
        logits = np.asarray(full_logits(params, {"encoder_input_tokens": enc,
                                                 "decoder_input_tokens": dec_in}))
        tok = np.where(done, 0, logits[:, i].argmax(-1))
        out[:, i] = tok
        done |= tok == 1
    return out


def test_prepended_vectors_decode_with_the_cache_as_without():
    # (The scanned cache: tests/models/decoding; scanned prefixes: above.)
    cfg = get_config("t5_tiny")
    model = EncoderDecoderModel(cfg, encoder_input=PrependVectors(5),
                                attention_prefix=FixedPrefix(2, cfg.num_heads, cfg.d_kv))
    enc, _ = _tokens()
    params = model.init_params(jax.random.PRNGKey(4))
    assert params["encoder_input"]["vectors"].shape == (5, cfg.d_model)
    ids = np.asarray(model.predict_batch(params, {"encoder_input_tokens": enc},
                                         DecodeConfig(max_decode_length=9)))
    np.testing.assert_array_equal(ids, _greedy_without_cache(model, params, enc, 9))
    assert len(set(map(tuple, ids))) > 1          # rows decode differently
    # The encoder sequence is 5 longer than the tokens; its mask is carried.
    encoded = model.module.apply({"params": params}, enc, method=Transformer.encode)
    assert encoded.hidden.shape[1] == enc.shape[1] + 5
    np.testing.assert_array_equal(np.asarray(encoded.segment_ids)[:, :5], 1)
    np.testing.assert_array_equal(np.asarray(encoded.segment_ids)[:, 5:], enc != 0)


def test_prepend_refuses_packed_rows():
    module = Transformer(get_config("t5_tiny"), encoder_input=PrependVectors(2))
    enc, dec = _tokens()
    seg = (enc != 0).astype(np.int32)
    with pytest.raises(T5mtlError, match="pack=False"):
        module.init(jax.random.PRNGKey(0), enc, dec, seg, (dec != 0).astype(np.int32))
