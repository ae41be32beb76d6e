"""Generation tasks: Multi30k English-German translation, DialogSum summarisation.

In T5's text format: "translate English to German: <en>" -> "<de>", scored
with corpus BLEU (sacrebleu, intl tokenizer); "summarize: <dialogue>" ->
"<summary>", scored with ROUGE-1/2/Lsum (rouge-score). DialogSum's test
split has three reference summaries per dialogue: the target is the first
and ROUGE takes the best of the three.
"""
from __future__ import annotations

import functools
from typing import Iterator

from t5mtl.data import metrics
from t5mtl.data.files import Field, Template, register_file_task
from t5mtl.data.readers import Located, RecordError, read_jsonl
from t5mtl.data.task_info import TaskInfo

# ---------------------------------------------------------------- Multi30k


def _pair(prefix: str) -> dict[str, str]:
    return {"en": f"multi30k/{prefix}.en", "de": f"multi30k/{prefix}.de"}


# ---------------------------------------------------------------- DialogSum


def read_dialogsum(path: str) -> Iterator[Located]:
    """JSONL records plus "references": every reference summary of the record.

    The dev file has "summary"; the test file "summary1".."summary3", of
    which "summary1" becomes the record's "summary".
    """
    for loc, record in read_jsonl(path):
        if isinstance(record, RecordError):
            yield loc, record
            continue
        refs = [record[k] for k in ("summary", "summary1", "summary2", "summary3") if k in record]
        record = dict(record, references=refs)
        if "summary" not in record and "summary1" in record:
            record["summary"] = record["summary1"]
        yield loc, record


def register(**kwargs) -> None:
    """Registers this module's tasks; kwargs (vocabulary=, overwrite=, data_dir=)
    go to register_file_task. Called once at import."""
    register_file_task(
        "multi30k_en_de",
        {"train": _pair("train"), "validation": _pair("val"), "test": _pair("test_2016_flickr")},
        "parallel",
        Template("translate English to German: {en}", "{de}"),
        fields={"en": Field(), "de": Field()},
        metric_fns=[metrics.bleu], postprocess_fn=metrics.decode_text,
        info=TaskInfo(
            name="multi30k_en_de", category="translation", schema="text_to_text",
            metrics=("bleu",), fields=("en", "de"), splits=("train", "validation", "test"),
            suite="multi30k", source="multi30k", languages=("en", "de"),
            license="none stated (Flickr30K-derived; research use)",
            citation="Elliott et al., 2016. Multi30K: Multilingual English-German Image "
                     "Descriptions. VL workshop.",
            description="translate an English image caption into German"),
        **kwargs)
    register_file_task(
        "dialogsum",
        {"validation": "dialogsum/dialogsum.dev.jsonl", "test": "dialogsum/dialogsum.test.jsonl"},
        read_dialogsum,
        Template("summarize: {dialogue}", "{summary}"),
        fields={"dialogue": Field(), "summary": Field(), "references": Field(dtype="strings")},
        metric_fns=[metrics.rouge],
        postprocess_fn=functools.partial(metrics.references_from_example, key="references"),
        info=TaskInfo(
            name="dialogsum", category="summarization", schema="text_to_text",
            metrics=("rouge1", "rouge2", "rougeLsum"), fields=("dialogue", "summary"),
            splits=("validation", "test"), suite="dialogsum", source="dialogsum",
            license="CC BY-NC-SA 4.0",
            citation="Chen et al., 2021. DialogSum: A Real-Life Scenario Dialogue "
                     "Summarization Dataset. Findings of ACL.",
            description="summarise a two-person dialogue in one or two sentences"),
        **kwargs)


TASKS = ("multi30k_en_de", "dialogsum")


register()
