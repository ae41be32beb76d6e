"""t5mtl/data/contriever_crops.py: Contriever's independent cropping. Each
crop is a contiguous piece of its document, lengths within the ratio bounds
(hand-checked), length and start moments equal to the rule's exact
distribution, the two crops uncorrelated, seeded, tiny documents; the gin
run (gin/runs/contriever.gin) reading the raw_text_en task into a
DualEncoder."""
import os

import gin
import jax
import numpy as np
import pytest
import seqio
import tensorflow as tf

from t5mtl import gin_config
from t5mtl.data import contriever_crops
from t5mtl.data.contriever_crops import independent_crops
from t5mtl.data.data_dir import set_data_dir
from t5mtl.data.vocab import get_vocabulary
from t5mtl.errors import T5mtlError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STRIDE = 1000      # document i holds the ids STRIDE * i + 10, +11, ...: positions readable


def _documents(count, length):
    return [STRIDE * i + 10 + np.arange(length, dtype=np.int32) for i in range(count)]


def _crops(docs, seed=0, **kwargs):
    rows = tf.RaggedTensor.from_row_lengths(
        np.concatenate(docs).astype(np.int32), [len(d) for d in docs])
    ds = tf.data.Dataset.from_tensor_slices({"targets": rows})
    with seqio.utils.map_seed_manager(seed):
        return list(independent_crops(ds, **kwargs).as_numpy_iterator())


def _spans(doc, example):
    """(start, length) of each crop in `doc`, checking it is a contiguous piece."""
    out = []
    for key in ("inputs", "targets"):
        crop = example[key]
        start = int(crop[0] - doc[0])
        np.testing.assert_array_equal(crop, doc[start:start + len(crop)], err_msg=key)
        out.append((start, len(crop)))
    return out


def _length_distribution(n, a, b):
    """{length: probability} of clip(floor(u n), 1, n), u ~ Uniform[a, b)."""
    probs = {}
    for k in range(n + 1):
        lo, hi = max(a, k / n), min(b, (k + 1) / n)
        if hi > lo:
            length = min(max(k, 1), n)
            probs[length] = probs.get(length, 0.0) + (hi - lo) / (b - a)
    return probs


def test_hand_checked_lengths_and_starts():
    # 10 ids, ratio 0.3 exactly: every crop has 3 ids, starting at 0..7
    docs = _documents(300, 10)
    spans = [s for d, ex in zip(docs, _crops(docs, min_ratio=0.3, max_ratio=0.3))
             for s in _spans(d, ex)]
    assert {length for _, length in spans} == {3}
    assert {start for start, _ in spans} == set(range(8))
    # ratios [0.1, 0.5): floor(10 u) is 1, 2, 3 or 4, each with probability 1/4
    spans = [s for d, ex in zip(docs, _crops(docs)) for s in _spans(d, ex)]
    lengths = np.array([length for _, length in spans])
    assert set(lengths) == {1, 2, 3, 4}
    assert all(0 <= start <= 10 - length for start, length in spans)
    assert _length_distribution(10, 0.1, 0.5) == pytest.approx({1: .25, 2: .25, 3: .25, 4: .25})


def test_moments_equal_the_rule_and_the_two_crops_are_independent():
    n, count = 100, 2000
    docs = _documents(count, n)
    spans = np.array([_spans(d, ex) for d, ex in zip(docs, _crops(docs, seed=3))])  # [c, 2, 2]
    starts, lengths = spans[..., 0], spans[..., 1]
    # floor(100 u), u in [0.1, 0.5): 10..49, each 1/40: mean 29.5, variance (40^2 - 1) / 12
    probs = _length_distribution(n, 0.1, 0.5)
    assert sorted(probs) == list(range(10, 50))
    mean = sum(k * p for k, p in probs.items())
    var = sum(k * k * p for k, p in probs.items()) - mean ** 2
    assert mean == pytest.approx(29.5) and var == pytest.approx(133.25)
    assert lengths.min() == 10 and lengths.max() == 49
    assert abs(lengths.mean() - mean) < 5 * np.sqrt(var / lengths.size)
    assert abs(lengths.var() - var) < 0.05 * var
    # start ~ Uniform{0..n-L} given L: E = (n - E[L]) / 2 = 35.25;
    # Var = E[((n - L + 1)^2 - 1) / 12] + Var(L) / 4
    start_mean = (n - mean) / 2
    start_var = sum(p * ((n - k + 1) ** 2 - 1) / 12 for k, p in probs.items()) + var / 4
    assert start_mean == pytest.approx(35.25)
    assert abs(starts.mean() - start_mean) < 5 * np.sqrt(start_var / starts.size)
    # the query's and the passage's spans are uncorrelated (|r| < 4 / sqrt(count))
    for name, x in (("start", starts), ("length", lengths)):
        r = np.corrcoef(x[:, 0], x[:, 1])[0, 1]
        assert abs(r) < 4 / np.sqrt(count), (name, r)
    # ... and each side alone has the same distribution
    assert abs(lengths[:, 0].mean() - lengths[:, 1].mean()) < 5 * np.sqrt(2 * var / count)
    same = np.mean((starts[:, 0] == starts[:, 1]) & (lengths[:, 0] == lengths[:, 1]))
    assert same < 0.01


