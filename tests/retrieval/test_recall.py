"""t5mtl/retrieval/recall.py: recall@k by hand and through a PassageIndex
with hand-made 2-D embeddings."""
import numpy as np
import pytest

from t5mtl.errors import T5mtlError
from t5mtl.retrieval import recall
from t5mtl.retrieval.index import PassageIndex


def test_recall_at_k_exact_fractions():
    gold = ["a", "b", "c", "d"]
    ranked = [["a", "x", "y"],          # rank 0
              ["x", "y", "b"],          # rank 2
              ["x"] * 6 + ["c"],        # rank 6
              ["x", "y"]]               # missing
    assert recall.recall_at_k(gold, ranked, ks=(1, 2, 3, 5, 7, 20)) == {
        1: 1 / 4, 2: 1 / 4, 3: 2 / 4, 5: 2 / 4, 7: 3 / 4, 20: 3 / 4}
    assert recall.recall_at_k(gold, ranked) == {1: 0.25, 5: 0.5, 20: 0.75}


def test_recall_bad_input():
    with pytest.raises(T5mtlError, match="k must be at least 1, got 0"):
        recall.recall_at_k(["a"], [["a"]], ks=(0,))
    with pytest.raises(T5mtlError, match="got 2 gold ids but 1 ranked lists"):
        recall.recall_at_k(["a", "b"], [["a"]])
    with pytest.raises(T5mtlError, match="no questions"):
        recall.recall_at_k([], [])


def test_retrieve_through_a_passage_index():
    # passages on the unit circle at 0, 90, 180, 270 degrees
    ids = ["east", "north", "west", "south"]
    index = PassageIndex.build(np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.float32), ids)
    vectors = {"q_east": [1.0, 0.2], "q_north": [0.1, 1.0], "q_west": [-1.0, -0.3],
               "q_ne": [0.6, 0.5]}

    def embed(texts):
        return np.array([vectors[t] for t in texts], np.float32)

    questions = ["q_east", "q_north", "q_west", "q_ne"]
    ranked = recall.retrieve(questions, embed, index, k=2)
    assert ranked == [["east", "north"], ["north", "east"], ["west", "south"],
                      ["east", "north"]]
    gold = ["east", "north", "south", "north"]
    assert recall.recall_at_k(gold, ranked, ks=(1, 2)) == {1: 2 / 4, 2: 4 / 4}
    assert recall.retrieve(["q_east"], embed, index, k=20) == [["east", "north", "south",
                                                               "west"]]
    with pytest.raises(T5mtlError, match="k must be at least 1, got 0"):
        recall.retrieve(questions, embed, index, k=0)
    with pytest.raises(T5mtlError, match="embed returned 1 vectors for 2 questions"):
        recall.retrieve(["q_east", "q_west"], lambda t: embed(t[:1]), index, k=1)
