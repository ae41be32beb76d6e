"""Parity with HF transformers' BERT models (random tiny models built in-test)."""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from t5mtl.convert.hf_bert import export_hf_bert, import_hf_bert  # noqa: E402
from t5mtl.errors import T5mtlError  # noqa: E402
from t5mtl.models.bert import Bert, bert_param_shapes, count_bert_params  # noqa: E402
from t5mtl.models.bert_config import BERT_CONFIGS, BertConfig  # noqa: E402

# HF class, vocabulary size (101: not a multiple of 8), num_labels.
MODELS = {
    "mlm": ("BertForMaskedLM", 101, 2),
    "classification": ("BertForSequenceClassification", 96, 3),
    "span": ("BertForQuestionAnswering", 101, 2),
}


def make_hf_bert(architecture: str, vocab: int, num_labels: int, directory: str, seed=0,
                 **overrides):
    """Saves a random HF BERT (weights larger than HF's init, so that
    differences show) to `directory` and returns it in eval mode."""
    torch.manual_seed(seed)
    kwargs = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=64, type_vocab_size=2,
                  num_labels=num_labels, hidden_act="gelu", layer_norm_eps=1e-12)
    model = getattr(transformers, architecture)(transformers.BertConfig(**{**kwargs, **overrides}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(directory)
    return model


def batch(vocab: int, seed=0):
    """Two rows of 11 tokens: row 1 padded after 7, second segments of type 1."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, vocab, size=(2, 11)).astype(np.int32)
    types = np.zeros_like(ids)
    types[0, 5:] = 1
    types[1, 4:7] = 1
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    return ids, types, mask


def hf_outputs(model, ids, types, mask):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                    token_type_ids=torch.tensor(types, dtype=torch.long),
                    attention_mask=torch.tensor(mask, dtype=torch.long))
    if hasattr(out, "start_logits"):
        return out.start_logits.numpy(), out.end_logits.numpy()
    if hasattr(out, "prediction_logits"):
        return out.prediction_logits.numpy()
    return out.logits.numpy()


@functools.partial(jax.jit, static_argnames=("cfg", "heads", "num_labels"))
def _our_outputs(params, ids, types, mask, cfg, heads, num_labels):
    return Bert(cfg, heads, num_labels).apply({"params": params}, ids, types, mask)


def our_outputs(cfg, params, heads, head, ids, types, mask):
    num_labels = params["classifier"]["kernel"].shape[1] if "classifier" in params else 2
    out = _our_outputs(params, jnp.asarray(ids), jnp.asarray(types), jnp.asarray(mask), cfg,
                       heads, num_labels)
    return jax.tree.map(np.asarray, out[head])


@pytest.fixture(scope="module", params=list(MODELS))
def hf_bert(request, tmp_path_factory):
    head = request.param
    architecture, vocab, num_labels = MODELS[head]
    directory = str(tmp_path_factory.mktemp(head) / "hf")
    return head, directory, make_hf_bert(architecture, vocab, num_labels, directory)


def test_import_matches_hf_logits(hf_bert):
    head, directory, model = hf_bert
    cfg, params, heads = import_hf_bert(directory)
    assert heads == {"mlm": ("mlm",), "classification": ("pooler", "classification"),
                     "span": ("span",)}[head]
    assert cfg.vocab_size == MODELS[head][1] and cfg.intermediate_size == 37
    ids, types, mask = batch(cfg.vocab_size)
    ours = our_outputs(cfg, params, heads, head, ids, types, mask)
    ref = hf_outputs(model, ids, types, mask)
    assert np.abs(np.asarray(ref)).max() > 1.0          # a real signal
    if head == "classification":
        assert ref.shape == (2, 3)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_export_reloads_in_transformers(hf_bert, tmp_path):
    head, directory, model = hf_bert
    cfg, params, heads = import_hf_bert(directory)
    out = str(tmp_path / "exported")
    export_hf_bert(cfg, params, out)                  # architecture from the params' head
    architecture = MODELS[head][0]
    assert json.load(open(os.path.join(out, "config.json")))["architectures"] == [architecture]
    reloaded = getattr(transformers, architecture).from_pretrained(out).eval()
    ids, types, mask = batch(cfg.vocab_size, seed=1)
    ours = our_outputs(cfg, params, heads, head, ids, types, mask)
    np.testing.assert_allclose(hf_outputs(reloaded, ids, types, mask), ours, atol=1e-5, rtol=0)
    # The exported weights are the original ones, bit for bit.
    original = dict(model.state_dict())
    for name, value in reloaded.state_dict().items():
        assert torch.equal(value, original[name]), name


def test_import_export_import_is_exact(hf_bert, tmp_path):
    _, directory, _ = hf_bert
    cfg, params, heads = import_hf_bert(directory)
    export_hf_bert(cfg, params, str(tmp_path / "again"))
    cfg2, params2, heads2 = import_hf_bert(str(tmp_path / "again"))
    assert (cfg2, heads2) == (cfg, heads)
    a, b = _flat(params), _flat(params2)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def _flat(tree, prefix=()):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = np.asarray(v)
    return out


def test_tiny_count_equals_hf_bert_model():
    cfg = BERT_CONFIGS["bert_tiny"]
    model = transformers.BertModel(transformers.BertConfig(**{
        k: v for k, v in cfg.to_hf_dict().items() if k != "model_type"}))
    assert count_bert_params(cfg) == sum(p.numel() for p in model.parameters())
    mlm = transformers.BertForMaskedLM(model.config)
    assert count_bert_params(cfg, ("mlm",)) == sum(p.numel() for p in mlm.parameters())


def test_pretraining_checkpoint_with_tf_names(tmp_path):
    """The original BERT checkpoints: pooler + MLM + next-sentence head, and
    LayerNorm.gamma/beta names; the NSP head is dropped, the rest imported."""
    src = str(tmp_path / "pretraining")
    model = make_hf_bert("BertForPreTraining", 101, 2, src)
    from safetensors.numpy import load_file, save_file
    tensors = load_file(os.path.join(src, "model.safetensors"))
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma")
                .replace("LayerNorm.bias", "LayerNorm.beta"): v for k, v in tensors.items()}
    renamed["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]
    assert "bert.embeddings.LayerNorm.gamma" in renamed and "cls.seq_relationship.weight" in renamed
    os.remove(os.path.join(src, "model.safetensors"))
    save_file(renamed, os.path.join(src, "model.safetensors"))
    cfg, params, heads = import_hf_bert(src)
    assert heads == ("pooler", "mlm")
    ids, types, mask = batch(101, seed=2)
    np.testing.assert_allclose(our_outputs(cfg, params, heads, "mlm", ids, types, mask),
                               hf_outputs(model, ids, types, mask), atol=1e-4, rtol=0)


# -- bad input -----------------------------------------------------------------------

def _copy(directory, dst, tensors=None, config=None):
    """A copy of an HF directory with its tensors and/or config.json changed."""
    from safetensors.numpy import load_file, save_file
    os.makedirs(dst)
    t = load_file(os.path.join(directory, "model.safetensors"))
    save_file(tensors(t) if tensors else t, os.path.join(dst, "model.safetensors"))
    c = json.load(open(os.path.join(directory, "config.json")))
    json.dump(config(c) if config else c, open(os.path.join(dst, "config.json"), "w"))
    return str(dst)


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("mlm_errors") / "hf")
    make_hf_bert("BertForMaskedLM", 101, 2, directory, num_hidden_layers=1)
    return directory


def _one_line_error(src, *fragments):
    with pytest.raises(T5mtlError) as e:
        import_hf_bert(src)
    message = str(e.value)
    assert "\n" not in message and src in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_relative_positions_are_refused(mlm_dir, tmp_path):
    src = _copy(mlm_dir, tmp_path / "rel",
                config=lambda c: {**c, "position_embedding_type": "relative_key"})
    _one_line_error(src, "position_embedding_type='relative_key'")


def test_missing_and_extra_tensors_are_named(mlm_dir, tmp_path):
    gone = "bert.encoder.layer.0.attention.self.key.bias"
    src = _copy(mlm_dir, tmp_path / "missing",
                tensors=lambda t: {k: v for k, v in t.items() if k != gone})
    _one_line_error(src, "lack tensors", repr(gone))
    src = _copy(mlm_dir, tmp_path / "extra", tensors=lambda t: {
        **t, "bert.encoder.layer.1.output.dense.weight": np.zeros((32, 37), np.float32)})
    _one_line_error(src, "'bert.encoder.layer.1.output.dense.weight'", "not part of")


def test_untied_decoder_and_other_architectures_are_refused(mlm_dir, tmp_path):
    src = _copy(mlm_dir, tmp_path / "untied", tensors=lambda t: {
        **t, "cls.predictions.decoder.weight": t["bert.embeddings.word_embeddings.weight"] + 1})
    _one_line_error(src, "'cls.predictions.decoder.weight' differs")
    src = _copy(mlm_dir, tmp_path / "token", config=lambda c: {
        **c, "architectures": ["BertForTokenClassification"]})
    _one_line_error(src, "'BertForTokenClassification' is not supported")
    src = _copy(mlm_dir, tmp_path / "shape", config=lambda c: {**c, "intermediate_size": 40})
    _one_line_error(src, "intermediate.dense.weight", "has shape")


def test_export_errors_name_the_missing_head(mlm_dir, tmp_path):
    cfg, params, _ = import_hf_bert(mlm_dir)
    with pytest.raises(T5mtlError, match=r"params lack \['pooler/dense/kernel', "
                                         r"'pooler/dense/bias', 'classifier/kernel', "
                                         r"'classifier/bias'\], which "
                                         r"BertForSequenceClassification needs"):
        export_hf_bert(cfg, params, str(tmp_path / "cls"), "BertForSequenceClassification")
    with pytest.raises(T5mtlError, match="'BertForTokenClassification' cannot be exported"):
        export_hf_bert(cfg, params, str(tmp_path / "tok"), "BertForTokenClassification")
    with pytest.raises(T5mtlError, match=r"embeddings/word/embedding has shape \(101, 32\); "
                                         r"the config wants \(101, 64\)"):
        export_hf_bert(BertConfig.from_dict({**cfg.to_dict(), "hidden_size": 64}), params,
                       str(tmp_path / "wide"))
    assert sorted(os.listdir(tmp_path)) == []


def test_t5mtl_params_with_several_heads_export_one_architecture(tmp_path):
    cfg = BERT_CONFIGS["bert_tiny"]
    heads = ("pooler", "mlm", "classification", "span")
    rng = np.random.RandomState(3)
    params = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32),
                          bert_param_shapes(cfg, heads, 4))
    with pytest.raises(T5mtlError, match=r"params have heads \('mlm', 'classification', "
                                         r"'span'\); name the architecture"):
        export_hf_bert(cfg, params, str(tmp_path / "which"))
    out = str(tmp_path / "cls")
    export_hf_bert(cfg, params, out, "BertForSequenceClassification")
    reloaded = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    assert reloaded.config.num_labels == 4
    ids, types, mask = batch(cfg.vocab_size, seed=4)
    ours = our_outputs(cfg, params, heads, "classification", ids, types, mask)
    np.testing.assert_allclose(hf_outputs(reloaded, ids, types, mask), ours, atol=1e-5, rtol=0)
    _, back, back_heads = import_hf_bert(out)
    assert back_heads == ("pooler", "classification") and "mlm" not in back
    assert np.array_equal(back["classifier"]["kernel"], params["classifier"]["kernel"])
