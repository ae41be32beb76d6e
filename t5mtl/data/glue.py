"""GLUE tasks (SST-2, CoLA, STS-B, QNLI) from local copies, in T5's text format.

The text format is T5's: the benchmark name, then "<field>: <text>" for each
input field, and the label name as the target; STS-B's similarity score is
rounded to the nearest 0.2 and written with one decimal ("3.8"). Metrics are
those the T5 paper reports: accuracy, Matthews correlation for CoLA,
Pearson and Spearman correlation for STS-B. Unlabelled test splits get the
target "<unk>".

Files are read from `<data_dir>/<folder>/` when a dataset is built (see
t5mtl.data.data_dir); real users can point the same names at their own
copies of the GLUE tsv files.
"""
from __future__ import annotations

import functools

import seqio
import tensorflow as tf

from t5mtl.data import metrics
from t5mtl.data.files import Field, Template, register_file_task
from t5mtl.data.task_info import TaskInfo

UNK = "<unk>"
GLUE_CITATION = ("Wang et al., 2019. GLUE: A Multi-Task Benchmark and Analysis Platform "
                 "for Natural Language Understanding. ICLR.")


def label_field(label_names, column: str = "label", raw_values=None,
                missing_in: tuple[str, ...] = ()) -> Field:
    """A label read as its name: raw_values[i] (default: the names) -> label_names[i]."""
    raw_values = label_names if raw_values is None else raw_values
    return Field(column=column, values=dict(zip(raw_values, label_names)),
                 missing_in=missing_in, default=UNK)


def classification_postprocessor(label_names):
    return functools.partial(metrics.string_label_to_class_id, label_classes=tuple(label_names))


def register_label_task(name: str, folder: str, split_files, format: str, fields,
                        template: Template, label_names, info: TaskInfo,
                        metric_fns=(metrics.accuracy,), **kwargs) -> seqio.Task:
    """A classification task: label names as targets, class ids for metrics."""
    return register_file_task(
        name, {s: _in(folder, f) for s, f in split_files.items()}, format, template,
        fields=fields, metric_fns=metric_fns,
        postprocess_fn=classification_postprocessor(label_names), info=info, **kwargs)


def _in(folder, files):
    return f"{folder}/{files}" if isinstance(files, str) else [f"{folder}/{f}" for f in files]


# Label sets, in the order of the class ids.
SST2_LABELS = ("negative", "positive")
COLA_LABELS = ("unacceptable", "acceptable")
QNLI_LABELS = ("entailment", "not_entailment")


def stsb_score_to_label(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Adds "label": the score rounded to the nearest 0.2, as text ("3.8").

    A negative score (unlabelled test rows) becomes "<unk>".
    """
    def fn(ex):
        out = dict(ex)
        rounded = tf.strings.as_string(tf.round(ex["score"] * 5.0) / 5.0, precision=1)
        out["label"] = tf.where(ex["score"] < 0.0, tf.constant(UNK), rounded)
        return out
    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def register(**kwargs) -> None:
    """Registers this module's tasks; kwargs (vocabulary=, overwrite=, data_dir=)
    go to register_file_task. Called once at import."""
    register_label_task(
        "glue_sst2", "glue_sst2",
        {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}, "tsv",
        fields={"sentence": Field(),
                "label": label_field(SST2_LABELS, raw_values=("0", "1"), missing_in=("test",))},
        template=Template("sst2 sentence: {sentence}", "{label}"),
        label_names=SST2_LABELS,
        info=TaskInfo(
            name="glue_sst2", category="sentiment", schema="classification",
            metrics=("accuracy",), label_names=SST2_LABELS, fields=("sentence", "label"),
            splits=("train", "validation", "test"), suite="glue", source="glue_sst2",
            license="not stated", citation="Socher et al., 2013. " + GLUE_CITATION,
            description="binary sentiment of movie-review phrases"),
        **kwargs)
    register_label_task(
        "glue_cola", "cola",
        # GLUE's CoLA dev set is the in-domain and out-of-domain dev files together.
        {"train": "in_domain_train.tsv",
         "validation": ["in_domain_dev.tsv", "out_of_domain_dev.tsv"]}, "tsv",
        fields={"sentence": Field(column=3),
                "label": label_field(COLA_LABELS, column=1, raw_values=("0", "1"))},
        template=Template("cola sentence: {sentence}", "{label}"),
        label_names=COLA_LABELS, metric_fns=(metrics.matthews_corrcoef,), header=False,
        info=TaskInfo(
            name="glue_cola", category="acceptability", schema="classification",
            metrics=("matthews_corrcoef",), label_names=COLA_LABELS, fields=("sentence", "label"),
            splits=("train", "validation"), suite="glue", source="cola",
            license="excerpts; copyright stays with the original publishers (fair use research)",
            citation="Warstadt et al., 2019. Neural Network Acceptability Judgments. TACL.",
            description="is the English sentence grammatically acceptable"),
        **kwargs)
    register_file_task(
        "glue_stsb",
        {"train": "glue_stsb/train.tsv", "validation": "glue_stsb/dev.tsv",
         "test": "glue_stsb/test.tsv"}, "tsv",
        Template("stsb sentence1: {sentence1} sentence2: {sentence2}", "{label}"),
        fields={"sentence1": Field(), "sentence2": Field(),
                "score": Field(dtype="float", missing_in=("test",), default=-1.0)},
        preprocessors=[stsb_score_to_label],
        metric_fns=[metrics.pearson_corrcoef, metrics.spearman_corrcoef],
        postprocess_fn=metrics.string_to_float,
        info=TaskInfo(
            name="glue_stsb", category="similarity", schema="regression",
            metrics=("pearson_corrcoef", "spearman_corrcoef"),
            fields=("sentence1", "sentence2", "label"), splits=("train", "validation", "test"),
            suite="glue", source="glue_stsb",
            license="scores CC BY-SA 4.0; sentences under each source's licence",
            citation="Cer et al., 2017. SemEval-2017 Task 1: Semantic Textual Similarity. "
                     + GLUE_CITATION,
            description="semantic similarity of two sentences, 0 to 5 in steps of 0.2"),
        **kwargs)
    register_label_task(
        "glue_qnli", "glue_qnli", {"validation": "dev.tsv"}, "tsv",
        fields={"question": Field(), "sentence": Field(), "label": label_field(QNLI_LABELS)},
        template=Template("qnli question: {question} sentence: {sentence}", "{label}"),
        label_names=QNLI_LABELS,
        info=TaskInfo(
            name="glue_qnli", category="nli", schema="pair_classification",
            metrics=("accuracy",), label_names=QNLI_LABELS,
            fields=("question", "sentence", "label"), splits=("validation",), suite="glue",
            source="glue_qnli", license="not stated (built from SQuAD, CC BY-SA 4.0)",
            citation="Rajpurkar et al., 2016 (SQuAD). " + GLUE_CITATION,
            description="does the sentence contain the answer to the question"),
        **kwargs)


TASKS = ("glue_sst2", "glue_cola", "glue_stsb", "glue_qnli")


register()
