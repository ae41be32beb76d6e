"""Prompt tuning (Lester et al., 2021): exact parameter counts, the three
initializations from a base's embeddings (through the trainer), gradients
against finite differences, and a tuned prompt beating the frozen base."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

import t5mtl
import t5mtl.data.registry  # noqa: F401  (registers the synthetic suite)
from t5mtl.data.batches import scoring_batch
from t5mtl.data.data_config import DataConfig
from t5mtl.errors import T5mtlError
from t5mtl.models import get_config, param_names
from t5mtl.models.base import WarmStart
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.peft import PromptTuning
from t5mtl.train.optimizers import create_optimizer
from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train

PROMPT = ["encoder_input/.*"]
DATA = dict(batch_size=8, pack=False, task_feature_lengths={"inputs": 32, "targets": 8})


def _counts(name, length):
    model = EncoderDecoderModel(get_config(name), encoder_input=PromptTuning(length))
    sizes = {k: int(np.prod(v.shape))
             for k, v in param_names.flatten(model.abstract_params()).items()}
    trainable = sum(sizes[k] for k in param_names.select(list(sizes), PROMPT))
    return trainable, sum(sizes.values())


def _t5_1_1_size(vocab, d, ff, heads, kv, layers, buckets=32):
    """T5 1.1 parameters counted by hand: untied embedding and logits; per
    encoder layer 4 attention projections, a gated-GELU MLP (wi_0, wi_1,
    wo) and 2 norms; per decoder layer 2 attentions, the MLP and 3 norms; a
    relative-position table and a final norm per stack."""
    attention, mlp = 4 * d * heads * kv, 3 * d * ff
    encoder = layers * (attention + mlp + 2 * d) + buckets * heads + d
    decoder = layers * (2 * attention + mlp + 3 * d) + buckets * heads + d
    return 2 * vocab * d + encoder + decoder


def test_trainable_parameter_counts_without_allocation():
    # Lester et al.: a 100-token prompt on T5 XXL (d_model 4096) is 409,600.
    trainable, total = _counts("t5_1_1_xxl", 100)
    assert trainable == 100 * 4096 == 409_600
    assert total - trainable == _t5_1_1_size(32128, 4096, 10240, 64, 64, 24) == 11_135_332_352
    assert f"{100 * trainable / total:.4f}%" == "0.0037%"
    trainable, total = _counts("t5_1_1_small", 100)
    assert trainable == 51_200
    assert total - trainable == _t5_1_1_size(32128, 512, 1024, 6, 64, 8) == 76_961_152
    assert f"{100 * trainable / total:.4f}%" == "0.0665%"


def test_unknown_init_is_one_clear_error():
    with pytest.raises(T5mtlError, match="PromptTuning.init='vocab'"):
        PromptTuning(4, init="vocab")


def _tune(model_dir, base, init, num_steps=1, lr=0.0, task="synth_parity", length=6, seed=0):
    train(str(model_dir), model=EncoderDecoderModel(
              get_config("t5_tiny"), encoder_input=PromptTuning(length, init=init)),
          data=DataConfig(mixture_or_task_name=task, **DATA), num_steps=num_steps,
          trainable_patterns=PROMPT, optimizer=create_optimizer("adamw", learning_rate=lr),
          checkpoints=CheckpointConfig(period=100, async_save=False, init_from=str(base),
                                       save_trainable_only=True),
          evaluation=EvalConfig(), log_period=100, show_progress=False, seed=seed)
    return t5mtl.load(str(model_dir)).params["encoder_input"]["vectors"]


@pytest.mark.parametrize("init", ["random_uniform", "sampled_vocab", "class_labels"])
def test_inits_from_the_base_embeddings_through_the_trainer(tmp_path, peft_base, init):
    embedding = np.asarray(t5mtl.load(str(peft_base)).params["token_embedder"]["embedding"])
    # A zero learning rate: the saved prompt is the initialization.
    prompt = np.asarray(_tune(tmp_path / init, peft_base, init))
    assert prompt.shape == (6, embedding.shape[1])
    rows_of_table = [int(np.flatnonzero((embedding == row).all(1))[0])
                     if (embedding == row).all(1).any() else None for row in prompt]
    if init == "random_uniform":
        assert rows_of_table == [None] * 6
        assert np.abs(prompt).max() <= 0.5 and prompt.std() > 0.2    # U(-.5, .5): std .29
        return
    vocab = seqio.get_mixture_or_task("synth_parity").output_features["targets"].vocabulary
    labels = 0
    if init == "class_labels":     # synth_parity's labels: "even", "odd"
        for i, label in enumerate(("even", "odd")):
            mean = embedding[vocab.encode(label)].mean(0)
            np.testing.assert_allclose(prompt[i], mean, rtol=1e-6, atol=1e-7)
        labels = 2
    sampled = rows_of_table[labels:]
    assert None not in sampled and len(set(sampled)) == len(sampled)     # distinct rows
    assert json.load(open(tmp_path / init / "model.json"))["base"]["path"] == str(peft_base)


def test_class_label_init_needs_labels():
    model = EncoderDecoderModel(get_config("t5_tiny"),
                                encoder_input=PromptTuning(3, init="class_labels"))
    params = nn.unbox(jax.jit(model.init_boxed)(jax.random.PRNGKey(0)))
    vocab = seqio.ByteVocabulary()
    with pytest.raises(T5mtlError, match="no label names"):
        model.warm_start(params, ["encoder_input/vectors"],
                         WarmStart(vocab, (), jax.random.PRNGKey(0)))
    # More labels than prompt slots: the first `length` labels.
    out = model.warm_start(params, ["encoder_input/vectors"],
                           WarmStart(vocab, ("a", "b", "c", "d"), jax.random.PRNGKey(0)))
    emb = np.asarray(params["token_embedder"]["embedding"])
    np.testing.assert_allclose(out["encoder_input"]["vectors"],
                               emb[[vocab.encode(c)[0] for c in "abc"]], rtol=1e-6)


@pytest.mark.parametrize("scan", [False, True])
def test_prompt_gradient_matches_finite_differences(scan):
    cfg = get_config("t5_tiny", scan_layers=scan)
    model = EncoderDecoderModel(cfg, encoder_input=PromptTuning(4))
    params = nn.unbox(jax.jit(model.init_boxed)(jax.random.PRNGKey(0)))
    rng = np.random.RandomState(0)
    batch = scoring_batch(rng.randint(3, 300, (2, 12)).tolist(),
                          rng.randint(3, 300, (2, 5)).tolist())

    def loss(vectors):
        p = {**params, "encoder_input": {"vectors": vectors}}
        return model.loss_fn(p, batch, None)[0]
    vectors = params["encoder_input"]["vectors"]
    grad = jax.jit(jax.grad(loss))(vectors)
    direction = jnp.asarray(rng.normal(size=vectors.shape), jnp.float32)
    direction /= jnp.linalg.norm(direction)
    eps = 1e-2
    f = jax.jit(loss)
    numeric = (f(vectors + eps * direction) - f(vectors - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(float(jnp.vdot(grad, direction)), float(numeric), rtol=2e-2)
    assert float(jnp.linalg.norm(grad)) > 0


def _eval_nll(model_dir, task="synth_parity", n=32):
    """Mean negative log-likelihood of the task's validation targets."""
    loaded = t5mtl.load(str(model_dir))
    ds = seqio.get_mixture_or_task(task).get_dataset(
        {"inputs": 32, "targets": 8}, split="validation", shuffle=False)
    examples = list(ds.take(n).as_numpy_iterator())
    inputs = [e["inputs_pretokenized"].decode() for e in examples]
    targets = [e["targets_pretokenized"].decode() for e in examples]
    return -float(np.mean(loaded.score(inputs, targets)))


def test_tuned_prompt_beats_the_frozen_base(tmp_path, peft_base):
    before = _eval_nll(peft_base)
    _tune(tmp_path / "tuned", peft_base, "sampled_vocab", num_steps=30, lr=0.3)
    after = _eval_nll(tmp_path / "tuned")
    print(f"synth_parity validation NLL: base {before:.3f}, prompt-tuned {after:.3f}")
    assert after < 0.9 * before
    # The base is untouched: the run saved nothing but the prompt.
    loaded = t5mtl.load(str(tmp_path / "tuned"))
    base = param_names.flatten(t5mtl.load(str(peft_base)).params)
    for name, value in param_names.flatten(loaded.params).items():
        if name != "encoder_input/vectors":
            np.testing.assert_array_equal(value, base[name])
