"""Span corruption: the length planner, the noise mask, and the objective on real text."""
import os

import numpy as np
import pytest
import seqio
import tensorflow as tf

from t5mtl.data import pretraining_tasks as pt
from t5mtl.data import span_corruption as sc
from t5mtl.data.vocab import get_vocabulary, train_sentencepiece
from t5mtl.errors import T5mtlError

BOM = b"\xef\xbb\xbf"
INPUTS, TARGETS, RAW = 128, 29, 141  # the planner's numbers for inputs 128


def file_bytes(data_dir, rel):
    with open(os.path.join(data_dir, rel), "rb") as f:
        data = f.read()
    return data[len(BOM):] if data.startswith(BOM) else data


def byte_chunks(data_dir, files, length):
    """The raw chunks the task should corrupt, computed without TF: bytes + 3."""
    out = []
    for rel in files:
        ids = np.frombuffer(file_bytes(data_dir, rel), np.uint8).astype(np.int32) + 3
        out.extend(ids[i:i + length] for i in range(0, len(ids), length))
    return out


def merge(inputs, targets, vocab):
    """Puts the targets' spans back in place of the inputs' sentinels (EOS stripped)."""
    lowest_sentinel = vocab.vocab_size - vocab.extra_ids
    assert inputs[-1] == 1 and targets[-1] == 1
    inputs, targets = inputs[:-1], targets[:-1]
    starts = np.flatnonzero(targets >= lowest_sentinel)
    spans = {int(targets[s]): targets[s + 1:e]
             for s, e in zip(starts, list(starts[1:]) + [len(targets)])}
    pieces, start = [], 0
    for pos in np.flatnonzero(inputs >= lowest_sentinel):
        pieces += [inputs[start:pos], spans.pop(int(inputs[pos]))]
        start = pos + 1
    pieces.append(inputs[start:])
    assert not spans  # every target span was used
    return np.concatenate(pieces)


def sentinels(x, vocab):
    return x[x >= vocab.vocab_size - vocab.extra_ids]


def task_examples(name, lengths, split="train", n=None, **kwargs):
    task = seqio.get_mixture_or_task(name)
    ds = task.get_dataset(lengths, split=split, trim_output_features=False, **kwargs)
    if n is not None:
        ds = ds.take(n)
    return list(ds.as_numpy_iterator())


@pytest.fixture(autouse=True)
def _data_dir(shared_data_dir, monkeypatch):
    monkeypatch.setenv("T5MTL_DATA_DIR", shared_data_dir)


# ---------------------------------------------------------------------------
# The planner and the mask.

@pytest.mark.parametrize("inputs, raw, targets", [
    (512, 568, 114), (1024, 1137, 229), (128, 141, 29), (64, 70, 14)])
def test_length_planner_matches_t5(inputs, raw, targets):
    plan = sc.plan_span_corruption_lengths(inputs)
    assert (plan.tokens_length, plan.inputs_length, plan.targets_length) == (raw, inputs, targets)


def test_length_planner_is_tight():
    for inputs in range(3, 1200, 7):
        plan = sc.plan_span_corruption_lengths(inputs)
        assert plan.inputs_length <= inputs
        assert sc.corrupted_lengths(plan.tokens_length + 1).inputs_length > inputs


def test_length_planner_rejects_bad_arguments():
    with pytest.raises(T5mtlError, match="too short"):
        sc.plan_span_corruption_lengths(2)
    with pytest.raises(T5mtlError, match="noise_density"):
        sc.plan_span_corruption_lengths(512, noise_density=1.5)


def test_noise_mask_counts_and_interleaving():
    for length in [1, 2, 3, 7, 20, 141, 568, 1137]:
        for s in range(5):
            mask = sc.random_spans_noise_mask(length, tf.constant([s, length], tf.int64)).numpy()
            assert mask.shape == (length,) and mask.dtype == bool
            if length == 1:
                assert not mask.any()
                continue
            expected = sc.corrupted_lengths(length)
            expected_noise = min(max(round(length * .15), 1), length - 1)
            assert mask.sum() == expected.num_noise_tokens == expected_noise
            starts = np.flatnonzero(np.diff(mask.astype(int)) == 1)
            assert len(starts) == expected.num_noise_spans
            assert not mask[0] and mask[-1]  # starts with non-noise, ends with noise


