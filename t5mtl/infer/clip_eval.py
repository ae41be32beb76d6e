"""CLIP evaluation: zero-shot classification with prompt ensembling,
image <-> text retrieval recall@k, and a linear probe, each with its chance
level.

    img = image_embeddings(model, params, images)             # [n, D], unit rows
    embed = text_embedder(model, params, vocab, length=16)    # texts -> [m, D]
    classifier = zero_shot_classifier(embed, ["0", ..., "9"], TEMPLATES)
    accuracy(img @ classifier.T, labels)

Zero-shot classifier (Radford et al. 2021, section 3.1.4): class c's weight
is the mean over the prompt templates t of the normalized text embedding of
t.format(c), renormalized to unit length; with one template it is that
prompt's embedding. An image's class is its best cosine.

Retrieval: `recall_at_k(scores, relevant)` is the share of queries with a
relevant item among their k best-scored items; `relevant` [queries, items]
says which items count (an image's captions; captions that are the same
string count for every image they describe). Ties are broken against the
query: an item scoring the same as a relevant one is ranked first, so a
constant score earns no recall. `recall_chance` is the expected recall of a
random ranking: 1 - C(n - r, k) / C(n, k) for a query with r relevant of n
items, averaged.

Linear probe: sklearn's LogisticRegression (L2, lbfgs) on the image
features of a train split (the ViT's CLS output, before the projection, as
CLIP's probes use the encoder's features), standardized with the train
split's mean and deviation; accuracy on the test split. Its chance level is
the test split's majority class share (`majority_share`).

Every embedding runs in fixed-shape batches (the last one padded), so one
program is compiled per model and batch size.
"""
from __future__ import annotations

from math import comb
from typing import Callable, Sequence

import numpy as np

from t5mtl.data.batches import pad_ids
from t5mtl.errors import T5mtlError

RECALL_KS = (1, 5)


# -- embeddings ---------------------------------------------------------------------

def batched(fn: Callable, array: np.ndarray, batch_size: int) -> np.ndarray:
    """fn over `array` in fixed-shape batches of `batch_size` rows (the last
    padded with zeros, its padding rows dropped), concatenated."""
    array = np.asarray(array)
    if not len(array):
        raise T5mtlError("nothing to embed: got 0 rows")
    out = []
    for i in range(0, len(array), batch_size):
        chunk = array[i:i + batch_size]
        n = len(chunk)
        if n < batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - n, *chunk.shape[1:]),
                                                    chunk.dtype)])
        out.append(np.asarray(fn(chunk), np.float32)[:n])
    return np.concatenate(out)


def image_embeddings(model, params, images, batch_size: int = 64) -> np.ndarray:
    """float32 [n, D]: the CLIP model's unit image embeddings."""
    import jax
    fn = jax.jit(model.image_embeddings)
    return batched(lambda x: fn(params, x), np.asarray(images, np.float32), batch_size)


def image_features(model, params, images, batch_size: int = 64) -> np.ndarray:
    """float32 [n, hidden]: the image encoder's features (the linear probe's)."""
    import jax
    fn = jax.jit(model.image_features)
    return batched(lambda x: fn(params, x), np.asarray(images, np.float32), batch_size)


def tokenize(texts: Sequence[str], vocabulary, length: int) -> np.ndarray:
    """int32 [n, length]: each text's ids (as seqio's tokenize makes them for
    a feature without EOS), cut to `length`, padded with 0."""
    rows = [list(vocabulary.encode(text)) for text in texts]
    empty = [text for text, ids in zip(texts, rows) if not ids]
    if empty:
        raise T5mtlError(f"text {empty[0]!r} has no tokens")
    return pad_ids(rows, length)


def text_embedder(model, params, vocabulary, length: int = 16,
                  batch_size: int = 64) -> Callable[[Sequence[str]], np.ndarray]:
    """texts -> float32 [m, D]: the CLIP model's unit text embeddings."""
    import jax
    fn = jax.jit(model.text_embeddings)

    def embed(texts: Sequence[str]) -> np.ndarray:
        return batched(lambda x: fn(params, x), tokenize(texts, vocabulary, length),
                       batch_size)
    return embed


# -- zero-shot classification ---------------------------------------------------------

