"""Real benchmarks read from ../shared/data: row counts, formats, metrics."""
import os
import re

import numpy as np
import pytest
import seqio

import t5mtl.data.registry  # noqa: F401  (registers tasks)
from t5mtl.data import task_info
from t5mtl.data.data_dir import set_data_dir

# task -> its folder in ../shared/data
FOLDERS = {
    "glue_sst2": "glue_sst2", "glue_cola": "cola", "glue_stsb": "glue_stsb",
    "glue_qnli": "glue_qnli", "superglue_boolq": "superglue_boolq",
    "superglue_cb": "superglue_cb", "superglue_rte": "superglue_rte",
    "squad_v1_1": "squad_v1.1", "multi30k_en_de": "multi30k", "dialogsum": "dialogsum",
}


@pytest.fixture(autouse=True)
def _data_dir(shared_data_dir):
    set_data_dir(shared_data_dir)
    yield
    set_data_dir(None)


def provenance_rows(folder_path):
    """{file: rows} from the "## Files" table of a folder's PROVENANCE.md."""
    rows, section, in_table = {}, False, False
    with open(os.path.join(folder_path, "PROVENANCE.md"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("## "):
                section = line.strip() == "## Files"
                continue
            if not section:
                continue
            if not line.startswith("|"):
                if in_table:
                    break  # the table ended (multi30k lists source .gz files below)
                continue
            in_table = True
            m = re.match(r"\|\s*`([^`]+)`\s*\|\s*(\d+)\s*\|\s*([^|]+)\|", line)
            if m and "documentation" not in m.group(3):
                rows[m.group(1)] = int(m.group(2))
    assert rows, f"no Files table in {folder_path}/PROVENANCE.md"
    return rows


def split_files(source, split):
    """The split's files relative to their folder (parallel files count once)."""
    out = []
    for spec in source.resolve(split):
        path = next(iter(spec.values())) if isinstance(spec, dict) else spec
        out.append(os.path.basename(path))
    return out


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_row_counts_match_provenance(name, shared_data_dir):
    task = seqio.get_mixture_or_task(name)
    rows = provenance_rows(os.path.join(shared_data_dir, FOLDERS[name]))
    used = set()
    for split in task.splits:
        files = split_files(task.source, split)
        used |= {os.path.basename(p) for spec in task.source.resolve(split)
                 for p in (spec.values() if isinstance(spec, dict) else [spec])}
        assert task.source.num_input_examples(split) == sum(rows[f] for f in files), (split, files)
    # Every data file of the folder is registered under some split.
    assert used == set(rows)
    assert task_info.get_task_info(name).splits == tuple(task.splits)


# name, split, index, inputs, targets: checked by hand against the raw line.
LITERAL = [
    ("glue_sst2", "validation", 203, "sst2 sentence: bad .", "negative"),
    ("glue_cola", "validation", 364, "cola sentence: He danced.", "acceptable"),
    ("glue_stsb", "validation", 1,  # score 4.750 rounds to 4.8
     "stsb sentence1: A young child is riding a horse. sentence2: A child is riding a horse.",
     "4.8"),
    ("glue_qnli", "validation", 125,
     "qnli question: What is the festival of food and drink known as? sentence: EAT!",
     "entailment"),
    ("superglue_boolq", "validation", 2644,
     "boolq passage: The Punisher (season 2) -- The season is set for release in 2019. "
     "question: are they going to make a punisher season 2", "True"),
    ("superglue_cb", "validation", 14,
     "cb hypothesis: they should abolish it premise: A: Your turn. B: Okay. Uh, I don't "
     "think they should abolish it.", "contradiction"),
    ("superglue_rte", "validation", 208,
     "rte hypothesis: Drummondville contains the girl. premise: The girl was found in "
     "Drummondville.", "not_entailment"),
    ("squad_v1_1", "validation", 1492,
     "question: When was his lab destroyed ? context: On 7 January 1900 , Tesla left "
     "Colorado Springs . [ citation needed ] His lab was torn down in 1904 , and its "
     "contents were sold two years later to satisfy a debt .", "1904"),
    ("multi30k_en_de", "validation", 458,
     "translate English to German: A man practices boxing", "Ein Mann boxt"),
    ("dialogsum", "validation", 66,
     "summarize: #Person1#: Excuse me, madam. Is this seat taken?\n#Person2#: No.\n"
     "#Person1#: Do you mind my sharing the same table with you?\n#Person2#: Of course not. "
     "There are so many people here today.\n#Person1#: Yes. I can't even find a seat.",
     "#Person1# wants to share the seat. #Person2# agrees."),
]


@pytest.mark.parametrize("name,split,index,inputs,targets", LITERAL, ids=[x[0] for x in LITERAL])
def test_formatted_example(name, split, index, inputs, targets):
    task = seqio.get_mixture_or_task(name)
    ds = task.get_dataset({"inputs": 1024, "targets": 128}, split=split, shuffle=False)
    ex = next(ds.skip(index).take(1).as_numpy_iterator())
    assert ex["inputs_pretokenized"].decode() == inputs
    assert ex["targets_pretokenized"].decode() == targets
    vocab = task.output_features["targets"].vocabulary
    assert vocab.decode(list(ex["targets"])) == targets and ex["targets"][-1] == 1


def test_unlabelled_test_split_targets_unk():
    for name in ("glue_sst2", "glue_stsb", "superglue_cb", "superglue_rte"):
        ds = seqio.get_mixture_or_task(name).get_dataset(None, split="test", shuffle=False)
        assert next(ds.as_numpy_iterator())["targets_pretokenized"] == b"<unk>"


def test_dialogsum_test_split_has_three_references():
    ds = seqio.get_mixture_or_task("dialogsum").get_dataset(None, split="test", shuffle=False)
    ex = next(ds.as_numpy_iterator())
    assert len(ex["references"]) == 3 and ex["targets_pretokenized"] == ex["references"][0]


def evaluate(name, target_texts, predictions, examples=None):
    """What seqio's Evaluator does: postprocess targets and predictions, score."""
    task = seqio.get_mixture_or_task(name)
    examples = examples or [{} for _ in target_texts]
    post = task.postprocess_fn
    t = [post(x.encode(), example=ex, is_target=True) for x, ex in zip(target_texts, examples)]
    p = [post(x.encode(), example=ex, is_target=False) for x, ex in zip(predictions, examples)]
    out = {}
    for fn in task.metric_fns:
        out.update(fn(t, p))
    return out


def test_metric_sst2_qnli_boolq_rte_accuracy():
    assert evaluate("glue_sst2", ["positive", "negative", "positive"],
                    ["positive", "positive", "great"]) == {"accuracy": pytest.approx(100 / 3)}
    assert evaluate("glue_qnli", ["entailment", "not_entailment"],
                    ["entailment", "not_entailment"]) == {"accuracy": 100.0}
    assert evaluate("superglue_boolq", ["True", "False", "True", "True"],
                    ["True", "True", "False", "True"]) == {"accuracy": 50.0}
    assert evaluate("superglue_rte", ["entailment", "not_entailment"],
                    ["not_entailment", "not_entailment"]) == {"accuracy": 50.0}


def test_metric_cola_matthews():
    a, u = "acceptable", "unacceptable"
    # TP=2, TN=1, FP=1, FN=0: (2*1 - 1*0) / sqrt(3*2*2*1) = 2/sqrt(12).
    got = evaluate("glue_cola", [a, a, u, u], [a, a, u, a])
    assert got == {"matthews_corrcoef": pytest.approx(100 * 2 / np.sqrt(12))}


def test_metric_stsb_correlations():
    got = evaluate("glue_stsb", ["1.0", "2.0", "3.0", "4.0"], ["1.0", "3.0", "2.0", "4.0"])
    assert got == {"pearson_corrcoef": pytest.approx(80.0), "spearman_corrcoef": pytest.approx(80.0)}


def test_metric_cb_accuracy_and_f1():
    e, c, n = "entailment", "contradiction", "neutral"
    got = evaluate("superglue_cb", [e, e, c, c, n, n], [e, c, c, c, n, e])
    # F1: entailment 0.5, contradiction 0.8, neutral 2/3; accuracy 4/6.
    assert got == {"accuracy": pytest.approx(400 / 6),
                   "mean_3class_f1": pytest.approx(100 * (0.5 + 0.8 + 2 / 3) / 3)}


def test_metric_squad():
    examples = [{"answers": np.array([b"Denver Broncos", b"Broncos"])},
                {"answers": np.array([b"Santa Clara , California"])}]
    got = evaluate("squad_v1_1", ["Denver Broncos", "Santa Clara , California"],
                   ["The Broncos", "Santa Clara"], examples)
    # ex1 matches "Broncos" after dropping the article; ex2 F1 = 0.8, EM 0.
    assert got == {"em": pytest.approx(50.0), "f1": pytest.approx(90.0)}


def test_metric_multi30k_bleu():
    got = evaluate("multi30k_en_de", ["Ein Hund sitzt auf einer Matte"],
                   ["Ein Hund sitzt auf der Matte"])
    # Precisions 5/6, 3/5, 2/4, 1/3, brevity penalty 1.
    assert got == {"bleu": pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-6)}


def test_metric_dialogsum_rouge():
    examples = [{"references": np.array([b"the cat sat on the mat", b"a dog barked"])}]
    got = evaluate("dialogsum", ["the cat sat on the mat"], ["the cat sat"], examples)
    assert got["rouge1"] == pytest.approx(100 * 2 / 3)
    assert got["rouge2"] == pytest.approx(100 * 4 / 7)
    assert got["rougeLsum"] == pytest.approx(100 * 2 / 3)
