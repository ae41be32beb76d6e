"""LoRA through the weight-adapter seam: exact parameter counts, the base's
outputs at init, merging, dropout, gradients against finite differences (scan on
and off), decoding with the cache, and a trainer run that touches nothing
but the factors."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import t5mtl
import t5mtl.data.registry  # noqa: F401  (registers the synthetic suite)
from t5mtl.data.batches import scoring_batch
from t5mtl.data.data_config import DataConfig
from t5mtl.errors import T5mtlError
from t5mtl.models import get_config, param_names
from t5mtl.models.encoder_decoder import DecodeConfig, EncoderDecoderModel
from t5mtl.peft import LoRA
from t5mtl.train.model_dir import checkpoint_manager
from t5mtl.train.optimizers import create_optimizer
from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
from tests.models.test_seams import _greedy_without_cache

LORA = ["lora/.*"]


def _trainable(name, lora):
    model = EncoderDecoderModel(get_config(name), weight_adapter=lora)
    sizes = {k: int(np.prod(v.shape))
             for k, v in param_names.flatten(model.abstract_params()).items()}
    return sum(sizes[k] for k in param_names.select(list(sizes), LORA)), sum(sizes.values())


def test_trainable_parameter_counts_without_allocation():
    # Rank r on a kernel [in, out] adds r (in + out). Query and value of every
    # attention: 2 per encoder layer, 4 per decoder layer (self + cross).
    trainable, _ = _trainable("t5_1_1_small", LoRA(rank=8))
    assert trainable == (8 * 2 + 8 * 4) * 8 * (512 + 6 * 64) == 344_064
    trainable, _ = _trainable("t5_1_1_xxl", LoRA(rank=8))
    assert trainable == (24 * 2 + 24 * 4) * 8 * (4096 + 64 * 64) == 9_437_184
    # Every kernel, attention out [heads, kv, embed] and wo [mlp, embed] included.
    every, total = _trainable("t5_1_1_small", LoRA(rank=4, patterns=[".*kernel"]))
    d, hk, ff, v = 512, 384, 1024, 32128
    per_enc = 4 * (d + hk) + 3 * (d + ff)
    per_dec = 8 * (d + hk) + 3 * (d + ff)
    assert every == 4 * (8 * per_enc + 8 * per_dec + (d + v))
    assert total - every == 76_961_152       # T5 1.1 small (tests/peft/test_prompt_tuning.py)
    assert f"{100 * every / total:.2f}%" == "0.99%"


def test_bad_patterns_are_one_clear_error():
    with pytest.raises(T5mtlError, match="LoRA pattern '.*qury.*' matches no parameter"):
        EncoderDecoderModel(get_config("t5_tiny"),
                            weight_adapter=LoRA(patterns=[".*qury/kernel"])).abstract_params()


def _tokens(seed=0, b=3, enc_len=10, dec_len=6):
    rng = np.random.RandomState(seed)
    return scoring_batch(rng.randint(3, 300, (b, enc_len)).tolist(),
                         rng.randint(3, 300, (b, dec_len)).tolist())


def _adapted(scan=False, patterns=(r".*attention/(query|value)/kernel", ".*mlp/wo/kernel")):
    model = EncoderDecoderModel(get_config("t5_tiny", scan_layers=scan),
                                weight_adapter=LoRA(rank=2, alpha=4, patterns=patterns))
    params = nn.unbox(jax.jit(model.init_boxed)(jax.random.PRNGKey(0)))
    return model, params


def test_starts_from_the_base_and_merges_into_it():
    model, params = _adapted()
    plain = EncoderDecoderModel(model.config)
    base = {k: v for k, v in params.items() if k != "lora"}
    batch = _tokens()
    adapted_logits, plain_logits = jax.jit(model.logits), jax.jit(plain.logits)
    np.testing.assert_array_equal(adapted_logits(params, batch), plain_logits(base, batch))
    # Non-zero factors: the merged plain model computes what the adapted one does.
    rng = np.random.RandomState(1)
    params["lora"] = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape) * 0.3,
                                                        jnp.float32), params["lora"])
    adapted = np.asarray(adapted_logits(params, batch))
    merged = model.weight_adapter.merge(params)
    assert "lora" not in merged
    np.testing.assert_allclose(plain_logits(merged, batch), adapted, rtol=1e-6, atol=1e-6)
    assert not np.allclose(adapted, plain_logits(base, batch), atol=1e-3)
    # W + (alpha / r) A B, checked by hand on one kernel.
    name = "encoder/layers_0/attention/query/kernel"
    a = np.asarray(params["lora"]["encoder"]["layers_0"]["attention"]["query"]["kernel"]["a"])
    b = np.asarray(params["lora"]["encoder"]["layers_0"]["attention"]["query"]["kernel"]["b"])
    w = param_names.flatten(base)[name]
    np.testing.assert_allclose(param_names.flatten(merged)[name],
                               w + 2.0 * np.einsum("ir,rhk->ihk", a, b), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scan", [False, True])
def test_factor_gradients_match_finite_differences(scan):
    model, params = _adapted(scan)
    rng = np.random.RandomState(2)
    params["lora"] = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape) * 0.1,
                                                        jnp.float32), params["lora"])
    batch = _tokens(3, b=2)

    def loss(lora):
        return model.loss_fn({**params, "lora": lora}, batch, None)[0]
    grad = jax.jit(jax.grad(loss))(params["lora"])
    direction = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32),
                             params["lora"])
    norm = jnp.sqrt(sum(jnp.vdot(d, d) for d in jax.tree.leaves(direction)))
    direction = jax.tree.map(lambda d: d / norm, direction)
    eps, f = 1e-2, jax.jit(loss)
    shifted = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, params["lora"], direction)
    numeric = (f(shifted(1)) - f(shifted(-1))) / (2 * eps)
    analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad),
                                                   jax.tree.leaves(direction)))
    np.testing.assert_allclose(float(analytic), float(numeric), rtol=2e-2)
    assert float(jnp.abs(analytic)) > 0


def test_decoding_with_the_cache_equals_full_recomputation():
    model, params = _adapted()
    rng = np.random.RandomState(4)
    params["lora"] = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape) * 0.5,
                                                        jnp.float32), params["lora"])
    enc = np.asarray(_tokens(5)["encoder_input_tokens"])
    ids = np.asarray(model.predict_batch(params, {"encoder_input_tokens": enc},
                                         DecodeConfig(max_decode_length=8)))
    np.testing.assert_array_equal(ids, _greedy_without_cache(model, params, enc, 8))
    plain_ids = EncoderDecoderModel(model.config).predict_batch(
        {k: v for k, v in params.items() if k != "lora"}, {"encoder_input_tokens": enc},
        DecodeConfig(max_decode_length=8))
    assert not np.array_equal(ids, np.asarray(plain_ids))   # the adapter is in the decode


def test_dropout_drops_input_features_of_the_adapter_path_while_training():
    model, params = _adapted(patterns=(r"encoder/layers_0/attention/query/kernel",))
    rng = np.random.RandomState(6)
    params["lora"] = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32),
                                  params["lora"])
    p, name = 0.25, "encoder/layers_0/attention/query/kernel"
    lora = LoRA(rank=2, alpha=4, patterns=(name,), dropout=p)
    plain = param_names.flatten(lora.apply(params))[name]
    w = param_names.flatten(params)[name]
    full = np.asarray(plain - w)                                  # scale A B, [embed, heads, kv]
    dropped = np.asarray(param_names.flatten(lora.apply(params, jax.random.PRNGKey(3)))[name] - w)
    # Each input feature's row of the update is either gone or scaled by 1 / (1 - p).
    kept = np.abs(dropped).reshape(len(full), -1).max(axis=1) > 0
    np.testing.assert_allclose(dropped[kept], full[kept] / (1 - p), rtol=1e-5, atol=1e-6)
    assert 0 < (~kept).sum() < len(kept)
    # Inference and merging see no dropout; the model's loss uses it only with a key.
    model = EncoderDecoderModel(model.config, weight_adapter=lora)
    np.testing.assert_array_equal(param_names.flatten(lora.merge(params))[name], plain)
    batch = _tokens(7)
    loss = jax.jit(lambda key: model.loss_fn(params, batch, key)[0])
    assert float(loss(jax.random.PRNGKey(1))) != float(loss(jax.random.PRNGKey(2)))
    np.testing.assert_array_equal(model.loss_fn(params, batch, None)[0],
                                  EncoderDecoderModel(model.config, weight_adapter=LoRA(
                                      rank=2, alpha=4, patterns=(name,))).loss_fn(
                                      params, batch, None)[0])
    with pytest.raises(T5mtlError, match="LoRA.dropout=1.0"):
        LoRA(dropout=1.0)


@pytest.mark.slow
def test_trainer_updates_only_the_factors_and_saves_them_alone(tmp_path):
    data = DataConfig(mixture_or_task_name="synth_add", batch_size=8, pack=False,
                      task_feature_lengths={"inputs": 32, "targets": 8})
    base = tmp_path / "base"
    train(str(base), model=EncoderDecoderModel(get_config("t5_tiny")), data=data, num_steps=1,
          checkpoints=CheckpointConfig(async_save=False), evaluation=EvalConfig(),
          show_progress=False)
    run = tmp_path / "lora"
    train(str(run), model=EncoderDecoderModel(get_config("t5_tiny"), weight_adapter=LoRA(rank=2)),
          data=data, num_steps=3, trainable_patterns=LORA,
          optimizer=create_optimizer("adamw", learning_rate=0.05),
          checkpoints=CheckpointConfig(async_save=False, init_from=str(base),
                                       save_trainable_only=True),
          evaluation=EvalConfig(), show_progress=False)
    with checkpoint_manager(str(run), read_only=True) as mngr:
        meta = mngr.item_metadata(3)
    saved = param_names.flatten(dict(getattr(meta["params"], "tree", meta["params"])))
    assert saved and all(name.startswith("lora/") for name in saved)
    # The optimizer state is AdamW's two moments of the factors (and a count).
    opt_sizes = [int(np.prod(m.shape)) for m in jax.tree.leaves(
        getattr(meta["opt_state"], "tree", meta["opt_state"])) if hasattr(m, "shape")]
    factor_sizes = sum(int(np.prod(m.shape)) for m in saved.values())
    assert sum(opt_sizes) - opt_sizes.count(1) == 2 * factor_sizes
    loaded, base_model = t5mtl.load(str(run)), t5mtl.load(str(base))
    flat, base_flat = param_names.flatten(loaded.params), param_names.flatten(base_model.params)
    for name, value in base_flat.items():
        np.testing.assert_array_equal(flat[name], value, err_msg=name)
    b = flat["lora/encoder/layers_0/attention/query/kernel/b"]
    assert np.abs(b).max() > 0                                   # B left zero: trained
    # Save, load and generate: the loaded adapter decodes as the merged model.
    merged = EncoderDecoderModel(get_config("t5_tiny"))
    enc = np.asarray(_tokens(6)["encoder_input_tokens"])
    np.testing.assert_array_equal(
        loaded.model.predict_batch(loaded.params, {"encoder_input_tokens": enc}),
        merged.predict_batch(loaded.model.weight_adapter.merge(loaded.params),
                             {"encoder_input_tokens": enc}))
