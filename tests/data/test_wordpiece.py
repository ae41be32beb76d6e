"""WordPiece vocabulary: ids equal HF BertTokenizer's (Python and TF paths), decode, layout, errors."""
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from t5mtl.data import vocab as vocab_lib
from t5mtl.data import wordpiece_recipe
from t5mtl.data.vocab import WORDPIECE_EN_PATH, get_vocabulary
from t5mtl.data.wordpiece import SPECIAL_TOKENS, WordPieceVocabulary
from t5mtl.errors import T5mtlError

SAMPLES = [
    "Hello, World! The Time Traveller (for so it will be convenient to speak of him) was expounding.",
    "Naïve café owners in Zürich sold 1,234.56 crêpes: façade, résumé, ÅNGSTRÖM, Ça va?",
    "supercalifragilisticexpialidocious xqzvwjk Brobdingnagian zzzzzzzzzzzzzzzzzz",
    "中文字符 and 日本語 mixed中with English",
    "  extra\t\twhitespace\n\nand\r\nline breaks\u00a0nbsp\u3000ideographic space  ",
    "don't stop-believing... ¿qué? ¡sí! «quoted» “curly” ‘single’ $5 & 100% #1 @user",
    "ΣΑΣ ΟΔΟΣ İstanbul straße ﬁne Ⅻ ½ ² 😀👍",
    "control\x00chars\x07and\ufffdreplacement, zero\u200bwidth and soft\u00adhyphen",
    "a cloze: Paris is the [MASK] of France.[SEP]second [CLS]x[UNK]y [mask] [PAD]",
    "a" * 100 + " " + "b" * 101 + " " + "é" * 101,
    "##abc a##b 3.14159 2024-01-01 e-mail@example.com http://x.org/a?b=c",
    "",
    "   ",
]
# Cased-only tokens added to the (uncased) shipped vocabulary for the cased check.
CASED_EXTRA = ["The", "Hello", "World", "##LLO", "É", "café", "Zürich", "Time"]


def _book_lines(shared_data_dir, n=150):
    path = os.path.join(shared_data_dir, "raw_text_en/gutenberg/pg46.txt")
    with open(path, encoding="utf-8") as f:
        return [line for line in f.read().split("\n") if line.strip()][:n]


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def vocab_and_hf(request, tmp_path_factory):
    """(our vocabulary, HF's BertTokenizer over the same vocab.txt)."""
    from transformers import BertTokenizer
    lowercase = request.param
    directory = tmp_path_factory.mktemp("uncased" if lowercase else "cased")
    path = str(directory / "vocab.txt")
    shutil.copy(WORDPIECE_EN_PATH, path)
    if not lowercase:
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(t + "\n" for t in CASED_EXTRA))
    hf = BertTokenizer.from_pretrained(str(directory), do_lower_case=lowercase)
    vocab = WordPieceVocabulary(path, lowercase=lowercase)
    assert len(hf) == vocab.vocab_size  # HF read the same file
    return vocab, hf


