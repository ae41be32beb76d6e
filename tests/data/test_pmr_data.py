"""MRC data for PMR (t5mtl.data.pmr_data): layout and span labels of a
hand-built example, the way back from token spans to context text,
truncation and windows, SQuAD v1.1 as MRC with EM/F1, classification as
extraction with its rationale."""
import json
import os

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from t5mtl.data import metrics
from t5mtl.data.pmr_data import (MrcExample, MrcLayout, best_answer, classification_examples,
                                 classify_with_rationale, encode_mrc, mrc_arrays,
                                 read_squad_mrc, split_by_group, tokenize_context)
from t5mtl.errors import T5mtlError

CLS, SEP = 1, 2


class ChunkVocab:
    """A toy subword vocabulary: each whitespace word in chunks of 3
    characters, ids handed out on first sight (so words have several tokens)."""

    def __init__(self):
        self.ids = {}

    def encode(self, text):
        return [self.ids.setdefault(w[k:k + 3], 10 + len(self.ids))
                for w in text.split() for k in range(0, len(w), 3)]


# Pieces and tokens (index: chunk, chars):
#   0 Ann 1 a (0,4) | 2 met (5,8) | 3 Bar 4 tho 5 lom 6 ew (9,20) | 7 , (20,21)
#   8 in (22,24) | 9 Rom 10 e (25,29) | 11 . (29,30)
CONTEXT = "Anna met Bartholomew, in Rome."
BARTHOLOMEW, ROME = (9, 20), (25, 29)


def _layout(max_length=64, **kw):
    return MrcLayout(ChunkVocab(), CLS, SEP, max_length=max_length, **kw)


def test_layout_and_answers_map_back_to_their_text():
    layout = _layout()
    ex = MrcExample("who is it", CONTEXT, (BARTHOLOMEW, ROME), id="q1")
    (f,) = encode_mrc(ex, layout)
    v = layout.vocab.ids
    q = [v["who"], v["is"], v["it"]]
    ctx = [v[c] for c in ("Ann", "a", "met", "Bar", "tho", "lom", "ew", ",", "in", "Rom", "e",
                          ".")]
    assert f.input_ids == tuple([CLS] + q + [SEP] + ctx + [SEP])
    assert f.token_type_ids == (0,) * 5 + (1,) * 13
    assert (f.context_start, f.context_end) == (5, 17)
    # Bartholomew: context tokens 3..6 -> positions 8..11; Rome: 9..10 -> 14..15.
    assert f.spans == ((8, 11), (14, 15))
    assert f.span_text(8, 11) == "Bartholomew" and f.span_text(14, 15) == "Rome"
    assert ex.references == ("Bartholomew", "Rome")
    assert f.span_text(5, 16) == CONTEXT
    assert f.span_text(9, 10) == "Bartholomew"            # sub-tokens widen to their piece
    assert f.cls_label is None
    with pytest.raises(T5mtlError, match=r"span \(3, 6\) is not within the context tokens"):
        f.span_text(3, 6)


def test_every_predicted_span_is_a_substring_of_the_context():
    (f,) = encode_mrc(MrcExample("where", "Hello, (big) world!! 12-3 ok", ()), _layout())
    for i in range(f.context_start, f.context_end):
        for j in range(i, f.context_end):
            s, e = f.span_chars(i, j)
            assert f.span_text(i, j) == f.context[s:e] and f.span_text(i, j).strip() != ""
    assert f.span_text(f.context_start, f.context_end - 1) == "Hello, (big) world!! 12-3 ok"


def test_answer_inside_a_piece_widens_to_the_piece():
    (f,) = encode_mrc(MrcExample("q", CONTEXT, ((9, 14),)), _layout())       # "Barth"
    assert [f.span_text(*s) for s in f.spans] == ["Bartholomew"]
    with pytest.raises(T5mtlError, match=r"answer span \(25, 40\) is not a non-empty span"):
        MrcExample("q", CONTEXT, ((25, 40),))


def test_truncation_drops_answers_cut_off():
    # Query "who is it" (3 tokens) + 3 specials: max_length - 6 context tokens.
    ex = MrcExample("who is it", CONTEXT, (BARTHOLOMEW, ROME), relevant=True)
    only_rome = MrcExample("who is it", CONTEXT, (ROME,), relevant=True)
    no_answers = MrcExample("who is it", CONTEXT, (), relevant=True)
    for room, texts, rome_relevant in ((9, ["Bartholomew"], False),   # Rome (9..10) cut off
                                       (10, ["Bartholomew"], False),  # Rome half in: dropped
                                       (11, ["Bartholomew", "Rome"], True)):
        layout = _layout(room + 6)
        (f,) = encode_mrc(ex, layout)
        assert len(f.input_ids) == room + 6 and f.input_ids[-1] == SEP
        assert [f.span_text(*s) for s in f.spans] == texts
        assert encode_mrc(only_rome, layout)[0].cls_label is rome_relevant
        assert encode_mrc(no_answers, layout)[0].cls_label is True
    with pytest.raises(T5mtlError, match="max_length=6 leaves no room"):
        encode_mrc(ex, _layout(6))
    # The query is cut to max_query_length tokens.
    (f,) = encode_mrc(ex, _layout(max_query_length=2))
    assert f.context_start == 4 and f.span_text(*f.spans[0]) == "Bartholomew"