def test_noise_mask_is_a_function_of_the_seed():
    a = sc.random_spans_noise_mask(568, tf.constant([1, 2], tf.int64)).numpy()
    b = sc.random_spans_noise_mask(568, tf.constant([1, 2], tf.int64)).numpy()
    c = sc.random_spans_noise_mask(568, tf.constant([1, 3], tf.int64)).numpy()
    assert (a == b).all() and (a != c).any()


def test_sentinels_on_t5_figure_example():
    vocab = get_vocabulary()  # bytes + 100 extra ids: <extra_id_0> = 358
    tokens = tf.constant([10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20])  # Thank you for inviting ...
    mask = tf.constant([0, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0]) > 0
    np.testing.assert_array_equal(sc.sentinel_inputs(tokens, mask, vocab),
                                  [10, 11, 358, 14, 15, 16, 17, 357, 19, 20])
    np.testing.assert_array_equal(sc.sentinel_targets(tokens, mask, vocab),
                                  [358, 12, 13, 357, 18])
    # a mask that starts with noise (i.i.d. masks can) keeps sentinels aligned
    mask = tf.constant([1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1]) > 0
    np.testing.assert_array_equal(sc.sentinel_inputs(tokens, mask, vocab),
                                  [358, 11, 12, 357, 15, 16, 17, 18, 19, 356])
    np.testing.assert_array_equal(sc.sentinel_targets(tokens, mask, vocab),
                                  [358, 10, 357, 13, 14, 356, 20])


