"""Go-tuning (t5mtl/mtl/go_tuning.py, t5mtl/data/go_tuning_tasks.py).

The selection rule on 2-D points whose answer is worked out by hand below;
its determinism and invariances; bad input named; the embedding step
against one text at a time without padding; the task's raw inputs against
the file; the seqio task: span-corrupted examples holding exactly the
selected texts; gin registration, single- and multi-task.
"""
import importlib
import json
import math
import os

import numpy as np
import pytest
import seqio

from t5mtl.data import go_tuning_tasks as gt
from t5mtl.data.data_dir import set_data_dir
from t5mtl.errors import T5mtlError
from t5mtl.mtl import go_tuning

S = 1.0 / math.sqrt(2.0)
R = 1.0 - S                          # the cosine distance of 45 degrees
# Task inputs at 0 and 90 degrees: centre (S, S), every task input at
# distance R from it, so with coverage 1.0 (or any) the ball is the first
# quadrant's arc: angles 0..90 degrees, boundaries included.
TASK = np.array([[1.0, 0.0], [0.0, 3.0]])
POOL = np.array([
    [8.0, 6.0],      # 0: (0.8, 0.6), inside; nearest (1, 0): 1 - 0.8 = 0.2
    [3.0, 4.0],      # 1: (0.6, 0.8), inside; nearest (0, 1): 0.2 (ties with 0)
    [1.0, 1.0],      # 2: the centre itself; nearest: 1 - S = R
    [12.0, 5.0],     # 3: inside; nearest (1, 0): 1 - 12/13
    [1.0, -1.0],     # 4: outside (distance 1 from the centre), though R from (1, 0)
    [-1.0, 0.1],     # 5: outside
    [2.5, 6.0],      # 6: (5, 12)/13, inside; nearest (0, 1): 1 - 12/13 (ties with 3)
    [2.0, 0.0],      # 7: on the boundary (distance exactly R), a task input: 0
])


def test_selection_rule_by_hand():
    sel = go_tuning.select_task_aware(TASK, POOL, budget=4, coverage=1.0)
    assert sel.radius == pytest.approx(R)
    assert sel.num_inside == 6                       # all but 4 and 5
    # By score: 7 (0), then 3 and 6 (1/13, pool order), then 0 (0.2); 1 and 2 cut.
    assert sel.indices.tolist() == [7, 3, 6, 0]
    np.testing.assert_allclose(sel.scores, [0.0, 1 / 13, 1 / 13, 0.2], atol=1e-12)
    everything = go_tuning.select_task_aware(TASK, POOL, budget=100, coverage=1.0)
    assert everything.indices.tolist() == [7, 3, 6, 0, 1, 2]     # fewer than the budget
    np.testing.assert_allclose(everything.scores[-1], R, atol=1e-12)


def test_coverage_shrinks_the_ball():
    # A third task input at 45 degrees: distances to the centre 0, R, R. The
    # 0.25 quantile (linear) of [0, R, R] is at position 0.5: R / 2.
    task = np.vstack([TASK, [[2.0, 2.0]]])
    sel = go_tuning.select_task_aware(task, POOL, budget=10, coverage=0.25)
    assert sel.radius == pytest.approx(R / 2)
    # Inside R/2 of the centre: 0 and 1 (1 - 1.4 S = 0.0101), 2 (0), 3 and 6
    # (1 - 17 S / 13 = 0.0753); 7 (R) is now out. Nearest input: 2 -> the
    # 45-degree input (0); 0, 1 -> it too (0.0101); 3, 6 -> it (0.0753 < 1/13).
    # (The pairs 0, 1 and 3, 6 tie in exact arithmetic; their float sums may
    # round apart, so only the pairs' places are asserted.)
    assert sel.num_inside == 5
    assert sel.indices[0] == 2 and set(sel.indices[1:3]) == {0, 1}
    assert set(sel.indices[3:]) == {3, 6}
    np.testing.assert_allclose(sel.scores, [0.0, 1 - 1.4 * S, 1 - 1.4 * S,
                                            1 - 17 * S / 13, 1 - 17 * S / 13], atol=1e-12)


