"""BERT variants of text-to-text tasks (t5mtl.data.bert_variants): the same
T5 text as [CLS] text [SEP] in WordPiece ids, the label's ids without EOS,
the base's metrics and label names."""
import numpy as np
import pytest
import seqio

import t5mtl.data.registry  # noqa: F401  (glue_sst2)
from t5mtl.data.bert_variants import register_bert_variants
from t5mtl.data.class_labels import label_token_ids
from t5mtl.data.task_info import get_task_info, remove_task_info
from t5mtl.data.vocab import get_vocabulary
from t5mtl.errors import T5mtlError


@pytest.fixture
def sst2_bert(shared_data_dir):
    from t5mtl.data.data_dir import set_data_dir
    set_data_dir(shared_data_dir)
    (name,) = register_bert_variants(["glue_sst2"])
    yield name
    seqio.TaskRegistry.remove(name)
    remove_task_info(name)
    set_data_dir(None)


def test_variant_is_cls_text_sep_in_wordpiece_ids(sst2_bert):
    vocab = get_vocabulary("wordpiece_en")
    ds = seqio.get_mixture_or_task(sst2_bert).get_dataset(
        {"inputs": 16, "targets": 4}, "validation", shuffle=False)
    for ex in list(ds.take(3).as_numpy_iterator()):
        text = ex["inputs_pretokenized"].decode()
        assert text.startswith("sst2 sentence: ")
        body = vocab.encode(text)[:16 - 2]
        np.testing.assert_array_equal(ex["inputs"], [vocab.cls_id, *body, vocab.sep_id])
        np.testing.assert_array_equal(ex["targets"], vocab.encode(ex["targets_pretokenized"].decode()))
        assert "token_types" not in ex
    base = seqio.get_mixture_or_task("glue_sst2")
    task = seqio.get_mixture_or_task(sst2_bert)
    assert task.metric_fns == base.metric_fns
    assert get_task_info(sst2_bert).label_names == get_task_info("glue_sst2").label_names
    labels, ids, eos = label_token_ids([sst2_bert])
    assert labels == (("negative", "positive"),) and eos == 0     # no EOS in WordPiece
    assert ids[0] == tuple(tuple(vocab.encode(label)) for label in labels[0])


def test_unknown_base_task_is_named():
    with pytest.raises(T5mtlError, match="'nope'"):
        register_bert_variants(["nope"])
