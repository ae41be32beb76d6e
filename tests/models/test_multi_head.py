"""The multi-head classifier (t5mtl.models.multi_head): logits, head
selection, loss, spec, labels from seqio, scores, predictions, training."""
import json
import os

import gin
import jax
import numpy as np
import optax
import pytest
import seqio
import tensorflow as tf

import t5mtl
import t5mtl.data.registry  # noqa: F401  (registers the synthetic suite)
from t5mtl import gin_config
from t5mtl.data.batches import host_batches
from t5mtl.data.class_labels import ClassLabelConverter
from t5mtl.data.data_config import DataConfig, resolve_mixture
from t5mtl.data.task_ids import task_names
from t5mtl.errors import T5mtlError
from t5mtl.infer.rank_classification import rank_classify
from t5mtl.models import get_config, param_names
from t5mtl.models.encoder_decoder import DecodeConfig, EncoderDecoderModel
from t5mtl.models.multi_head import MultiHeadClassifier
from t5mtl.models.t5 import Transformer
from t5mtl.train.init_from import merge_params
from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = get_config("t5_tiny")
# Two made-up tasks (no registry): 2 and 3 labels, byte-like token ids.
TASKS = ("task_a", "task_b")
LABELS = (("no", "yes"), ("low", "mid", "high"))
LABEL_IDS = (((10, 11), (12, 13, 14)), ((20,), (21, 22), (23, 24, 25)))


def _model(head="linear", **kw):
    return MultiHeadClassifier(CONFIG, TASKS, head=head, labels=LABELS, label_ids=LABEL_IDS,
                               **kw)


def _params(model, seed=0):
    return model.init_params(jax.random.PRNGKey(seed))


BATCH = {"encoder_input_tokens": np.array([[5, 6, 7, 8, 1, 0], [9, 4, 1, 0, 0, 0],
                                           [3, 3, 3, 3, 3, 1]], np.int32),
         "task_ids": np.array([0, 1, 1], np.int32), "labels": np.array([1, 2, 0], np.int32)}


def _reference_logits(model, params, batch):
    """numpy: T5's own encode (not the seams the model calls), mean over the
    real tokens, then each example's head by hand."""
    enc = {k: params[k] for k in ("token_embedder", "encoder")}
    hidden = np.asarray(Transformer(CONFIG).apply({"params": enc}, batch["encoder_input_tokens"],
                                                  method=Transformer.encode).hidden, np.float64)
    real = (batch["encoder_input_tokens"] != 0)[..., None]
    pooled = (hidden * real).sum(1) / real.sum(1)
    out = []
    for x, t in zip(pooled, batch["task_ids"]):
        head = params["heads"][TASKS[t]]
        if model.head == "mlp":
            x = np.tanh(x @ np.asarray(head["hidden"]["kernel"]) + np.asarray(
                head["hidden"]["bias"]))
        out.append(x @ np.asarray(head["out"]["kernel"]) + np.asarray(head["out"]["bias"]))
    return out


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_logits_are_the_mean_pooled_encoder_output_through_the_examples_head(head):
    model = _model(head)
    params = _params(model)
    logits = np.asarray(model.logits(params, BATCH))
    assert logits.shape == (3, 3)
    for row, want in zip(logits, _reference_logits(model, params, BATCH)):
        np.testing.assert_allclose(row[:len(want)], want, rtol=2e-5, atol=2e-6)
    assert logits[0, 2] == -1e10            # task_a has two labels


def test_loss_and_per_task_losses_are_numpy_cross_entropy():
    model = _model("mlp")
    params = _params(model)
    ref = _reference_logits(model, params, BATCH)
    ce = [np.log(np.exp(z).sum()) - z[y] for z, y in zip(ref, BATCH["labels"])]
    loss, metrics = model.loss_fn(params, BATCH, None, num_tasks=2)
    np.testing.assert_allclose(loss, np.mean(ce), rtol=1e-5)
    np.testing.assert_allclose(metrics["task/loss"], [ce[0], (ce[1] + ce[2]) / 2], rtol=1e-5)
    np.testing.assert_array_equal(metrics["task/target_tokens"], [1, 2])
    correct = [float(np.argmax(z) == y) for z, y in zip(ref, BATCH["labels"])]
    np.testing.assert_array_equal(metrics["task/correct_tokens"], [correct[0], sum(correct[1:])])
    assert float(metrics["target_tokens"]) == 3
    # Microbatches with the whole batch's denominators add up to the loss.
    den = model.loss_denominator(BATCH, 2)
    parts = [model.loss_fn(params, {**{k: v[s] for k, v in BATCH.items()},
                                    "loss_denominator": den}, None, 2)
             for s in (slice(0, 1), slice(1, 3))]
    np.testing.assert_allclose(sum(p[0] for p in parts), loss, rtol=1e-6)
    np.testing.assert_allclose(sum(p[1]["task/loss"] for p in parts), metrics["task/loss"],
                               rtol=1e-6)
    # A padding row (task -1) counts nowhere.
    padded = {k: np.concatenate([v, v[:1] * 0 - (k != "encoder_input_tokens")])
              for k, v in BATCH.items()}
    np.testing.assert_allclose(model.loss_fn(params, padded, None, 2)[0], loss, rtol=1e-6)


