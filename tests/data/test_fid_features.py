"""t5mtl/data/fid_features.py: FiD reader rows, the Atlas batch layout,
padding rows, settings, and the decoder shift against seqio's converter."""
import numpy as np
import pytest

from t5mtl.data import fid_features as fid
from t5mtl.data.fewshot_qa import QAExample
from t5mtl.data.passages import Passage
from t5mtl.data.vocab import get_vocabulary
from t5mtl.errors import T5mtlError

VOCAB = get_vocabulary("byte")
PASSAGES = {p.id: p for p in [Passage("squad/0/0", "Cats", "Cats purr."),
                              Passage("squad/0/1", "Dogs", "Dogs bark loudly."),
                              Passage("raw/b.txt/3", "b.txt", "some words")]}
EX = QAExample("q1", "Who purrs?", ("Cats", "cats"), "squad/0/0")


def ids(text, length):
    """Byte ids (byte + 3), cut to length - 1, EOS, zeros."""
    row = [b + 3 for b in text.encode()][:length - 1] + [1]
    return row + [0] * (length - len(row))


def test_reader_texts_by_hand():
    p = PASSAGES["squad/0/1"]
    assert fid.reader_text("Who?", p) == "question: Who? context: Dogs bark loudly."
    assert fid.reader_text("Who?", p, title=True) == \
        "question: Who? title: Dogs context: Dogs bark loudly."
    assert fid.reader_text("Who?", None) == "question: Who?"
    assert fid.passage_text(p) == "Dogs bark loudly."
    assert fid.passage_text(p, title=True) == "Dogs Dogs bark loudly."


def test_gold_batch_layout_padding_rows_and_eos():
    lengths = {"inputs": 48, "query": 8, "passages": 12, "targets": 6}
    b = fid.fid_batch([EX], VOCAB, PASSAGES, "gold", k=3, lengths=lengths)
    assert {n: a.shape for n, a in b.items()} == {
        "encoder_input_tokens": (1, 3, 48), "query_tokens": (1, 8),
        "passage_tokens": (1, 3, 12), "decoder_input_tokens": (1, 6),
        "decoder_target_tokens": (1, 6), "decoder_loss_weights": (1, 6)}
    assert all(a.dtype == np.int32 for a in b.values())
    row = "question: Who purrs? context: Cats purr."
    assert b["encoder_input_tokens"][0, 0].tolist() == ids(row, 48)
    assert b["encoder_input_tokens"][0, 0, len(row)] == 1            # EOS, then 0s
    assert not b["encoder_input_tokens"][0, 1:].any()                # padding rows
    assert b["passage_tokens"][0, 0].tolist() == ids("Cats purr.", 12)
    assert not b["passage_tokens"][0, 1:].any()
    assert b["query_tokens"][0].tolist() == ids("Who purrs?", 8)     # cut: 7 ids + EOS
    assert b["query_tokens"][0, -1] == 1
    assert b["decoder_target_tokens"][0].tolist() == ids("Cats", 6)
    assert b["decoder_input_tokens"][0].tolist() == [0] + ids("Cats", 6)[:5]
    assert b["decoder_loss_weights"][0].tolist() == [1, 1, 1, 1, 1, 0]


def test_long_row_is_cut_with_eos():
    b = fid.fid_batch([EX], VOCAB, PASSAGES, "gold", k=1, lengths={"inputs": 10})
    assert b["encoder_input_tokens"][0, 0].tolist() == ids("question: Who", 10)[:9] + [1]


def test_closed_book_and_retrieved_settings():
    lengths = {"inputs": 48, "query": 16, "passages": 24, "targets": 8}
    cb = fid.fid_batch([EX], VOCAB, PASSAGES, "closed_book", k=1, lengths=lengths)
    assert cb["encoder_input_tokens"].shape == (1, 1, 48)
    assert cb["encoder_input_tokens"][0, 0].tolist() == ids("question: Who purrs?", 48)
    assert not cb["passage_tokens"].any()
    ex2 = QAExample("q2", "Who barks?", ("Dogs",), "squad/0/1")
    got = fid.fid_batch([EX, ex2], VOCAB, PASSAGES, "retrieved", k=2, lengths=lengths,
                        retrieved=[["squad/0/1", "raw/b.txt/3", "squad/0/0"], ["squad/0/1"]])
    enc = got["encoder_input_tokens"]
    assert enc.shape == (2, 2, 48)
    assert enc[0, 0].tolist() == ids("question: Who purrs? context: Dogs bark loudly.", 48)
    assert enc[0, 1].tolist() == ids("question: Who purrs? context: some words", 48)
    assert enc[1, 0].tolist() == ids("question: Who barks? context: Dogs bark loudly.", 48)
    assert not enc[1, 1].any() and not got["passage_tokens"][1, 1].any()
    assert got["passage_tokens"][0, 1].tolist() == ids("some words", 24)
    assert got["decoder_target_tokens"][1].tolist() == ids("Dogs", 8)
    texts = fid.example_texts(EX, "retrieved", 3, PASSAGES, ["", "squad/0/0"], title=True)
    assert texts["reader"] == ["question: Who purrs? title: Cats context: Cats purr."]


