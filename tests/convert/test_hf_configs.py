"""HF config.json files as they are written: by transformers 5.24 itself, and
as the Hub's T5 v1.0 (t5-small), v1.1 (google/t5-v1_1-small) and Flan-T5
(google/flan-t5-small) configs read. Each converts to the right architecture,
and a model built from each (shrunk, every field that changes the math kept)
scores the same through t5mtl as through transformers."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import t5mtl  # noqa: E402
from t5mtl.convert import hf  # noqa: E402
from t5mtl.models.config import T5Config, hf_output_layer  # noqa: E402
from tests.hf_models import padded_batch  # noqa: E402

# The Hub's config.json files (their architecture fields, verbatim keys and values).
HUB_CONFIGS = {
    "t5-small": {
        "architectures": ["T5WithLMHeadModel"], "d_ff": 2048, "d_kv": 64, "d_model": 512,
        "decoder_start_token_id": 0, "dropout_rate": 0.1, "eos_token_id": 1,
        "initializer_factor": 1.0, "is_encoder_decoder": True, "layer_norm_epsilon": 1e-06,
        "model_type": "t5", "n_positions": 512, "num_heads": 8, "num_layers": 6,
        "output_past": True, "pad_token_id": 0, "relative_attention_num_buckets": 32,
        "vocab_size": 32128},
    "google/t5-v1_1-small": {
        "architectures": ["T5ForConditionalGeneration"], "d_ff": 1024, "d_kv": 64,
        "d_model": 512, "decoder_start_token_id": 0, "dropout_rate": 0.1, "eos_token_id": 1,
        "feed_forward_proj": "gated-gelu", "initializer_factor": 1.0,
        "is_encoder_decoder": True, "layer_norm_epsilon": 1e-06, "model_type": "t5",
        "num_decoder_layers": 8, "num_heads": 6, "num_layers": 8, "output_past": True,
        "pad_token_id": 0, "relative_attention_num_buckets": 32, "tie_word_embeddings": False,
        "vocab_size": 32128},
    "google/flan-t5-small": {
        "architectures": ["T5ForConditionalGeneration"], "d_ff": 1024, "d_kv": 64,
        "d_model": 512, "decoder_start_token_id": 0, "dense_act_fn": "gelu_new",
        "dropout_rate": 0.1, "eos_token_id": 1, "feed_forward_proj": "gated-gelu",
        "initializer_factor": 1.0, "is_encoder_decoder": True, "is_gated_act": True,
        "layer_norm_epsilon": 1e-06, "model_type": "t5", "n_positions": 512,
        "num_decoder_layers": 8, "num_heads": 6, "num_layers": 8, "output_past": True,
        "pad_token_id": 0, "relative_attention_max_distance": 128,
        "relative_attention_num_buckets": 32, "tie_word_embeddings": False,
        "torch_dtype": "float32", "transformers_version": "4.23.1", "use_cache": True,
        "vocab_size": 32128},
}

# What each is, from the model cards: (ffn, t5mtl tied head, layers enc/dec, heads, d_ff).
EXPECTED = {
    "t5-small": ("relu", True, 6, 6, 8, 2048),
    "google/t5-v1_1-small": ("gated-gelu", False, 8, 8, 6, 1024),
    "google/flan-t5-small": ("gated-gelu", False, 8, 8, 6, 1024),
}

SHRINK = dict(vocab_size=300, d_model=32, d_kv=8, d_ff=40, num_heads=4, num_layers=2,
              dropout_rate=0.0)


def _randomize(model, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if "layer_norm" in name
                    else torch.randn_like(p) * 0.3)
    return model


def _log_likelihood(logits, targets):
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    return np.take_along_axis(logp, targets[..., None], -1)[..., 0].sum(-1)


def _hf_scores(model, enc, dec, targets):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(enc, dtype=torch.long),
                       attention_mask=torch.tensor(enc != 0, dtype=torch.long),
                       decoder_input_ids=torch.tensor(dec, dtype=torch.long)).logits.numpy()
    return logits, _log_likelihood(logits.astype(np.float64), targets)


def _targets(dec):
    return np.concatenate([dec[:, 1:], np.ones((len(dec), 1), dec.dtype)], axis=1)


@pytest.mark.parametrize("name", sorted(HUB_CONFIGS))
def test_hub_configs_convert_to_their_architecture(name):
    cfg = T5Config.from_hf_dict(HUB_CONFIGS[name], source=name)
    ffn, tied, enc, dec, heads, d_ff = EXPECTED[name]
    assert (cfg.feed_forward_proj, cfg.tie_word_embeddings, cfg.num_layers, cfg.n_decoder_layers,
            cfg.num_heads, cfg.d_ff, cfg.d_model, cfg.d_kv) == (ffn, tied, enc, dec, heads, d_ff,
                                                               512, 64)
    assert (cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance) == (32, 128)
    assert hf_output_layer(HUB_CONFIGS[name]) == ((True, True) if tied else (False, False))


@pytest.mark.parametrize("name", sorted(HUB_CONFIGS))
def test_a_model_built_from_each_hub_config_scores_as_in_transformers(name, tmp_path):
    """The Hub file, shrunk, with a deeper decoder and other relative-attention
    settings, as transformers builds and saves it; converted by t5mtl."""
    d = dict(HUB_CONFIGS[name], **SHRINK, num_decoder_layers=3,
             relative_attention_num_buckets=16, relative_attention_max_distance=20)
    config = transformers.T5Config.from_dict(d)
    model = _randomize(transformers.T5ForConditionalGeneration(config).eval())
    model.save_pretrained(str(tmp_path))
    written = json.load(open(tmp_path / "config.json"))
    cfg, _ = hf.import_hf(str(tmp_path))
    assert (cfg.n_decoder_layers, cfg.relative_attention_num_buckets,
            cfg.relative_attention_max_distance) == (3, 16, 20)
    assert cfg.feed_forward_proj == EXPECTED[name][0]
    enc, dec = padded_batch(np.random.RandomState(0), cfg.vocab_size)
    ref_logits, ref = _hf_scores(model, enc, dec, _targets(dec))
    m = t5mtl.load(str(tmp_path))
    # Randomized weights (std 0.3) give logits up to a few units: float32
    # rounding then depends on codegen (FMA contraction differs between XLA's
    # optimization levels; tests/conftest.py compiles at 0), 1.1e-4 at a logit
    # of 1.5 in the gated-GELU configs. So relative as well as absolute.
    np.testing.assert_allclose(m.logits(enc, dec), ref_logits, atol=1e-4, rtol=1e-4)
    ours = _log_likelihood(np.asarray(m.logits(enc, dec), np.float64), _targets(dec))
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    assert written["scale_decoder_outputs"] == EXPECTED[name][1]


def test_v1_1_saved_by_transformers_5_and_reloaded_scores_as_hf(tmp_path):
    """transformers 5.x builds a v1.1 model with its head tied to the
    embedding and no output scaling, and writes `"tie_word_embeddings": true,
    "scale_decoder_outputs": false`; reading only tie_word_embeddings would
    scale the output by d_model**-0.5."""
    config = transformers.T5Config(**SHRINK, feed_forward_proj="gated-gelu",
                                   tie_word_embeddings=False, decoder_start_token_id=0)
    _randomize(transformers.T5ForConditionalGeneration(config)).save_pretrained(str(tmp_path))
    written = json.load(open(tmp_path / "config.json"))
    assert (written["tie_word_embeddings"], written["scale_decoder_outputs"]) == (True, False)
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
    enc, dec = padded_batch(np.random.RandomState(3), SHRINK["vocab_size"])
    targets = _targets(dec)
    _, ref = _hf_scores(reloaded, enc, dec, targets)
    m = t5mtl.load(str(tmp_path))
    assert not m.config.tie_word_embeddings          # an unscaled head: t5mtl's untied one
    scores = m.score(enc, targets)
    assert np.abs(ref).max() > 10.0
    np.testing.assert_allclose(scores, ref, atol=1e-4, rtol=0)
    # The export writes both keys; transformers reads it back to the same scores.
    cfg, params = hf.import_hf(str(tmp_path))
    out = str(tmp_path / "exported")
    hf.export_hf(cfg, params, out)
    again = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
    np.testing.assert_allclose(_hf_scores(again, enc, dec, targets)[1], ref, atol=1e-4, rtol=0)
    assert json.load(open(os.path.join(out, "config.json")))["scale_decoder_outputs"] is False
