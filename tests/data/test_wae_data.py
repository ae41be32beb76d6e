"""WAE-style pretraining examples from plain text (t5mtl.data.wae_data):
sentences, documents, anchors, and the queries, positives and negatives of
a tiny hand-built corpus; a smoke run over one real book."""
import os

import pytest

from t5mtl.data.wae_data import (Document, WaeConfig, anchor_mentions, documents_from_text,
                                 lowercase_words, read_text_documents, select_anchors,
                                 sentence_anchors, split_sentences, wae_examples)
from t5mtl.errors import T5mtlError

A = Document("a", ("The ship left the harbour at dawn.",
                   "Later that day Anna Berg reached Bristol with the letters.",
                   "The crew cheered."))
B = Document("b", ("Rain fell all night.",
                   "By noon Anna Berg had sold the letters to a merchant.",
                   "Nobody asked Anna Berg why."))
C = Document("c", ("The merchants of Bristol grew rich on trade.",
                   "Every ship brought wine from abroad.",
                   "Prices rose."))
D = Document("d", ("Sheep grazed on the hill.", "The shepherd counted them twice."))
CORPUS = [A, B, C, D]


def test_sentences_and_anchor_candidates():
    assert split_sentences('Mr. Jaggers came in.  "Well," said Joe,\n"so it is!" Then J. Smith '
                           'left. the end') == [
        "Mr. Jaggers came in.", '"Well," said Joe, "so it is!"', "Then J. Smith left. the end"]
    # Not: the sentence's first word, a quotation's first word, "I", a title alone.
    assert sentence_anchors("Joe Gargery and Pip met Mr. Jaggers.") == ["Gargery", "Pip",
                                                                         "Mr. Jaggers"]
    assert sentence_anchors('Then Mr. Jaggers told Joe Gargery and I, "Come to London," '
                            'as Mr. said.') == ["Mr. Jaggers", "Joe Gargery", "London"]
    assert sentence_anchors("We met Anna Maria Louisa Berg.", max_anchor_words=3) == []
    assert sentence_anchors("We met Anna Maria Louisa Berg.", max_anchor_words=4) == \
        ["Anna Maria Louisa Berg"]


def test_documents_from_gutenberg_text():
    text = ("\ufeffThe Project Gutenberg EBook of X\n\n*** START OF THIS PROJECT GUTENBERG "
            "EBOOK X ***\n\none two three.\nFour five.\n\nsix seven\n\n\neight nine ten "
            "eleven.\n\n*** END OF THIS PROJECT GUTENBERG EBOOK X ***\n\nLicence words.\n")
    docs = documents_from_text("x.txt", text, words_per_document=6)
    # Paragraphs of 5, 2 and 4 words: the first document closes at 7 >= 6 words.
    assert docs == [Document("x.txt#0", ("one two three.", "Four five.", "six seven")),
                    Document("x.txt#1", ("eight nine ten eleven.",))]
    with pytest.raises(T5mtlError, match="words_per_document must be >= 1, got 0"):
        documents_from_text("x", text, 0)


def test_anchors_of_the_tiny_corpus():
    mentions = anchor_mentions(CORPUS)
    assert mentions == {"Anna Berg": [(0, 1), (1, 1), (1, 2)], "Bristol": [(0, 1), (2, 0)]}
    assert select_anchors(mentions, 4, WaeConfig(), lowercase_words(CORPUS)) == \
        ["Anna Berg", "Bristol"]
    # In lowercase somewhere -> not a name; in fewer than min_documents -> none.
    assert select_anchors(mentions, 4, WaeConfig(), {"bristol"}) == ["Anna Berg"]
    assert select_anchors(mentions, 4, WaeConfig(min_documents=3)) == []
    assert select_anchors(mentions, 4, WaeConfig(max_document_fraction=0.4)) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_queries_positives_and_negatives_by_hand(seed):
    examples = wae_examples(CORPUS, WaeConfig(window=2, seed=seed))
    text = {d.id: " ".join(d.sentences) for d in CORPUS}
    anna = [e for e in examples if e.group == "Anna Berg"]
    bristol = [e for e in examples if e.group == "Bristol"]
    assert len(examples) == 4 and [e.relevant for e in anna] == [True, False]

    # Anna Berg: mentioned in a and b, so one is the query's, the other the context.
    pos, neg = anna
    assert (pos.query, pos.context) in {
        ("Anna Berg: " + A.sentences[1], text["b"]),                   # both mentions in b
        ("Anna Berg: " + B.sentences[1], text["a"]),
        ("Anna Berg: " + B.sentences[2], text["a"])}
    assert [pos.context[s:e] for s, e in pos.answers] == \
        ["Anna Berg"] * pos.context.count("Anna Berg")
    assert pos.references == ("Anna Berg",) * len(pos.answers)
    # Its negative: the passage around Bristol in c, the only document without Anna Berg.
    assert (neg.query, neg.context, neg.answers) == (pos.query, text["c"], ())

    # Bristol: a and c; the negative is around Anna Berg in b (a mentions Bristol).
    pos, neg = bristol
    assert (pos.query, pos.context) in {("Bristol: " + A.sentences[1], text["c"]),
                                        ("Bristol: " + C.sentences[0], text["a"])}
    assert [pos.context[s:e] for s, e in pos.answers] == ["Bristol"]
    assert (neg.query, neg.context, neg.answers, neg.relevant) == (pos.query, text["b"], (),
                                                                   False)
    assert wae_examples(CORPUS, WaeConfig(window=2, seed=seed)) == examples


def test_masked_queries_and_windows():
    examples = wae_examples(CORPUS, WaeConfig(window=0, mask_anchor=True, seed=0))
    queries = {e.group: e.query for e in examples}
    assert queries["Bristol"] in {"Later that day Anna Berg reached it with the letters.",
                                  "The merchants of it grew rich on trade."}
    assert "Bristol" not in queries["Bristol"] and "Anna Berg" not in queries["Anna Berg"]
    # window 0: the context is the mentioning sentence alone.
    sentences = {s for d in CORPUS for s in d.sentences}
    assert all(e.context in sentences for e in examples)
    # With no document free of the anchor there is no negative.
    only = wae_examples([A, B], WaeConfig(window=0))
    assert [e.relevant for e in only] == [True]
    with pytest.raises(T5mtlError, match="min_documents must be >= 2"):
        WaeConfig(min_documents=1)


def test_one_real_book(shared_data_dir):
    path = os.path.join(shared_data_dir, "raw_text_en", "gutenberg", "pg46.txt")
    docs = read_text_documents([path], words_per_document=800)
    examples = wae_examples(docs, WaeConfig(seed=3))
    positives = [e for e in examples if e.relevant]
    negatives = [e for e in examples if not e.relevant]
    assert len(positives) >= 30 and len(negatives) == len(positives)
    anchors = {e.group for e in examples}
    assert {"Scrooge", "Bob Cratchit"} <= anchors
    for e in positives:
        assert e.answers and {e.context[s:t] for s, t in e.answers} == {e.group}
        assert e.query.startswith(e.group + ": ")
    for e in negatives:
        assert e.answers == () and e.group not in e.context
    assert "Gutenberg" not in anchors and wae_examples(docs, WaeConfig(seed=3)) == examples
