"""t5mtl/data/passages.py: the retrieval corpus of SQuAD dev paragraphs and
raw_text_en word windows."""
import json
import os

import pytest

from t5mtl.data import passages
from t5mtl.errors import T5mtlError


def test_word_windows_by_hand():
    text = "a b c d e f g"
    assert passages.word_windows(text, 3, 3) == ["a b c", "d e f", "g"]
    assert passages.word_windows(text, 3, 2) == ["a b c", "c d e", "e f g"]
    assert passages.word_windows(text, 7, 1) == ["a b c d e f g"]
    assert passages.word_windows("  ", 3, 3) == []
    with pytest.raises(T5mtlError, match="stride >= 1, got 3, 0"):
        passages.word_windows(text, 3, 0)


def test_squad_passages_are_the_dev_paragraphs(shared_data_dir):
    got = passages.squad_passages(shared_data_dir)
    with open(os.path.join(shared_data_dir, "squad_v1.1", "dev-v1.1.json")) as f:
        articles = json.load(f)["data"]
    contexts = [p["context"] for a in articles for p in a["paragraphs"]]
    assert [p.text for p in got] == contexts and len(got) == 2067
    assert got[0].id == "squad/0/0" and got[0].title == articles[0]["title"].replace("_", " ")


def test_book_windows_cover_every_word_once_and_ids_are_unique(shared_data_dir):
    books = passages.book_passages(words=100, stride=100, data_dir=shared_data_dir)
    by_file = {}
    for p in books:
        by_file.setdefault(p.title, []).append(p.text)
    path = os.path.join(shared_data_dir, "raw_text_en", "gutenberg", "pg35.txt")
    with open(path, encoding="utf-8-sig") as f:
        words = f.read().split()
    assert " ".join(by_file["pg35.txt"]).split() == words
    assert all(len(t.split()) == 100 for t in by_file["pg35.txt"][:-1])
    corpus = passages.passage_corpus(data_dir=shared_data_dir)
    assert len({p.id for p in corpus}) == len(corpus) == 2067 + len(books)
    assert passages.passage_corpus(limit=5, data_dir=shared_data_dir) == corpus[:5]