def test_an_example_never_touches_another_tasks_head():
    model = _model("mlp")
    params = _params(model)
    only_b = {k: v[1:] for k, v in BATCH.items()}           # both examples are task_b's

    def task_loss(p, t):
        return model.loss_fn(p, only_b, None, num_tasks=2)[1]["task/loss"][t]

    grads = param_names.named_leaves(jax.grad(lambda p: model.loss_fn(p, only_b, None, 2)[0])(
        params))
    for name, g in grads.items():
        if name.startswith("heads/task_a/"):
            assert not np.any(np.asarray(g)), name            # exact zeros
        else:
            assert np.any(np.asarray(g)), name
    # Per-task losses give per-task gradients of the same shared encoder.
    g_b = jax.grad(task_loss)(params, 1)
    kernel = "encoder/layers_0/attention/query/kernel"
    np.testing.assert_allclose(param_names.named_leaves(g_b)[kernel], grads[kernel], rtol=1e-5)
    assert not any(np.any(np.asarray(v))
                   for v in param_names.named_leaves(jax.grad(task_loss)(params, 0)).values())


def test_spec_round_trips_through_json():
    model = _model("mlp", hidden_dim=16)
    spec = json.loads(json.dumps(model.spec()))
    again = MultiHeadClassifier.from_spec(spec)
    assert again.spec() == model.spec() and again.architecture() == model.architecture()
    assert again.tasks == TASKS and again.labels == LABELS and again.label_ids == LABEL_IDS
    params = _params(model)
    np.testing.assert_array_equal(again.logits(params, BATCH), model.logits(params, BATCH))
    assert params["heads"]["task_a"]["hidden"]["kernel"].shape == (64, 16)


def test_the_gin_run_file_selects_the_classifier(monkeypatch):
    monkeypatch.chdir(ROOT)
    gin_config.parse(["gin/runs/multi_head.gin"], ["get_config.name = 't5_tiny'"])
    model = gin.query_parameter("train.model").scoped_configurable_fn()
    assert isinstance(model, MultiHeadClassifier) and model.head == "mlp"
    assert model.config == CONFIG
    assert model.tasks == ("synth_greater", "synth_is_sorted", "synth_palindrome",
                           "synth_parity", "synth_sign")
    assert DataConfig().pack is False
    model.check_tasks(task_names(resolve_mixture(DataConfig().mixture_or_task_name)))


def test_bad_configuration_is_one_clear_line():
    with pytest.raises(T5mtlError, match="head 'deep'"):
        _model("deep")
    with pytest.raises(T5mtlError, match="'synth_add' has no label_names"):
        MultiHeadClassifier(CONFIG, ["synth_add", "synth_parity"])
    with pytest.raises(T5mtlError, match="DataConfig.pack = False"):
        _model().feature_converter(pack=True)
    with pytest.raises(T5mtlError, match=r"data's tasks are \['synth_sign'\]"):
        _model().check_tasks(["synth_sign"])
    with pytest.raises(T5mtlError, match="no head for task 'synth_sign'"):
        _model().task_features("synth_sign", 4)
    with pytest.raises(T5mtlError, match="needs the batch's 'task_ids'"):
        _model().predict_batch(_params(_model()), {"encoder_input_tokens": BATCH[
            "encoder_input_tokens"]})


