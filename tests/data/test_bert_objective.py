"""BERT inputs ([CLS] a [SEP] b [SEP], longest-first truncation) and masking (15%; 80/10/10)."""
import os
import shutil

import numpy as np
import pytest
import seqio
import tensorflow as tf

from t5mtl.data import bert_tasks
from t5mtl.data.bert_objective import bert_inputs, bert_mask, pair_lengths
from t5mtl.data.vocab import WORDPIECE_EN_PATH, get_vocabulary
from t5mtl.errors import T5mtlError

VOCAB = get_vocabulary("wordpiece_en")
FEATURES = bert_tasks.bert_output_features(VOCAB)


def _ids(*tokens):
    return [VOCAB.token_id(t) for t in tokens]


def _run(preprocessor, columns, seed=None, **kwargs):
    """`preprocessor` over examples given as columns (feature -> values), seeded."""
    ds = tf.data.Dataset.from_tensor_slices(columns)
    with seqio.utils.map_seed_manager(seed):
        return list(preprocessor(ds, output_features=FEATURES, **kwargs).as_numpy_iterator())


@pytest.mark.parametrize("len_a, len_b, budget, keep", [
    (3, 3, 10, (3, 3)),   # fits: nothing cut
    (10, 2, 6, (4, 2)),   # the shorter fits in half the budget: only the longer is cut
    (2, 10, 6, (2, 4)),
    (1, 20, 7, (1, 6)),
    (7, 4, 6, (3, 3)),    # both cut to half
    (5, 5, 5, (2, 3)),    # a tie: b gets the odd one
    (9, 6, 7, (4, 3)),    # the longer (a) gets the odd one
])
def test_pair_lengths_hand_checked(len_a, len_b, budget, keep):
    got = pair_lengths(len_a, len_b, budget)
    assert (int(got[0]), int(got[1])) == keep


def test_pair_truncation_equals_hf(tmp_path):
    from transformers import BertTokenizer
    shutil.copy(WORDPIECE_EN_PATH, tmp_path / "vocab.txt")
    hf = BertTokenizer.from_pretrained(str(tmp_path))
    lengths = np.array([(a, b) for a in range(1, 13) for b in range(1, 13)])
    texts = [" ".join(["the"] * n) for n in range(13)]  # "the" is one id
    for max_length in (5, 8, 11):
        ref = hf([texts[a] for a, _ in lengths], [texts[b] for _, b in lengths],
                 truncation="longest_first", max_length=max_length)["token_type_ids"]
        keep_a, keep_b = pair_lengths(lengths[:, 0], lengths[:, 1], max_length - 3)
        ours = [[0] * (int(a) + 2) + [1] * (int(b) + 1) for a, b in zip(keep_a, keep_b)]
        assert ours == ref


def test_bert_inputs_pair_with_truncation_hand_checked():
    examples = {"premise": ["The old man went to the sea"], "hypothesis": ["by H. G. Wells"],
                "label": [1]}
    out = _run(bert_inputs, examples, sequence_length={"inputs": 10},
               text_keys=("premise", "hypothesis"))
    # a: the old man went to the sea (7), b: by h . g . well ##s (7); 10 - 3 = 7
    # ids for both, each longer than half: a keeps 3, b (the tie's second) keeps 4.
    assert out[0]["inputs"].tolist() == _ids(
        "[CLS]", "the", "old", "man", "[SEP]", "by", "h", ".", "g", "[SEP]")
    assert out[0]["token_types"].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert out[0]["label"] == 1 and set(out[0]) == {"inputs", "token_types", "label"}


def test_bert_inputs_single_text_and_ids():
    out = _run(bert_inputs, {"inputs": ["The old man went to the sea"]},
               sequence_length={"inputs": 5})
    assert out[0]["inputs"].tolist() == _ids("[CLS]", "the", "old", "man", "[SEP]")
    assert out[0]["token_types"].tolist() == [0] * 5
    # already tokenized ids, no length: nothing is cut
    out = _run(bert_inputs, {"inputs": [[7, 8, 9]]}, sequence_length=None)
    assert out[0]["inputs"].tolist() == [VOCAB.cls_id, 7, 8, 9, VOCAB.sep_id]
    with pytest.raises(T5mtlError, match="no room"):
        _run(bert_inputs, {"a": ["x"], "b": ["y"]}, sequence_length={"inputs": 3},
             text_keys=("a", "b"))


