"""A passage corpus for retrieval from ../shared/data: every SQuAD v1.1 dev
paragraph, plus raw_text_en's books cut into word windows.

    passages = passage_corpus(words=100, stride=100)   # [Passage(id, title, text)]

* SQuAD: one passage per paragraph of dev-v1.1.json, whole (no cutting; a
  question's gold passage is its paragraph), id "squad/<article>/<paragraph>"
  (indices in file order), title the article's with underscores as spaces.
* raw_text_en: each book's words (whitespace-split, Gutenberg headers kept
  as written) in windows of `words` words starting every `stride` words
  (stride < words: overlapping windows; the last window may be shorter),
  id "raw/<file name>/<window index>", title the file name.

The order is fixed (SQuAD first, then the books sorted by path), so ids and
order are the same on every machine. `limit` keeps the first `limit`.
"""
from __future__ import annotations

import dataclasses
import json
import os

from t5mtl.data.data_dir import data_path
from t5mtl.errors import T5mtlError

SQUAD_FILE = ("squad_v1.1", "dev-v1.1.json")


@dataclasses.dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str


def squad_passages(data_dir: str | None = None) -> list[Passage]:
    """Every paragraph of SQuAD v1.1 dev, in file order."""
    path = data_path(*SQUAD_FILE, data_dir=data_dir)
    with open(path, encoding="utf-8") as f:
        articles = json.load(f)["data"]
    return [Passage(f"squad/{a}/{p}", article["title"].replace("_", " "), para["context"])
            for a, article in enumerate(articles)
            for p, para in enumerate(article["paragraphs"])]


def word_windows(text: str, words: int, stride: int) -> list[str]:
    """`text`'s words in windows of `words`, one starting every `stride`."""
    if words < 1 or stride < 1:
        raise T5mtlError(f"word windows need words >= 1 and stride >= 1, got {words}, {stride}")
    tokens, out = text.split(), []
    for start in range(0, len(tokens), stride):
        out.append(" ".join(tokens[start:start + words]))
        if start + words >= len(tokens):                  # this window reached the end
            break
    return out


def book_passages(words: int = 100, stride: int = 100,
                  data_dir: str | None = None) -> list[Passage]:
    """raw_text_en's books as word windows, books sorted by path."""
    root = data_path("raw_text_en", data_dir=data_dir)
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(root) for f in names
                   if f.endswith(".txt"))
    if not files:
        raise T5mtlError(f"no .txt files under {root}")
    out = []
    for path in files:
        name = os.path.basename(path)
        with open(path, encoding="utf-8-sig") as f:
            chunks = word_windows(f.read(), words, stride)
        out += [Passage(f"raw/{name}/{i}", name, c) for i, c in enumerate(chunks)]
    return out


def passage_corpus(words: int = 100, stride: int = 100, limit: int | None = None,
                   data_dir: str | None = None) -> list[Passage]:
    """SQuAD's dev paragraphs, then the books' windows; the first `limit`."""
    out = squad_passages(data_dir) + book_passages(words, stride, data_dir)
    return out[:limit] if limit else out
