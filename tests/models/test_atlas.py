"""t5mtl/models/atlas.py: the loss without distillation is the FiD reader's;
the KL term (ADist and PDist) equals numpy's formula over the reader's and
the retriever's own outputs; `retriever_training` decides which retriever
parameters get a gradient (exactly zero where none); bad values and shapes
are refused naming them; spec and gin."""
import json

import gin
import jax
import numpy as np
import pytest

from t5mtl.errors import T5mtlError
from t5mtl.models import get_config
from t5mtl.models.atlas import AtlasModel
from t5mtl.models.dual_encoder import DualEncoder
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.models.fusion_in_decoder import FusionInDecoder

CONFIG = get_config("t5_tiny")
B, K, L, LQ, LP, T = 2, 3, 10, 6, 8, 5
TARGET_T, RETRIEVER_T = 0.7, 0.5


def _random(tree, seed=0):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.normal(0.0, 0.3, s.shape).astype(np.float32), tree)


def _model(distillation="adist", training="query", shared=True, **kw):
    return AtlasModel(FusionInDecoder(CONFIG), DualEncoder(CONFIG, shared=shared),
                      distillation, training, target_temperature=TARGET_T,
                      retriever_temperature=RETRIEVER_T, **kw)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.RandomState(0)
    ids = lambda *shape: rng.randint(2, CONFIG.vocab_size, shape).astype(np.int32)  # noqa: E731
    tokens, passages, query, targets = ids(B, K, L), ids(B, K, LP), ids(B, LQ), ids(B, T)
    tokens[0, 1, 7:] = 0
    passages[0, 2, 5:] = 0
    tokens[1, 2], passages[1, 2] = 0, 0                  # question 1 has two passages
    query[1, 4:] = 0
    targets[1, 3:] = 0
    inputs = np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
    return {"encoder_input_tokens": tokens, "query_tokens": query, "passage_tokens": passages,
            "decoder_input_tokens": inputs, "decoder_target_tokens": targets,
            "decoder_loss_weights": (targets > 0).astype(np.float32)}


@pytest.fixture(scope="module")
def params():
    return {shared: _random(_model(shared=shared).abstract_params()) for shared in (True, False)}


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _numpy_kl(target_scores, retriever_scores, valid):
    """Mean over questions of KL(softmax(t / TARGET_T) || softmax(s / RETRIEVER_T))."""
    kls = []
    for i in range(B):
        v = valid[i]
        t = _softmax(target_scores[i, v] / TARGET_T)
        p = _softmax(retriever_scores[i, v] / RETRIEVER_T)
        kls.append(np.sum(t * (np.log(t) - np.log(p))))
    return np.mean(kls)


def _retriever_scores(model, params, batch):
    embed = jax.jit(model.retriever.embed, static_argnums=2)
    q = np.asarray(embed(params["retriever"], batch["query_tokens"], "query"), np.float64)
    p = np.asarray(embed(params["retriever"], batch["passage_tokens"].reshape(B * K, LP),
                         "passage"), np.float64).reshape(B, K, -1)
    return np.einsum("bd,bkd->bk", q, p)


VALID = np.array([[True, True, True], [True, True, False]])


def test_without_distillation_the_loss_is_the_readers(params, batch):
    model = _model("none")
    reader_batch = {k: v for k, v in batch.items() if k not in ("query_tokens", "passage_tokens")}
    loss, metrics = jax.jit(model.loss_fn)(params[True], reader_batch, None)
    want, want_metrics = jax.jit(FusionInDecoder(CONFIG).loss_fn)(params[True]["reader"],
                                                                  reader_batch, None)
    assert float(loss) == float(want)
    assert set(metrics) == set(want_metrics)


def test_adist_kl_is_the_numpy_formula(params, batch):
    model = _model("adist")
    p = params[True]
    loss, metrics = jax.jit(model.loss_fn)(p, batch, None)
    maps = np.asarray(jax.jit(model.reader.cross_attention)(p["reader"], batch), np.float64)
    layers = maps.shape[0]
    maps = maps.reshape(layers, B, T, K, L)
    real = batch["encoder_input_tokens"] > 0
    answer = batch["decoder_target_tokens"] > 0
    adist = np.zeros((B, K))
    for i in range(B):
        for k in range(K):
            adist[i, k] = sum(maps[n, i, t, k, m] for n in range(layers) for t in range(T)
                              for m in range(L) if answer[i, t] and real[i, k, m])
            adist[i, k] /= layers * answer[i].sum()
    want = _numpy_kl(adist, _retriever_scores(model, p, batch), VALID)
    np.testing.assert_allclose(float(metrics["distillation_kl"]), want, rtol=1e-5)
    np.testing.assert_allclose(float(loss), float(metrics["reader_loss"]) + want, rtol=1e-5)
    assert float(metrics["num_questions"]) == 2