def _mask_examples(num, length, seed=0):
    """Random regular ids framed as [CLS] ... [SEP], with [UNK]s, [MASK]s and padding."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB.vocab_size, size=(num, length)).astype(np.int32)
    ids[:, 0], ids[:, -8] = VOCAB.cls_id, VOCAB.sep_id
    ids[:, -7:] = VOCAB.pad_id
    ids[:, 5], ids[:, 9] = VOCAB.unk_id, VOCAB.mask_id
    return ids


def test_mask_statistics():
    """Over 1.06M maskable ids (about 160k selected): fractions within 0.005 (absolute) of
    15% (selected / maskable) and 80 / 10 / 10 (fractions of the selected)."""
    tokens = _mask_examples(9000, 128)
    with seqio.utils.map_seed_manager(7):
        ds = bert_mask(tf.data.Dataset.from_tensor_slices({"inputs": tokens}), None, FEATURES)
    batches = list(ds.batch(1000).as_numpy_iterator())
    inputs = np.concatenate([b["inputs"] for b in batches])
    targets = np.concatenate([b["targets"] for b in batches])
    special = np.isin(tokens, VOCAB.special_ids)
    selected = targets > 0
    assert not selected[special].any()                    # [CLS] [SEP] [UNK] [MASK] [PAD]
    assert (targets[selected] == tokens[selected]).all()  # targets: the original ids
    assert (inputs[~selected] == tokens[~selected]).all()  # the rest is untouched
    maskable = (~special).sum()
    assert maskable > 1_000_000
    assert abs(selected.sum() / maskable - 0.15) < 0.005
    masked = selected & (inputs == VOCAB.mask_id)
    kept = selected & (inputs == tokens)
    randomized = selected & ~masked & ~kept
    n = selected.sum()
    for part, expected in ((masked, 0.8), (randomized, 0.1), (kept, 0.1)):
        assert abs(part.sum() / n - expected) < 0.005
    drawn = inputs[randomized]  # uniform over the regular ids 5 .. 7999
    assert drawn.min() >= 5 and abs(drawn.mean() - (5 + VOCAB.vocab_size - 1) / 2) < 100


def test_mask_is_seeded():
    tokens = _mask_examples(64, 32, seed=1)
    examples = {"inputs": tokens}
    a = _run(bert_mask, examples, seed=3, sequence_length=None)
    b = _run(bert_mask, examples, seed=3, sequence_length=None)
    c = _run(bert_mask, examples, seed=4, sequence_length=None)
    stack = lambda out, k: np.stack([x[k] for x in out])  # noqa: E731
    assert (stack(a, "inputs") == stack(b, "inputs")).all()
    assert (stack(a, "targets") == stack(b, "targets")).all()
    assert (stack(a, "targets") != stack(c, "targets")).any()
    # Seeds follow the examples, not their order (sharding gives the same masks).
    reverse = _run(bert_mask, {"inputs": tokens[::-1].copy()}, seed=3, sequence_length=None)
    assert (stack(reverse, "inputs")[::-1] == stack(a, "inputs")).all()


def test_seqio_encoder_converter_drops_random_and_kept_from_the_loss():
    """seqio's EncoderFeatureConverter weights inputs == [MASK] only; targets > 0
    (what t5mtl's converter must use) covers every selected position."""
    tokens = _mask_examples(64, 64, seed=2)
    tokens[:, 9] = 100  # no [MASK] in the text: seqio would weight it too, with target 0
    with seqio.utils.map_seed_manager(5):
        ds = bert_mask(tf.data.Dataset.from_tensor_slices({"inputs": tokens}), None, FEATURES)
    converter = seqio.EncoderFeatureConverter(mask_id=VOCAB.mask_id, pack=False)
    out = next(converter(ds.map(lambda x: {"inputs": x["inputs"], "targets": x["targets"]}),
                         {"inputs": 64, "targets": 64}).batch(64).as_numpy_iterator())
    selected = out["encoder_target_tokens"] > 0
    weights = out["encoder_loss_weights"].astype(bool)
    assert (weights == (out["encoder_input_tokens"] == VOCAB.mask_id)).all()
    assert (weights <= selected).all() and weights.sum() < selected.sum()


def test_bert_mlm_task(shared_data_dir):
    bert_tasks.register(data_dir=shared_data_dir, overwrite=True)
    try:
        task = seqio.get_mixture_or_task(bert_tasks.MLM_TASK)
        ds = task.get_dataset(bert_tasks.MLM_LENGTHS, split="validation", shuffle=False, seed=1)
        first = next(ds.as_numpy_iterator())
    finally:
        bert_tasks.unregister()
    assert {k: v.shape for k, v in first.items()} == {
        "inputs": (128,), "targets": (128,), "token_types": (128,)}
    assert first["inputs"][0] == VOCAB.cls_id and first["inputs"][-1] == VOCAB.sep_id
    assert (first["token_types"] == 0).all() and first["targets"][[0, -1]].tolist() == [0, 0]
    # The first chunk is the first 126 ids of the first validation book.
    path = os.path.join(shared_data_dir, "raw_text_en/gutenberg/pg35.txt")
    with open(path, encoding="utf-8-sig") as f:
        original = np.array(VOCAB.encode(f.read())[:126])
    selected = first["targets"][1:-1] > 0
    assert 0 < selected.sum() < 40
    assert (first["targets"][1:-1][selected] == original[selected]).all()
    assert (first["inputs"][1:-1][~selected] == original[~selected]).all()