def test_shipped_vocabulary_layout():
    vocab = get_vocabulary("wordpiece_en")
    with open(WORDPIECE_EN_PATH, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert vocab.vocab_size == len(lines) == 8000
    assert list(vocab.tokens) == lines
    assert lines[:5] == list(SPECIAL_TOKENS)
    rest = lines[5:]
    assert rest == sorted(rest) and len(set(rest)) == len(rest)  # the recipe's order
    assert (vocab.pad_id, vocab.unk_id, vocab.cls_id, vocab.sep_id, vocab.mask_id) == (0, 1, 2, 3, 4)
    assert vocab.eos_id is None and vocab.extra_ids == 0 and vocab.lowercase
    assert vocab.special_ids == (0, 1, 2, 3, 4)
    assert get_vocabulary("wordpiece_en") is vocab
    assert vocab_lib.vocabulary_spec(vocab) == {"kind": "wordpiece_en"}
    assert vocab_lib.vocabulary_from_spec({"kind": "wordpiece_en"}) is vocab


def test_wordpiece_kind_with_a_path_and_its_spec(tmp_path):
    path = str(tmp_path / "vocab.txt")
    shutil.copy(WORDPIECE_EN_PATH, path)
    cased = get_vocabulary("wordpiece", path, lowercase=False)
    assert not cased.lowercase and cased != get_vocabulary("wordpiece", path)
    spec = vocab_lib.vocabulary_spec(cased)
    assert spec == {"kind": "wordpiece", "path": path, "lowercase": False}
    again = vocab_lib.vocabulary_from_spec(spec)
    assert again == cased and again.encode("The Cat") == cased.encode("The Cat")
    with pytest.raises(T5mtlError, match="no extra ids"):
        get_vocabulary("wordpiece", path, extra_ids=100)
    with pytest.raises(T5mtlError, match="takes no path"):
        get_vocabulary("wordpiece_en", path)


def test_ids_equal_hf_tokenizer(vocab_and_hf, shared_data_dir):
    vocab, hf = vocab_and_hf
    texts = SAMPLES + _book_lines(shared_data_dir)
    expected = [hf(t, add_special_tokens=False)["input_ids"] for t in texts]
    flat = [i for ids in expected for i in ids]
    # The sample exercises unknown words, multi-piece words and special tokens.
    assert vocab.unk_id in flat and vocab.mask_id in flat
    assert any(vocab.tokens[i].startswith("##") for i in flat)

    assert [vocab.encode(t) for t in texts] == expected
    assert vocab.encode_tf(tf.constant(texts)).to_list() == expected  # a batch, eager
    in_pipeline = tf.data.Dataset.from_tensor_slices(texts).map(vocab.encode_tf)  # scalars, graph
    assert [ids.tolist() for ids in in_pipeline.as_numpy_iterator()] == expected


def test_hand_checked_ids():
    vocab = get_vocabulary("wordpiece_en")
    tid = vocab.token_id
    assert vocab.encode("Paris is the [MASK].") == [
        tid("paris"), tid("is"), tid("the"), vocab.mask_id, tid(".")]
    assert vocab.encode("Café  NAÏVE") == [tid("ca"), tid("##fe"), tid("na"), tid("##ive")]
    # A word of 100 characters is looked up; one of 101 is [UNK] whole.
    assert vocab.encode("a" * 100)[0] == tid("a") and len(vocab.encode("a" * 100)) > 1
    assert vocab.encode("a" * 101) == [vocab.unk_id]
    assert vocab.encode_tf(tf.constant("a" * 101)).numpy().tolist() == [vocab.unk_id]


def test_decode_matches_hf_and_inverts_encode(vocab_and_hf):
    vocab, hf = vocab_and_hf
    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab.vocab_size, size=(24, 20))
    ids[:, 15:] = 0    # padding at the end
    ids[5, 3] = 0      # and inside
    ids[7, :] = 0      # an all-padding row
    ids[9, 0] = vocab.token_id("##s")  # a continuation first
    expected = [hf.decode([i for i in row if i != 0], clean_up_tokenization_spaces=False)
                for row in ids.tolist()]
    assert expected[7] == ""
    assert [vocab.decode(row) for row in ids.tolist()] == expected
    assert [s.decode() for s in vocab.decode_tf(tf.constant(ids)).numpy()] == expected
    assert vocab.decode_tf(tf.constant(ids[3])).numpy().decode() == expected[3]
    ragged = tf.ragged.constant([ids[0, :4].tolist(), ids[1, :2].tolist()])
    assert [s.decode() for s in vocab.decode_tf(ragged).numpy()] == [
        vocab.decode(ids[0, :4].tolist()), vocab.decode(ids[1, :2].tolist())]

    if vocab.lowercase:  # in-vocabulary text, spaced as the decoder writes it
        for text in ("it was the best of times, it was the worst of times.",
                     "what? no! the traveller ' s hand - made machine ( quite ) vanished",
                     "[CLS] the [MASK] of france [SEP]"):
            assert vocab.decode(vocab.encode(text)) == text
            assert vocab.decode_tf(vocab.encode_tf(tf.constant(text))).numpy().decode() == text


@pytest.mark.parametrize("lines, message", [
    (None, "does not exist"),
    ([], "is empty"),
    (["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]", "a"], r"\[PAD\] at id 1"),
    (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"], r"lacks \[MASK\]"),
    (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "a"], "lines 6 and 7"),
])
def test_bad_vocab_files(tmp_path, lines, message):
    path = str(tmp_path / "vocab.txt")
    if lines is not None:
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(t + "\n" for t in lines))
    with pytest.raises(T5mtlError, match=message) as e:
        WordPieceVocabulary(path)
    assert path in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(T5mtlError, match=message):
        get_vocabulary("wordpiece", path)


def test_recipe_is_deterministic(shared_data_dir, tmp_path):
    files = [os.path.join(shared_data_dir, "raw_text_en/gutenberg/pg46.txt")]
    tokens = wordpiece_recipe.train_wordpiece(files, vocab_size=300)
    assert tokens == wordpiece_recipe.train_wordpiece(files, vocab_size=300)
    assert len(tokens) == 300 and tokens[:5] == list(SPECIAL_TOKENS)
    assert tokens[5:] == sorted(tokens[5:]) and "the" in tokens
    with pytest.raises(T5mtlError, match="nope.txt"):
        wordpiece_recipe.train_wordpiece([str(tmp_path / "nope.txt")])
