"""The encoder-only masked LM (t5mtl.models.masked_lm) and its converter
(t5mtl.data.encoder_features): logits and loss against numpy, every selected
position weighted, a T5 checkpoint's encoder loaded by name, spec round trip."""
import jax
import numpy as np
import pytest
import tensorflow as tf

from t5mtl.data.encoder_features import MaskedLMFeatureConverter
from t5mtl.errors import T5mtlError
from t5mtl.models import get_config
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.models.masked_lm import MaskedLanguageModel
from t5mtl.models.t5 import Transformer

CONFIG = get_config("t5_tiny")
BATCH = {"encoder_input_tokens": np.array([[5, 99, 7, 8, 1, 0], [9, 4, 99, 0, 0, 0]], np.int32),
         "encoder_target_tokens": np.array([[0, 6, 0, 30, 0, 0], [0, 0, 3, 0, 0, 0]], np.int32),
         "encoder_loss_weights": np.array([[0, 1, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0]], np.int32)}


def random_params(model, seed=0, scale=0.3):
    """Random numpy params of `model`'s shapes (no init program compiled)."""
    rng = np.random.RandomState(seed)
    return jax.tree.map(lambda s: (scale * rng.standard_normal(s.shape)).astype(np.float32),
                        model.abstract_params())


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_t5_encoder_mlm_loads_a_t5_checkpoints_encoder_and_matches_numpy():
    t5 = EncoderDecoderModel(CONFIG)
    t5_params = random_params(t5, seed=1)
    model = MaskedLanguageModel(CONFIG)
    fresh = model.abstract_params()
    params = model.adapt_params(t5_params)          # the decoder dropped, names shared
    assert set(params) == set(fresh) == {"token_embedder", "encoder"}
    assert jax.tree.structure(params) == jax.tree.structure(fresh)

    hidden = np.asarray(Transformer(CONFIG).apply(
        {"params": t5_params}, BATCH["encoder_input_tokens"], method=Transformer.encode).hidden,
        np.float64)
    emb = np.asarray(t5_params["token_embedder"]["embedding"], np.float64)
    expected = hidden @ emb.T * CONFIG.d_model ** -0.5
    logits = np.asarray(model.logits(params, BATCH))
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)

    logp = _log_softmax(expected)
    targets, weights = BATCH["encoder_target_tokens"], BATCH["encoder_loss_weights"]
    token_logp = np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    loss, metrics = model.loss_fn(params, BATCH, None)
    np.testing.assert_allclose(float(loss), -(token_logp * weights).sum() / weights.sum(),
                               rtol=1e-5)
    assert float(metrics["target_tokens"]) == 3
    np.testing.assert_allclose(np.asarray(model.score_batch(params, BATCH)),
                               (token_logp * weights).sum(-1), rtol=1e-5)
    predicted = np.asarray(model.predict_batch(params, BATCH))
    np.testing.assert_array_equal(predicted, np.where(weights > 0, expected.argmax(-1),
                                                      BATCH["encoder_input_tokens"]))


def test_spec_round_trip_rebuilds_the_same_model():
    model = MaskedLanguageModel(CONFIG, z_loss=1e-4)
    again = MaskedLanguageModel.from_spec(model.spec())
    assert again.spec() == model.spec() and again.architecture() == model.architecture()
    assert again.architecture()["family"] == "t5"


def _convert(examples, length, **kw):
    ds = tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature={k: tf.TensorSpec([None], tf.int32) for k in examples[0]})
    lengths = {k: length for k in examples[0]}
    return list(MaskedLMFeatureConverter(**kw)(ds, lengths).as_numpy_iterator())


def test_converter_weights_every_selected_position_not_only_mask_ids():
    # 103 is [MASK]; position 2 was replaced by a random id (50), position 3
    # was selected and kept (7): seqio's EncoderFeatureConverter weights only
    # position 1.
    out = _convert([{"inputs": [101, 103, 50, 7, 102], "targets": [0, 12, 13, 7, 0],
                     "token_types": [0, 0, 0, 1, 1]}], 7)
    assert len(out) == 1
    np.testing.assert_array_equal(out[0]["encoder_input_tokens"], [101, 103, 50, 7, 102, 0, 0])
    np.testing.assert_array_equal(out[0]["encoder_target_tokens"], [0, 12, 13, 7, 0, 0, 0])
    np.testing.assert_array_equal(out[0]["encoder_loss_weights"], [0, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(out[0]["encoder_token_types"], [0, 0, 0, 1, 1, 0, 0])
    plain = _convert([{"inputs": [101, 103, 102], "targets": [0, 12, 0]}], 4)
    np.testing.assert_array_equal(plain[0]["encoder_token_types"], [0, 0, 0, 0])
    np.testing.assert_array_equal(plain[0]["encoder_loss_weights"], [0, 1, 0, 0])


def test_converter_refuses_packing_and_unaligned_lengths():
    with pytest.raises(T5mtlError, match="DataConfig.pack = False"):
        MaskedLMFeatureConverter(pack=True)
    ds = tf.data.Dataset.from_tensors({"inputs": tf.constant([1, 2]), "targets": tf.constant([1, 2])})
    with pytest.raises(T5mtlError, match="every length must equal"):
        MaskedLMFeatureConverter()(ds, {"inputs": 4, "targets": 5})