def test_selection_is_deterministic_and_depends_on_the_sets():
    rng = np.random.default_rng(0)
    task = rng.normal(size=(40, 16)) + 2.0
    pool = rng.normal(size=(300, 16)) + rng.choice([-2.0, 2.0], size=(300, 1))
    first = go_tuning.select_task_aware(task, pool, budget=25)
    again = go_tuning.select_task_aware(task.copy(), pool.copy(), budget=25)
    assert first.indices.tolist() == again.indices.tolist()
    np.testing.assert_array_equal(first.scores, again.scores)
    assert 25 == len(first.indices) < first.num_inside < 300
    # The task's rows in another order, and every row scaled: the same texts.
    shuffled = go_tuning.select_task_aware(task[::-1] * 3.0, pool * 0.5, budget=25)
    assert shuffled.indices.tolist() == first.indices.tolist()
    # The pool in another order: the same texts, under their new indices.
    perm = rng.permutation(300)
    moved = go_tuning.select_task_aware(task, pool[perm], budget=25)
    assert perm[moved.indices].tolist() == first.indices.tolist()
    # Multi-task: each task's own selection, with the same budget.
    both = go_tuning.select_for_tasks({"b": -task, "a": task}, pool, budget=25)
    assert list(both) == ["a", "b"]
    assert both["a"].indices.tolist() == first.indices.tolist()
    assert not set(both["a"].indices) & set(both["b"].indices)   # opposite clusters
    r1, r2 = go_tuning.select_random(300, 25, seed=1), go_tuning.select_random(300, 25, seed=1)
    assert r1.indices.tolist() == r2.indices.tolist() and len(set(r1.indices)) == 25


@pytest.mark.parametrize("kwargs, message", [
    (dict(budget=0), "budget must be a positive number of texts, got 0"),
    (dict(budget=2, coverage=0.0), "coverage must be in \\(0, 1\\], got 0.0"),
    (dict(budget=2, pool=np.ones((3, 3))), "dimension 2 but pool embeddings 3"),
    (dict(budget=2, pool=np.array([[1.0, 0.0], [0.0, 0.0]])), "pool embeddings row 1 is all zeros"),
    (dict(budget=2, task=np.array([[np.nan, 1.0]])), "task embeddings hold NaN"),
    (dict(budget=2, task=np.array([[1.0, 0.0], [-1.0, 0.0]])), "average to zero"),
])
def test_bad_input_is_named(kwargs, message):
    task, pool = kwargs.pop("task", TASK), kwargs.pop("pool", POOL)
    with pytest.raises(T5mtlError, match=message):
        go_tuning.select_task_aware(task, pool, **kwargs)


def test_embedding_matches_one_text_at_a_time():
    """Batched, padded, jitted embeddings equal each text's encoder states
    averaged without any padding (random weights drawn in numpy from the
    shapes, so no init program is compiled)."""
    import jax
    from t5mtl.data.vocab import get_vocabulary
    from t5mtl.models import get_config
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.models.init import param_shapes
    from t5mtl.models.t5 import Transformer
    model = EncoderDecoderModel(get_config("t5_tiny"))
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda s: rng.normal(0.0, 0.5, s.shape).astype(np.float32), param_shapes(model.config))
    vocab = get_vocabulary()
    # Two unpadded lengths (12 ids; 32 after the cut), so the reference compiles twice.
    texts = ["a short one", "one short a", "a rather longer sentence about films and critics",
             "a text longer than the embedding length, so that it is cut"]
    got = go_tuning.embed_texts(model, params, texts, vocab, length=32, batch_size=3)
    assert got.shape == (4, 64) and got.dtype == np.float32
    reference = jax.jit(lambda p, ids: model.module.apply(
        {"params": p}, ids, method=Transformer.encode).hidden.mean(axis=1))
    for text, row in zip(texts, got):
        ids = np.array([(list(vocab.encode(text))[:31] + [1])], np.int32)   # no padding
        np.testing.assert_allclose(row, np.asarray(reference(params, ids))[0], atol=1e-5)
    assert not np.allclose(got[0], got[1])           # the same bytes in another order