def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def zero_shot_classifier(embed: Callable[[Sequence[str]], np.ndarray],
                         class_names: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """float32 [classes, D]: per class, the renormalized mean of the unit
    embeddings of every template filled with the class name."""
    if not class_names or not templates:
        raise T5mtlError(f"a zero-shot classifier needs class names and templates, got "
                         f"{len(class_names)} and {len(templates)}")
    for t in templates:
        if "{}" not in t:
            raise T5mtlError(f"prompt template {t!r} has no '{{}}' for the class name")
    texts = [t.format(c) for c in class_names for t in templates]
    emb = _unit(embed(texts)).reshape(len(class_names), len(templates), -1)
    return _unit(emb.mean(axis=1)).astype(np.float32)


def accuracy(scores: np.ndarray, labels: Sequence[int]) -> float:
    """The share of rows whose best-scoring column is their label."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise T5mtlError(f"accuracy: scores must be [n, classes] and labels [n], got "
                         f"{list(scores.shape)} and {list(labels.shape)}")
    return float(np.mean(np.argmax(scores, axis=1) == labels))


def majority_share(labels: Sequence[int]) -> float:
    """The share of the most frequent label: a constant guess's accuracy."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return float(counts.max() / counts.sum())


# -- retrieval -----------------------------------------------------------------------

def _check_relevance(scores, relevant, ks):
    scores, relevant = np.asarray(scores), np.asarray(relevant, bool)
    if scores.ndim != 2 or scores.shape != relevant.shape:
        raise T5mtlError(f"recall: scores and relevant must both be [queries, items], got "
                         f"{list(scores.shape)} and {list(relevant.shape)}")
    if not relevant.any(axis=1).all():
        raise T5mtlError(f"recall: query {int(np.argmin(relevant.any(axis=1)))} has no "
                         f"relevant item")
    for k in ks:
        if not (isinstance(k, (int, np.integer)) and k >= 1):
            raise T5mtlError(f"recall: k must be a positive integer, got {k!r}")
    return scores, relevant


def recall_at_k(scores, relevant, ks: Sequence[int] = RECALL_KS) -> dict[int, float]:
    """{k: share of queries with a relevant item among their k best} (module
    docstring: ties count against the query)."""
    scores, relevant = _check_relevance(scores, relevant, ks)
    best = np.max(np.where(relevant, scores, -np.inf), axis=1)
    # rank of the best relevant item: every irrelevant item scoring at least as much is ahead
    rank = np.sum((scores >= best[:, None]) & ~relevant, axis=1)
    return {int(k): float(np.mean(rank < k)) for k in ks}


def recall_chance(relevant, ks: Sequence[int] = RECALL_KS) -> dict[int, float]:
    """{k: expected recall@k of a uniformly random ranking}."""
    relevant = np.asarray(relevant, bool)
    _check_relevance(np.zeros(relevant.shape), relevant, ks)
    n = relevant.shape[1]
    r = relevant.sum(axis=1)
    return {int(k): float(np.mean([1.0 - comb(n - int(ri), k) / comb(n, k) if k < n else 1.0
                                   for ri in r])) for k in ks}


def caption_relevance(image_ids: Sequence, captions: Sequence[str]) -> np.ndarray:
    """bool [images, captions]: caption j is relevant to image i if it is
    image i's caption or the same string as one of image i's captions.
    `image_ids[j]` is the image of caption j; images are
    0 .. max(image_ids)."""
    image_ids = np.asarray(image_ids)
    if len(image_ids) != len(captions):
        raise T5mtlError(f"got {len(image_ids)} image ids for {len(captions)} captions")
    texts = np.asarray(captions, object)
    relevant = np.zeros((int(image_ids.max()) + 1, len(captions)), bool)
    for i in range(len(relevant)):
        own = set(texts[image_ids == i])
        relevant[i] = [t in own for t in texts]
    return relevant


def retrieval_scores(image_emb, text_emb, relevant,
                     ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """Image -> text and text -> image recall@k and their chance levels, as
    {"i2t_R@1": .., "t2i_R@1": .., "i2t_R@1_chance": .., ...}."""
    sims = np.asarray(image_emb, np.float64) @ np.asarray(text_emb, np.float64).T
    relevant = np.asarray(relevant, bool)
    out = {}
    for name, s, rel in (("i2t", sims, relevant), ("t2i", sims.T, relevant.T)):
        for k, v in recall_at_k(s, rel, ks).items():
            out[f"{name}_R@{k}"] = v
        for k, v in recall_chance(rel, ks).items():
            out[f"{name}_R@{k}_chance"] = v
    return out


# -- linear probe ---------------------------------------------------------------------

def linear_probe(train_x, train_y, test_x, test_y, c: float = 1.0,
                 max_iter: int = 2000) -> float:
    """Test accuracy of an L2 logistic regression (inverse strength `c`) fit
    on standardized train features."""
    from sklearn.linear_model import LogisticRegression
    train_x, test_x = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise T5mtlError(f"linear probe: features must be [n, d] with one d, got "
                         f"{list(train_x.shape)} and {list(test_x.shape)}")
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise T5mtlError(f"linear probe: {len(train_x)} / {len(test_x)} feature rows for "
                         f"{len(train_y)} / {len(test_y)} labels")
    mean, std = train_x.mean(axis=0), train_x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    clf = LogisticRegression(C=c, max_iter=max_iter)
    clf.fit((train_x - mean) / std, train_y)
    return float(np.mean(clf.predict((test_x - mean) / std) == test_y))
