"""LAVENDER (t5mtl.models.lavender) and its MLM rows (t5mtl.data.lavender_features):
visual tokens prepended through T5's seams equal T5's own encoder over the
same vectors; the loss against numpy; iterative masked decoding against a
step-by-step reference; the converter's rows against the numpy builders."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from t5mtl.data.batches import pad_ids
from t5mtl.data import lavender_features as lf
from t5mtl.errors import T5mtlError
from t5mtl.models import get_config
from t5mtl.models.lavender import CLS, MASK, SEP, Lavender
from t5mtl.models.t5 import Transformer

CONFIG = get_config("t5_tiny", vocab_size=64)
VIDEO_SHAPE = (4, 4, 4, 3)


class StandInVideo(nn.Module):
    """[b, T, H, W, C] -> [b, T, 8]: one token per frame (a stand-in for the ViT)."""
    @nn.compact
    def __call__(self, pixels, deterministic=True):
        b, t = pixels.shape[:2]
        return nn.Dense(8)(pixels.reshape(b, t, -1))


class VitLike(dict):
    pixel_shape = VIDEO_SHAPE


def stand_in_model(**kw):
    return Lavender(CONFIG, VitLike(), video_encoder=StandInVideo(), video_hidden=8, **kw)


def random_params(model, seed=0, scale=0.3):
    rng = np.random.RandomState(seed)
    return jax.tree.map(lambda s: (scale * rng.standard_normal(s.shape)).astype(np.float32),
                        model.abstract_params())


def video(seed, b=2):
    return np.random.RandomState(seed).uniform(0, 1, (b,) + VIDEO_SHAPE).astype(np.float32)


TOKENS = np.array([[CLS, 9, 10, SEP, MASK, 0], [CLS, 11, SEP, MASK, 0, 0]], np.int32)
TARGETS = np.array([[0, 0, 0, 0, 20, 0], [0, 0, 0, 30, 0, 0]], np.int32)
BATCH = {"encoder_input_tokens": TOKENS, "encoder_target_tokens": TARGETS,
         "encoder_loss_weights": (TARGETS > 0).astype(np.int32), "video": video(0)}


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_params_keep_t5_names_and_visual_tokens_enter_through_the_seams():
    model = stand_in_model()
    params = random_params(model)
    assert set(params) == {"token_embedder", "encoder", "video_encoder", "video_projection"}
    assert params["video_projection"]["kernel"].shape == (8, CONFIG.d_model)
    # visual vectors that ARE the embeddings of ids v: T5's own encoder over [v ; text]
    v = np.array([[7, 8, 9, 12], [13, 14, 15, 16]], np.int32)
    t5 = Transformer(CONFIG)
    sub = {"token_embedder": params["token_embedder"], "encoder": params["encoder"]}
    visual = t5.apply({"params": sub}, v, method=Transformer.embed)
    ours = model.encode(params, TOKENS, visual)
    ref = t5.apply({"params": sub}, np.concatenate([v, TOKENS], 1), method=Transformer.encode)
    np.testing.assert_allclose(np.asarray(ours.hidden), np.asarray(ref.hidden), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(ours.segment_ids),
                                  np.concatenate([np.ones((2, 4)), TOKENS > 0], 1))


def test_logits_loss_scores_against_numpy():
    model = stand_in_model()
    params = random_params(model, seed=1)
    # the visual tokens by hand: stand-in dense, then the projection
    d = params["video_encoder"]["Dense_0"]
    frames = BATCH["video"].reshape(2, 4, -1).astype(np.float64)
    visual = (frames @ d["kernel"] + d["bias"]) @ params["video_projection"]["kernel"]
    np.testing.assert_allclose(np.asarray(model.visual_tokens(params, BATCH["video"])), visual,
                               rtol=1e-4, atol=1e-4)
    sub = {k: params[k] for k in ("token_embedder", "encoder")}
    hidden = np.asarray(model.encode(params, TOKENS, jnp.asarray(visual, jnp.float32)).hidden,
                        np.float64)[:, 4:]
    emb = np.asarray(sub["token_embedder"]["embedding"], np.float64)
    expected = hidden @ emb.T * CONFIG.d_model ** -0.5
    logits = np.asarray(model.logits(params, BATCH))
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    logp = _log_softmax(expected)
    token_logp = np.take_along_axis(logp, TARGETS[..., None], -1)[..., 0]
    w = (TARGETS > 0).astype(np.float64)
    loss, metrics = model.loss_fn(params, BATCH, None)
    np.testing.assert_allclose(float(loss), -(token_logp * w).sum() / w.sum(), rtol=1e-5)
    assert float(metrics["target_tokens"]) == 2
    np.testing.assert_allclose(np.asarray(model.score_batch(params, BATCH)),
                               (token_logp * w).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(model.mask_log_probs(params, BATCH)),
                               logp[[0, 1], [4, 3]], rtol=1e-4, atol=1e-5)
    predicted = np.asarray(model.predict_batch(params, BATCH))
    np.testing.assert_array_equal(predicted[0, 4], expected[0, 4].argmax())
    np.testing.assert_array_equal(predicted[0, :4], TOKENS[0, :4])


def test_the_video_matters_and_padding_does_not():
    model = stand_in_model()
    params = random_params(model, seed=2)
    base = np.asarray(model.logits(params, BATCH))
    other = np.asarray(model.logits(params, {**BATCH, "video": video(5)}))
    assert np.abs(base - other).max() > 1e-3
    longer = {**BATCH, "encoder_input_tokens": np.pad(TOKENS, ((0, 0), (0, 3)))}
    np.testing.assert_allclose(np.asarray(model.logits(params, longer))[:, :6], base,
                               atol=1e-5)


def test_bad_video_names_the_feature():
    model = stand_in_model()
    params = random_params(model)
    with pytest.raises(T5mtlError, match=r"feature 'video': expected float pixels \[batch, 4, "
                                         r"4, 4, 3\], got int32 \[2, 4, 4, 3\]"):
        model.logits(params, {**BATCH, "video": np.zeros((2, 4, 4, 3), np.int32)})


def test_iterative_masked_decoding_matches_a_step_by_step_reference():
    model = stand_in_model()
    params = random_params(model, seed=3, scale=1.0)
    vids = video(7, b=3)
    length = 6
    got = np.asarray(jax.jit(model.decode_captions, static_argnums=2)(params, vids, length))
    visual = model.visual_tokens(params, vids)
    text_logits = jax.jit(model.text_logits)
    for r in range(3):
        row = [CLS, MASK]
        caption = []
        for t in range(1, length):
            tokens = np.array([row + [0] * (length - len(row))], np.int32)
            logits = np.array(text_logits(params, tokens, visual[r:r + 1]))[0, t]
            logits[[0, 1, CLS, MASK]] = -np.inf
            pred = int(logits.argmax())
            if pred == SEP:
                break
            caption.append(pred)
            row = row[:t] + [pred] + ([MASK] if t + 1 < length else [])
        expect = caption + [0] * (length - 1 - len(caption))
        np.testing.assert_array_equal(got[r], expect)


# -- the rows -----------------------------------------------------------------------

def test_numpy_row_builders():
    assert lf.answer_row([9, 10], [20], 8) == ([CLS, 9, 10, SEP, MASK], [0, 0, 0, 0, 20])
    assert lf.answer_row([9, 10, 11, 12, 13], [20], 6) == ([CLS, 9, 10, SEP, MASK],
                                                           [0, 0, 0, 0, 20])
    assert lf.caption_row([7, 8, 9], 0, 8) == ([CLS, MASK], [0, 7])
    assert lf.caption_row([7, 8, 9], 3, 8) == ([CLS, 7, 8, 9, MASK], [0, 0, 0, 0, SEP])
    assert lf.caption_row([7, 8, 9], 2, 8, masked=[0]) == ([CLS, MASK, 8, MASK], [0, 7, 0, 9])
    assert lf.caption_row([7, 8, 9, 10, 11], 3, 5) == ([CLS, 7, 8, 9, MASK], [0, 0, 0, 0, SEP])
    with pytest.raises(T5mtlError, match="caption cut 4"):
        lf.caption_row([7, 8, 9], 4, 8)


def _convert(examples, lengths, **kw):
    def gen():
        yield from examples
    ds = tf.data.Dataset.from_generator(gen, output_signature={
        "video": tf.TensorSpec(VIDEO_SHAPE, tf.float32),
        "inputs": tf.TensorSpec([None], tf.int32), "targets": tf.TensorSpec([None], tf.int32)})
    conv = lf.LavenderFeatureConverter(**kw)
    return list(conv(ds, lengths).as_numpy_iterator())


def test_converter_rows_equal_the_numpy_builders():
    rng = np.random.RandomState(0)
    qa = [{"video": video(i, 1)[0], "inputs": np.array([9, 10, 11], np.int32),
           "targets": np.array([20 + i], np.int32)} for i in range(3)]
    caption = [10, 11, 12, 13]
    caps = [{"video": video(9, 1)[0], "inputs": np.zeros([0], np.int32),
             "targets": np.array(caption, np.int32)} for _ in range(300)]
    examples = qa + caps
    rng.shuffle(examples)
    out = _convert(examples, {"inputs": 8, "targets": 6}, mask_rate=0.3)
    cuts, masked, prefix = [], 0, 0
    for ex, row in zip(examples, out):
        np.testing.assert_array_equal(row["video"], ex["video"])
        tokens, targets = row["encoder_input_tokens"], row["encoder_target_tokens"]
        np.testing.assert_array_equal(row["encoder_loss_weights"], targets > 0)
        if ex["inputs"].size:
            want = pad_ids([lf.answer_row(ex["inputs"], ex["targets"], 8)[0]], 8)[0]
            np.testing.assert_array_equal(tokens, want)
            assert targets[5] == ex["targets"][0] and targets.sum() == ex["targets"][0]
            continue
        cut = int((tokens > 0).sum()) - 2
        where = [i for i in range(cut) if tokens[i + 1] == MASK]
        inputs, tg = lf.caption_row(caption, cut, 8, where)
        np.testing.assert_array_equal(tokens, pad_ids([inputs], 8)[0])
        np.testing.assert_array_equal(targets, pad_ids([tg], 8)[0])
        cuts.append(cut)
        masked, prefix = masked + len(where), prefix + cut
    # cuts uniform over 0..4 (caption + [SEP]); prefix masks at mask_rate
    counts = np.bincount(cuts, minlength=5)
    assert counts.min() > 35 and counts.max() < 85, counts
    assert 0.22 < masked / prefix < 0.38


def test_converter_checks_the_video_and_packing():
    with pytest.raises(T5mtlError, match="set DataConfig.pack = False"):
        lf.LavenderFeatureConverter(pack=True)
    ds = tf.data.Dataset.from_tensors({"video": tf.zeros([4, 4, 4, 3], tf.int32),
                                       "inputs": tf.ones([2], tf.int32),
                                       "targets": tf.ones([1], tf.int32)})
    with pytest.raises(T5mtlError, match="feature 'video': expected float pixels"):
        lf.LavenderFeatureConverter()(ds, {"inputs": 8, "targets": 2})
    with pytest.raises(T5mtlError, match="feature 'video': missing"):
        lf.LavenderFeatureConverter()(ds.map(lambda ex: {k: ex[k] for k in
                                                        ("inputs", "targets")}),
                                      {"inputs": 8, "targets": 2})




def test_with_the_vit_spec_round_trip_and_param_names():
    from t5mtl.models.base import import_class
    from t5mtl.models.vit import get_vit_config
    vit = get_vit_config("vit_tiny_video", patch_size=8)
    model = Lavender(CONFIG, vit)
    spec = model.spec()
    assert spec["vit_config"]["num_frames"] == 4 and spec["video_feature"] == "video"
    import json
    again = import_class("t5mtl.models.lavender:Lavender").from_spec(json.loads(json.dumps(spec)))
    assert again.spec() == spec and again.architecture() == model.architecture()
    shapes = jax.tree.map(lambda s: s.shape, model.abstract_params())
    assert shapes["video_projection"]["kernel"] == (vit.hidden_size, CONFIG.d_model)
    assert shapes["token_embedder"]["embedding"] == (64, CONFIG.d_model)
    assert set(shapes["video_encoder"]) == set(
        jax.tree.map(lambda s: s.shape, again.abstract_params())["video_encoder"])
    # the ViT's dropout is not architecture; its patch size is
    assert Lavender(CONFIG, get_vit_config("vit_tiny_video", patch_size=8, dropout_rate=0.1)
                    ).architecture() == model.architecture()
    assert Lavender(CONFIG, get_vit_config("vit_tiny_video")).architecture() != \
        model.architecture()


def test_a_t5_checkpoints_encoder_maps_onto_lavenders_names():
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    t5 = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                      EncoderDecoderModel(CONFIG).abstract_params())
    adapted = stand_in_model().adapt_params(t5)
    assert set(adapted) == {"token_embedder", "encoder"}          # the decoder dropped
    ours = stand_in_model().abstract_params()
    for k in adapted:
        assert jax.tree.map(lambda a: a.shape, adapted[k]) == \
            jax.tree.map(lambda s: s.shape, ours[k])
