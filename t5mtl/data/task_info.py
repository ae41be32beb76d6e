"""Task metadata: one small record per registered task, in one registry.

Every task module (the synthetic suite, GLUE, SuperGLUE, ...) registers a
`TaskInfo` next to its seqio Task, so `t5mtl tasks list`, mixtures and
templates can ask what a task is without building its dataset.

The fields follow the BigBio idea of harmonised metadata: a category (what
ability it tests), a schema (the shape of its examples), the raw fields an
example carries before it is formatted (templates are written over these),
the label set of classification tasks, languages, licence, source, citation.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Iterable

from t5mtl.errors import T5mtlError

# Example shapes. A classification task has a closed label set; a pair task
# takes two texts; extractive QA answers with a span of its context;
# text_to_text is free generation (translation, summarisation, string edits).
SCHEMAS = (
    "classification",
    "pair_classification",
    "regression",
    "extractive_qa",
    "text_to_text",
)


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What a registered task is, independent of how its data is read.

    Attributes:
      name: the seqio Task name.
      category: the ability tested (e.g. "nli", "sentiment", "arithmetic").
      schema: one of SCHEMAS.
      instruction: a natural-language instruction (synthetic tasks put it in
        the input text; real tasks may leave it empty).
      metrics: names of the metric functions the task reports.
      label_names: the closed label set of a classification task, as target
        strings; empty for generation tasks.
      fields: raw fields an example carries before it is formatted; templates
        may refer to exactly these.
      splits: the splits the task has.
      suite: the family it belongs to ("synthetic", "glue", "superglue", ...).
      source: where the data comes from (a data_dir folder, "generated", ...).
      languages: ISO 639-1 codes.
      license: the licence as stated by the source ("" when none is stated).
      citation: a short citation.
      description: one sentence for `t5mtl tasks list`.
    """

    name: str
    category: str
    schema: str
    instruction: str = ""
    metrics: tuple[str, ...] = ()
    label_names: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()
    suite: str = ""
    source: str = ""
    languages: tuple[str, ...] = ("en",)
    license: str = ""
    citation: str = ""
    description: str = ""

    def __post_init__(self):
        if self.schema not in SCHEMAS:
            raise T5mtlError(
                f"task {self.name!r}: unknown schema {self.schema!r}; choose from {SCHEMAS}")
        if not self.category:
            raise T5mtlError(f"task {self.name!r}: category must not be empty")
        if self.schema in ("classification", "pair_classification") and not self.label_names:
            raise T5mtlError(f"task {self.name!r}: a classification task needs label_names")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_REGISTRY: dict[str, TaskInfo] = {}


def register_task_info(info: TaskInfo, overwrite: bool = False) -> TaskInfo:
    """Adds `info` to the registry; re-registering the same record is a no-op."""
    old = _REGISTRY.get(info.name)
    if old is not None and old != info and not overwrite:
        raise T5mtlError(f"task info {info.name!r} is already registered with other values")
    _REGISTRY[info.name] = info
    return info


def remove_task_info(name: str) -> None:
    _REGISTRY.pop(name, None)


def get_task_info(name: str) -> TaskInfo:
    """Returns the TaskInfo registered under `name` (error names close matches)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise T5mtlError(f"unknown task {name!r}{hint}") from None


def has_task_info(name: str) -> bool:
    return name in _REGISTRY


def list_task_infos(category: str | None = None, schema: str | None = None,
                    suite: str | None = None) -> list[TaskInfo]:
    """Registered tasks, sorted by name, optionally filtered."""
    if schema is not None and schema not in SCHEMAS:
        raise T5mtlError(f"unknown schema {schema!r}; choose from {SCHEMAS}")
    infos = sorted(_REGISTRY.values(), key=lambda i: i.name)
    if category is not None:
        if category not in categories():
            raise T5mtlError(
                f"unknown category {category!r}; choose from {', '.join(categories())}")
        infos = [i for i in infos if i.category == category]
    if schema is not None:
        infos = [i for i in infos if i.schema == schema]
    if suite is not None:
        infos = [i for i in infos if i.suite == suite]
    return infos


def categories(infos: Iterable[TaskInfo] | None = None) -> list[str]:
    """The distinct categories, sorted."""
    return sorted({i.category for i in (_REGISTRY.values() if infos is None else infos)})