def test_the_converter_maps_each_target_to_its_label_index():
    model = MultiHeadClassifier(CONFIG, ["synth_sign", "synth_parity"])
    assert model.tasks == ("synth_parity", "synth_sign")          # the mixture's order
    assert model.labels == (("even", "odd"), ("positive", "negative"))
    lengths = {"inputs": 48, "targets": 12}
    batch = next(host_batches("synth_sign", lengths, batch_size_per_host=16, shuffle=False,
                              feature_converter=ClassLabelConverter(
                                  model.label_ids[1:], model.eos_id, model.labels[1:])))
    assert sorted(batch) == ["encoder_input_tokens", "encoder_token_types", "labels",
                             "task_ids"]
    assert not batch["encoder_token_types"].any()           # a T5 task has none
    task = seqio.get_mixture_or_task("synth_sign")
    want = [["positive", "negative"].index(ex["targets_pretokenized"].decode())
            for ex in task.get_dataset(lengths, split="train", shuffle=False).take(16)
            .as_numpy_iterator()]
    np.testing.assert_array_equal(batch["labels"], want)
    assert 0 < sum(want) < 16 and not batch["task_ids"].any()
    with pytest.raises(T5mtlError, match="targets length 8 cuts label 'positive'"):
        next(host_batches("synth_sign", {"inputs": 48, "targets": 8}, batch_size_per_host=4,
                          feature_converter=model.feature_converter(pack=False)))
    wrong = ClassLabelConverter(((tuple(b"odd"), tuple(b"zero")),), 1, (("odd", "zero"),))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="a target is none of the labels of its task"):
        list(host_batches("synth_parity", lengths, batch_size_per_host=16, shuffle=False,
                          feature_converter=wrong, num_epochs=1))


def test_scores_and_predictions_are_the_heads_label_distribution():
    model = _model("linear")
    params = _params(model)
    logp = jax.nn.log_softmax(model.logits(params, BATCH))
    targets = np.array([[12, 13, 14, 1], [23, 24, 25, 1], [99, 1, 0, 0]], np.int32)
    scores = np.asarray(model.score_batch(params, {**BATCH, "decoder_target_tokens": targets}))
    np.testing.assert_allclose(scores[:2], [logp[0, 1], logp[1, 2]], rtol=1e-6)
    assert scores[2] == -np.inf                      # not a label of task_b
    ids = np.asarray(model.predict_batch(params, BATCH, DecodeConfig(max_decode_length=6)))
    best = np.argmax(np.asarray(logp), -1)
    for row, t, k in zip(ids, BATCH["task_ids"], best):
        want = list(LABEL_IDS[t][k]) + [1]
        np.testing.assert_array_equal(row, want + [0] * (6 - len(want)))


def test_a_t5_checkpoint_fills_the_encoder_and_leaves_the_heads_fresh():
    t5 = EncoderDecoderModel(CONFIG.replace(scan_layers=True))
    source = t5.init_params(jax.random.PRNGKey(3))
    model = _model()
    fresh = _params(model)
    merged, kept = merge_params(fresh, model.adapt_params(source))
    assert sorted(kept) == sorted(n for n in param_names.named_leaves(fresh)
                                  if n.startswith("heads/"))
    src = param_names.named_leaves(EncoderDecoderModel(CONFIG).adapt_params(source))
    for name, leaf in param_names.named_leaves(merged).items():
        if not name.startswith("heads/"):
            np.testing.assert_array_equal(leaf, src[name])


def test_two_classification_tasks_train_above_chance_and_eval_reports_accuracy(tmp_path):
    tasks = ["synth_parity", "synth_sign"]
    model = MultiHeadClassifier(CONFIG, tasks)
    summary = train(str(tmp_path), model=model,
                    data=DataConfig(mixture_or_task_name=tasks, batch_size=32, pack=False,
                                    task_feature_lengths={"inputs": 48, "targets": 12}),
                    num_steps=150, optimizer=optax.adam(1e-3), log_period=50,
                    checkpoints=CheckpointConfig(async_save=False, period=1000),
                    evaluation=EvalConfig(tasks=tasks, num_examples=128, batch_size=64),
                    show_progress=False)
    acc = {t: summary["eval"][t]["accuracy"] for t in tasks}
    # Chance is 50% (balanced labels); 128 examples: a standard error of 4.4 points.
    assert acc["synth_parity"] >= 75, acc
    assert np.mean(list(acc.values())) >= 62, acc
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows[-1]["task/synth_parity/loss"] < train_rows[0]["task/synth_parity/loss"]
    saved = json.load(open(tmp_path / "model.json"))
    assert saved["model"]["class"] == "t5mtl.models.multi_head:MultiHeadClassifier"
    assert saved["tasks"] == tasks
    # Reloaded from model.json, rank classification over the labels (the
    # head's log-probabilities as scores) picks what prediction picks.
    loaded = t5mtl.load(str(tmp_path))
    assert isinstance(loaded.model, MultiHeadClassifier) and loaded.model.tasks == tuple(tasks)
    rank = rank_classify(loaded.model, loaded.params, "synth_parity", ("even", "odd"),
                         num_examples=128, input_length=48)
    assert rank["accuracy"] == acc["synth_parity"]
