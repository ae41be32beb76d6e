"""Vocabularies: T5-layout SentencePiece (trained offline here), bytes, sentinels, gin."""
import os

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf
from sentencepiece import sentencepiece_model_pb2

from t5mtl.data import vocab as vocab_lib
from t5mtl.data.vocab import get_vocabulary, sentinel_id, train_sentencepiece
from t5mtl.errors import T5mtlError

TEXT = "The Time Traveller (for so it will be convenient to speak of him) was expounding."


@pytest.fixture(scope="module")
def spm_model(shared_data_dir, tmp_path_factory):
    files = [os.path.join(shared_data_dir, "raw_text_en/gutenberg", f)
             for f in ("pg35.txt", "pg46.txt")]
    path = str(tmp_path_factory.mktemp("spm") / "raw_text_en.model")
    return train_sentencepiece(files, path, vocab_size=800, input_sentence_size=20000)


def test_trained_model_has_t5_layout(spm_model):
    vocab = get_vocabulary("sentencepiece", spm_model)
    tok = vocab.tokenizer
    assert (tok.pad_id(), tok.eos_id(), tok.unk_id(), tok.bos_id()) == (0, 1, 2, -1)
    assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
    assert vocab.vocab_size == 800 + 100
    # sentinels count down from the top: <extra_id_0> is the highest id
    assert sentinel_id(vocab, 0) == 899 and sentinel_id(vocab, 99) == 800
    assert tok.id_to_piece(899) == "▁<extra_id_0>"
    assert tok.id_to_piece(800) == "▁<extra_id_99>"
    assert vocab.decode([sentinel_id(vocab, 0)]) == "<extra_id_0>"
    assert vocab.encode("<extra_id_1>") == [898]


def test_trained_model_round_trips_text(spm_model):
    vocab = get_vocabulary("sentencepiece", spm_model)
    ids = vocab.encode(TEXT)
    assert max(ids) < 800 and vocab.decode(ids) == TEXT
    tf_ids = vocab.encode_tf(tf.constant(TEXT)).numpy()
    assert vocab.decode_tf(tf.constant(tf_ids)).numpy().decode() == TEXT


def test_training_is_deterministic(spm_model, shared_data_dir, tmp_path):
    files = [os.path.join(shared_data_dir, "raw_text_en/gutenberg", f)
             for f in ("pg35.txt", "pg46.txt")]
    again = train_sentencepiece(files, str(tmp_path / "again.model"), vocab_size=800,
                                input_sentence_size=20000)
    def pieces(path):  # the trainer spec differs: it records model_prefix
        proto = sentencepiece_model_pb2.ModelProto()
        with open(path, "rb") as f:
            proto.ParseFromString(f.read())
        return [(p.piece, p.score) for p in proto.pieces]

    assert pieces(spm_model) == pieces(again)


def test_32000_piece_model_gives_t5_ids(spm_model, tmp_path):
    """T5's own layout: 32000 pieces + 100 extra ids = 32100, <extra_id_0> = 32099."""
    proto = sentencepiece_model_pb2.ModelProto()
    with open(spm_model, "rb") as f:
        proto.ParseFromString(f.read())
    for i in range(32000 - len(proto.pieces)):  # pad with rare pieces to T5's size
        proto.pieces.add(piece=f"▁zq{i}", score=-100.0 - i)
    path = tmp_path / "t5_sized.model"
    path.write_bytes(proto.SerializeToString())
    vocab = get_vocabulary("sentencepiece", str(path), extra_ids=100)
    assert vocab.vocab_size == 32100
    assert sentinel_id(vocab, 0) == 32099 and sentinel_id(vocab, 99) == 32000
    assert vocab.tokenizer.id_to_piece(32099) == "▁<extra_id_0>"
    assert vocab.decode(vocab.encode(TEXT)) == TEXT


def test_byte_vocabulary_round_trip_and_sentinels():
    vocab = get_vocabulary()
    assert isinstance(vocab, seqio.ByteVocabulary)
    assert vocab.vocab_size == 3 + 256 + 100
    assert sentinel_id(vocab, 0) == 358 and sentinel_id(vocab, 99) == 259
    text = "Café ☕ naïve — «ok»"
    ids = vocab.encode(text)
    assert ids == [b + 3 for b in text.encode("utf-8")]
    assert vocab.decode(ids) == text
    tf_ids = vocab.encode_tf(tf.constant(text)).numpy()
    np.testing.assert_array_equal(tf_ids, ids)
    assert vocab.decode_tf(tf.constant(tf_ids)).numpy().decode("utf-8") == text
    assert get_vocabulary() is vocab  # cached: tasks sharing it can be mixed


def test_vocabulary_chosen_from_gin(spm_model, shared_data_dir, monkeypatch):
    monkeypatch.setenv("T5MTL_DATA_DIR", os.path.dirname(spm_model))
    try:
        gin.parse_config([
            "get_vocabulary.kind = 'sentencepiece'",
            f"get_vocabulary.path = '{os.path.basename(spm_model)}'",  # data_dir-relative
            "get_vocabulary.extra_ids = 10",
        ])
        vocab = get_vocabulary()
        assert isinstance(vocab, seqio.SentencePieceVocabulary)
        assert vocab.vocab_size == 810 and sentinel_id(vocab, 0) == 809
        gin.clear_config()
        gin.parse_config(["get_vocabulary.extra_ids = 0"])
        assert get_vocabulary().vocab_size == 259
    finally:
        gin.clear_config()


def test_sentinel_out_of_range():
    with pytest.raises(T5mtlError, match="sentinel 100 does not exist"):
        sentinel_id(get_vocabulary(), 100)
    with pytest.raises(T5mtlError, match="0 extra ids"):
        sentinel_id(get_vocabulary(extra_ids=0), 0)


def test_bad_vocabulary_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("T5MTL_DATA_DIR", str(tmp_path))
    with pytest.raises(T5mtlError, match="'bpe'"):
        get_vocabulary("bpe")
    with pytest.raises(T5mtlError, match="needs a vocab.txt"):
        get_vocabulary("wordpiece")
    with pytest.raises(T5mtlError, match="needs a model path"):
        get_vocabulary("sentencepiece")
    missing = str(tmp_path / "nope.model")
    with pytest.raises(T5mtlError, match="nope.model"):
        get_vocabulary("sentencepiece", missing)
    with pytest.raises(T5mtlError, match="nope.model"):
        get_vocabulary("sentencepiece", "nope.model")  # relative to the data_dir
    junk = tmp_path / "junk.model"
    junk.write_text("not a model")
    with pytest.raises(T5mtlError, match="junk.model"):
        get_vocabulary("sentencepiece", str(junk))


def test_train_sentencepiece_bad_inputs(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(T5mtlError, match="empty.txt' is empty"):
        train_sentencepiece([str(empty)], str(tmp_path / "m.model"), vocab_size=50)
    with pytest.raises(T5mtlError, match="missing.txt' does not exist"):
        train_sentencepiece([str(tmp_path / "missing.txt")], str(tmp_path / "m.model"))
    with pytest.raises(T5mtlError, match=r"end in '\.model'"):
        train_sentencepiece([str(empty)], str(tmp_path / "m.spm"))
    small = tmp_path / "small.txt"
    small.write_text("a b c\n")
    with pytest.raises(T5mtlError, match="failed"):
        train_sentencepiece([str(small)], str(tmp_path / "m.model"), vocab_size=5000)


def test_t5_layout_constants():
    assert (vocab_lib.T5_NUM_PIECES, vocab_lib.DEFAULT_EXTRA_IDS) == (32000, 100)
