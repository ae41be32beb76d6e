"""HyperPrompt-Global (He et al., 2022) on the attention-prefix seam: the
generated prefixes against a numpy port of the paper's equations, gradients
against a separately written jnp function, scan and KV-cache parity, per-task
behaviour, a frozen backbone, parameter counts, and bench/hyperprompt.py's
quick multi-task run through the trainer into an adapter directory."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import t5mtl
from t5mtl.errors import T5mtlError
from t5mtl.models import get_config, param_names
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.models.layout import stack_layers
from t5mtl.peft import HyperPrompt
from t5mtl.peft.hyperprompt import trainable_params
from t5mtl.train.train_step import TrainState, make_train_step
from tests.peft.test_prompt_tuning import _t5_1_1_size

TASKS = ("task_a", "task_b", "task_c")
PREFIX = ["attention_prefix/.*"]
L, T, B = 3, 8, 5          # prompt length, task_dim, bottleneck of the tiny tests


def _config(**kw):
    # d_kv 8: attention width 4 x 8 = 32 differs from d_model 64, as in T5 1.1.
    return get_config("t5_tiny", d_kv=8, num_decoder_layers=3, **kw)


def _model(cfg):
    return EncoderDecoderModel(cfg, attention_prefix=HyperPrompt(
        TASKS, length=L, task_dim=T, bottleneck=B))


@pytest.fixture(scope="module")
def setup():
    cfg = _config()
    model = _model(cfg)
    params = nn.unbox(jax.jit(model.init_boxed)(jax.random.PRNGKey(0)))
    rng = np.random.RandomState(0)
    enc = rng.randint(2, 300, (4, 9)).astype(np.int32)
    enc[1, 6:] = 0
    dec = rng.randint(2, 300, (4, 6)).astype(np.int32)
    dec[:, 0] = 0
    task = np.array([2, 0, 2, 1], np.int32)
    task_ids = np.where(enc != 0, task[:, None], -1).astype(np.int32)
    batch = {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
             "decoder_target_tokens": np.concatenate([dec[:, 1:], np.ones((4, 1), np.int32)], 1),
             "encoder_task_ids": task_ids}
    return cfg, model, params, batch, task


def _prefix(model, params, stack, num_layers, task_ids):
    return model.module.apply({"params": params}, stack, num_layers, task_ids.shape[0],
                              task_ids, method=lambda m, *a: m.attention_prefix(*a))


def reference_prompts(p, stack, task, layer, heads, kv, xp=np):
    """The paper's equations for one (task, layer), written out directly:
    I = U_t relu(D_t [k; z]), D = H_D(I) (d x b), U = H_U(I) (b x h kv),
    P_kv = relu(P D) U, split per head."""
    k, z = p["task_embedding"][task], p[f"layer_embedding_{stack}"][layer]
    i = xp.maximum(xp.concatenate([k, z]) @ p["task_down"], 0) @ p["task_up"]
    out = []
    for kind, prompt in (("key", p["global_key"]), ("value", p["global_value"])):
        d = prompt.shape[1]
        down = (i @ p[f"{kind}_down"]).reshape(d, -1)
        up = (i @ p[f"{kind}_up"]).reshape(down.shape[1], heads * kv)
        out.append((xp.maximum(prompt @ down, 0) @ up).reshape(prompt.shape[0], heads, kv))
    return out


def test_prefix_shapes_masks_and_values_match_the_papers_equations(setup):
    cfg, model, params, batch, task = setup
    p64 = {k: np.asarray(v, np.float64) for k, v in params["attention_prefix"].items()}
    for stack, layers in (("encoder", cfg.num_layers), ("decoder", cfg.n_decoder_layers)):
        prefix = _prefix(model, params, stack, layers, batch["encoder_task_ids"])
        assert prefix.key.shape == prefix.value.shape == (layers, 4, L, cfg.num_heads, cfg.d_kv)
        assert prefix.mask.shape == (layers, 4, L) and bool(np.all(prefix.mask))
        for m in range(layers):
            for row, tau in enumerate(task):
                want_k, want_v = reference_prompts(p64, stack, tau, m, cfg.num_heads, cfg.d_kv)
                np.testing.assert_allclose(prefix.key[m, row], want_k, rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(prefix.value[m, row], want_v, rtol=1e-4, atol=1e-5)
        # Same task, same prefix (rows 0 and 2); other tasks, other prefixes.
        np.testing.assert_array_equal(prefix.key[:, 0], prefix.key[:, 2])
        for a, b in ((0, 1), (0, 3), (1, 3)):
            assert np.abs(np.asarray(prefix.key[:, a] - prefix.key[:, b])).max() > 1e-3
    # A row of padding only (-1 everywhere) gets task 0's prefix.
    pad = _prefix(model, params, "encoder", cfg.num_layers, np.full((1, 9), -1, np.int32))
    first = _prefix(model, params, "encoder", cfg.num_layers, np.zeros((1, 9), np.int32))
    np.testing.assert_array_equal(pad.key, first.key)


def test_hypernetwork_gradients_match_a_separately_written_function(setup):
    cfg, model, params, batch, task = setup
    rng = np.random.RandomState(1)
    shape = (cfg.num_layers, 4, L, cfg.num_heads, cfg.d_kv)
    wk, wv = jnp.asarray(rng.randn(*shape)), jnp.asarray(rng.randn(*shape))

    def via_module(own):
        prefix = _prefix(model, {**params, "attention_prefix": own}, "encoder", cfg.num_layers,
                         batch["encoder_task_ids"])
        return jnp.sum(prefix.key * wk) + jnp.sum(prefix.value * wv)

    def via_reference(own):
        total = 0.0
        for m in range(cfg.num_layers):
            for row, tau in enumerate(task):
                k, v = reference_prompts(own, "encoder", int(tau), m, cfg.num_heads, cfg.d_kv,
                                         xp=jnp)
                total = total + jnp.sum(k * wk[m, row]) + jnp.sum(v * wv[m, row])
        return total

    own = params["attention_prefix"]
    got, want = jax.jit(jax.grad(via_module))(own), jax.jit(jax.grad(via_reference))(own)
    for name in own:
        if name == "layer_embedding_decoder":     # the encoder's prefix does not use it
            assert not np.any(np.asarray(got[name]))
            continue
        assert np.abs(np.asarray(want[name])).max() > 0, name
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_logits_equal_with_scan_and_under_the_kv_cache(setup):
    cfg, model, params, batch, _ = setup
    logits_fn = jax.jit(model.logits)
    full = np.asarray(logits_fn(params, batch))
    other = {**batch, "encoder_task_ids": np.where(batch["encoder_task_ids"] < 0, -1,
                                                   (batch["encoder_task_ids"] + 1) % 3)}
    assert np.abs(np.asarray(logits_fn(params, other)) - full).max() > 1e-2  # the task matters
    scanned = _model(cfg.replace(scan_layers=True))
    np.testing.assert_allclose(
        np.asarray(jax.jit(scanned.logits)(stack_layers(params, scanned.config), batch)),
        full, atol=1e-5)
    # Teacher-forced incremental decoding: prefill, then one token per step.
    prefill, step = model.decode_fns(batch["decoder_input_tokens"].shape[1])
    decoder_inputs = {k: batch[k] for k in ("encoder_input_tokens", "encoder_task_ids")}
    logits, state = jax.jit(prefill)(params, decoder_inputs)
    steps = [np.asarray(logits)]
    step = jax.jit(step)
    for i in range(1, batch["decoder_input_tokens"].shape[1]):
        logits, state = step(params, state, jnp.asarray(batch["decoder_input_tokens"][:, i]), i)
        steps.append(np.asarray(logits))
    np.testing.assert_allclose(np.stack(steps, 1), full, atol=1e-4)


def test_frozen_backbone_only_the_prefix_trains_and_the_loss_falls(setup):
    """Three tasks whose answer is the task's own token: 15 Adam steps on the
    HyperPrompt parameters alone."""
    cfg, model, params, _, _ = setup
    rng = np.random.RandomState(2)
    enc = rng.randint(2, 300, (12, 9)).astype(np.int32)
    task = np.arange(12, dtype=np.int32) % 3
    batch = {"encoder_input_tokens": enc,
             "encoder_task_ids": np.broadcast_to(task[:, None], enc.shape).astype(np.int32),
             "decoder_input_tokens": np.stack([np.zeros(12, np.int32), 20 + task], 1),
             "decoder_target_tokens": np.stack([20 + task, np.ones(12, np.int32)], 1)}
    names = param_names.select(list(param_names.flatten(params)), PREFIX)
    tx = optax.adam(3e-2)
    step = jax.jit(make_train_step(model.loss_fn, tx, trainable_names=names))
    state = TrainState.create(params, tx, jax.random.PRNGKey(0), names)
    losses = []
    for _ in range(15):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0], losses
    before, after = param_names.flatten(params), param_names.flatten(state.params)
    for name in before:
        if name.startswith("attention_prefix/"):
            assert np.abs(np.asarray(after[name]) - before[name]).max() > 0, name
        else:
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def _tree_size(cfg, num_tasks, **kw):
    """(HyperPrompt's parameters, all parameters) of the real tree, by shape."""
    model = EncoderDecoderModel(cfg, attention_prefix=HyperPrompt(
        tuple(f"t{i}" for i in range(num_tasks)), **kw))
    sizes = {k: int(np.prod(v.shape))
             for k, v in param_names.flatten(model.abstract_params()).items()}
    return sum(sizes[k] for k in param_names.select(list(sizes), PREFIX)), sum(sizes.values())


def test_trainable_parameter_count_formula_tree_and_docs_figures():
    cfg = _config()
    got, _ = _tree_size(cfg, 3, length=L, task_dim=T, bottleneck=B)
    assert got == trainable_params(cfg, 3, L, T, B)
    # By hand: 2 l d + (T + L_enc + L_dec) t + 3 t^2 + 2 t b (d + h kv).
    assert got == 2 * L * 64 + (3 + 2 + 3) * T + 3 * T * T + 2 * T * B * (64 + 4 * 8)
    # docs/peft.md's table: l 16, t 32, b 32, 8 tasks (GLUE's, as in the paper);
    # the backbones counted by hand (test_prompt_tuning's T5 1.1 formula).
    for name, dims, prefix, total in (
            ("t5_1_1_small", (32128, 512, 1024, 6, 64, 8), 1_855_232, 78_816_384),
            ("t5_1_1_base", (32128, 768, 2048, 12, 64, 12), 3_174_400, 250_752_256),
            ("t5_1_1_xxl", (32128, 4096, 10240, 64, 64, 24), 16_913_152, 11_152_245_504)):
        assert trainable_params(get_config(name), 8) == prefix, name
        assert _t5_1_1_size(*dims) + prefix == total, name
    for prefix, total, share in ((1_855_232, 78_816_384, "2.35%"),
                                 (3_174_400, 250_752_256, "1.27%"),
                                 (16_913_152, 11_152_245_504, "0.15%")):
        assert f"{100 * prefix / total:.2f}%" == share


def test_bad_input_is_one_clear_error(setup):
    cfg, model, params, batch, _ = setup
    with pytest.raises(T5mtlError, match="no encoder_task_ids"):
        model.logits(params, {k: v for k, v in batch.items() if k != "encoder_task_ids"})
    packed_row = batch["encoder_task_ids"].copy()
    packed_row[0, 5:] = 1
    with pytest.raises(T5mtlError, match=r"tasks \[1, 2\].*pack=False"):
        model.logits(params, {**batch, "encoder_task_ids": packed_row})
    with pytest.raises(T5mtlError, match="task id 7 but only 3 tasks"):
        model.logits(params, {**batch, "encoder_task_ids": np.full((4, 9), 7, np.int32)})
    with pytest.raises(T5mtlError, match="HyperPrompt needs unpacked rows"):
        model.feature_converter(pack=True)
    with pytest.raises(T5mtlError, match=r"data's tasks are \['task_a', 'task_c'\]"):
        model.check_tasks(["task_a", "task_c"])
    with pytest.raises(T5mtlError, match="no task embedding for task .glue_rte."):
        model.task_features("glue_rte", 2)
    with pytest.raises(T5mtlError, match="HyperPrompt.tasks is empty"):
        HyperPrompt(())
    with pytest.raises(T5mtlError, match="must be a Transformer's attention_prefix"):
        HyperPrompt(TASKS).init(jax.random.PRNGKey(0), "encoder", 2, 1, None)


@pytest.mark.slow
def test_bench_quick_run_and_its_adapter_directory(tmp_path, peft_base):
    """bench/hyperprompt.py --quick from the frozen test base: two tasks
    through the trainer, rank classification per task (task ids from
    `task_features`), and the HyperPrompt run's adapter directory holds its
    parameters alone, names its base and reloads."""
    from bench import hyperprompt as bench
    scores = bench.main(["--quick", "--base", str(peft_base), "--out", str(tmp_path)])
    tasks = list(bench.QUICK_TASKS)
    for row in ("chance", "hyperprompt"):
        assert sorted(scores[row]) == tasks, row
        assert all(0 <= v <= 100 for v in scores[row].values()), row
    assert all(v >= 50 for v in scores["chance"].values())
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert lines[0] == "| method | synth_parity | synth_sign | mean |"
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| chance (majority class)", "| HyperPrompt-Global (l=16, t=32, b=32)"]
    run = tmp_path / "hyperprompt"
    assert json.load(open(run / "model.json"))["base"]["path"] == str(peft_base)
    loaded, base = t5mtl.load(str(run)), t5mtl.load(str(peft_base))
    assert tuple(loaded.model.attention_prefix.tasks) == tuple(tasks)
    flat, base_flat = param_names.flatten(loaded.params), param_names.flatten(base.params)
    assert set(flat) - set(base_flat) == {n for n in flat if n.startswith("attention_prefix/")}
    for name, value in base_flat.items():
        np.testing.assert_array_equal(flat[name], value, err_msg=name)
    # The reloaded model scores with each task's own prefix (task_features).
    batch = {"encoder_input_tokens": np.full((2, 6), 5, np.int32),
             "decoder_input_tokens": np.zeros((2, 2), np.int32),
             "decoder_target_tokens": np.ones((2, 2), np.int32)}
    per_task = [np.asarray(loaded.model.score_batch(
        loaded.params, {**batch, **loaded.model.task_features(t, 2)})) for t in tasks]
    assert np.all(np.isfinite(per_task)) and np.abs(per_task[0] - per_task[1]).max() > 0
