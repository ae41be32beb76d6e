"""t5mtl/models/clip.py: the loss against numpy's symmetric InfoNCE over
embeddings made from the towers directly (the ViT's CLS token, T5's encoder
mean-pooled), its gradient against a float64 hand backward pass through
the projections, the l2 normalization and the learned scale (and a finite
difference over every parameter), padding rows, the scale's cap, the
parameter layout and spec, bad input, and a trainer run."""
import json
import math

import jax
import numpy as np
import pytest

from t5mtl.errors import T5mtlError
from t5mtl.models import get_config
from t5mtl.models.clip import CLIP
from t5mtl.models.init import param_shapes
from t5mtl.models.t5 import Transformer
from t5mtl.models.vit import VisionTransformer, get_vit_config
from tests.models.test_contrastive import numpy_info_nce

TEXT = get_config("t5_tiny")
VISION = get_vit_config("vit_tiny")
N = 6


def _random(tree, seed=0, std=0.3):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.normal(0.0, std, s.shape).astype(np.float32), tree)


def _batch(n=N, seed=1):
    rng = np.random.RandomState(seed)
    tokens = rng.randint(2, TEXT.vocab_size, (n, 8)).astype(np.int32)
    tokens[1, 5:] = 0
    tokens[4, 2:] = 0
    return {"image": rng.uniform(0, 1, (n, *VISION.pixel_shape)).astype(np.float32),
            "text_tokens": tokens}


@pytest.fixture(scope="module")
def clip():
    """The model, random params (scale 1 / 0.07), a batch, the jitted loss
    and gradient (one compile each for the whole module) and the towers'
    features made directly: the ViT module's CLS token and T5's full
    Transformer (same names) mean-pooled over real tokens, in float64."""
    model = CLIP(VISION, TEXT, embed_dim=8)
    params = _random(model.abstract_params())
    params["logit_scale"] = np.float32(math.log(1 / 0.07))
    batch = _batch()
    full = {**_random(param_shapes(TEXT), 5), "token_embedder": params["token_embedder"],
            "encoder": params["encoder"]}
    cls = jax.jit(lambda p, x: VisionTransformer(VISION).apply({"params": p}, x)[:, 0])(
        params["vision"], batch["image"])
    hidden = jax.jit(lambda p, t: Transformer(TEXT).apply({"params": p}, t,
                                                          method=Transformer.encode).hidden)(
        full, batch["text_tokens"])
    mask = (batch["text_tokens"] > 0)[..., None]
    text = (np.asarray(hidden, np.float64) * mask).sum(1) / mask.sum(1)
    return {"model": model, "params": params, "batch": batch,
            "loss": jax.jit(lambda p, b: model.loss_fn(p, b, None)),
            "grad": jax.jit(jax.grad(lambda p, b: model.loss_fn(p, b, None)[0])),
            "image_features": np.asarray(cls, np.float64), "text_features": text}


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_loss_is_numpy_symmetric_info_nce_of_the_projected_unit_embeddings(clip):
    model, params, batch = clip["model"], clip["params"], clip["batch"]
    loss, metrics = clip["loss"](params, batch)
    u = _unit(clip["image_features"] @ params["image_projection"]["kernel"])
    v = _unit(clip["text_features"] @ params["text_projection"]["kernel"])
    want = numpy_info_nce(u, v, 1 / 0.07, symmetric=True)[0]
    np.testing.assert_allclose(float(loss), want, rtol=2e-5)
    np.testing.assert_allclose(float(metrics["logit_scale"]), 1 / 0.07, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["accuracy"]),
                               np.mean(np.argmax(u @ v.T, axis=1) == np.arange(N)))
    np.testing.assert_allclose(np.asarray(jax.jit(model.score_batch)(params, batch)),
                               np.sum(u * v, axis=1) / 0.07, rtol=2e-5)
    # a padding row (no text) is neither a pair nor anybody's negative
    padded = {**batch, "text_tokens": batch["text_tokens"].copy()}
    padded["text_tokens"][-1] = 0
    np.testing.assert_allclose(float(clip["loss"](params, padded)[0]),
                               numpy_info_nce(u[:-1], v[:-1], 1 / 0.07, symmetric=True)[0],
                               rtol=2e-5)
    assert np.asarray(jax.jit(model.predict_batch)(params, padded))[:, 0].tolist() == \
        np.argmax(u @ v[:-1].T, axis=1).tolist()


