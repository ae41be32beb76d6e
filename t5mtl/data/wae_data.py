"""Wiki-Anchor-Extraction-style (WAE) pretraining examples from plain text.

PMR (Xu et al. 2023; DAMO-NLP-SG/PMR, preprocessing_PMR/) builds its MRC
pretraining data from Wikipedia hyperlinks: for an anchor (linked text) the
query is the definition of the linked entity (the first sentence(s) of its
own article, >= 30 words, the entity's name replaced by "it"), the context
is the passage around the anchor in an article that mentions it (the
sentence +- 2 sentences), and the answers are all occurrences of the anchor
text in that context. The [CLS] span is 1 (relevant). For each positive a
negative is made: the same query with the passage around another anchor, in
an article that does not contain this one; nothing is a gold span there and
[CLS] is 0. Entities are sampled to at most k (10) contexts each.

The local corpus (shared/data/raw_text_en: Gutenberg books, Shakespeare)
has no hyperlinks and no definition articles, so here:

- Documents: each file is cut (Gutenberg header and licence dropped) into
  paragraphs (blank-line separated) and the paragraphs into documents of
  about `words_per_document` words; sentences are split at . ! ? followed by
  a capital (not after Mr., Mrs., Dr., St., ... or an initial).
- Anchors stand in for links: an anchor is a run of 1..max_anchor_words
  capitalized words (joined by single spaces, or by ". " after a title such
  as "Mr. Jaggers"), less a first word that opens its sentence or a
  quotation (a capital by position: "Then Mr. Jaggers" gives "Mr.
  Jaggers"), with a word of >= 3 letters besides
  titles, and that occurs so in at least `min_documents` different documents
  (at most max_document_fraction of them). None of its words (titles aside)
  may occur in lowercase anywhere in the corpus: that drops capitals of
  verse line starts ("Prepare", "Since I") and common nouns ("Sir", "Sperm
  Whale"), and keeps names and places ("Joe Gargery", "London").
- Query: a sentence mentioning the anchor in one of those documents (the
  "source", chosen by the seed), as "<anchor>: <sentence>"; with mask_anchor
  the anchor is left out and its mentions in the sentence become "it", as
  PMR masks the entity in its definitions.
- Positives: in up to `positives_per_anchor` other documents mentioning it,
  the passage of the mentioning sentence +- `window` sentences; the gold
  spans are every occurrence of the anchor text in the passage (whole words,
  case-sensitive), [CLS] relevant.
- Negatives: `negatives_per_positive` per positive, as PMR's: the passage
  around another anchor's mention in a document that does not mention this
  anchor, checked to contain no occurrence of it; no gold span, [CLS] 0.
  Drawn by rejection (negative_tries draws), then, if none was accepted,
  from the list of every eligible mention; none when there is none.

Every choice comes from one random.Random(seed) over sorted lists, so the
examples are a function of the documents and the config. Examples carry the
anchor as `group`, so t5mtl.data.pmr_data.split_by_group holds out whole
anchors (PMR's test set is a sample of entities).
"""
from __future__ import annotations

import dataclasses
import os
import random
import re
from typing import Collection, Iterable, Optional, Sequence

from t5mtl.data.pmr_data import MrcExample
from t5mtl.errors import T5mtlError

TITLES = frozenset({"Mr", "Mrs", "Ms", "Dr", "St", "Mme", "Mlle", "Messrs", "Capt", "Col",
                    "Lt", "Rev", "Prof", "Jr", "Sr"})
_BOUNDARY = re.compile(r"[.!?]+[\"”’')\]]*\s+(?=[\"“‘'(\[]?[A-Z])")
_WORD = re.compile(r"\w+")
_OPENERS = re.compile(r"[\"“”‘’'(\[.!?:;—]")


