"""Parity with HF transformers' T5ForConditionalGeneration (random tiny models)."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import t5mtl  # noqa: E402
from t5mtl.cli import main  # noqa: E402
from t5mtl.convert import hf  # noqa: E402
from t5mtl.errors import T5mtlError  # noqa: E402
from t5mtl.models import Transformer  # noqa: E402
from tests.hf_models import make_hf_model, padded_batch  # noqa: E402


@pytest.fixture(scope="module", params=["v1_0", "v1_1"])
def hf_model(request, tmp_path_factory):
    directory = str(tmp_path_factory.mktemp(request.param) / "hf")
    model = make_hf_model(request.param, directory)
    return request.param, directory, model


def _hf_logits(model, enc, dec):
    with torch.no_grad():
        return model(input_ids=torch.tensor(enc, dtype=torch.long),
                     attention_mask=torch.tensor(enc != 0, dtype=torch.long),
                     decoder_input_ids=torch.tensor(dec, dtype=torch.long)).logits.numpy()


def test_head_is_really_untied_for_v1_1(hf_model):
    kind, directory, model = hf_model
    cfg, params = hf.import_hf(directory)
    if kind == "v1_1":
        assert not cfg.tie_word_embeddings
        kernel = params["decoder"]["logits_dense"]["kernel"]
        assert np.abs(kernel.T - params["token_embedder"]["embedding"]).max() > 0.1
    else:
        assert cfg.tie_word_embeddings and cfg.n_decoder_layers == 3 and cfg.num_layers == 2
        assert "logits_dense" not in params["decoder"]


def test_logits_match_on_padded_batch(hf_model):
    _, directory, model = hf_model
    cfg, params = hf.import_hf(directory)
    enc, dec = padded_batch(np.random.RandomState(0), cfg.vocab_size)
    ours = t5mtl.load(directory).logits(enc, dec)
    ref = _hf_logits(model, enc, dec)
    assert np.abs(ref).max() > 1.0       # a real signal, not near-zero logits
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_greedy_generation_matches_hf_generate(hf_model):
    _, directory, model = hf_model
    m = t5mtl.load(directory)
    enc, _ = padded_batch(np.random.RandomState(1), m.config.vocab_size)
    ours = m.generate(enc, max_new_tokens=20)
    with torch.no_grad():
        ref = model.generate(input_ids=torch.tensor(enc, dtype=torch.long),
                             attention_mask=torch.tensor(enc != 0, dtype=torch.long),
                             max_new_tokens=20, do_sample=False, num_beams=1,
                             use_cache=False).numpy()[:, 1:]
    assert ours.shape == (3, 20)
    np.testing.assert_array_equal(ours[:, :ref.shape[1]], ref)
    assert (ours[:, ref.shape[1]:] == 0).all()


def test_export_reloads_in_transformers(hf_model, tmp_path):
    _, directory, model = hf_model
    cfg, params = hf.import_hf(directory)
    out = str(tmp_path / "exported")
    hf.export_hf(cfg, params, out)
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
    enc, dec = padded_batch(np.random.RandomState(2), cfg.vocab_size)
    np.testing.assert_allclose(_hf_logits(reloaded, enc, dec), _hf_logits(model, enc, dec),
                               atol=1e-5, rtol=0)


def test_import_export_import_is_bit_identical(hf_model, tmp_path):
    _, directory, _ = hf_model
    cfg, params = hf.import_hf(directory)
    hf.export_hf(cfg, params, str(tmp_path / "again"))
    cfg2, params2 = hf.import_hf(str(tmp_path / "again"))
    assert cfg2 == cfg
    flat = lambda p: dict(jax_paths(p))
    a, b = flat(params), flat(params2)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def jax_paths(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from jax_paths(v, prefix + (k,))
        else:
            yield prefix + (k,), np.asarray(v)


def test_convert_cli_round_trip_through_model_dir(hf_model, tmp_path):
    _, directory, model = hf_model
    dst = str(tmp_path / "t5mtl_dir")
    assert main(["convert", "--from", "hf", "--src", directory, "--dst", dst,
                 "--scan_layers"]) == 0
    loaded = t5mtl.load(dst)
    assert loaded.config.scan_layers and "layers" in loaded.params["encoder"]
    enc, dec = padded_batch(np.random.RandomState(4), loaded.config.vocab_size)
    np.testing.assert_allclose(loaded.logits(enc, dec), _hf_logits(model, enc, dec), atol=1e-4)
    back = str(tmp_path / "hf_back")
    assert main(["convert", "--to", "hf", "--src", dst, "--dst", back]) == 0
    _, p1 = hf.import_hf(directory)
    _, p2 = hf.import_hf(back)
    for (k, a), (_, b) in zip(sorted(jax_paths(p1)), sorted(jax_paths(p2))):
        assert np.array_equal(a, b), k


# -- bad input -------------------------------------------------------------------

def test_directory_without_config(tmp_path, capsys):
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert main(["convert", "--from", "hf", "--src", str(tmp_path), "--dst",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no config.json" in err and str(tmp_path) in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_directory_without_weights(hf_model, tmp_path):
    _, directory, _ = hf_model
    src = tmp_path / "noweights"
    src.mkdir()
    (src / "config.json").write_text(open(os.path.join(directory, "config.json")).read())
    with pytest.raises(T5mtlError, match="no weights found"):
        hf.import_hf(str(src))


def test_shapes_disagreeing_with_config(hf_model, tmp_path):
    _, directory, _ = hf_model
    src = tmp_path / "bad"
    src.mkdir()
    conf = json.load(open(os.path.join(directory, "config.json")))
    conf["d_ff"] = conf["d_ff"] + 8
    (src / "config.json").write_text(json.dumps(conf))
    os.symlink(os.path.join(directory, "model.safetensors"), src / "model.safetensors")
    with pytest.raises(T5mtlError, match=r"DenseReluDense\.wi.*has shape"):
        hf.import_hf(str(src))


def test_export_is_all_or_nothing(hf_model, tmp_path, monkeypatch):
    _, directory, _ = hf_model
    cfg, params = hf.import_hf(directory)
    import safetensors.numpy

    def broken_save(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(safetensors.numpy, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        hf.export_hf(cfg, params, str(tmp_path / "out"))
    assert os.listdir(tmp_path) == []          # no half-written or temporary directory
    monkeypatch.undo()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(T5mtlError, match="not empty"):
        hf.export_hf(cfg, params, str(tmp_path / "full"))
    assert os.listdir(tmp_path / "full") == ["keep.txt"]


def test_load_rejects_unknown_directory(tmp_path):
    with pytest.raises(T5mtlError, match="neither a t5mtl model directory"):
        t5mtl.load(str(tmp_path))
    with pytest.raises(T5mtlError, match="not a directory"):
        t5mtl.load(str(tmp_path / "missing"))