def _hand_gradients(fi, ft, wi, wt, log_scale):
    """float64 backward pass: InfoNCE's gradients w.r.t. the unit embeddings
    and the scale (numpy_info_nce), then through u = x / |x| (du -> (du -
    u (u . du)) / |x|) and x = f W (dW = f^T dx); d log_scale = scale dscale."""
    xi, xt = fi @ wi, ft @ wt
    u, v = _unit(xi), _unit(xt)
    scale = math.exp(log_scale)
    _, du, dv, dscale = numpy_info_nce(u, v, scale, symmetric=True)

    def through_norm(x, unit, g):
        return (g - unit * np.sum(unit * g, axis=1, keepdims=True)) / np.linalg.norm(
            x, axis=1, keepdims=True)
    return (fi.T @ through_norm(xi, u, du), ft.T @ through_norm(xt, v, dv), scale * dscale)


def test_gradient_equals_a_hand_backward_pass_and_finite_differences(clip):
    params, batch = {**clip["params"], "logit_scale": np.float32(1.3)}, clip["batch"]
    grad = clip["grad"](params, batch)
    dwi, dwt, dlog = _hand_gradients(
        clip["image_features"], clip["text_features"],
        params["image_projection"]["kernel"].astype(np.float64),
        params["text_projection"]["kernel"].astype(np.float64), 1.3)
    np.testing.assert_allclose(grad["image_projection"]["kernel"], dwi, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad["text_projection"]["kernel"], dwt, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(grad["logit_scale"]), dlog, rtol=1e-4)
    # every parameter (both towers included): the directional derivative along
    # a random direction equals a central difference of the loss
    direction = _random(params, seed=9, std=1.0)
    eps = 1e-3
    moved = [float(clip["loss"](jax.tree.map(lambda p, d: p + t * d, params, direction),
                                batch)[0]) for t in (eps, -eps)]
    numeric = (moved[0] - moved[1]) / (2 * eps)
    analytic = sum(float(np.sum(np.asarray(g, np.float64) * d))
                   for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-2)
    assert all(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(grad["vision"]))
    assert np.abs(np.asarray(grad["encoder"]["layers_0"]["attention"]["query"]["kernel"])
                  ).max() > 0


def test_the_scale_is_capped_at_max_logit_scale_and_then_gets_no_gradient(clip):
    params = {**clip["params"], "logit_scale": np.float32(math.log(150.0))}
    _, metrics = clip["loss"](params, clip["batch"])
    assert float(metrics["logit_scale"]) == pytest.approx(100.0)
    assert float(clip["grad"](params, clip["batch"])["logit_scale"]) == 0.0