@dataclasses.dataclass(frozen=True)
class Document:
    """A document's id and its sentences (whitespace collapsed)."""
    id: str
    sentences: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class WaeConfig:
    """How anchors are chosen and examples made (module docstring)."""
    min_documents: int = 2
    max_document_fraction: float = 1.0
    max_anchor_words: int = 3
    window: int = 2
    positives_per_anchor: int = 2
    negatives_per_positive: int = 1
    mask_anchor: bool = False
    max_anchors: Optional[int] = None
    negative_tries: int = 20
    seed: int = 0

    def __post_init__(self):
        if self.min_documents < 2:
            raise T5mtlError(f"min_documents must be >= 2 (a query document and a context "
                             f"document), got {self.min_documents}")
        if self.max_anchor_words < 1 or self.window < 0 or self.positives_per_anchor < 1:
            raise T5mtlError(f"WaeConfig: max_anchor_words={self.max_anchor_words}, "
                             f"window={self.window}, positives_per_anchor="
                             f"{self.positives_per_anchor}: need >= 1, >= 0, >= 1")


# ------------------------------------------------------------ documents

def split_sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph (whitespace collapsed), split after . ! ?
    (and closing quotes) before a capital, except after a title or an initial."""
    text = " ".join(paragraph.split())
    out, start = [], 0
    for m in _BOUNDARY.finditer(text):
        before = _WORD.findall(text[start:m.start() + 1][-12:])
        last = before[-1] if before else ""
        if text[m.start()] == "." and (last in TITLES or (len(last) == 1 and last.isupper())):
            continue
        out.append(text[start:m.start() + len(m.group().rstrip())])
        start = m.end()
    if text[start:]:
        out.append(text[start:])
    return out


def _strip_gutenberg(text: str) -> str:
    start = re.search(r"^\*\*\* ?START OF.*$", text, re.M)
    end = re.search(r"^\*\*\* ?END OF.*$", text, re.M)
    if start:
        text = text[start.end():end.start() if end and end.start() > start.end() else None]
    return text


def documents_from_text(name: str, text: str,
                        words_per_document: int = 1500) -> list[Document]:
    """One text -> documents "<name>#<k>" of whole paragraphs, each about
    words_per_document words (the last may be shorter)."""
    if words_per_document < 1:
        raise T5mtlError(f"words_per_document must be >= 1, got {words_per_document}")
    docs, sentences, words = [], [], 0
    for paragraph in re.split(r"\n\s*\n", _strip_gutenberg(text.lstrip("\ufeff"))):
        if not paragraph.strip():
            continue
        sentences.extend(split_sentences(paragraph))
        words += len(paragraph.split())
        if words >= words_per_document:
            docs.append(Document(f"{name}#{len(docs)}", tuple(sentences)))
            sentences, words = [], 0
    if sentences:
        docs.append(Document(f"{name}#{len(docs)}", tuple(sentences)))
    return docs


def read_text_documents(paths: Iterable[str],
                        words_per_document: int = 1500) -> list[Document]:
    """UTF-8 text files -> their documents, named by file name."""
    docs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            docs.extend(documents_from_text(os.path.basename(path), f.read(),
                                            words_per_document))
    return docs


# --------------------------------------------------------------- anchors

def _capitalized(word: str) -> bool:
    return word[0].isupper() and not (len(word) > 1 and word.isupper())


def sentence_anchors(sentence: str, max_anchor_words: int = 3) -> list[str]:
    """The anchor candidates of one sentence (module docstring), in order."""
    words = list(_WORD.finditer(sentence))
    runs, run = [], []
    for k, w in enumerate(words):
        joined = run and (sentence[run[-1].end():w.start()] == " "
                          or (sentence[run[-1].end():w.start()] == ". "
                              and run[-1].group() in TITLES))
        if _capitalized(w.group()) and (joined or not run):
            run.append(w)
            continue
        if run:
            runs.append(run)
        run = [w] if _capitalized(w.group()) else []
    if run:
        runs.append(run)
    out = []
    for run in runs:
        first = words.index(run[0])
        if first == 0 or _OPENERS.search(sentence[words[first - 1].end():run[0].start()]):
            run = run[1:]            # capitalized by position: the rest may still be a name
        while run and run[-1].group() in TITLES:
            run = run[:-1]
        if not run or len(run) > max_anchor_words:
            continue
        if not any(len(w.group()) >= 3 and w.group() not in TITLES for w in run):
            continue
        out.append(sentence[run[0].start():run[-1].end()])
    return out


def anchor_mentions(documents: Sequence[Document],
                    max_anchor_words: int = 3) -> dict[str, list[tuple[int, int]]]:
    """anchor candidate -> its mentions as (document index, sentence index),
    one per sentence, in corpus order."""
    mentions: dict[str, list[tuple[int, int]]] = {}
    for d, doc in enumerate(documents):
        for s, sentence in enumerate(doc.sentences):
            for a in dict.fromkeys(sentence_anchors(sentence, max_anchor_words)):
                mentions.setdefault(a, []).append((d, s))
    return mentions


def lowercase_words(documents: Sequence[Document]) -> set[str]:
    """Every all-lowercase word of the documents."""
    return {w for doc in documents for sentence in doc.sentences
            for w in _WORD.findall(sentence) if w.islower()}


def select_anchors(mentions: dict[str, list[tuple[int, int]]], n_documents: int,
                   config: WaeConfig, lowercase: Collection[str] = ()) -> list[str]:
    """Candidates mentioned in min_documents .. max_document_fraction *
    n_documents documents, none of whose words (titles aside) occurs in
    lowercase (in `lowercase_words`), sorted."""
    top = config.max_document_fraction * n_documents

    def proper(anchor: str) -> bool:
        return not any(w.lower() in lowercase for w in _WORD.findall(anchor)
                       if w not in TITLES)
    return sorted(a for a, ms in mentions.items()
                  if config.min_documents <= len({d for d, _ in ms}) <= top and proper(a))


def _pattern(anchor: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + re.escape(anchor) + r"(?!\w)")


# -------------------------------------------------------------- examples

def wae_examples(documents: Sequence[Document], config: WaeConfig = WaeConfig()
                 ) -> list[MrcExample]:
    """WAE-style MRC examples: per anchor, positives then their negatives."""
    rng = random.Random(config.seed)
    mentions = anchor_mentions(documents, config.max_anchor_words)
    anchors = select_anchors(mentions, len(documents), config, lowercase_words(documents))
    if config.max_anchors is not None and len(anchors) > config.max_anchors:
        anchors = sorted(rng.sample(anchors, config.max_anchors))
    pool = [(a, d, s) for a in anchors for d, s in mentions[a]]

    def passage(d: int, s: int) -> str:
        sents = documents[d].sentences
        return " ".join(sents[max(0, s - config.window):s + config.window + 1])

    out = []
    for a in anchors:
        pattern = _pattern(a)
        by_doc: dict[int, list[int]] = {}
        for d, s in mentions[a]:
            by_doc.setdefault(d, []).append(s)
        docs = sorted(by_doc)
        source = rng.choice(docs)
        sentence = documents[source].sentences[rng.choice(by_doc[source])]
        query = (pattern.sub("it", sentence) if config.mask_anchor else f"{a}: {sentence}")
        others = [d for d in docs if d != source]
        chosen = rng.sample(others, min(len(others), config.positives_per_anchor))
        n_pos = 0
        for d in chosen:
            context = passage(d, rng.choice(by_doc[d]))
            spans = tuple(m.span() for m in pattern.finditer(context))
            out.append(MrcExample(query, context, spans, relevant=True, group=a,
                                  id=f"wae/{a}/{documents[source].id}/{documents[d].id}"))
            n_pos += 1
        eligible = None
        for k in range(n_pos * config.negatives_per_positive):
            found = None
            for _ in range(config.negative_tries):
                b, d, s = pool[rng.randrange(len(pool))]
                if b != a and d not in by_doc and not pattern.search(passage(d, s)):
                    found = d, s
                    break
            if found is None:        # rare: draw from the whole eligible list instead
                if eligible is None:
                    eligible = [(d, s) for b, d, s in pool if b != a and d not in by_doc
                                and not pattern.search(passage(d, s))]
                if not eligible:
                    break
                found = eligible[rng.randrange(len(eligible))]
            d, s = found
            out.append(MrcExample(query, passage(d, s), (), relevant=False, group=a,
                                  id=f"wae/{a}/{documents[source].id}/neg{k}:"
                                     f"{documents[d].id}"))
    return out
