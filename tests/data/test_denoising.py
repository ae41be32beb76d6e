"""i.i.d. (BERT-style) denoising and prefix LM on real text."""
import contextlib
import os

import numpy as np
import pytest
import seqio
import tensorflow as tf

from t5mtl.data import denoising
from t5mtl.data import pretraining_tasks as pt
from t5mtl.data.vocab import get_vocabulary
from t5mtl.errors import T5mtlError

BOM = b"\xef\xbb\xbf"
MASK = 358  # <extra_id_0> of the byte vocabulary, the default mask token


@pytest.fixture(autouse=True)
def _data_dir(shared_data_dir, monkeypatch):
    monkeypatch.setenv("T5MTL_DATA_DIR", shared_data_dir)


def byte_chunks(data_dir, files, length):
    out = []
    for rel in files:
        with open(os.path.join(data_dir, rel), "rb") as f:
            data = f.read()
        data = data[len(BOM):] if data.startswith(BOM) else data
        ids = np.frombuffer(data, np.uint8).astype(np.int32) + 3
        out.extend(ids[i:i + length] for i in range(0, len(ids), length))
    return out


@contextlib.contextmanager
def temp_task(objective, **kwargs):
    name = f"test_raw_text_en_{objective}"
    pt.register_pretraining_task(name, pt.raw_text_en_source(), objective=objective,
                                 concat_batch_size=1, **kwargs)
    try:
        yield name
    finally:
        seqio.TaskRegistry.remove(name)


def examples(name, lengths, split="validation", seed=0, **kwargs):
    task = seqio.get_mixture_or_task(name)
    ds = task.get_dataset(lengths, split=split, shuffle=False, seed=seed,
                          trim_output_features=False, **kwargs)
    return list(ds.as_numpy_iterator())


def test_iid_noise_mask_exact_count_and_uniform_positions():
    counts = np.zeros(100)
    for s in range(2000):
        mask = denoising.iid_noise_mask(100, tf.constant([s, 5], tf.int64)).numpy()
        assert mask.sum() == 15
        counts += mask
    assert np.abs(counts / 2000 - 0.15).max() < 0.035  # every position equally likely
    assert denoising.iid_noise_mask(3, tf.constant([1, 2], tf.int64)).numpy().sum() == 1


@pytest.fixture(scope="module")
def originals_127(shared_data_dir):
    return byte_chunks(shared_data_dir, pt.RAW_TEXT_EN_VALIDATION, 127)


def test_bert_style_80_10_10_on_real_text(originals_127):
    exs = examples("raw_text_en_iid_denoising", {"inputs": 128, "targets": 128})
    assert len(exs) == len(originals_127) > 2900
    noise = masked = randomized = total = 0
    for ex, original in zip(exs, originals_127):
        np.testing.assert_array_equal(ex["targets"][:-1], original)  # targets: the original
        inputs = ex["inputs"][:-1]
        assert len(inputs) == len(original) and ex["inputs"][-1] == 1
        is_mask = inputs == MASK
        is_random = (inputs != original) & ~is_mask
        assert is_mask.sum() + is_random.sum() <= round(len(original) * 0.15)
        assert ((inputs[is_random] >= 3) & (inputs[is_random] < 259)).all()
        noise += round(len(original) * 0.15)
        masked += is_mask.sum()
        randomized += is_random.sum()
        total += len(original)
    assert abs(noise / total - 0.15) < 0.002
    assert abs(masked / noise - 0.8) < 0.01, masked / noise
    # a random replacement equals the original 1 time in 256
    assert abs(randomized / noise - 0.1 * 255 / 256) < 0.008, randomized / noise


def test_mask_only_replacement_masks_exactly_15_percent(originals_127):
    with temp_task("iid_denoising", mask_fraction=1.0, random_fraction=0.0) as name:
        exs = examples(name, {"inputs": 128, "targets": 128})
    for ex, original in zip(exs, originals_127):
        inputs = ex["inputs"][:-1]
        assert (inputs == MASK).sum() == round(len(original) * 0.15)
        np.testing.assert_array_equal(inputs[inputs != MASK], original[inputs != MASK])


