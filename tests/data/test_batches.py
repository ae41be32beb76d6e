"""host_batches: seqio task/mixture -> feature converter -> per-host numpy batches."""
import itertools

import numpy as np
import pytest
import seqio

from t5mtl.data import pretraining_tasks  # noqa: F401  (registers the tasks)
from t5mtl.data.batches import default_shard_info, host_batches, make_feature_converter
from t5mtl.errors import T5mtlError

SC = "raw_text_en_span_corruption"
SC_LENGTHS = {"inputs": 128, "targets": 29}
ONE_HOST = seqio.ShardInfo(0, 1)


@pytest.fixture(autouse=True)
def _data_dir(shared_data_dir, monkeypatch):
    monkeypatch.setenv("T5MTL_DATA_DIR", shared_data_dir)


def take(it, n):
    return list(itertools.islice(it, n))


def test_unpacked_encdec_batches_hold_the_task_examples():
    batches = take(host_batches(SC, SC_LENGTHS, split="validation", batch_size_per_host=4,
                                shuffle=False, seed=0, pack=False, shard_info=ONE_HOST), 2)
    b = batches[0]
    assert set(b) == {"encoder_input_tokens", "decoder_target_tokens",
                      "decoder_input_tokens", "decoder_loss_weights"}
    assert b["encoder_input_tokens"].shape == (4, 128)
    assert b["encoder_input_tokens"].dtype == np.int32
    assert b["decoder_target_tokens"].shape == (4, 29)
    task = seqio.get_mixture_or_task(SC)
    first = next(task.get_dataset(SC_LENGTHS, split="validation", shuffle=False, seed=0)
                 .as_numpy_iterator())
    np.testing.assert_array_equal(b["encoder_input_tokens"][0], first["inputs"])
    np.testing.assert_array_equal(b["decoder_target_tokens"][0], first["targets"])
    # teacher forcing: decoder inputs are the targets shifted right, starting with 0
    np.testing.assert_array_equal(b["decoder_input_tokens"][:, 1:],
                                  b["decoder_target_tokens"][:, :-1])
    assert (b["decoder_input_tokens"][:, 0] == 0).all()
    np.testing.assert_array_equal(b["decoder_loss_weights"], b["decoder_target_tokens"] > 0)


def test_packed_batches_have_segments():
    # prefix_lm chunks of 64: a prefix of k and a continuation of 64 - k (+ EOS each)
    b = next(host_batches("raw_text_en_prefix_lm", {"inputs": 64, "targets": 128},
                          split="validation", batch_size_per_host=8, seed=0, pack=True,
                          shard_info=ONE_HOST))
    for key in ("encoder_segment_ids", "encoder_positions", "decoder_segment_ids",
                "decoder_positions"):
        assert b[key].shape[0] == 8
    assert b["encoder_segment_ids"].max() >= 2  # several examples share rows
    seg, pos = b["encoder_segment_ids"], b["encoder_positions"]
    starts = (seg > 0) & np.concatenate([np.ones((8, 1), bool), seg[:, 1:] != seg[:, :-1]], 1)
    assert (pos[starts] == 0).all()  # positions restart in each packed segment


def test_same_seed_same_batches():
    def run(seed):
        return take(host_batches(SC, SC_LENGTHS, split="validation", batch_size_per_host=4,
                                 shuffle=True, seed=seed, shard_info=ONE_HOST), 3)

    a, b, c = run(5), run(5), run(6)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert any((x["encoder_input_tokens"] != z["encoder_input_tokens"]).any()
               for x, z in zip(a, c))


def test_two_hosts_see_the_one_host_union():
    def rows(shard):
        batches = host_batches(SC, SC_LENGTHS, split="validation", batch_size_per_host=1,
                               shuffle=False, seed=1, pack=False, shard_info=shard,
                               num_epochs=1)
        return [tuple(b["encoder_input_tokens"][0]) + tuple(b["decoder_target_tokens"][0])
                for b in batches]

    one = rows(ONE_HOST)
    hosts = [rows(seqio.ShardInfo(i, 2)) for i in range(2)]
    assert len(one) > 2500 and all(hosts)
    assert not set(hosts[0]) & set(hosts[1])
    assert sorted(hosts[0] + hosts[1]) == sorted(one)


def test_prefix_lm_feature_converter():
    b = next(host_batches("raw_text_en_prefix_lm", {"inputs": 32, "targets": 32},
                          split="validation", batch_size_per_host=2, shuffle=False, seed=0,
                          pack=False, shard_info=ONE_HOST, feature_converter="prefix_lm"))
    assert set(b) == {"decoder_target_tokens", "decoder_input_tokens",
                      "decoder_loss_weights", "decoder_causal_attention"}
    assert b["decoder_target_tokens"].shape == (2, 64)
    task = seqio.get_mixture_or_task("raw_text_en_prefix_lm")
    ex = next(task.get_dataset({"inputs": 32, "targets": 32}, split="validation",
                               shuffle=False, seed=0).as_numpy_iterator())
    n_in, n_tg = len(ex["inputs"]), len(ex["targets"])
    np.testing.assert_array_equal(b["decoder_target_tokens"][0, :n_in + n_tg],
                                  np.concatenate([ex["inputs"], ex["targets"]]))
    # the prefix (and the position that predicts the first target) is fully visible
    assert b["decoder_causal_attention"][0].sum() == n_in + 1
    # loss only on the continuation
    assert b["decoder_loss_weights"][0].sum() == n_tg


def test_mixture_of_objectives():
    name = "test_raw_text_en_objectives"
    seqio.MixtureRegistry.add(name, [(SC, 1.0), ("raw_text_en_prefix_lm", 1.0)])
    try:
        b = next(host_batches(name, {"inputs": 64, "targets": 64}, split="validation",
                              batch_size_per_host=16, seed=0, pack=False, shard_info=ONE_HOST))
    finally:
        seqio.MixtureRegistry.remove(name)
    assert b["encoder_input_tokens"].shape == (16, 64)
    has_sentinel = (b["encoder_input_tokens"] >= 259).any(axis=1)
    assert 0 < has_sentinel.sum() < 16  # both tasks are in the batch


def test_default_shard_is_this_process():
    assert default_shard_info() == seqio.ShardInfo(0, 1)


def test_bad_arguments():
    with pytest.raises(T5mtlError, match="'no_such_task'"):
        host_batches("no_such_task", SC_LENGTHS, shard_info=ONE_HOST)
    with pytest.raises(T5mtlError, match="batch_size_per_host"):
        host_batches(SC, SC_LENGTHS, batch_size_per_host=0, shard_info=ONE_HOST)
    with pytest.raises(T5mtlError, match="'decoder_only'"):
        make_feature_converter("decoder_only")
    with pytest.raises(T5mtlError, match="bad shard"):
        host_batches(SC, SC_LENGTHS, shard_info=seqio.ShardInfo(2, 2))
    with pytest.raises(T5mtlError, match="targets"):
        next(host_batches(SC, {"inputs": 128, "targets": 20}, shard_info=ONE_HOST))