def test_task_texts_are_the_raw_inputs(shared_data_dir):
    importlib.import_module("t5mtl.data.registry")          # registers superglue_cb
    set_data_dir(shared_data_dir)
    try:
        texts = go_tuning.task_texts("superglue_cb", "train")
        sample = go_tuning.task_texts("superglue_cb", "train", limit=5, seed=3)
    finally:
        set_data_dir(None)
    with open(os.path.join(shared_data_dir, "superglue_cb", "train.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert texts == [f"{r['hypothesis'].strip()} {r['premise'].strip()}" for r in rows]
    assert len(sample) == 5 and all(s in texts for s in sample)
    assert [texts.index(s) for s in sample] == sorted(texts.index(s) for s in sample)


def _uncorrupt(inputs, targets, vocab):
    """The text a span-corrupted example came from: each sentinel in the
    inputs replaced by the tokens after the same sentinel in the targets."""
    first = vocab.vocab_size - vocab.extra_ids
    spans, current = {}, None
    for t in targets:
        if t >= first:
            current = spans.setdefault(t, [])
        elif t != 1:
            current.append(t)
    out = []
    for t in inputs:
        out.extend(spans.pop(t) if t >= first else [t] if t != 1 else [])
    assert not spans                                   # every target span was used
    return vocab.decode(out)


@pytest.fixture
def registered():
    names = set(seqio.TaskRegistry.names())
    yield
    from t5mtl.data import task_info
    for name in set(seqio.TaskRegistry.names()) - names:
        seqio.TaskRegistry.remove(name)
        task_info.remove_task_info(name)


def test_task_yields_span_corrupted_selected_texts(tmp_path, registered):
    texts = ["The film is a delight from start to finish.",
             "A premise, and a hypothesis that follows from it.",
             "Short.",
             " ".join(["A long paragraph that does not fit in one chunk of inputs."] * 3)]
    path = gt.selection_path(str(tmp_path), "glue_sst2")
    gt.write_selection(path, [{"text": t, "pool_index": i} for i, t in enumerate(texts)])
    assert [r["text"] for r in gt.read_selection(path)] == texts
    task = gt.register_go_task("go_test_sst2", path)
    ds = task.get_dataset({"inputs": 64, "targets": 32}, split="train", shuffle=False,
                          num_epochs=1)
    vocab = task.output_features["targets"].vocabulary
    examples = list(ds.as_numpy_iterator())
    got = [_uncorrupt(ex["inputs"].tolist(), ex["targets"].tolist(), vocab) for ex in examples]
    assert got[:3] == texts[:3]
    assert "".join(got[3:]) == texts[3] and len(got) > 4     # the long one, chunk by chunk
    for ex in examples:
        sentinels = [t for t in ex["targets"] if t >= vocab.vocab_size - vocab.extra_ids]
        assert sentinels and ex["inputs"][-1] == 1 and ex["targets"][-1] == 1


def test_gin_registration_single_and_multi(tmp_path, registered):
    import gin
    for target in ("glue_sst2", "superglue_rte"):
        gt.write_selection(gt.selection_path(str(tmp_path), target), [{"text": target * 3}])
    gin.parse_config([f"register_go_tuning_tasks.selection_dir = '{tmp_path}'",
                      "register_go_tuning_tasks.targets = ['glue_sst2', 'superglue_rte']"])
    names = gt.register_go_tuning_tasks()
    assert names == ["go_glue_sst2", "go_superglue_rte"]
    from t5mtl.data.data_config import resolve_mixture
    mixture = seqio.get_mixture_or_task(resolve_mixture(names))
    assert sorted(t.name for t in mixture.tasks) == names
    one = gt.register_go_tuning_tasks(str(tmp_path), ["glue_sst2"], prefix="control")
    assert one == "control_glue_sst2"
    with pytest.raises(T5mtlError, match="selection file .*nope.jsonl.* does not exist"):
        gt.read_selection(gt.selection_path(str(tmp_path), "nope"))
    with pytest.raises(T5mtlError, match="selection row 0 .* has no text"):
        gt.write_selection(str(tmp_path / "x.jsonl"), [{"text": " "}])
