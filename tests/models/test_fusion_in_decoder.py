"""t5mtl/models/fusion_in_decoder.py: with one passage the plain
encoder-decoder (1e-5); with several, each passage encoded alone and the
decoder over all of them, in any order; decoding through the same loop."""
import jax
import numpy as np
import pytest

from t5mtl.errors import T5mtlError
from t5mtl.models import get_config
from t5mtl.models.encoder_decoder import DecodeConfig, EncoderDecoderModel
from t5mtl.models.fusion_in_decoder import FusionInDecoder
from t5mtl.models.init import param_shapes
from t5mtl.models.t5 import EncoderOutput, Transformer

CONFIG = get_config("t5_tiny")


@pytest.fixture(scope="module")
def params():
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: rng.normal(0.0, 0.3, s.shape).astype(np.float32),
                        param_shapes(CONFIG))


def _tokens(shape, seed, pad_from=None):
    rng = np.random.RandomState(seed)
    x = rng.randint(2, CONFIG.vocab_size, shape).astype(np.int32)
    if pad_from is not None:
        x[..., pad_from:] = 0
    return x


def _batch(encoder_tokens):
    targets = _tokens((encoder_tokens.shape[0], 6), 9)
    inputs = np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
    return {"encoder_input_tokens": encoder_tokens, "decoder_input_tokens": inputs,
            "decoder_target_tokens": targets}


def test_one_passage_is_the_plain_encoder_decoder(params):
    tokens = _tokens((3, 12), 1)
    tokens[1, 8:] = 0                                   # some padding
    plain, fid = EncoderDecoderModel(CONFIG), FusionInDecoder(CONFIG)
    want = np.asarray(jax.jit(plain.logits)(params, _batch(tokens)))
    for shaped in (tokens[:, None, :], tokens):         # [b, 1, l] and [b, l]
        got = np.asarray(jax.jit(fid.logits)(params, _batch(shaped)))
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    (loss_p, _), (loss_f, _) = (jax.jit(m.loss_fn)(params, _batch(t), None)
                                for m, t in ((plain, tokens), (fid, tokens[:, None])))
    np.testing.assert_allclose(float(loss_f), float(loss_p), rtol=1e-6)
    decode = DecodeConfig(max_decode_length=5)
    np.testing.assert_array_equal(
        np.asarray(fid.predict_batch(params, {"encoder_input_tokens": tokens[:, None]}, decode)),
        np.asarray(plain.predict_batch(params, {"encoder_input_tokens": tokens}, decode)))


def test_passages_are_encoded_alone_and_fused_in_the_decoder(params):
    tokens = _tokens((2, 3, 10), 2)
    tokens[0, 1, 6:] = 0
    tokens[1, 2, 3:] = 0
    fid = FusionInDecoder(CONFIG)
    logits = jax.jit(fid.logits)
    batch = _batch(tokens)
    got = np.asarray(logits(params, batch))
    # the reference: every passage through the encoder on its own ([1, l]),
    # the outputs laid end to end, then the decoder
    module = Transformer(CONFIG)
    encode = jax.jit(lambda p, t: module.apply({"params": p}, t, method=Transformer.encode))
    decode = jax.jit(lambda p, e, t: module.apply({"params": p}, e, t, method=Transformer.decode))
    for b in range(2):
        parts = [encode(params, tokens[b, p][None]) for p in range(3)]
        encoded = EncoderOutput(np.concatenate([e.hidden for e in parts], axis=1),
                                np.concatenate([e.segment_ids for e in parts], axis=1))
        want = decode(params, encoded, batch["decoder_input_tokens"][b:b + 1])
        np.testing.assert_allclose(got[b:b + 1], np.asarray(want), atol=1e-5, rtol=1e-5)
    # cross-attention has no positions: the passages' order does not matter
    shuffled = np.asarray(logits(params, _batch(tokens[:, [2, 0, 1]])))
    np.testing.assert_allclose(shuffled, got, atol=1e-5, rtol=1e-5)
    # and a passage changes the answer (the decoder reads every passage)
    changed = tokens.copy()
    changed[:, 2] = _tokens((2, 10), 3)
    assert np.abs(np.asarray(logits(params, _batch(changed))) - got).max() > 1e-3


def test_bad_input_is_named():
    fid = FusionInDecoder(CONFIG)
    with pytest.raises(T5mtlError, match=r"got shape \(1, 2, 3, 4\)"):
        fid.encode_batch({}, {"encoder_input_tokens": np.zeros((1, 2, 3, 4), np.int32)})
    with pytest.raises(T5mtlError, match="DataConfig.pack=False"):
        fid.feature_converter(pack=True)
    assert type(fid.replace()) is FusionInDecoder
