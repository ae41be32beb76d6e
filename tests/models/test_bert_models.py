"""BERT behind the model protocol: an imported HF BertForMaskedLM is the
MaskedLanguageModel's logits, an imported BertForSequenceClassification is
the MultiHeadClassifier's (one task, linear head), and a BertForMaskedLM
source warm-starts a machine reader (its MLM head dropped)."""
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from t5mtl.convert.hf_bert import import_hf_bert  # noqa: E402
from t5mtl.models.machine_reader import MachineReader  # noqa: E402
from t5mtl.models.masked_lm import MaskedLanguageModel  # noqa: E402
from t5mtl.models.multi_head import MultiHeadClassifier  # noqa: E402
from tests.convert.test_hf_bert import batch, hf_outputs, make_hf_bert  # noqa: E402


def _tree_shapes(tree):
    return jax.tree.map(lambda x: tuple(np.shape(x)), tree)


def test_masked_lm_is_hf_bert_for_masked_lm(tmp_path):
    hf = make_hf_bert("BertForMaskedLM", 101, 2, str(tmp_path))
    config, params, _ = import_hf_bert(str(tmp_path))
    model = MaskedLanguageModel(config.replace(hidden_dropout=0.0, attention_dropout=0.0))
    params = model.adapt_params(params)
    fresh = model.abstract_params()
    assert _tree_shapes(params) == _tree_shapes(fresh)
    ids, types, mask = batch(101)
    ours = np.asarray(model.logits(params, {"encoder_input_tokens": ids,
                                            "encoder_token_types": types}))
    expected = hf_outputs(hf, ids, types, mask)
    np.testing.assert_allclose(ours[mask > 0], expected[mask > 0], atol=1e-4, rtol=1e-4)
    assert MaskedLanguageModel.from_spec(model.spec()).architecture()["family"] == "bert"

    # The reader starts from the MLM's encoder; its extractor is fresh.
    reader = MachineReader(config, intermediate_dim=16)
    adapted = reader.adapt_params(params)
    assert "mlm" not in adapted and "embeddings" in adapted
    rfresh = reader.abstract_params()
    assert set(rfresh) - set(adapted) == {"span_extractor"}


def test_classifier_is_hf_bert_for_sequence_classification(tmp_path):
    hf = make_hf_bert("BertForSequenceClassification", 96, 3, str(tmp_path))
    config, params, _ = import_hf_bert(str(tmp_path))
    model = MultiHeadClassifier(config, ("task",), head="linear",
                                labels=(("a", "b", "c"),), label_ids=(((5,), (6,), (7,)),))
    head = {"task": {"out": {"kernel": params["classifier"]["kernel"],
                             "bias": params["classifier"]["bias"]}}}
    params = model.adapt_params({**params, "heads": head})
    fresh = model.abstract_params()
    assert _tree_shapes(params) == _tree_shapes(fresh)
    ids, types, mask = batch(96)
    assert types.any()        # sentence B present: the batch's token types are read
    ours = np.asarray(model.logits(params, {"encoder_input_tokens": ids,
                                            "encoder_token_types": types,
                                            "task_ids": np.zeros(2, np.int32)}))
    expected = hf_outputs(hf, ids, types, mask)
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-4)
    assert MultiHeadClassifier.from_spec(model.spec()).architecture() == model.architecture()

    # The training loss (what train() calls, with a dropout key) is the mean
    # cross-entropy of HF's logits once dropout is off.
    labels = np.array([2, 0], np.int32)
    quiet = MultiHeadClassifier(config.replace(hidden_dropout=0.0, attention_dropout=0.0),
                                ("task",), head="linear", labels=(("a", "b", "c"),),
                                label_ids=(((5,), (6,), (7,)),))
    loss, _ = quiet.loss_fn(params, {"encoder_input_tokens": ids, "encoder_token_types": types,
                                     "task_ids": np.zeros(2, np.int32), "labels": labels},
                            jax.random.PRNGKey(0))
    log_p = expected - np.log(np.exp(expected).sum(-1, keepdims=True))
    np.testing.assert_allclose(float(loss), -log_p[[0, 1], labels].mean(), rtol=1e-4)


def test_convert_hf_bert_to_model_dir_and_back(tmp_path):
    """`t5mtl convert --from hf` of an HF BertForMaskedLM (its vocab.txt kept),
    then `--to hf`: transformers reloads the same logits; init_from reads
    the HF directory as it is."""
    from t5mtl.cli import main
    from t5mtl.train.model_dir import load_params, read_model_json
    hf_dir, model_dir, back = (str(tmp_path / n) for n in ("hf", "model_dir", "back"))
    hf = make_hf_bert("BertForMaskedLM", 101, 2, hf_dir)
    with open(f"{hf_dir}/vocab.txt", "w") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                          + [f"w{i}" for i in range(96)]) + "\n")
    assert main(["convert", "--from", "hf", "--src", hf_dir, "--dst", model_dir]) == 0
    info = read_model_json(model_dir)
    assert isinstance(info.model, MaskedLanguageModel)
    assert info.vocabulary["kind"] == "wordpiece" and info.vocabulary["path"].endswith("vocab.txt")
    assert main(["convert", "--to", "hf", "--src", model_dir, "--dst", back]) == 0
    reloaded = torch_reload(back)
    ids, types, mask = batch(101)
    np.testing.assert_allclose(hf_outputs(reloaded, ids, types, mask),
                               hf_outputs(hf, ids, types, mask), atol=1e-5, rtol=1e-5)
    model, params = load_params(hf_dir)
    assert isinstance(model, MaskedLanguageModel) and "mlm" in params


def torch_reload(path):
    import transformers
    return transformers.BertForMaskedLM.from_pretrained(path).eval()
