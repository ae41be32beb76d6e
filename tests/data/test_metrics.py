"""Metric functions and postprocessors against hand-computed values."""
import functools
import math

import numpy as np
import pytest

from t5mtl.data import metrics


def test_accuracy_and_exact_match():
    assert metrics.accuracy(["a", "b", "c", "d"], ["a", "x", "c", "d"]) == {"accuracy": 75.0}
    assert metrics.exact_match([b"12", "ab"], ["12", "ab "]) == {"exact_match": 50.0}
    with pytest.raises(ValueError):
        metrics.accuracy(["a"], ["a", "b"])


def test_matthews_corrcoef_hand_computed():
    # Confusion: TP=3 (1,1), TN=2 (0,0), FP=1 (t0,p1), FN=1 (t1,p0).
    t = [1, 1, 1, 1, 0, 0, 0]
    p = [1, 1, 1, 0, 0, 0, 1]
    expected = (3 * 2 - 1 * 1) / math.sqrt((3 + 1) * (3 + 1) * (2 + 1) * (2 + 1))  # 5/12
    assert metrics.matthews_corrcoef(t, p)["matthews_corrcoef"] == pytest.approx(100 * expected)
    assert metrics.matthews_corrcoef([0, 1, 0], [1, 1, 1])["matthews_corrcoef"] == 0.0
    # An unparseable prediction (-1) counts as wrong: t=[1,0], p=[-1,0].
    assert metrics.matthews_corrcoef([1, 0, 1, 0], [1, 0, -1, 0])["matthews_corrcoef"] > 0


def test_mean_multiclass_f1_hand_computed():
    t = [0, 0, 1, 1, 2, 2]
    p = [0, 1, 1, 1, 2, 0]
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp1 fp0 fn1 -> 2/3
    got = metrics.mean_multiclass_f1(3)(t, p)
    assert got == {"mean_3class_f1": pytest.approx(100 * (0.5 + 0.8 + 2 / 3) / 3)}
    # A class absent from targets and predictions scores 0 (as sklearn/T5).
    assert metrics.mean_multiclass_f1(3)([0, 1], [0, 1])["mean_3class_f1"] == pytest.approx(200 / 3)


def test_pearson_and_spearman_hand_computed():
    t = [1.0, 2.0, 3.0, 4.0]
    p = [1.0, 3.0, 2.0, 4.0]
    # Centered: t=[-1.5,-.5,.5,1.5], p=[-1.5,.5,-.5,1.5]; sum(tp)=4, sum(t^2)=sum(p^2)=5.
    assert metrics.pearson_corrcoef(t, p)["pearson_corrcoef"] == pytest.approx(80.0)
    # Ranks equal the values here, so Spearman = Pearson = 0.8.
    assert metrics.spearman_corrcoef(t, p)["spearman_corrcoef"] == pytest.approx(80.0)
    # Ties get average ranks; a monotone transform keeps Spearman at 100.
    assert metrics.spearman_corrcoef([1, 2, 2, 5], [1, 4, 4, 25])["spearman_corrcoef"] == \
        pytest.approx(100.0)
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 50).astype(float), rng.integers(0, 5, 50).astype(float)
    assert metrics.spearman_corrcoef(a, b)["spearman_corrcoef"] == \
        pytest.approx(100 * scipy_stats.spearmanr(a, b)[0])


def test_squad_em_f1_hand_computed():
    targets = [["Denver Broncos", "The Denver Broncos"], ["Santa Clara , California"]]
    predictions = ["the denver broncos!", "Santa Clara"]
    # ex1: normalised "denver broncos" matches -> EM 1, F1 1.
    # ex2: "santa clara" vs "santa clara california": P=1, R=2/3 -> F1=0.8, EM 0.
    got = metrics.squad(targets, predictions)
    assert got == {"em": pytest.approx(50.0), "f1": pytest.approx(90.0)}


def test_bleu_hand_computed():
    # 1-4 gram precisions 5/6, 3/5, 2/4, 1/3 and equal lengths (BP=1):
    # BLEU = (5/6 * 3/5 * 1/2 * 1/3) ** (1/4) = (1/12) ** 0.25.
    got = metrics.bleu(["the cat sat on a mat"], ["the cat sat on the mat"])
    assert got["bleu"] == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-6)
    assert metrics.bleu(["a b c d"], ["a b c d"])["bleu"] == pytest.approx(100.0)


def test_rouge_hand_computed():
    got = metrics.rouge(["the cat sat on the mat"], ["the cat sat"])
    # rouge1: P=3/3, R=3/6 -> F=2/3; rouge2: P=2/2, R=2/5 -> F=4/7; LCS=3 -> as rouge1.
    assert got["rouge1"] == pytest.approx(100 * 2 / 3)
    assert got["rouge2"] == pytest.approx(100 * 4 / 7)
    assert got["rougeLsum"] == pytest.approx(100 * 2 / 3)
    # Several references: the best one counts.
    multi = metrics.rouge([["dogs bark", "the cat sat"]], ["the cat sat"])
    assert multi["rouge1"] == pytest.approx(100.0)


def test_postprocessors():
    to_id = functools.partial(metrics.string_label_to_class_id,
                              label_classes=("entailment", "not_entailment"))
    assert to_id(b"not_entailment") == 1
    assert to_id("entailment", is_target=True) == 0
    assert to_id("maybe") == -1
    assert metrics.string_to_float(b"3.8") == pytest.approx(3.8)
    assert metrics.string_to_float("three") == -1.0
    ex = {"answers": np.array([b"Denver Broncos", b"Broncos"])}
    assert metrics.references_from_example(b"x", example=ex, is_target=True) == \
        ["Denver Broncos", "Broncos"]
    assert metrics.references_from_example(b"x", example=ex, is_target=False) == "x"