def test_seeded_and_independent_of_the_other_documents():
    docs = _documents(50, 40)
    a, b, c = _crops(docs, seed=7), _crops(docs, seed=7), _crops(docs, seed=8)
    key = lambda exs: [(tuple(e["inputs"]), tuple(e["targets"])) for e in exs]  # noqa: E731
    assert key(a) == key(b)
    assert sum(x != y for x, y in zip(key(a), key(c))) > 40
    assert key(_crops(docs[::-1], seed=7)) == key(a)[::-1]     # a document's crops are its own


def test_documents_of_one_and_two_ids():
    docs = [np.array([5], np.int32)] + [np.array([STRIDE * i, STRIDE * i + 1], np.int32)
                                         for i in range(1, 200)]
    for max_ratio in (0.5, 1.0):
        out = _crops([np.zeros([0], np.int32)] + docs, max_ratio=max_ratio)
        assert len(out) == len(docs)                       # the empty document is dropped
        assert out[0]["inputs"].tolist() == out[0]["targets"].tolist() == [5]
        for d, ex in zip(docs[1:], out[1:]):
            assert len(ex["inputs"]) == len(ex["targets"]) == 1   # floor(2 u) < 2: one id
            _spans(d, ex)
        firsts = [ex["inputs"][0] % STRIDE for ex in out[1:]]
        assert set(firsts) == {0, 1}


@pytest.mark.parametrize("kwargs, message", [
    (dict(min_ratio=0.0), r"min_ratio must be a number in \(0, 1\], got 0.0"),
    (dict(max_ratio=1.5), r"max_ratio must be a number in \(0, 1\], got 1.5"),
    (dict(min_ratio=-0.1), "got -0.1"),
    (dict(max_ratio="0.5"), "got '0.5'"),
    (dict(min_ratio=0.6, max_ratio=0.5), "min_ratio 0.6 is larger than max_ratio 0.5"),
])
def test_bad_ratios_are_named(kwargs, message):
    with pytest.raises(T5mtlError, match=message):
        _crops(_documents(2, 5), **kwargs)


def test_bad_chunk_length_is_named():
    with pytest.raises(T5mtlError, match="chunk_length must be a positive integer, got 0"):
        contriever_crops.register(overwrite=True, chunk_length=0)


def test_the_gin_run_reads_crops_of_raw_text_into_a_dual_encoder(shared_data_dir,
                                                                monkeypatch):
    """gin/runs/contriever.gin builds its DualEncoder and its task; unshuffled,
    row i holds two crops (EOS, then padding) of chunk i of the first
    validation book, and the model's loss takes the batch."""
    from t5mtl.data.batches import host_batches
    from t5mtl.data.data_config import DataConfig, resolve_mixture
    from t5mtl.models.dual_encoder import DualEncoder
    monkeypatch.chdir(ROOT)
    set_data_dir(shared_data_dir)
    try:
        gin_config.parse(["gin/runs/contriever.gin"], ["get_config.name = 't5_tiny'"])
        model = gin.query_parameter("train.model").scoped_configurable_fn()
        data = DataConfig()
        task = resolve_mixture(data.mixture_or_task_name)
        assert isinstance(model, DualEncoder) and task == contriever_crops.TASK
        assert data.pack is False and data.task_feature_lengths == contriever_crops.LENGTHS
        assert gin.query_parameter("register_contriever_crops.min_ratio") == 0.1
        assert gin.query_parameter("register_contriever_crops.max_ratio") == 0.5
        batch = next(host_batches(task, data.task_feature_lengths, split="validation",
                                  batch_size_per_host=8, shuffle=False, seed=1,
                                  feature_converter=model.feature_converter(pack=False)))
    finally:
        contriever_crops.unregister()
        set_data_dir(None)
    assert {k: v.shape for k, v in batch.items()} == {"query_tokens": (8, 128),
                                                      "passage_tokens": (8, 128)}
    with open(os.path.join(shared_data_dir, "raw_text_en/gutenberg/pg35.txt"),
              encoding="utf-8-sig") as f:
        ids = np.array(get_vocabulary().encode(f.read()), np.int32)
    for key in ("query_tokens", "passage_tokens"):
        for i, row in enumerate(batch[key]):
            chunk, n = ids[256 * i:256 * (i + 1)], int((row > 0).sum())
            assert row[n - 1] == 1 and 25 <= n - 1 <= 127, (key, i, n)   # EOS; 0.1-0.5 of 256
            crop = row[:n - 1]
            assert any((chunk[s:s + len(crop)] == crop).all()
                       for s in range(len(chunk) - len(crop) + 1)), (key, i)
    # the batch is what the model reads (traced, not compiled: the loss is
    # tests/models/test_dual_encoder.py's)
    loss, metrics = jax.eval_shape(model.loss_fn, model.abstract_params(), batch, None)
    assert loss.shape == () and metrics["accuracy"].shape == ()
