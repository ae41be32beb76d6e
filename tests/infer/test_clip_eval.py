"""t5mtl/infer/clip_eval.py on hand-made embeddings: the prompt-ensemble
classifier against its formula and a case where the ensemble fixes a prompt's
mistake, recall@k on a hand-ranked score matrix (ties, duplicate captions),
its chance level against enumeration of every ranking, the linear probe,
fixed-shape batching, and bad input."""
import itertools

import numpy as np
import pytest

from t5mtl.errors import T5mtlError
from t5mtl.infer import clip_eval


def _at(degrees):
    return [np.cos(np.radians(degrees)), np.sin(np.radians(degrees))]


# Hand-made text space: each text maps to a fixed 2-d direction. "photo of"
# puts cat at 60 and dog at 20 degrees; "a" puts cat at 0 and dog at 90.
TEXT_VECTORS = {"a cat": _at(0), "photo of cat": _at(60), "a dog": _at(90),
                "photo of dog": _at(20)}


def _embed(texts):
    return np.array([TEXT_VECTORS[t] for t in texts]) * 3.0     # not unit: it must normalize


def test_zero_shot_classifier_is_the_renormalized_mean_of_unit_prompt_embeddings():
    classifier = clip_eval.zero_shot_classifier(_embed, ["cat", "dog"], ["a {}", "photo of {}"])
    # the mean of two unit vectors points half-way: cat at 30, dog at 55 degrees
    np.testing.assert_allclose(classifier, [_at(30), _at(55)], atol=1e-7)
    one = clip_eval.zero_shot_classifier(_embed, ["cat", "dog"], ["photo of {}"])
    np.testing.assert_allclose(one, [_at(60), _at(20)], atol=1e-7)
    # a cat image at 10 degrees: "photo of {}" alone calls it a dog (10 from
    # dog, 50 from cat); the ensemble a cat (20 from cat, 45 from dog)
    image = np.array([_at(10)])
    assert clip_eval.accuracy(image @ one.T, [0]) == 0.0
    assert clip_eval.accuracy(image @ classifier.T, [0]) == 1.0
    with pytest.raises(T5mtlError, match="has no '{}'"):
        clip_eval.zero_shot_classifier(_embed, ["cat"], ["a cat"])


def test_accuracy_and_majority_share():
    scores = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.0, 1.0, 0.0]])
    assert clip_eval.accuracy(scores, [1, 0, 1, 1]) == 0.75
    assert clip_eval.majority_share([1, 0, 1, 1]) == 0.75
    with pytest.raises(T5mtlError, match=r"scores must be \[n, classes\]"):
        clip_eval.accuracy(scores, [1, 0])


def test_recall_at_k_by_hand_with_ties_against_the_query():
    scores = np.array([[0.9, 0.1, 0.5, 0.3],       # relevant item 0 first: rank 0
                       [0.9, 0.1, 0.5, 0.3],       # relevant item 1 last: rank 3
                       [0.2, 0.2, 0.2, 0.2],       # all tied: rank 3 (ties count against)
                       [0.1, 0.7, 0.8, 0.3]])      # items 1 and 3 relevant: best is 1, rank 1
    relevant = np.zeros((4, 4), bool)
    relevant[0, 0] = relevant[1, 1] = relevant[2, 2] = relevant[3, 1] = relevant[3, 3] = True
    assert clip_eval.recall_at_k(scores, relevant, (1, 2, 3, 4)) == {
        1: 0.25, 2: 0.5, 3: 0.5, 4: 1.0}
    with pytest.raises(T5mtlError, match="query 1 has no relevant item"):
        clip_eval.recall_at_k(scores, np.eye(4, dtype=bool)[[0, 0, 0, 0]] * [[1], [0], [1], [1]])
    with pytest.raises(T5mtlError, match="k must be a positive integer"):
        clip_eval.recall_at_k(scores, relevant, (0,))


def test_recall_chance_equals_enumerating_every_ranking():
    relevant = np.array([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 1, 0]], bool)
    want = {k: 0.0 for k in (1, 2, 5)}
    perms = list(itertools.permutations(range(5)))
    for row in relevant:
        for k in want:
            hits = sum(any(row[list(p[:k])]) for p in perms)
            want[k] += hits / len(perms) / len(relevant)
    got = clip_eval.recall_chance(relevant, (1, 2, 5))
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-12)
    assert got[1] == pytest.approx((1 / 5 + 2 / 5 + 3 / 5) / 3)


def test_caption_relevance_counts_equal_strings_and_retrieval_scores_by_hand():
    # three images; captions 0, 1 of image 0, caption 2 of image 1 (the same
    # string as caption 0), caption 3 of image 2
    captions = ["a red square", "red square left", "a red square", "a blue circle"]
    relevant = clip_eval.caption_relevance([0, 0, 1, 2], captions)
    np.testing.assert_array_equal(relevant, [[1, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 1]])
    image = np.eye(3)
    text = np.array([[0, 1, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]], float)
    out = clip_eval.retrieval_scores(image, text, relevant, ks=(1,))
    # i->t: image 0's best texts are 1, 3 (tie at 1.0; 3 irrelevant -> rank 1);
    # image 1's best are 0, 2 (both relevant); image 2's best 1, 3 (1 irrelevant)
    assert out["i2t_R@1"] == pytest.approx(1 / 3)
    # t->i: text 0 -> image 1 (relevant), text 1 -> image 0 (relevant),
    # text 2 -> image 1 (relevant), text 3 -> image 0 (image 2 relevant, 0 ranks first)
    assert out["t2i_R@1"] == 0.75
    assert out["i2t_R@1_chance"] == pytest.approx((3 / 4 + 2 / 4 + 1 / 4) / 3)
    assert out["t2i_R@1_chance"] == pytest.approx((2 / 3 + 1 / 3 + 2 / 3 + 1 / 3) / 4)


def test_linear_probe_separates_clusters_and_is_at_chance_on_noise():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (4, 8))
    y_train, y_test = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    x_train = centres[y_train] + rng.normal(0, 1, (200, 8))
    x_test = centres[y_test] + rng.normal(0, 1, (200, 8))
    assert clip_eval.linear_probe(x_train, y_train, x_test, y_test) == 1.0
    noise = clip_eval.linear_probe(rng.normal(size=(200, 8)), y_train,
                                   rng.normal(size=(200, 8)), y_test)
    assert noise < 0.4                              # 4 classes: chance 0.25
    with pytest.raises(T5mtlError, match="features must be"):
        clip_eval.linear_probe(x_train, y_train, x_test[:, :3], y_test)


def test_batched_pads_to_one_shape_and_drops_the_padding():
    shapes = []

    def fn(x):
        shapes.append(x.shape)
        return x.sum(axis=1, keepdims=True) + 1.0

    x = np.arange(14, dtype=np.float32).reshape(7, 2)
    np.testing.assert_array_equal(clip_eval.batched(fn, x, 3), x.sum(axis=1, keepdims=True) + 1)
    assert shapes == [(3, 2)] * 3


def test_tokenize_cuts_and_pads_like_seqio():
    class Vocab:
        def encode(self, text):
            return [len(w) for w in text.split()]
    np.testing.assert_array_equal(clip_eval.tokenize(["a bb ccc dddd", "ee"], Vocab(), 3),
                                  [[1, 2, 3], [2, 0, 0]])
    with pytest.raises(T5mtlError, match="has no tokens"):
        clip_eval.tokenize([""], Vocab(), 3)
