"""Rank classification on a converted random model equals a direct
log-likelihood computation in HF transformers (torch)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import t5mtl.data.registry  # noqa: E402,F401
from t5mtl.convert.hf import import_hf  # noqa: E402
from t5mtl.errors import T5mtlError  # noqa: E402
from t5mtl.infer.rank_classification import rank_classify  # noqa: E402
from t5mtl.models.encoder_decoder import EncoderDecoderModel  # noqa: E402
from tests.hf_models import make_hf_model  # noqa: E402


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("rank") / "hf")
    hf_model = make_hf_model("byte_vocab", directory, seed=3)
    cfg, params = import_hf(directory)
    return hf_model, EncoderDecoderModel(cfg), params


def test_rank_classification_equals_direct_log_likelihood(converted):
    hf_model, model, params = converted
    import seqio
    options = ["even", "odd"]
    out = rank_classify(model, params, "synth_parity", options, num_examples=6)
    task = seqio.get_mixture_or_task("synth_parity")
    vocab = task.output_features["targets"].vocabulary
    ds = task.get_dataset({"inputs": 512, "targets": 64}, split="validation", shuffle=False)
    examples = list(ds.take(6).as_numpy_iterator())
    direct = np.zeros((6, 2))
    for i, ex in enumerate(examples):
        for j, option in enumerate(options):
            labels = torch.tensor([list(vocab.encode(option)) + [1]])
            with torch.no_grad():
                logits = hf_model(input_ids=torch.tensor([ex["inputs"].tolist()]),
                                  labels=labels).logits
            logp = torch.log_softmax(logits, -1)[0, torch.arange(labels.shape[1]), labels[0]]
            direct[i, j] = float(logp.sum())
    np.testing.assert_allclose(out["scores"], direct, atol=1e-3)
    assert out["predictions"] == [options[k] for k in direct.argmax(1)]
    expected = 100 * np.mean([options[k] == vocab.decode(ex["targets"].tolist())
                              for k, ex in zip(direct.argmax(1), examples)])
    assert out["accuracy"] == pytest.approx(expected)


def test_targets_outside_the_options_are_an_error(converted):
    _, model, params = converted
    with pytest.raises(T5mtlError, match="not among the options"):
        rank_classify(model, params, "synth_parity", ["yes", "no"], num_examples=4)
