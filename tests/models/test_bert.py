"""t5mtl's BERT: configs, parameter counts, heads, masking and dtypes (HF parity
is tests/convert/test_hf_bert.py)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5mtl.cli import main
from t5mtl.errors import T5mtlError
from t5mtl.models.bert import (Bert, bert_param_shapes, count_bert_params, heads_in_params,
                               init_bert_boxed, normalize_heads)
from t5mtl.models.bert_config import BERT_CONFIGS, BertConfig, get_bert_config

TINY = BERT_CONFIGS["bert_tiny"]
ALL = ("mlm", "classification", "span")


def random_params(cfg, heads, num_labels=2, seed=0):
    """numpy params of the right shapes (no jitted init to compile): weights
    N(0, 0.2), layer-norm scales near 1."""
    rng = np.random.RandomState(seed)

    def leaf(path, shape):
        names = [getattr(k, "key", "") for k in path]
        if names[-1] == "scale":
            return (1.0 + 0.2 * rng.standard_normal(shape.shape)).astype(np.float32)
        return (0.2 * rng.standard_normal(shape.shape)).astype(np.float32)
    return jax.tree_util.tree_map_with_path(leaf, bert_param_shapes(cfg, heads, num_labels))


@pytest.fixture(scope="module")
def tiny_params():
    return random_params(TINY, ALL, 3)


@functools.partial(jax.jit, static_argnames=("cfg", "deterministic"))
def _run(params, ids, types, mask, cfg, deterministic, rngs):
    return Bert(cfg, ALL, 3).apply({"params": params}, ids, types, mask, deterministic,
                                   rngs=rngs)


def _apply(params, ids, types=None, mask=None, cfg=TINY, deterministic=True, rngs=None):
    return _run(params, jnp.asarray(ids), types, mask, cfg, deterministic, rngs)


def _batch(seed=0, length=9):
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, TINY.vocab_size, size=(2, length)).astype(np.int32)
    types = np.zeros_like(ids)
    types[:, length // 2:] = 1
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    return ids, types, mask


# -- sizes -----------------------------------------------------------------------

def test_named_bert_counts_are_hf_bert_model_counts():
    assert count_bert_params(BERT_CONFIGS["bert_base"]) == 109_482_240
    # bert_large: through the CLI below.
    # The heads add exactly their own sizes (tied MLM decoder: transform, LN, bias).
    d, v = TINY.hidden_size, TINY.vocab_size
    base = count_bert_params(TINY)
    assert count_bert_params(TINY, ("mlm",)) == base - (d * d + d) + (d * d + d + 2 * d + v)
    assert count_bert_params(TINY, ("classification",), num_labels=5) == base + d * 5 + 5
    assert count_bert_params(TINY, ("pooler", "span")) == base + d * 2 + 2


def test_params_command_prints_bert_counts(capsys):
    assert main(["params", "--model", "bert_base", "--model", "bert_large"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == ["bert_base\t109,482,240", "bert_large\t335,141,888"]
    assert main(["params", "--model", "bert_huge"]) == 2
    err = capsys.readouterr().err
    assert "unknown model name 'bert_huge'" in err and "bert_base" in err and "t5_1_1_small" in err


# -- config ----------------------------------------------------------------------

def test_config_dict_and_hf_round_trips():
    cfg = TINY.replace(classifier_dropout=0.3, hidden_act="gelu_new", dtype="bfloat16")
    assert BertConfig.from_dict(cfg.to_dict()) == cfg
    hf = cfg.to_hf_dict()
    assert hf["num_hidden_layers"] == 2 and hf["num_attention_heads"] == 4
    assert hf["hidden_act"] == "gelu_new" and hf["classifier_dropout"] == 0.3
    assert BertConfig.from_hf_dict(hf) == cfg.replace(dtype="float32")   # dtype: execution only


def test_config_errors_name_the_bad_value():
    with pytest.raises(T5mtlError, match=r"unknown BertConfig fields \['hidden'\]"):
        BertConfig.from_dict({**TINY.to_dict(), "hidden": 3})
    with pytest.raises(T5mtlError, match=r"\['num_head'\]"):
        TINY.replace(num_head=2)
    with pytest.raises(T5mtlError, match="hidden_size=30 is not a multiple of num_heads=4"):
        TINY.replace(hidden_size=30)
    with pytest.raises(T5mtlError, match="dtype='float16'"):
        TINY.replace(dtype="float16")
    with pytest.raises(T5mtlError, match=r"'bert_huge'; known: bert_base, bert_large, bert_tiny"):
        get_bert_config("bert_huge")
    assert get_bert_config("bert_tiny", num_layers=3).num_layers == 3
    for key, value in (("position_embedding_type", "relative_key"), ("is_decoder", True),
                       ("tie_word_embeddings", False), ("hidden_act", "silu")):
        with pytest.raises(T5mtlError, match=f"{key}={value!r}") as e:
            BertConfig.from_hf_dict({**TINY.to_hf_dict(), key: value}, source="x/config.json")
        assert str(e.value).startswith("x/config.json: ") and "\n" not in str(e.value)


# -- the module ------------------------------------------------------------------

def test_heads_are_normalized_and_checked():
    assert normalize_heads(()) == ("pooler",)                  # BertModel
    assert normalize_heads(("span", "mlm", "mlm")) == ("mlm", "span")
    assert normalize_heads(("classification",)) == ("pooler", "classification")
    with pytest.raises(T5mtlError, match=r"unknown BERT heads \['nsp'\]"):
        normalize_heads(("mlm", "nsp"))
    params = random_params(TINY, ("mlm",))
    assert heads_in_params(params) == ("mlm",) and "pooler" not in params
    hidden = jnp.zeros((1, 4, TINY.hidden_size))
    with pytest.raises(T5mtlError, match=r"no 'span' head \(heads=\('mlm',\)\)"):
        jax.eval_shape(lambda h: Bert(TINY, ("mlm",)).apply({"params": params}, h,
                                                            method=Bert.span_logits), hidden)


def test_param_tree_names_and_logical_axes():
    boxed = jax.eval_shape(lambda: init_bert_boxed(TINY, jax.random.PRNGKey(0), ALL, 3))
    axes = lambda *path: _get(boxed, path).names
    assert axes("embeddings", "word", "embedding") == ("vocab", "embed")
    assert axes("embeddings", "position", "embedding") == ("abspos_buckets", "embed")
    assert axes("layers_1", "attention", "query", "kernel") == ("embed", "heads", "kv")
    assert axes("layers_1", "attention", "query", "bias") == ("heads", "kv")
    assert axes("layers_1", "attention", "out", "kernel") == ("heads", "kv", "embed")
    assert axes("layers_0", "mlp", "wi", "kernel") == ("embed", "mlp")
    assert axes("layers_0", "mlp_layer_norm", "scale") == ("embed",)
    assert axes("mlm", "bias") == ("vocab",)
    assert set(boxed) == {"embeddings", "layers_0", "layers_1", "pooler", "mlm", "classifier",
                          "span"}


def _get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def test_outputs_shapes_and_padding_is_ignored(tiny_params):
    ids, types, mask = _batch()
    out = _apply(tiny_params, ids, types, mask)
    assert out["hidden"].shape == (2, 9, 32) and out["mlm"].shape == (2, 9, 101)
    assert out["classification"].shape == (2, 3) and out["pooled"].shape == (2, 32)
    assert out["span"][0].shape == out["span"][1].shape == (2, 9)
    assert out["mlm"].dtype == jnp.float32
    # Changing padded tokens changes nothing at the real positions of that row.
    other = ids.copy()
    other[1, 6:] = (other[1, 6:] + 7) % TINY.vocab_size
    out2 = _apply(tiny_params, other, types, mask)
    np.testing.assert_allclose(out2["mlm"][1, :6], out["mlm"][1, :6], atol=1e-5)
    np.testing.assert_allclose(out2["classification"], out["classification"], atol=1e-5)
    # ... while with a mask of ones it does, and token types matter.
    ones, zeros = np.ones_like(ids), np.zeros_like(ids)
    assert np.abs(_apply(tiny_params, other, types, ones)["mlm"][1, :6]
                  - _apply(tiny_params, ids, types, ones)["mlm"][1, :6]).max() > 1e-3
    no_types = _apply(tiny_params, ids, zeros, ones)["mlm"]
    assert np.abs(no_types - _apply(tiny_params, ids, types, ones)["mlm"]).max() > 1e-3
    # None means all ones / all zeros.
    np.testing.assert_allclose(_apply(tiny_params, ids)["mlm"], no_types, atol=1e-5)


def test_mlm_decoder_is_tied_to_word_embeddings(tiny_params):
    ids, types, mask = _batch(1)
    word = np.asarray(tiny_params["embeddings"]["word"]["embedding"]).copy()
    word[5] += np.random.RandomState(0).normal(size=word.shape[1])  # a token not in the input
    assert 5 not in ids
    params = {**tiny_params, "embeddings": {**tiny_params["embeddings"],
                                            "word": {"embedding": jnp.asarray(word)}}}
    a, b = _apply(tiny_params, ids, types, mask)["mlm"], _apply(params, ids, types, mask)["mlm"]
    changed = np.abs(np.asarray(a) - np.asarray(b)).max(axis=(0, 1))
    assert changed[5] > 1e-3 and np.delete(changed, 5).max() == 0.0


def test_dropout_needs_a_key_and_changes_outputs(tiny_params):
    ids, types, mask = _batch(2)
    det = _apply(tiny_params, ids, types, mask)["classification"]
    run = lambda seed: _apply(tiny_params, ids, types, mask, deterministic=False,
                              rngs={"dropout": jax.random.key(seed, impl="rbg")})["classification"]
    assert np.abs(run(0) - det).max() > 1e-4 and np.abs(run(0) - run(1)).max() > 1e-4
    np.testing.assert_array_equal(run(3), run(3))


def test_bfloat16_activations_stay_close(tiny_params):
    ids, types, mask = _batch(3)
    f32 = np.asarray(_apply(tiny_params, ids, types, mask)["mlm"])
    bf16 = np.asarray(_apply(tiny_params, ids, types, mask, cfg=TINY.replace(dtype="bfloat16"))
                      ["mlm"])
    assert bf16.dtype == np.float32
    assert np.abs(bf16 - f32).max() <= 0.05 * (f32.max() - f32.min())
    assert (bf16.argmax(-1) == f32.argmax(-1)).mean() >= 0.8


def test_too_long_input_is_one_error_line(tiny_params):
    ids = np.ones((1, TINY.max_position_embeddings + 1), np.int32)
    with pytest.raises(T5mtlError, match="input length 65 exceeds max_position_embeddings=64"):
        _apply(tiny_params, ids)
