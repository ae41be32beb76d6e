"""Task ids: each token says which task of the mixture its example came from.

Tasks are told apart without the ids: every synthetic task's input starts
with its own instruction ("Add the numbers: ...").
"""
import itertools

import numpy as np
import pytest
import seqio
import tensorflow as tf

import t5mtl.data.registry  # noqa: F401  (registers the synthetic tasks)
from t5mtl.data import synthetic
from t5mtl.data.batches import host_batches
from t5mtl.data.task_ids import (TASK_INDEX, EncDecTaskIdsConverter, task_names,
                                 with_task_index)
from t5mtl.errors import T5mtlError

MIX = "test_task_ids_mix"
NESTED = "test_task_ids_nested"
# Registered in this order; seqio sorts them by name: add, parity, uppercase.
RATES = {"synth_uppercase": 1.0, "synth_add": 2.0, "synth_parity": 3.0}
ORDER = ["synth_add", "synth_parity", "synth_uppercase"]
LENGTHS = {"inputs": 96, "targets": 16}
ONE_HOST = seqio.ShardInfo(0, 1)


@pytest.fixture(scope="module", autouse=True)
def mixtures():
    seqio.MixtureRegistry.add(MIX, list(RATES.items()))
    seqio.MixtureRegistry.add(NESTED, [(MIX, 1.0), ("synth_count_words", 1.0)])
    yield
    seqio.MixtureRegistry.remove(NESTED)
    seqio.MixtureRegistry.remove(MIX)


def batches(name=MIX, n=4, lengths=LENGTHS, **kwargs):
    kwargs = {"split": "validation", "batch_size_per_host": 8, "seed": 3,
              "shard_info": ONE_HOST, **kwargs}
    return list(itertools.islice(host_batches(name, lengths, **kwargs), n))


def task_of(tokens: np.ndarray) -> str:
    """The synthetic task whose instruction the (non-padding) tokens start with."""
    vocab = seqio.get_mixture_or_task(MIX).output_features["inputs"].vocabulary
    text = vocab.decode([int(t) for t in tokens if t != 0])
    found = [name for name in RATES if text.startswith(synthetic.get(name).instruction)]
    assert len(found) == 1, text
    return found[0]


def test_task_names():
    assert task_names(MIX) == ORDER
    assert task_names(NESTED) == ["synth_add", "synth_count_words", "synth_parity",
                                  "synth_uppercase"]
    assert task_names("synth_add") == ["synth_add"]
    with pytest.raises(T5mtlError, match="'no_such_mixture'"):
        task_names("no_such_mixture")


@pytest.mark.parametrize("pack", [False, True])
@pytest.mark.parametrize("converter", ["encdec", "prefix_lm"])
def test_other_features_are_unchanged(pack, converter):
    kwargs = {"pack": pack, "feature_converter": converter, "n": 6}
    with_ids, without = batches(task_ids=True, **kwargs), batches(**kwargs)
    added = {"decoder_task_ids"} | ({"encoder_task_ids"} if converter == "encdec" else set())
    for a, b in zip(with_ids, without):
        assert set(a) == set(b) | added
        for key in b:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        for key in added:
            assert a[key].dtype == np.int32
    # the mixture is really mixed (else "unchanged" would be easy)
    seen = {i for b in with_ids for i in np.unique(b["decoder_task_ids"])}
    assert seen == {-1, 0, 1, 2}


def test_unpacked_rows_carry_their_task():
    rows = 0
    for b in batches(task_ids=True, pack=False, n=5):
        for enc, dec, enc_ids, dec_ids in zip(b["encoder_input_tokens"],
                                              b["decoder_target_tokens"],
                                              b["encoder_task_ids"], b["decoder_task_ids"]):
            index = ORDER.index(task_of(enc))
            np.testing.assert_array_equal(enc_ids, np.where(enc != 0, index, -1))
            np.testing.assert_array_equal(dec_ids, np.where(dec != 0, index, -1))
            rows += 1
    assert rows == 40


def test_packed_segments_carry_their_task():
    mixed_rows = 0
    for b in batches(task_ids=True, pack=True, n=4):
        for r in range(len(b["encoder_input_tokens"])):
            enc, seg = b["encoder_input_tokens"][r], b["encoder_segment_ids"][r]
            dec_seg = b["decoder_segment_ids"][r]
            enc_expected = np.full_like(seg, -1)
            dec_expected = np.full_like(dec_seg, -1)
            tasks = set()
            for s in range(1, seg.max() + 1):
                index = ORDER.index(task_of(enc[seg == s]))
                tasks.add(index)
                enc_expected[seg == s] = index
                dec_expected[dec_seg == s] = index  # segment s is one example on both sides
            np.testing.assert_array_equal(b["encoder_task_ids"][r], enc_expected)
            np.testing.assert_array_equal(b["decoder_task_ids"][r], dec_expected)
            # padding is -1 and only padding
            np.testing.assert_array_equal(b["encoder_task_ids"][r] == -1, enc == 0)
            np.testing.assert_array_equal(b["decoder_task_ids"][r] == -1,
                                          b["decoder_target_tokens"][r] == 0)
            mixed_rows += len(tasks) > 1
    assert mixed_rows >= 10  # most rows pack examples of different tasks


