"""SuperGLUE tasks (BoolQ, CB, RTE) from local jsonl copies, in T5's text format.

As in T5, the input is the benchmark name followed by the input fields in
alphabetical order ("cb hypothesis: ... premise: ..."), the target is the
label name, and labels are compared as class ids: accuracy, plus macro-F1
over the three classes for CB. Unlabelled test rows get the target "<unk>".
"""
from __future__ import annotations

from t5mtl.data import metrics
from t5mtl.data.files import Field, Template
from t5mtl.data.glue import label_field, register_label_task
from t5mtl.data.task_info import TaskInfo

SUPERGLUE_CITATION = ("Wang et al., 2019. SuperGLUE: A Stickier Benchmark for "
                      "General-Purpose Language Understanding Systems. NeurIPS.")
_NO_LICENCE = "not stated (HF card: unknown)"


# Label sets, in the order of the class ids.
BOOLQ_LABELS = ("False", "True")
CB_LABELS = ("entailment", "contradiction", "neutral")
RTE_LABELS = ("entailment", "not_entailment")


def register(**kwargs) -> None:
    """Registers this module's tasks; kwargs (vocabulary=, overwrite=, data_dir=)
    go to register_file_task. Called once at import."""
    register_label_task(
        "superglue_boolq", "superglue_boolq", {"validation": "val.jsonl"}, "jsonl",
        fields={"passage": Field(), "question": Field(),
                "label": label_field(BOOLQ_LABELS, raw_values=(False, True))},
        template=Template("boolq passage: {passage} question: {question}", "{label}"),
        label_names=BOOLQ_LABELS,
        info=TaskInfo(
            name="superglue_boolq", category="qa", schema="pair_classification",
            metrics=("accuracy",), label_names=BOOLQ_LABELS,
            fields=("passage", "question", "label"), splits=("validation",), suite="superglue",
            source="superglue_boolq", license="upstream BoolQ: CC BY-SA 3.0 (not in the files)",
            citation="Clark et al., 2019. BoolQ. NAACL. " + SUPERGLUE_CITATION,
            description="answer a yes/no question about a Wikipedia passage"),
        **kwargs)
    register_label_task(
        "superglue_cb", "superglue_cb",
        {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}, "jsonl",
        fields={"hypothesis": Field(), "premise": Field(),
                "label": label_field(CB_LABELS, missing_in=("test",))},
        template=Template("cb hypothesis: {hypothesis} premise: {premise}", "{label}"),
        label_names=CB_LABELS,
        metric_fns=(metrics.accuracy, metrics.mean_multiclass_f1(num_classes=3)),
        info=TaskInfo(
            name="superglue_cb", category="nli", schema="pair_classification",
            metrics=("accuracy", "mean_3class_f1"), label_names=CB_LABELS,
            fields=("hypothesis", "premise", "label"), splits=("train", "validation", "test"),
            suite="superglue", source="superglue_cb", license=_NO_LICENCE,
            citation="de Marneffe et al., 2019. The CommitmentBank. " + SUPERGLUE_CITATION,
            description="three-way entailment of a clause embedded in a premise"),
        **kwargs)
    register_label_task(
        "superglue_rte", "superglue_rte",
        {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}, "jsonl",
        fields={"hypothesis": Field(), "premise": Field(),
                "label": label_field(RTE_LABELS, missing_in=("test",))},
        template=Template("rte hypothesis: {hypothesis} premise: {premise}", "{label}"),
        label_names=RTE_LABELS,
        info=TaskInfo(
            name="superglue_rte", category="nli", schema="pair_classification",
            metrics=("accuracy",), label_names=RTE_LABELS,
            fields=("hypothesis", "premise", "label"), splits=("train", "validation", "test"),
            suite="superglue", source="superglue_rte", license=_NO_LICENCE,
            citation="Dagan et al., 2005; Bar-Haim et al., 2006; Giampiccolo et al., 2007; "
                     "Bentivogli et al., 2009. " + SUPERGLUE_CITATION,
            description="does the premise entail the hypothesis"),
        **kwargs)


TASKS = ("superglue_boolq", "superglue_cb", "superglue_rte")


register()
