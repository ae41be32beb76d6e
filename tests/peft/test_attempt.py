"""ATTEMPT (Asai et al., 2022): the instance prompt and attention against numpy
written from the paper's equations, gradients against a separately written
function, no gradient to the frozen sources, scan/KV-cache parity, exact
parameter counts, config errors, and target training through the trainer
leaving the sources and the base bit-identical."""
import json
import math
import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import t5mtl
import t5mtl.data.registry  # noqa: F401  (registers the synthetic suite)
from t5mtl.errors import T5mtlError
from t5mtl.models import Transformer, get_config, param_names
from t5mtl.models.base import WarmStart
from t5mtl.models.encoder_decoder import DecodeConfig, EncoderDecoderModel
from t5mtl.models.layout import stack_layers
from t5mtl.peft import Attempt, PromptTuning
from t5mtl.peft.attempt import attention_weights, config_trainable_count, trainable_count
from t5mtl.train import model_dir

L, R, T = 4, 8, 2           # prompt length, bottleneck, targets
CFG = get_config("t5_tiny")


def _source_dir(path, prompt, base_path="/some/base", fingerprint="0" * 64):
    """A prompt-tuning adapter directory as the trainer writes one."""
    model_dir.save_params(str(path), {"encoder_input": {"vectors": prompt}})
    model_dir.write_model_json(str(path), EncoderDecoderModel(
        CFG, encoder_input=PromptTuning(prompt.shape[0])),
        base={"path": base_path, "step": 2, "fingerprint": fingerprint})
    return str(path)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("attempt_sources")
    rng = np.random.RandomState(0)
    prompts = [rng.randn(L, CFG.d_model).astype(np.float32) for _ in range(3)]
    return [_source_dir(root / f"s{i}", p) for i, p in enumerate(prompts)], np.stack(prompts)


def _model(paths, scan=False, **kw):
    cfg = CFG.replace(scan_layers=scan)
    return EncoderDecoderModel(cfg, encoder_input=Attempt(
        sources=paths, length=L, num_targets=T, bottleneck=R, **kw))


@pytest.fixture(scope="module")
def setup(sources):
    """A model with 3 sources and 2 targets; params with a live layer norm."""
    model = _model(sources[0])
    params = nn.unbox(jax.jit(model.init_boxed)(jax.random.PRNGKey(0)))
    rng = np.random.RandomState(1)
    own = params["encoder_input"]
    own = {**own, "down": {"kernel": jnp.asarray(rng.randn(CFG.d_model, R) * 0.3, jnp.float32)},
           "up": {"kernel": jnp.asarray(rng.randn(R, CFG.d_model) * 0.3, jnp.float32)},
           "layer_norm": {"scale": jnp.asarray(1 + 0.3 * rng.randn(CFG.d_model), jnp.float32),
                          "bias": jnp.asarray(0.1 * rng.randn(CFG.d_model), jnp.float32)}}
    params = {**params, "encoder_input": own}
    tokens = rng.randint(2, 250, (3, 9)).astype(np.int32)
    tokens[1, 5:] = 0
    tokens[2, 7:] = 0
    task_ids = np.array([0, 1, 1], np.int32)
    return model, params, tokens, task_ids


def _numpy_attempt(emb_table, tokens, task_ids, own, sources):
    """The paper's equations in float64 numpy, row by row."""
    d = emb_table.shape[1]
    own = {k: (np.asarray(v, np.float64) if not isinstance(v, dict) else
               {kk: np.asarray(vv, np.float64) for kk, vv in v.items()}) for k, v in own.items()}
    prompts, attentions = [], []
    for row, t in zip(tokens, task_ids):
        x = emb_table[row[row != 0]].astype(np.float64).max(axis=0)
        h = own["down"]["kernel"].T @ x
        h = h / (1 + np.exp(-h))                                   # SiLU
        h = own["up"]["kernel"].T @ h
        h = (h - h.mean()) / np.sqrt(h.var() + 1e-5)
        h = h * own["layer_norm"]["scale"] + own["layer_norm"]["bias"]
        cands = list(sources.astype(np.float64)) + [own["targets"][t]]
        logits = np.array([c.max(axis=0) @ h for c in cands]) / (d * math.e)
        a = np.exp(logits - logits.max())
        a /= a.sum()
        prompts.append(own["targets"][t] + sum(ai * c for ai, c in zip(a, cands)))
        attentions.append(a)
    return np.stack(prompts), np.stack(attentions)