def test_concat_and_split_fill_chunks_on_real_paragraphs(shared_data_dir):
    from t5mtl.data.sources import TextFilesSource
    vocab = get_vocabulary()
    source = TextFilesSource({"validation": pt.RAW_TEXT_EN_VALIDATION}, unit="paragraph")
    docs = source.get_dataset("validation", shuffle=False).map(
        lambda x: {"targets": vocab.encode_tf(x["text"])})
    doc_tokens = [d["targets"] for d in docs.as_numpy_iterator()]
    chunks = [c["targets"] for c in sc.split_tokens(
        sc.reduce_concat_tokens(docs, batch_size=128), RAW).as_numpy_iterator()]
    assert len(doc_tokens) > 1000  # many short documents
    np.testing.assert_array_equal(np.concatenate(chunks), np.concatenate(doc_tokens))
    groups = -(-len(doc_tokens) // 128)
    assert sum(len(c) < RAW for c in chunks) <= groups  # only each group's tail is short
    assert all(len(c) <= RAW for c in chunks)


# ---------------------------------------------------------------------------
# The objective on raw_text_en.

@pytest.fixture(scope="module")
def corrupted_bytes(shared_data_dir):
    os.environ.setdefault("T5MTL_DATA_DIR", shared_data_dir)
    examples = task_examples("raw_text_en_span_corruption",
                             {"inputs": INPUTS, "targets": TARGETS},
                             n=12000, shuffle=False, seed=0)
    originals = byte_chunks(shared_data_dir, pt.RAW_TEXT_EN_TRAIN[:3], RAW)[:len(examples)]
    return examples, originals


def test_span_corruption_statistics_on_real_text(corrupted_bytes):
    examples, originals = corrupted_bytes
    assert len(examples) == len(originals) == 12000
    vocab = get_vocabulary()
    noise = spans = total = 0
    for ex, original in zip(examples, originals):
        targets = ex["targets"][:-1]
        n_spans = len(sentinels(targets, vocab))
        noise += len(targets) - n_spans
        spans += n_spans
        total += len(original)
    assert abs(noise / total - 0.15) <= 0.002, noise / total
    assert abs(noise / spans - 3.0) <= 0.05, noise / spans


def test_span_corruption_reconstructs_real_text(corrupted_bytes):
    examples, originals = corrupted_bytes
    vocab = get_vocabulary()
    for ex, original in zip(examples, originals):
        np.testing.assert_array_equal(merge(ex["inputs"], ex["targets"], vocab), original)
        # one unique sentinel per span, counting down from <extra_id_0> = 358
        k = len(sentinels(ex["inputs"], vocab))
        np.testing.assert_array_equal(sentinels(ex["inputs"], vocab), 358 - np.arange(k))
        np.testing.assert_array_equal(sentinels(ex["targets"], vocab), 358 - np.arange(k))


def test_span_corruption_outputs_fit_sequence_length(corrupted_bytes):
    examples, originals = corrupted_bytes
    for ex, original in zip(examples, originals):  # untrimmed outputs
        assert len(ex["inputs"]) <= INPUTS and len(ex["targets"]) <= TARGETS
        if len(original) == RAW:
            assert (len(ex["inputs"]), len(ex["targets"])) == (INPUTS, TARGETS)


def test_span_corruption_t5_lengths_on_real_text(shared_data_dir):
    examples = task_examples("raw_text_en_span_corruption", {"inputs": 512, "targets": 114},
                             n=600, shuffle=False, seed=0)
    originals = byte_chunks(shared_data_dir, pt.RAW_TEXT_EN_TRAIN[:1], 568)
    vocab = get_vocabulary()
    for ex, original in zip(examples, originals):
        assert (len(ex["inputs"]), len(ex["targets"])) == (512, 114)
        np.testing.assert_array_equal(merge(ex["inputs"], ex["targets"], vocab), original)


def test_span_corruption_with_trained_sentencepiece(shared_data_dir, tmp_path):
    files = [os.path.join(shared_data_dir, f) for f in pt.RAW_TEXT_EN_VALIDATION]
    model = train_sentencepiece(files, str(tmp_path / "spm.model"), vocab_size=600,
                                input_sentence_size=20000)
    vocab = get_vocabulary("sentencepiece", model)
    pt.register_pretraining_task("test_sp_span_corruption", pt.raw_text_en_source(),
                                 vocabulary=vocab, concat_batch_size=1)
    try:
        examples = task_examples("test_sp_span_corruption", {"inputs": INPUTS, "targets": TARGETS},
                                 split="validation", n=500, shuffle=False, seed=0)
    finally:
        seqio.TaskRegistry.remove("test_sp_span_corruption")
    text = file_bytes(shared_data_dir, pt.RAW_TEXT_EN_VALIDATION[0]).decode("utf-8")
    # TF's tokenizer, as the task uses (python's breaks score ties differently)
    ids = vocab.encode_tf(tf.constant(text)).numpy()
    originals = [ids[i:i + RAW] for i in range(0, len(ids), RAW)]
    assert len(originals) > 500
    for ex, original in zip(examples, originals):
        np.testing.assert_array_equal(merge(ex["inputs"], ex["targets"], vocab), original)
        assert len(ex["inputs"]) <= INPUTS and len(ex["targets"]) <= TARGETS
        assert sentinels(ex["inputs"], vocab)[0] == vocab.vocab_size - 1 == 699


# ---------------------------------------------------------------------------
# Determinism and sharding.

def as_set(examples):
    return sorted((tuple(e["inputs"]), tuple(e["targets"])) for e in examples)


def test_same_seed_same_examples_and_sharding_keeps_the_union():
    lengths = {"inputs": INPUTS, "targets": TARGETS}
    name = "raw_text_en_span_corruption"

    def run(seed, shard=None):
        return task_examples(name, lengths, split="validation", shuffle=True, seed=seed,
                             shard_info=shard)

    first, again, other = run(7), run(7), run(8)
    assert len(first) > 2500
    assert all((a["inputs"] == b["inputs"]).all() and (a["targets"] == b["targets"]).all()
               for a, b in zip(first, again)) and len(first) == len(again)
    assert as_set(first) != as_set(other)
    # 2 shards: one file each (sharded at the source); 3 shards: seqio shards examples
    for num_shards in (2, 3):
        parts = [run(7, seqio.ShardInfo(i, num_shards)) for i in range(num_shards)]
        assert all(parts) or num_shards == 3
        assert as_set(sum(parts, [])) == as_set(first)


# ---------------------------------------------------------------------------
# Bad input.

def test_targets_length_too_small_is_a_clear_error():
    task = seqio.get_mixture_or_task("raw_text_en_span_corruption")
    with pytest.raises(T5mtlError, match=r"sequence_length\['targets'\]=113 .* need 114"):
        task.get_dataset({"inputs": 512, "targets": 113}, split="validation", shuffle=False)


def test_vocabulary_without_sentinels_is_an_error():
    vocab = seqio.ByteVocabulary()  # no extra ids
    features = {k: seqio.Feature(vocab) for k in ("inputs", "targets")}
    ds = tf.data.Dataset.from_tensors({"targets": tf.range(3, 200)})
    with pytest.raises(T5mtlError, match="sentinels"):
        sc.span_corruption(ds, {"inputs": 128, "targets": 29}, features)