def test_pdist_kl_is_the_numpy_formula(params, batch):
    model = _model("pdist")                     # the mean over answer tokens, as Atlas's code
    p = params[True]
    _, metrics = jax.jit(model.loss_fn)(p, batch, None)
    # the reader with passage k alone is the plain encoder-decoder on that row
    score = jax.jit(EncoderDecoderModel(CONFIG).score_batch)
    loglik = np.stack([np.asarray(score(p["reader"], {
        "encoder_input_tokens": batch["encoder_input_tokens"][:, k],
        **{n: batch[n] for n in ("decoder_input_tokens", "decoder_target_tokens",
                                 "decoder_loss_weights")}}), np.float64) for k in range(K)], 1)
    loglik = loglik / (batch["decoder_target_tokens"] > 0).sum(1, keepdims=True)
    want = _numpy_kl(loglik, _retriever_scores(model, p, batch), VALID)
    np.testing.assert_allclose(float(metrics["distillation_kl"]), want, rtol=1e-5)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("training, shared, gets_gradient", [
    ("frozen", False, {"query": False, "passage": False}),
    ("query", False, {"query": True, "passage": False}),
    ("full", False, {"query": True, "passage": True}),
    ("query", True, {"shared": True}),
])
def test_retriever_training_decides_the_retriever_gradient(params, batch, training, shared,
                                                          gets_gradient):
    model = _model("adist", training, shared=shared)
    p = params[shared]
    # the gradient of the whole loss with respect to the retriever's params
    (loss, metrics), grads = jax.jit(jax.value_and_grad(
        lambda r: model.loss_fn({**p, "retriever": r}, batch, None), has_aux=True))(
            p["retriever"])
    towers = {"shared": grads} if shared else grads
    for tower, expected in gets_gradient.items():
        nonzero = any(np.any(g != 0) for g in _leaves(towers[tower]))
        assert nonzero == expected, (tower, training)
    if training == "frozen":        # no distillation pass: the reader's loss alone
        assert "distillation_kl" not in metrics
        reader_loss, _ = model.reader.loss_fn(p["reader"], batch, None)
        np.testing.assert_allclose(float(loss), float(reader_loss), rtol=1e-6)
    else:
        assert float(metrics["distillation_kl"]) > 0


def test_bad_values_and_shapes_are_refused(batch):
    reader, retriever = FusionInDecoder(CONFIG), DualEncoder(CONFIG)
    for kwargs, named in ((dict(distillation="emdr"), "'emdr'"),
                          (dict(retriever_training="passage"), "'passage'"),
                          (dict(pdist_reduction="max"), "'max'"),
                          (dict(target_temperature=0.0), "0.0")):
        with pytest.raises(T5mtlError, match=named):
            AtlasModel(reader, retriever, **kwargs)
    with pytest.raises(T5mtlError, match="FusionInDecoder"):
        AtlasModel(EncoderDecoderModel(CONFIG), retriever)
    model = AtlasModel(reader, retriever)
    flat = {**batch, "encoder_input_tokens": batch["encoder_input_tokens"][:, 0]}
    with pytest.raises(T5mtlError, match=r"encoder_input_tokens \(2, 10\)"):
        model.loss_fn(None, flat, None)
    fewer = {**batch, "passage_tokens": batch["passage_tokens"][:, :2]}
    with pytest.raises(T5mtlError, match=r"passage_tokens \(2, 2, 8\)"):
        model.loss_fn(None, fewer, None)
    with pytest.raises(T5mtlError, match="pack = False"):
        model.feature_converter(pack=True)


def test_spec_round_trips_and_gin_builds_it():
    model = _model("pdist", "full", shared=False)
    spec = json.loads(json.dumps(model.spec()))
    again = AtlasModel.from_spec(spec)
    assert again.spec() == model.spec() and again.architecture() == model.architecture()
    assert set(model.abstract_params()) == {"retriever", "reader"}
    gin.parse_config("""
        AtlasModel.reader = @FusionInDecoder()
        AtlasModel.retriever = @DualEncoder()
        FusionInDecoder.config = @get_config()
        DualEncoder.config = @get_config()
        get_config.name = "t5_tiny"
        AtlasModel.distillation = "pdist"
        AtlasModel.retriever_training = "frozen"
    """)
    built = AtlasModel()
    assert (built.distillation, built.retriever_training) == ("pdist", "frozen")
    assert built.reader.config == CONFIG
    # a saved model rebuilds from its spec while gin binds its config (a run's
    # model.json read back under that run's gin): the spec's config wins
    small = AtlasModel(FusionInDecoder(config=get_config("t5_small_cpu")),
                       DualEncoder(config=CONFIG))
    assert AtlasModel.from_spec(small.spec()).reader.config == get_config("t5_small_cpu")
