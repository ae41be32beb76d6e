"""BERT variants of text-to-text tasks (t5mtl.data.bert_variants): the same
T5 text as [CLS] text [SEP] in WordPiece ids, a sentence pair as HF's
tokenizer makes it ([CLS] a [SEP] b [SEP], token types, longest-first
truncation), the label's ids without EOS, the base's metrics and label
names; token types reach the classifier's batches and evaluation's."""
import shutil

import numpy as np
import pytest
import seqio

import t5mtl.data.registry  # noqa: F401  (glue_sst2)
from t5mtl.data.bert_variants import register_bert_variants
from t5mtl.data.class_labels import label_token_ids
from t5mtl.data.task_info import get_task_info, remove_task_info
from t5mtl.data.vocab import get_vocabulary
from t5mtl.errors import T5mtlError


def _registered_variant(shared_data_dir, base):
    """Registers base's BERT variant for one test, then removes it."""
    from t5mtl.data.data_dir import set_data_dir
    set_data_dir(shared_data_dir)
    (name,) = register_bert_variants([base])
    yield name
    seqio.TaskRegistry.remove(name)
    remove_task_info(name)
    set_data_dir(None)


@pytest.fixture
def sst2_bert(shared_data_dir):
    yield from _registered_variant(shared_data_dir, "glue_sst2")


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
        assert not ex["token_types"].any()     # one segment: all sentence A
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


@pytest.fixture
def rte_bert(shared_data_dir):
    yield from _registered_variant(shared_data_dir, "superglue_rte")


def _examples(name, length, n, split="validation"):
    ds = seqio.get_mixture_or_task(name).get_dataset(
        {"inputs": length, "targets": 4}, split, shuffle=False)
    return list(ds.take(n).as_numpy_iterator())


def test_pair_variant_is_hf_tokenizers_sentence_pair(rte_bert, tmp_path):
    """RTE's hypothesis and premise (the template's order) as HF's
    BertTokenizer(a, b, truncation="longest_first") over the same vocab.txt:
    ids and token types, cut and uncut pairs."""
    from transformers import BertTokenizer

    from t5mtl.data.vocab import WORDPIECE_EN_PATH
    shutil.copy(WORDPIECE_EN_PATH, tmp_path / "vocab.txt")
    hf = BertTokenizer.from_pretrained(str(tmp_path))
    cut = 0
    for length in (48, 512):
        for ex in _examples(rte_bert, length, 40):
            a, b = ex["hypothesis"].decode(), ex["premise"].decode()
            want = hf(a, b, truncation="longest_first", max_length=length)
            np.testing.assert_array_equal(ex["inputs"], want["input_ids"])
            np.testing.assert_array_equal(ex["token_types"], want["token_type_ids"])
            assert ex["inputs_pretokenized"].decode() == f"{a} [SEP] {b}"
            cut += len(hf(a, b)["input_ids"]) > length
    assert 0 < cut < 80          # both truncated and whole pairs were compared
    labels, ids, _ = label_token_ids([rte_bert])
    assert labels == (("entailment", "not_entailment"),)


def test_token_types_reach_classifier_and_eval_batches(rte_bert, sst2_bert):
    """ClassLabelConverter carries each task's token types (a mixture of a
    pair and a one-segment variant); evaluation's converter adds them for a
    pair task and converts a T5 task exactly as seqio's EncDecFeatureConverter."""
    from t5mtl.data.class_labels import ClassLabelConverter
    from t5mtl.data.encoder_features import EncDecTokenTypesConverter
    from t5mtl.data.task_ids import TASK_INDEX
    lengths = {"inputs": 40, "targets": 6}
    tasks = [rte_bert, sst2_bert]
    labels, ids, eos = label_token_ids(tasks)
    converter = ClassLabelConverter(ids, eos, labels)
    for index, name in enumerate(tasks):
        raw = seqio.get_mixture_or_task(name).get_dataset(lengths, "validation", shuffle=False)
        task_ds = raw.map(lambda ex, i=index: {**ex, TASK_INDEX: i})
        out = list(converter(task_ds, lengths).take(3).as_numpy_iterator())
        want = list(raw.take(3).as_numpy_iterator())
        for got, ex in zip(out, want):
            n = len(ex["token_types"])
            np.testing.assert_array_equal(got["encoder_token_types"][:n], ex["token_types"])
            assert not got["encoder_token_types"][n:].any() and got["task_ids"] == index
        assert any(g["encoder_token_types"].any() for g in out) == (name == rte_bert)

    evaluation = EncDecTokenTypesConverter(pack=False)
    rte = seqio.get_mixture_or_task(rte_bert).get_dataset(lengths, "validation", shuffle=False)
    pair = next(evaluation(rte, lengths).as_numpy_iterator())
    first = next(rte.as_numpy_iterator())
    np.testing.assert_array_equal(pair["encoder_token_types"][:len(first["token_types"])],
                                  first["token_types"])
    t5 = seqio.get_mixture_or_task("glue_sst2").get_dataset(lengths, "validation", shuffle=False)
    ours = next(evaluation(t5, lengths).as_numpy_iterator())
    theirs = next(seqio.EncDecFeatureConverter(pack=False)(t5, lengths).as_numpy_iterator())
    assert set(ours) == set(theirs)
    for k in theirs:
        np.testing.assert_array_equal(ours[k], theirs[k])