def test_bad_input_is_refused_naming_the_value():
    with pytest.raises(T5mtlError, match="k must be at least 1, got 0"):
        fid.fid_batch([EX], VOCAB, PASSAGES, "gold", k=0)
    with pytest.raises(T5mtlError, match="unknown setting 'open_book'"):
        fid.fid_batch([EX], VOCAB, PASSAGES, "open_book", k=1)
    with pytest.raises(T5mtlError, match="unknown passage id 'squad/9/9'"):
        fid.fid_batch([EX], VOCAB, PASSAGES, "retrieved", k=2, retrieved=[["squad/9/9"]])
    with pytest.raises(T5mtlError, match="unknown passage id 'squad/7/7'"):
        fid.fid_batch([QAExample("q", "?", ("a",), "squad/7/7")], VOCAB, PASSAGES, "gold", k=1)
    with pytest.raises(T5mtlError, match="needs retrieved ids for question 'q1'"):
        fid.fid_batch([EX], VOCAB, PASSAGES, "retrieved", k=2)
    with pytest.raises(T5mtlError, match="length 'target' = 8"):
        fid.fid_batch([EX], VOCAB, PASSAGES, "gold", k=1, lengths={"target": 8})


def test_decoder_features_equal_seqio_converter():
    import seqio
    import tensorflow as tf
    lengths = {"inputs": 40, "targets": 8}
    ours = fid.fid_batch([EX], VOCAB, PASSAGES, "closed_book", k=1, lengths=lengths)
    ds = tf.data.Dataset.from_tensors({
        "inputs": tf.constant([b + 3 for b in b"question: Who purrs?"] + [1], tf.int32),
        "targets": tf.constant([b + 3 for b in b"Cats"] + [1], tf.int32)})
    conv = seqio.EncDecFeatureConverter(pack=False)(ds, lengths)
    theirs = next(iter(conv.as_numpy_iterator()))
    for name in ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights"):
        np.testing.assert_array_equal(ours[name][0], theirs[name], err_msg=name)
    np.testing.assert_array_equal(ours["encoder_input_tokens"][0, 0],
                                  theirs["encoder_input_tokens"])


def test_real_split_gold_batch(shared_data_dir):
    from t5mtl.data import fewshot_qa, passages
    corpus = {p.id: p for p in passages.squad_passages(shared_data_dir)}
    train, _ = fewshot_qa.fewshot_split(fewshot_qa.squad_questions(shared_data_dir),
                                        train_size=64, test_size=10)
    rows = [f"question: {ex.question} context: {corpus[ex.passage_id].text}"
            for ex in train[:2]]
    got = fid.fid_batch(train[:2], VOCAB, corpus, "gold", k=2, lengths={
        "inputs": max(len(r.encode()) for r in rows) + 1, "targets": 64})
    for i, ex in enumerate(train[:2]):
        row = got["encoder_input_tokens"][i, 0]
        assert VOCAB.decode([int(t) for t in row[:list(row).index(1)]]) == rows[i]
        assert not got["encoder_input_tokens"][i, 1].any()
        target = got["decoder_target_tokens"][i]
        assert VOCAB.decode([int(t) for t in target[:list(target).index(1)]]) == ex.answers[0]


def test_padding_rows_do_not_change_the_reader():
    """FusionInDecoder on a gold batch with k=3 (two padding rows) gives the
    k=1 batch's logits: the padding rows are masked out."""
    import jax
    from t5mtl.models import get_config
    from t5mtl.models.fusion_in_decoder import FusionInDecoder
    from t5mtl.models.init import param_shapes
    config = get_config("t5_tiny")
    assert config.vocab_size >= VOCAB.vocab_size
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.normal(0.0, 0.3, s.shape).astype(np.float32),
                          param_shapes(config))
    lengths = {"inputs": 48, "targets": 8}
    model = FusionInDecoder(config)
    logits = jax.jit(model.logits)
    features = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")
    one, three = (fid.fid_batch([EX], VOCAB, PASSAGES, "gold", k=k, lengths=lengths)
                  for k in (1, 3))
    want = np.asarray(logits(params, {n: one[n] for n in features}))
    got = np.asarray(logits(params, {n: three[n] for n in features}))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