def test_doc_stride_windows_and_best_answer():
    ex = MrcExample("who is it", CONTEXT, (BARTHOLOMEW, ROME), id="q")
    windows = encode_mrc(ex, _layout(12, doc_stride=3))       # 6 context tokens a window
    # Windows start at context tokens 0 (Ann), 3 (Bar), 6 (ew): 6 + 6 reaches the end.
    assert [w.token_chars[0] for w in windows] == [(0, 4), (9, 20), (9, 20)]
    assert [len(w.token_chars) for w in windows] == [6, 6, 6]
    assert [[w.span_text(*s) for s in w.spans] for w in windows] == \
        [[], ["Bartholomew"], ["Rome"]]
    assert windows[1].spans == ((5, 8),) and windows[2].spans == ((8, 9),)
    assert best_answer(windows, [5, 5, 8], [6, 8, 9], [1.0, 3.0, 2.0]) == "Bartholomew"
    assert best_answer(windows, [5, 5, 8], [6, 8, 9], [1.0, -np.inf, 2.0]) == "Rome"
    assert best_answer(windows, [5, 5, 8], [6, 8, 9], [-np.inf] * 3) == ""
    # A stride too long for the answers: Bartholomew is in no window whole.
    coarse = encode_mrc(ex, _layout(12, doc_stride=4))
    assert [[w.span_text(*s) for s in w.spans] for w in coarse] == [[], [], ["Rome"]]
    with pytest.raises(T5mtlError, match="doc_stride must be >= 1 or None, got 0"):
        _layout(doc_stride=0)


def test_mrc_arrays():
    layout = _layout()
    (qa,) = encode_mrc(MrcExample("who is it", CONTEXT, (BARTHOLOMEW, ROME)), layout)
    neg, pos = (encode_mrc(e, layout)[0] for e in classification_examples(
        "Rome.", ["no", "yes"], gold=1))
    arrays = mrc_arrays([qa, neg, pos], 20, pad_id=0)
    assert {k: (v.shape, v.dtype.name) for k, v in arrays.items()} == {
        "input_ids": ((3, 20), "int32"), "token_type_ids": ((3, 20), "int32"),
        "attention_mask": ((3, 20), "int32"), "context_mask": ((3, 20), "bool"),
        "span_labels": ((3, 20, 20), "int8"), "cls_span": ((3,), "bool")}
    assert list(arrays["input_ids"][0]) == list(qa.input_ids) + [0, 0]
    assert list(arrays["attention_mask"][0]) == [1] * 18 + [0] * 2
    assert list(np.flatnonzero(arrays["context_mask"][0])) == list(range(5, 17))
    assert list(np.flatnonzero(arrays["token_type_ids"][0])) == list(range(5, 18))
    assert sorted(zip(*np.nonzero(arrays["span_labels"][0]))) == [(8, 11), (14, 15)]
    assert list(arrays["cls_span"]) == [False, True, True]
    assert [int(arrays["span_labels"][r].sum()) for r in (1, 2)] == [0, 1]
    assert arrays["span_labels"][2, 0, 0] == 1
    with pytest.raises(T5mtlError, match="has 18 tokens, more than length=10"):
        mrc_arrays([qa], 10)


