"""Task metadata: one small record per registered task, in one registry.

Every task module (the synthetic suite, GLUE, SuperGLUE, ...) registers a
`TaskInfo` next to its seqio Task, so `t5mtl tasks list`, mixtures and
templates can ask what a task is without building its dataset.

The fields follow the BigBio idea of harmonised metadata: a category (what
ability it tests), a schema (the shape of its examples), the raw fields an
example carries before it is formatted (templates are written over these),
the label set of classification tasks, languages, licence, source, citation.

Records are harmonised when they register (`harmonize`): a built-in data
folder's upstream location, and a licence or citation its task module left
empty, are filled from SOURCE_CARDS (written from each folder's
PROVENANCE.md), so every built-in task has a complete card
(`card_fields`, `format_card`, `t5mtl tasks show NAME --card`).
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Iterable

from t5mtl.errors import T5mtlError

# Categories (the ability a task tests), with one line each for the cards.
# Tasks may use others; these are the ones built-in tasks use.
CATEGORIES = {
    "nli": "natural language inference: does a text entail another",
    "qa": "question answering",
    "sentiment": "sentiment of a text",
    "paraphrase": "do two texts say the same thing",
    "similarity": "graded semantic similarity of two texts",
    "summarization": "shorten a text, keeping its content",
    "translation": "translate between languages",
    "reasoning": "multi-step inference",
    "acceptability": "grammatical acceptability of a sentence",
    "pretraining": "self-supervised objectives over raw text",
    # The synthetic suite (t5mtl.data.synthetic).
    "string_edit": "rewrite a short string (synthetic)",
    "arithmetic": "arithmetic on small whole numbers (synthetic)",
    "ordering": "sort or order items (synthetic)",
    "counting": "count letters, words or vowels (synthetic)",
    "classification": "rule-based classification with a closed label set (synthetic)",
    "extraction": "pick out a word, letter, value or position (synthetic)",
    "sequence": "number sequences (synthetic)",
    # Images and videos with text (t5mtl.data.vision_tasks).
    "image_text": "images paired with captions (generated and scikit-learn's digits)",
    "video_text": "short generated videos with captions, questions or candidate captions",
}

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
      homepage: where the data comes from upstream (repository@commit, site).
      base_task: for an instruction variant, the task it is built from.
      variant: for an instruction variant, its kind ("zs", "fs", "opt",
        "cot", "inv"; see t5mtl.data.templates).
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
    homepage: str = ""
    base_task: str = ""
    variant: str = ""

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


# Card values per data source (TaskInfo.source), from each data folder's
# PROVENANCE.md (../shared/data/<folder>/PROVENANCE.md): the repository and
# commit the files were taken from, the licence as stated there, and a
# citation for sources whose task module gives none. `harmonize` fills a
# record's empty values from here; values a module set are kept.
SOURCE_CARDS: dict[str, dict[str, str]] = {
    "glue_sst2": {"homepage": "github.com/blueraft/distil-bilstm@44d3abb1 (SST-2/*.tsv)"},
    "cola": {"homepage": "github.com/nyu-mll/CoLA-baselines@dd095d36 "
                         "(acceptability_corpus/cola_public/raw)"},
    "glue_stsb": {"homepage": "github.com/jifspoz/GLUE_DATA@81b6a62d (STS-B.zip)"},
    "glue_qnli": {"homepage": "github.com/jonny-vr/LLMCBench@d8ef85c1 (data/QNLI/dev.tsv)"},
    "superglue_boolq": {"homepage": "github.com/THUDM/P-tuning@6532547c "
                                    "(FewGLUE_32dev/BoolQ/val.jsonl)"},
    "superglue_cb": {"homepage": "github.com/ymtao5219/surgical_fine_tuning@a299ef65 "
                                 "(data/CB.zip, the official SuperGLUE v2 archive)"},
    "superglue_rte": {"homepage": "github.com/nyu-mll/jiant@789e1c0a (data/RTE/*.jsonl)"},
    "squad_v1.1": {"homepage": "github.com/pulakdas1999/QnA_using_BERT@c9115065 "
                               "(dev-v1.1.json.zip)"},
    "multi30k": {"homepage": "github.com/multi30k/dataset@a3d2e0d2 (data/task1/raw)"},
    "dialogsum": {"homepage": "github.com/cylnlp/dialogsum@848cc8c0 (DialogSum_Data)"},
    "raw_text_en": {
        "homepage": "github.com/karpathy/char-rnn@6f9487a6 (tinyshakespeare); "
                    "github.com/rounaksalim95/Stats_Project_Zipf_Law@bd261d9a (Gutenberg books)",
        "citation": "Karpathy, 2015. char-rnn (Tiny Shakespeare); Project Gutenberg "
                    "(gutenberg.org), 12 public-domain books"},
    "tfds:c4/en:3.*.*": {"homepage": "tensorflow.org/datasets/catalog/c4"},
    "generated (t5mtl.data.synthetic)": {"homepage": "this project (t5mtl/data/synthetic)"},
}

# What a complete card has (every built-in task; a test checks it).
CARD_FIELDS = ("category", "schema", "languages", "license", "source", "citation")


def harmonize(info: TaskInfo) -> TaskInfo:
    """`info` with empty card values filled from SOURCE_CARDS[info.source]."""
    known = SOURCE_CARDS.get(info.source, {})
    fill = {k: v for k, v in known.items() if not getattr(info, k)}
    return dataclasses.replace(info, **fill) if fill else info


def missing_card_fields(info: TaskInfo) -> list[str]:
    """The CARD_FIELDS that are empty in `info` (an empty list: complete)."""
    return [f for f in CARD_FIELDS if not getattr(info, f)]


def card_fields(info: TaskInfo) -> list[tuple[str, str]]:
    """The metadata card as (label, text) rows, in print order."""
    rows = [
        ("task", info.name),
        ("description", info.description or info.instruction or "-"),
        ("category", info.category + (f" ({CATEGORIES[info.category]})"
                                      if info.category in CATEGORIES else "")),
        ("schema", info.schema),
    ]
    if info.label_names:
        rows.append(("labels", ", ".join(info.label_names)))
    if info.base_task:
        rows.append(("instruction variant", f"{info.variant} of {info.base_task}"))
    if info.instruction:
        rows.append(("instruction", info.instruction))
    rows += [
        ("languages", ", ".join(info.languages) or "-"),
        ("licence", info.license or "-"),
        ("source", info.source or "-"),
        ("homepage", info.homepage or "-"),
        ("citation", info.citation or "-"),
        ("suite", info.suite or "-"),
        ("splits", ", ".join(info.splits) or "-"),
        ("fields", ", ".join(info.fields) or "-"),
        ("metrics", ", ".join(info.metrics) or "-"),
    ]
    return rows


def format_card(info: TaskInfo) -> str:
    """The metadata card as aligned text (what `t5mtl tasks show NAME --card` prints)."""
    rows = card_fields(info)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def register_task_info(info: TaskInfo, overwrite: bool = False) -> TaskInfo:
    """Adds `info` (harmonised) to the registry; re-registering the same record is a no-op."""
    info = harmonize(info)
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
                    suite: str | None = None, variant: str | None = None,
                    variants: bool = False) -> list[TaskInfo]:
    """Registered tasks, sorted by name, optionally filtered.

    Instruction variants (t5mtl.data.templates) are left out unless
    `variants` is true (all of them) or `variant` names a kind ("zs", "fs",
    ...: only those); variant="none" is the default, base tasks only.
    """
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
    if variant is not None or not variants:
        wanted = "" if variant in (None, "none") else variant
        infos = [i for i in infos if i.variant == wanted]
    return infos


def categories(infos: Iterable[TaskInfo] | None = None) -> list[str]:
    """The distinct categories, sorted."""
    return sorted({i.category for i in (_REGISTRY.values() if infos is None else infos)})
