"""t5mtl/data/fid_task.py: a round's FiD rows as a seqio task; the converter
gives back fid_batch's arrays (padded to the run's lengths), never packs."""
import numpy as np
import pytest
import seqio

from t5mtl.data import fid_features as fid
from t5mtl.data.fewshot_qa import QAExample
from t5mtl.data.fid_task import FiDFeatureConverter, register_fid_task
from t5mtl.data.passages import Passage
from t5mtl.data.vocab import get_vocabulary
from t5mtl.errors import T5mtlError

VOCAB = get_vocabulary("byte")
PASSAGES = {p.id: p for p in [Passage("a", "Cats", "Cats purr."),
                              Passage("b", "Dogs", "Dogs bark loudly."),
                              Passage("c", "Owls", "Owls hoot at night.")]}
EXAMPLES = [QAExample("q1", "Who purrs?", ("Cats",), "a"),
            QAExample("q2", "Who barks?", ("Dogs",), "b"),
            QAExample("q3", "Who hoots?", ("Owls",), "c")]
LENGTHS = {"inputs": 40, "query": 12, "passages": 16, "targets": 6}
RUN_LENGTHS = {"inputs": 48, "queries": 12, "passages": 20, "targets": 8}


@pytest.fixture(scope="module")
def rows():
    retrieved = [["a", "b"], ["b", ""], ["c", "a"]]          # "" = a faiss miss: padding row
    return fid.fid_batch(EXAMPLES, VOCAB, PASSAGES, "retrieved", k=2, retrieved=retrieved,
                         lengths=LENGTHS)


def _pad(a, length):
    return np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, length - a.shape[-1])])


def test_converted_task_gives_back_the_rows_padded_to_the_run_lengths(rows):
    register_fid_task("test_fid_round", rows, VOCAB)
    ds = seqio.get_dataset("test_fid_round", RUN_LENGTHS, dataset_split="train", shuffle=False,
                           feature_converter=FiDFeatureConverter())
    got = {n: np.stack([ex[n] for ex in ds.as_numpy_iterator()]) for n in rows}
    model_length = {"encoder_input_tokens": 48, "query_tokens": 12, "passage_tokens": 20,
                    "decoder_input_tokens": 8, "decoder_target_tokens": 8,
                    "decoder_loss_weights": 8}
    for name, want in rows.items():
        np.testing.assert_array_equal(got[name], _pad(want, model_length[name]), err_msg=name)
    assert got["encoder_input_tokens"].shape == (3, 2, 48)
    assert not got["passage_tokens"][1, 1].any()              # the miss stays a padding row


def test_a_new_round_replaces_the_task_and_bad_rows_are_named(rows):
    register_fid_task("test_fid_round2", rows, VOCAB)
    fewer = {n: a[:1] for n, a in rows.items()}
    register_fid_task("test_fid_round2", fewer, VOCAB)
    ds = seqio.get_dataset("test_fid_round2", RUN_LENGTHS, dataset_split="train", shuffle=False,
                           feature_converter=FiDFeatureConverter())
    assert len(list(ds.as_numpy_iterator())) == 1
    with pytest.raises(T5mtlError, match="query_tokens"):
        register_fid_task("bad", {n: a for n, a in rows.items() if n != "query_tokens"}, VOCAB)
    with pytest.raises(T5mtlError, match="disagree"):
        register_fid_task("bad", {**rows, "query_tokens": rows["query_tokens"][:2]}, VOCAB)
    with pytest.raises(T5mtlError, match="pack = False"):
        FiDFeatureConverter(pack=True)