def test_wordpiece_pieces_tokenize_as_the_whole_text():
    """With a WordPiece vocabulary (tokenizers' BERT pipeline) encoding piece
    by piece gives the ids of encoding the whole context."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "hanse", "##atic", "league", "was",
             "founded", "in", "12", "##56", ",", ".", "(", ")", "lu", "##beck", "by"]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()

    class WordPiece:
        def encode(self, text):
            return tok.encode(text, add_special_tokens=False).ids

    context = "The Hanseatic League was founded in 1256 (in Lübeck), by merchants."
    ids, _ = tokenize_context(context, WordPiece())
    assert ids == tok.encode(context, add_special_tokens=False).ids
    ex = MrcExample("who", context, ((4, 20), (36, 40)))
    (f,) = encode_mrc(ex, MrcLayout(WordPiece(), 2, 3, max_length=40))
    assert [f.span_text(*s) for s in f.spans] == ["Hanseatic League", "1256"]
    assert f.spans == ((4, 6), (10, 11))       # [CLS] who=[UNK] [SEP] the | hanse ##atic league


def test_squad_v1_1_as_mrc(shared_data_dir):
    examples = read_squad_mrc(os.path.join(shared_data_dir, "squad_v1.1", "dev-v1.1.json"))
    assert len(examples) == 10570 and len({e.group for e in examples}) == 48
    first = examples[0]
    assert (first.id, first.group, first.query) == (
        "56be4db0acb8001400a502ec", "Super_Bowl_50",
        "Which NFL team represented the AFC at Super Bowl 50?")
    assert first.answers == ((177, 191),) and first.references == ("Denver Broncos",) * 3
    assert all(e.context[s:t] in e.references for e in examples for s, t in e.answers)
    (f,) = encode_mrc(first, _layout(400, max_query_length=32))
    assert [f.span_text(*s) for s in f.spans] == ["Denver Broncos"]

    train, held = split_by_group(examples, 0.25, seed=0)
    assert len({e.group for e in held}) == 12
    assert not {e.group for e in train} & {e.group for e in held}
    assert len(train) + len(held) == 10570
    assert [e.id for e in split_by_group(examples, 0.25, seed=0)[1]] == [e.id for e in held]
    assert [e.id for e in split_by_group(examples, 0.25, seed=1)[1]] != [e.id for e in held]


def test_squad_reader_names_a_misplaced_answer(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{
        "context": "abc def", "qas": [{"id": "x1", "question": "q?",
                                       "answers": [{"answer_start": 1, "text": "def"}]}]}]}]}))
    with pytest.raises(T5mtlError, match="question x1: answer 'def' is not at character 1"):
        read_squad_mrc(str(path))


def test_em_f1_of_predicted_spans_by_hand():
    context = "The Denver Broncos beat the Carolina Panthers 24–10."
    examples = [MrcExample("who won?", context, ((4, 18),),
                           references=("Denver Broncos", "The Denver Broncos")),
                MrcExample("who lost?", context, ((28, 45),)),
                MrcExample("score?", context, ((46, 51),))]
    feats = [encode_mrc(e, _layout())[0] for e in examples]

    def span(f, start_char, end_char):
        ks = [k for k, (s, e) in enumerate(f.token_chars) if s >= start_char and e <= end_char]
        return f.context_start + ks[0], f.context_start + ks[-1]

    predictions = [feats[0].span_text(*span(feats[0], 11, 18)),       # "Broncos"
                   feats[1].span_text(*span(feats[1], 24, 45)),       # "the Carolina Panthers"
                   feats[2].span_text(*span(feats[2], 46, 48))]       # "24"
    assert predictions == ["Broncos", "the Carolina Panthers", "24"]
    # 1: "broncos" vs "denver broncos": P 1, R 1/2 -> F1 2/3, EM 0.
    # 2: articles dropped -> "carolina panthers": EM 1, F1 1.
    # 3: "24" vs "24–10" (an en dash is not ASCII punctuation: one token): 0, 0.
    got = metrics.squad([e.references for e in examples], predictions)
    assert got["em"] == pytest.approx(100 / 3)
    assert got["f1"] == pytest.approx(100 * (2 / 3 + 1) / 3)


def test_classification_as_extraction_returns_a_rationale_of_the_input():
    text = "The film was a delight from start to finish."
    labels = ["negative. bad, feeling not good.", "positive. good, having a good feeling."]
    examples = classification_examples(text, labels, gold=1, example_id="rev7")
    assert [(e.query, e.context, e.relevant, e.id, e.group) for e in examples] == [
        (labels[0], text, False, "rev7/0", "rev7"), (labels[1], text, True, "rev7/1", "rev7")]
    layout = _layout()
    windows = [encode_mrc(e, layout)[0] for e in examples]
    assert [w.cls_label for w in windows] == [False, True] and windows[1].spans == ()

    f = windows[1]
    length = max(len(w.input_ids) for w in windows)
    start = f.context_start + [c for c in f.token_chars].index((13, 14))             # "a"
    end = f.context_start + max(k for k, c in enumerate(f.token_chars) if c[1] == 22)  # "delight"
    logits = np.zeros((2, length, length))
    logits[0, 0, 0], logits[1, 0, 0] = 1.0, 3.0
    logits[1, start, end] = 5.0
    logits[1, 1, 1] = 9.0                                   # a query token: not a span
    logits[1, end, start] = 9.0                             # end before start
    logits[1, f.context_start, end] = 8.0                   # longer than 4 tokens
    pred = classify_with_rationale(windows, logits, max_span_length=4)
    assert (pred.label, pred.score, pred.rationale, pred.rationale_chars) == \
        (1, 3.0, "a delight", (13, 22))
    assert classify_with_rationale(windows, logits).rationale == "The film was a delight"
    logits[0, 0, 0] = 4.0
    pred = classify_with_rationale(windows, logits)
    s, e = pred.rationale_chars
    assert pred.label == 0 and pred.rationale == text[s:e] and pred.rationale in text
    with pytest.raises(T5mtlError, match="gold label 2 is not one of the 2"):
        classification_examples(text, labels, gold=2)