def test_layout_spec_and_a_t5_checkpoint_filling_the_text_tower():
    model = CLIP(VISION, TEXT, embed_dim=8)
    shapes = model.abstract_params()
    assert set(shapes) == {"vision", "token_embedder", "encoder", "image_projection",
                           "text_projection", "logit_scale"}
    assert shapes["image_projection"]["kernel"].shape == (VISION.hidden_size, 8)
    assert shapes["text_projection"]["kernel"].shape == (TEXT.d_model, 8)
    boxed = jax.eval_shape(model.init_boxed, jax.random.PRNGKey(0))
    assert boxed["text_projection"]["kernel"].names == ("embed", "mlp")
    init = model.init_params(jax.random.PRNGKey(0))
    assert float(init["logit_scale"]) == pytest.approx(math.log(1 / 0.07))
    std = float(np.std(init["image_projection"]["kernel"]))
    assert 0.7 * VISION.hidden_size ** -0.5 < std < 1.3 * VISION.hidden_size ** -0.5
    # a whole T5 (decoder included) as the text tower's source: decoder dropped
    t5 = _random(param_shapes(TEXT), 3)
    adapted = model.adapt_params({**t5, **{k: init[k] for k in (
        "vision", "image_projection", "text_projection", "logit_scale")}})
    assert set(adapted) == set(shapes)
    np.testing.assert_array_equal(adapted["encoder"]["layers_1"]["mlp"]["wo"]["kernel"],
                                  t5["encoder"]["layers_1"]["mlp"]["wo"]["kernel"])
    again = CLIP.from_spec(model.spec())
    assert again.spec() == model.spec() and again.architecture() == model.architecture()
    assert model.architecture()["vision"]["patch_size"] == VISION.patch_size


def test_bad_input_is_one_clear_error(clip):
    model, params, batch = clip["model"], clip["params"], clip["batch"]
    with pytest.raises(T5mtlError, match="feature 'image'"):
        model.loss_fn(params, {**batch, "image": batch["image"][:, :8]}, None)
    with pytest.raises(T5mtlError, match="feature 'image'"):
        model.loss_fn(params, {**batch, "image": (batch["image"] * 16).astype(np.int32)}, None)
    with pytest.raises(T5mtlError, match="feature 'text_tokens'"):
        model.loss_fn(params, {**batch, "text_tokens": batch["text_tokens"][..., None]}, None)
    with pytest.raises(T5mtlError, match="no feature 'text_tokens'"):
        model.loss_fn(params, {"image": batch["image"]}, None)
    with pytest.raises(T5mtlError, match="pack = False"):
        model.feature_converter(pack=True)
    with pytest.raises(T5mtlError, match="CLIP.vision must be a ViTConfig"):
        CLIP(TEXT, TEXT)
    with pytest.raises(T5mtlError, match="CLIP.text must be a T5Config"):
        CLIP(VISION, VISION)
    with pytest.raises(T5mtlError, match="above max_logit_scale"):
        CLIP(VISION, TEXT, init_temperature=0.001)


@pytest.mark.slow
def test_the_trainer_trains_clip_on_clip_pretrain(tmp_path):
    from t5mtl.data import vision_tasks
    from t5mtl.data.data_config import DataConfig
    from t5mtl.train.model_dir import load_params
    from t5mtl.train.optimizers import create_optimizer
    from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
    model = CLIP(VISION, TEXT.replace(vocab_size=8000), embed_dim=16)    # wordpiece_en ids
    run = str(tmp_path / "run")
    summary = train(run, model=model,
                    data=DataConfig(mixture_or_task_name=vision_tasks.register_clip_pretrain(),
                                    task_feature_lengths={"targets": 12}, batch_size=16,
                                    pack=False, truncation_check_examples=0),
                    num_steps=12, optimizer=create_optimizer("adamw", learning_rate=3e-3),
                    checkpoints=CheckpointConfig(period=10 ** 6, async_save=False),
                    evaluation=EvalConfig(), log_period=4, show_progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    train_rows = [r for r in rows if r.get("split") == "train"]
    assert summary["step"] == 12 and len(train_rows) == 3
    # chance in-batch loss is log(16) = 2.77 in each direction; it falls
    assert all(np.isfinite(r["loss"]) for r in train_rows)
    assert train_rows[-1]["loss"] < train_rows[0]["loss"], train_rows
    assert 1 / 0.07 * 0.9 < train_rows[-1]["logit_scale"] < 1 / 0.07 * 1.1
    loaded, params = load_params(run)
    assert isinstance(loaded, CLIP) and loaded.spec() == model.spec()
    np.testing.assert_allclose(float(params["logit_scale"]),
                               math.log(train_rows[-1]["logit_scale"]), atol=0.05)