def test_sentinel_replacement_reconstructs(originals_127):
    vocab = get_vocabulary()
    with temp_task("iid_denoising", replacement="sentinel") as name:
        exs = examples(name, {"inputs": 128, "targets": 39})
    noise = total = 0
    for ex, original in zip(exs, originals_127):
        inputs, targets = ex["inputs"][:-1], ex["targets"][:-1]
        assert len(ex["inputs"]) <= 128 and len(ex["targets"]) <= 39
        # rebuild: each input sentinel is followed, in the targets, by its run
        starts = np.flatnonzero(targets >= 259)
        runs = {t: targets[s + 1:e] for s, e, t in
                zip(starts, list(starts[1:]) + [len(targets)], targets[starts])}
        assert sorted(runs) == sorted(inputs[inputs >= 259])
        rebuilt = np.concatenate([runs[t] if t >= 259 else [t] for t in inputs])
        np.testing.assert_array_equal(rebuilt, original)
        noise += len(targets) - len(starts)
        total += len(original)
    assert abs(noise / total - 0.15) < 0.002


def test_prefix_lm_splits_real_text(shared_data_dir):
    originals = byte_chunks(shared_data_dir, pt.RAW_TEXT_EN_VALIDATION, 64)
    exs = examples("raw_text_en_prefix_lm", {"inputs": 64, "targets": 64})
    assert len(exs) == len(originals) > 5800
    splits = []
    for ex, original in zip(exs, originals):
        assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1
        prefix, rest = ex["inputs"][:-1], ex["targets"][:-1]
        np.testing.assert_array_equal(np.concatenate([prefix, rest]), original)
        assert len(ex["inputs"]) <= 64 and len(ex["targets"]) <= 64
        if len(original) == 64:
            assert 1 <= len(prefix) <= 63
            splits.append(len(prefix))
    splits = np.array(splits)
    assert splits.min() == 1 and splits.max() == 63  # every split point is reachable
    assert abs(splits.mean() - 32.0) < 1.0  # uniform on [1, 63]


def test_objectives_are_deterministic_and_shard_invariant():
    def as_set(exs):
        return sorted((tuple(e["inputs"]), tuple(e["targets"])) for e in exs)

    for name in ("raw_text_en_iid_denoising", "raw_text_en_prefix_lm"):
        lengths = {"inputs": 128, "targets": 128}
        whole = examples(name, lengths, seed=3)
        assert as_set(whole) == as_set(examples(name, lengths, seed=3))
        assert as_set(whole) != as_set(examples(name, lengths, seed=4))
        halves = [examples(name, lengths, seed=3, shard_info=seqio.ShardInfo(i, 2))
                  for i in range(2)]
        assert as_set(halves[0] + halves[1]) == as_set(whole)


def test_bad_arguments_are_clear_errors():
    features = {k: seqio.Feature(get_vocabulary()) for k in ("inputs", "targets")}
    ds = tf.data.Dataset.from_tensors({"targets": tf.range(3, 200)})
    with pytest.raises(T5mtlError, match=r"sequence_length\['targets'\]=100 .* need 128"):
        denoising.iid_denoising(ds, {"inputs": 128, "targets": 100}, features)
    with pytest.raises(T5mtlError, match="need 39"):
        denoising.iid_denoising(ds, {"inputs": 128, "targets": 38}, features,
                                replacement="sentinel")
    with pytest.raises(T5mtlError, match="'bert'"):
        denoising.iid_denoising(ds, {"inputs": 128, "targets": 128}, features,
                                replacement="bert")
    with pytest.raises(T5mtlError, match="sum to at most 1"):
        denoising.iid_denoising(ds, {"inputs": 128, "targets": 128}, features,
                                mask_fraction=0.8, random_fraction=0.3)
    with pytest.raises(T5mtlError, match="prefix_lm needs"):
        denoising.prefix_lm(ds, {"inputs": 1, "targets": 64}, features)