def test_prompt_and_attention_match_numpy_from_the_equations(setup, sources):
    model, params, tokens, task_ids = setup
    per_pos = np.broadcast_to(task_ids[:, None], tokens.shape)
    out, state = model.module.apply(
        {"params": params}, tokens, None, jnp.asarray(per_pos),
        method=Transformer.encoder_inputs, mutable=["intermediates"])
    emb = np.asarray(params["token_embedder"]["embedding"])
    want_prompt, want_attn = _numpy_attempt(emb, tokens, task_ids, params["encoder_input"],
                                            sources[1])
    got = np.asarray(out.embedded)
    np.testing.assert_allclose(got[:, :L], want_prompt, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[:, L:], emb[tokens])
    attn = np.asarray(state["intermediates"]["encoder_input"]["attention"][0])
    np.testing.assert_allclose(attn, want_attn, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(attention_weights(model, params, tokens, task_ids), want_attn,
                               rtol=1e-5, atol=1e-7)
    assert np.ptp(want_attn, axis=1).min() > 1e-3          # the attention is not uniform
    np.testing.assert_array_equal(np.asarray(out.segment_ids),
                                  np.concatenate([np.ones((3, L)), tokens != 0], 1))
    np.testing.assert_array_equal(np.asarray(out.task_ids)[:, :L + 1],
                                  np.repeat(task_ids[:, None], L + 1, 1))


def _reference_prompts(own, pooled, sources, target_ids, temperature):
    """The instance prompts written again, independently of the module."""
    h = jax.nn.silu(pooled @ own["down"]["kernel"]) @ own["up"]["kernel"]
    mu = h.mean(-1, keepdims=True)
    h = (h - mu) * jax.lax.rsqrt(((h - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    h = h * own["layer_norm"]["scale"] + own["layer_norm"]["bias"]
    out = []
    for i, t in enumerate(target_ids):
        cands = jnp.concatenate([sources, own["targets"][t][None]], 0)
        a = jax.nn.softmax(cands.max(1) @ h[i] / temperature)
        out.append(own["targets"][t] + jnp.tensordot(a, cands, 1))
    return jnp.stack(out)


def test_gradients_match_a_separately_written_function_and_skip_the_sources(
        setup, sources, monkeypatch):
    model, params, tokens, task_ids = setup
    per_pos = jnp.asarray(np.broadcast_to(task_ids[:, None], tokens.shape))
    weights = jnp.asarray(np.random.RandomState(2).randn(3, L, CFG.d_model), jnp.float32)

    def module_loss(own, params=params):
        out = model.module.apply({"params": {**params, "encoder_input": own}}, tokens, None,
                                 per_pos, method=Transformer.encoder_inputs)
        return jnp.sum(out.embedded[:, :L] * weights)

    emb = params["token_embedder"]["embedding"]
    pooled = jnp.stack([emb[row[row != 0]].max(0) for row in tokens])
    src = jnp.asarray(sources[1])

    def reference_loss(own):
        return jnp.sum(_reference_prompts(own, pooled, src, task_ids, CFG.d_model * math.e)
                       * weights)

    own = params["encoder_input"]
    got, want = jax.jit(jax.grad(module_loss))(own), jax.jit(jax.grad(reference_loss))(own)
    for name, g in param_names.flatten(got).items():
        w = param_names.flatten(want)[name]
        assert float(jnp.max(jnp.abs(w))) > 0, name
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6, err_msg=name)

    # The sources are live (changing them changes the prompt) but no
    # gradient reaches them: the module reads them behind stop_gradient.
    def loss_of_sources(s):
        monkeypatch.setattr(Attempt, "source_prompts", lambda self, d: s)
        return module_loss(own)
    live = jax.jit(loss_of_sources)
    assert abs(float(live(src * 1.5)) - float(live(src))) > 1e-3
    grad_sources = jax.jit(jax.grad(loss_of_sources))(src)
    monkeypatch.undo()
    assert float(jnp.max(jnp.abs(grad_sources))) == 0.0
    assert float(jnp.max(jnp.abs(jax.jit(jax.grad(
        lambda s: jnp.sum(_reference_prompts(own, pooled, s, task_ids, 100.0))))(src)))) > 0


def _greedy_without_cache(full_logits, params, enc, n):
    """Step-by-step argmax over a full recomputation (no KV cache), task ids in."""
    tokens = enc["encoder_input_tokens"]
    out = np.zeros((tokens.shape[0], n), np.int32)
    done = np.zeros(tokens.shape[0], bool)
    for i in range(n):
        dec_in = np.concatenate([np.zeros((tokens.shape[0], 1), np.int32), out[:, :n - 1]], 1)
        logits = np.asarray(full_logits(params, {**enc, "decoder_input_tokens": dec_in}))
        tok = np.where(done, 0, logits[:, i].argmax(-1))
        out[:, i] = tok
        done |= tok == 1
    return out


def test_scan_and_kv_cache_decoding_agree(setup, sources):
    model, params, tokens, task_ids = setup
    batch = {"encoder_input_tokens": tokens,
             "encoder_task_ids": np.where(tokens != 0, task_ids[:, None], -1).astype(np.int32),
             "decoder_input_tokens": np.random.RandomState(3).randint(
                 2, 250, (3, 4)).astype(np.int32)}
    full_logits = jax.jit(model.logits)
    logits = np.asarray(full_logits(params, batch))
    scanned = _model(sources[0], scan=True)
    s_params = stack_layers(params, scanned.config)
    np.testing.assert_allclose(np.asarray(jax.jit(scanned.logits)(s_params, batch)), logits,
                               atol=1e-5)
    # (The scanned KV cache against the per-layer one: tests/models/decoding.)
    enc = {k: batch[k] for k in ("encoder_input_tokens", "encoder_task_ids")}
    ids = np.asarray(model.predict_batch(params, enc, DecodeConfig(max_decode_length=4)))
    np.testing.assert_array_equal(ids, _greedy_without_cache(full_logits, params, enc, 4))
    encoded = model.module.apply({"params": params}, tokens, None, jnp.asarray(
        batch["encoder_task_ids"]), method=Transformer.encode)
    assert encoded.hidden.shape[1] == tokens.shape[1] + L


def test_trainable_parameter_count_formula_tree_and_docs(sources):
    model = _model(sources[0])
    sizes = {k: int(np.prod(v.shape))
             for k, v in param_names.flatten(model.abstract_params()).items()}
    own = sum(v for k, v in sizes.items() if k.startswith("encoder_input/"))
    assert own == trainable_count(CFG.d_model, L, R, T) == T * L * 64 + 2 * 64 * R + 2 * 64
    base = sum(v for k, v in sizes.items() if not k.startswith("encoder_input/"))
    assert base == sum(int(np.prod(v.shape)) for v in param_names.flatten(
        EncoderDecoderModel(CFG).abstract_params()).values())
    docs = (Path(__file__).parents[2] / "docs" / "peft.md").read_text()
    section = docs[docs.index("## ATTEMPT"):]
    for name, targets, figure in (("t5_1_1_small", 1, 154_624), ("t5_1_1_base", 1, 231_936),
                                  ("t5_1_1_small", 8, 513_024), ("t5_1_1_base", 8, 769_536)):
        assert config_trainable_count(get_config(name), 100, 100, targets) == figure
        row = re.search(rf"\| {name} \|.*", section).group(0)
        assert f"{figure:,}" in row, (name, targets)


def test_bad_sources_are_one_clear_error(tmp_path, sources, setup):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(T5mtlError, match=f"Attempt.sources: {missing} is not an adapter"):
        _model([sources[0][0], missing]).abstract_params()     # through the model's init
    short = _source_dir(tmp_path / "short", np.zeros((L + 1, CFG.d_model), np.float32))
    with pytest.raises(T5mtlError, match=f"{short} holds a prompt of shape \\[5, 64\\]"):
        Attempt(sources=(short,), length=L).source_prompts(CFG.d_model)
    other = _source_dir(tmp_path / "other", np.zeros((L, CFG.d_model), np.float32),
                        base_path="/another/base", fingerprint="1" * 64)
    with pytest.raises(T5mtlError, match=f"{other} was trained on another base"):
        Attempt(sources=(sources[0][0], other), length=L).source_prompts(CFG.d_model)
    # Against the run's base (warm_start): the recorded fingerprint must match.
    model, params = setup[:2]
    with pytest.raises(T5mtlError, match=f"Attempt.sources: {sources[0][0]} was trained on "
                                         f"the base /some/base"):
        model.warm_start(params, ["encoder_input/targets"],
                         WarmStart(None, (), jax.random.PRNGKey(0)))
    with pytest.raises(T5mtlError, match="Attempt.init='vocab'"):
        Attempt(init="vocab")
    # Tasks: the run's must be the targets'; evaluation of an unknown one is refused.
    named = EncoderDecoderModel(CFG, encoder_input=Attempt(
        sources=sources[0], length=L, num_targets=2, tasks=("synth_parity", "synth_sign")))
    with pytest.raises(T5mtlError, match="data's tasks are \\['synth_parity', 'synth_greater'\\]"):
        named.check_tasks(["synth_parity", "synth_greater"])
    with pytest.raises(T5mtlError, match="num_targets=2, but the run mixes 3 tasks"):
        _model(sources[0]).check_tasks(["a", "b", "c"])
    with pytest.raises(T5mtlError, match="no target prompt for task 'synth_greater'"):
        named.task_features("synth_greater", 4)
    np.testing.assert_array_equal(named.task_features("synth_sign", 4)["encoder_task_ids"],
                                  np.ones((4, 1)))


def test_multi_task_rows_take_their_own_target_prompt(setup, sources):
    """Evaluation's per-task feature ([b, 1] task id, from `Attempt.tasks`)
    scores as per-position task ids do, and the two targets differ."""
    from t5mtl.data.batches import scoring_batch
    _, params, tokens, _ = setup
    model = _model(sources[0], tasks=("synth_parity", "synth_sign"))
    batch = scoring_batch([row[row != 0].tolist() + [1] for row in tokens], [[5, 6, 1]] * 3)
    score = jax.jit(model.score_batch)
    by_name = score(params, {**batch, **model.task_features("synth_sign", 3)})
    by_pos = score(params, {**batch, "encoder_task_ids": np.where(
        batch["encoder_input_tokens"] != 0, 1, -1).astype(np.int32)})
    other = score(params, {**batch, **model.task_features("synth_parity", 3)})
    np.testing.assert_allclose(by_name, by_pos, rtol=1e-6)
    assert np.max(np.abs(np.asarray(by_name) - np.asarray(other))) > 1e-4


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory, peft_base):
    """bench/attempt.py --quick: 2 source prompts and a target (ATTEMPT and
    plain prompt tuning), every run through the trainer."""
    from bench.attempt import main
    out = tmp_path_factory.mktemp("attempt_bench")
    return out, main(["--quick", "--base", str(peft_base), "--out", str(out)])


@pytest.mark.slow
def test_bench_quick_mode(quick_bench):
    out, text = quick_bench
    results = json.load(open(out / "results.json"))
    row = results["accuracy"]["synth_sign"]
    assert set(row) == {"chance", "none", "prompt", "attempt_single"}
    assert all(0 <= v <= 100 and v * 8 / 100 == round(v * 8 / 100) for v in row.values())
    weights = results["attention"]["attempt_single"]["synth_sign"]
    assert len(weights) == 3 and abs(sum(weights) - 1) < 1e-5
    assert "| chance (majority class) |" in text and "uniform: 0.333" in text


def test_target_training_leaves_sources_and_base_bit_identical(quick_bench, peft_base):
    """The bench's ATTEMPT run (trainer, trainable patterns encoder_input/.*,
    save_trainable_only) on real prompt-tuning sources."""
    out, _ = quick_bench
    paths = [str(out / "sources" / t / "prompt_sampled_vocab" / "0")
             for t in ("synth_parity", "synth_greater")]
    target = out / "attempt_single_synth_sign"
    spec = json.load(open(target / "model.json"))
    assert spec["model"]["spec"]["encoder_input"]["args"]["sources"] == paths
    saved = param_names.flatten(model_dir.saved_params(str(target)))
    assert sorted(saved) == ["encoder_input/down/kernel", "encoder_input/layer_norm/bias",
                             "encoder_input/layer_norm/scale", "encoder_input/targets",
                             "encoder_input/up/kernel"]
    loaded = t5mtl.load(str(target))
    d = loaded.model.config.d_model
    np.testing.assert_array_equal(
        loaded.model.encoder_input.source_prompts(d),
        np.stack([model_dir.saved_params(p)["encoder_input"]["vectors"] for p in paths]))
    base_params = model_dir.load_params(str(peft_base))[1]
    trained = param_names.flatten(loaded.params)
    for name, value in param_names.flatten(base_params).items():
        np.testing.assert_array_equal(trained[name], value, err_msg=name)
    # The target prompt trained away from its init (vocabulary rows).
    emb = np.asarray(base_params["token_embedder"]["embedding"])
    rows = np.asarray(trained["encoder_input/targets"]).reshape(-1, d)
    assert not any((emb == row).all(1).any() for row in rows)
