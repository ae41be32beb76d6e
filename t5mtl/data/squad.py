"""SQuAD v1.1 from the official json, in T5's text format.

Inputs are "question: <question> context: <context>", the target is the first
gold answer; as in T5, spaces are put around ASCII punctuation in question,
context and answers, and runs of whitespace are collapsed. Metrics are the
official exact match and token F1 (best over an example's gold answers),
reported in percent.
"""
from __future__ import annotations

import functools
import json
from typing import Iterator

import tensorflow as tf

from t5mtl.data import metrics
from t5mtl.data.files import Field, Template, apply_template, register_file_task
from t5mtl.data.readers import Located
from t5mtl.data.task_info import TaskInfo
from t5mtl.errors import T5mtlError


def read_squad_json(path: str) -> Iterator[Located]:
    """Yields one record per question: id, title, context, question, answers."""
    with open(path, encoding="utf-8") as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise T5mtlError(f"{path}:{e.lineno}: not valid JSON: {e.msg} (column {e.colno})") \
                from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise T5mtlError(f"{path}: expected a SQuAD file with a top-level 'data' list")
    for a, article in enumerate(doc["data"]):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            for q, qa in enumerate(paragraph.get("qas", [])):
                loc = f"{path}: data[{a}].paragraphs[{p}].qas[{q}]"
                answers = qa.get("answers")
                if isinstance(answers, list):
                    answers = [x.get("text") if isinstance(x, dict) else x for x in answers]
                yield loc, {"id": qa.get("id"), "title": article.get("title"),
                            "context": paragraph.get("context"),
                            "question": qa.get("question"), "answers": answers}


def _pad_punctuation(text: tf.Tensor) -> tf.Tensor:
    text = tf.strings.regex_replace(text, r"([[:punct:]])", r" \1 ")
    return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


def squad_text(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Pads punctuation in question/context/answers; "answer" = first answer."""
    def fn(ex):
        out = dict(ex)
        for key in ("question", "context", "answers"):
            out[key] = _pad_punctuation(ex[key])
        out["answer"] = out["answers"][0]
        return out
    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


SQUAD_TEMPLATE = Template("question: {question} context: {context}", "{answer}")


def register(**kwargs) -> None:
    """Registers this module's tasks; kwargs (vocabulary=, overwrite=, data_dir=)
    go to register_file_task. Called once at import."""
    register_file_task(
        "squad_v1_1", {"validation": "squad_v1.1/dev-v1.1.json"}, read_squad_json,
        fields={"id": Field(), "title": Field(), "context": Field(), "question": Field(),
                "answers": Field(dtype="strings")},
        preprocessors=[squad_text, functools.partial(apply_template, template=SQUAD_TEMPLATE)],
        metric_fns=[metrics.squad],
        postprocess_fn=metrics.references_from_example,
        info=TaskInfo(
            name="squad_v1_1", category="qa", schema="extractive_qa", metrics=("em", "f1"),
            fields=("title", "context", "question", "answer"), splits=("validation",),
            suite="squad", source="squad_v1.1", license="CC BY-SA 4.0 (SQuAD; not stated in repo)",
            citation="Rajpurkar et al., 2016. SQuAD: 100,000+ Questions for Machine "
                     "Comprehension of Text. EMNLP.",
            description="answer a question with a span of a Wikipedia paragraph"),
        **kwargs)


TASKS = ("squad_v1_1",)


register()