@pytest.mark.parametrize("pack", [False, True])
def test_prefix_lm_segments_carry_their_task(pack):
    vocab = seqio.get_mixture_or_task(MIX).output_features["inputs"].vocabulary
    eos = vocab.eos_id
    for b in batches(task_ids=True, pack=pack, feature_converter="prefix_lm", n=3):
        for r, tokens in enumerate(b["decoder_target_tokens"]):
            seg = b["decoder_segment_ids"][r] if pack else (tokens != 0).astype(np.int32)
            expected = np.full_like(seg, -1)
            for s in range(1, seg.max() + 1):
                # a segment is inputs + EOS + targets + EOS; the inputs name the task
                part = tokens[seg == s]
                expected[seg == s] = ORDER.index(task_of(part[:list(part).index(eos)]))
            np.testing.assert_array_equal(b["decoder_task_ids"][r], expected)


def test_task_frequencies_follow_the_rates():
    ids = np.concatenate([b["decoder_task_ids"][:, 0] for b in
                          batches(task_ids=True, pack=False, n=30, batch_size_per_host=100,
                                  lengths={"inputs": 64, "targets": 8})])
    assert (ids >= 0).all()  # every row holds an example
    total = sum(RATES.values())
    expected = [RATES[name] / total for name in ORDER]  # 2/6, 3/6, 1/6
    # 3,000 examples: one standard deviation of a share is at most 0.0092
    np.testing.assert_allclose(np.bincount(ids, minlength=3) / len(ids), expected, atol=0.03)


@pytest.mark.parametrize("pack", [False, True])
def test_a_task_is_index_zero(pack):
    for b in batches("synth_add", task_ids=True, pack=pack, n=2):
        np.testing.assert_array_equal(b["encoder_task_ids"],
                                      np.where(b["encoder_input_tokens"] != 0, 0, -1))
        np.testing.assert_array_equal(b["decoder_task_ids"],
                                      np.where(b["decoder_target_tokens"] != 0, 0, -1))


def _examples(*examples):
    return tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature={"inputs": tf.TensorSpec([None], tf.int32),
                          "targets": tf.TensorSpec([None], tf.int32),
                          TASK_INDEX: tf.TensorSpec([], tf.int32)})


def test_converter_packs_ids_with_the_tokens():
    # seqio's EncDecFeatureConverter docstring example, with task indices 2 and 0
    ds = _examples({"inputs": [7, 8, 5, 1], "targets": [3, 9, 1], TASK_INDEX: 2},
                   {"inputs": [8, 4, 9, 3, 1], "targets": [4, 1], TASK_INDEX: 0})
    out = list(EncDecTaskIdsConverter(pack=True)(ds, {"inputs": 10, "targets": 7})
               .as_numpy_iterator())
    assert len(out) == 1
    ex = out[0]
    np.testing.assert_array_equal(ex["encoder_input_tokens"], [7, 8, 5, 1, 8, 4, 9, 3, 1, 0])
    np.testing.assert_array_equal(ex["encoder_task_ids"], [2, 2, 2, 2, 0, 0, 0, 0, 0, -1])
    np.testing.assert_array_equal(ex["decoder_target_tokens"], [3, 9, 1, 4, 1, 0, 0])
    np.testing.assert_array_equal(ex["decoder_task_ids"], [2, 2, 2, 0, 0, -1, -1])
    assert not any(k.startswith(("inputs_task_ids", "targets_task_ids")) for k in ex)

    unpacked = list(EncDecTaskIdsConverter(pack=False)(ds, {"inputs": 6, "targets": 4})
                    .as_numpy_iterator())
    np.testing.assert_array_equal([u["encoder_task_ids"] for u in unpacked],
                                  [[2, 2, 2, 2, -1, -1], [0, 0, 0, 0, 0, -1]])
    np.testing.assert_array_equal([u["decoder_task_ids"] for u in unpacked],
                                  [[2, 2, 2, -1], [0, 0, -1, -1]])


def test_bad_input():
    ds = tf.data.Dataset.from_tensors({"inputs": [4, 1], "targets": [5, 1]})
    with pytest.raises(T5mtlError, match=f"'{TASK_INDEX}'"):
        EncDecTaskIdsConverter(pack=False)(ds, {"inputs": 4, "targets": 4})
    marked = with_task_index(seqio.get_mixture_or_task("synth_add"))
    with pytest.raises(T5mtlError, match=f"'{TASK_INDEX}'"):
        with_task_index(marked).get_dataset(LENGTHS, split="validation")
