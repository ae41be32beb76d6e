"""Pretraining tasks: span corruption (and i.i.d. / prefix-LM variants) over plain text.

Registered here (importing this module reads no files):

- raw_text_en_span_corruption  T5's objective over shared/data/raw_text_en
- raw_text_en_iid_denoising    BERT-style 15% masking, 80/10/10
- raw_text_en_prefix_lm        random-split prefix LM
- c4_span_corruption           T5's objective over TFDS "c4/en:3.*.*" (needs
                               a prepared TFDS copy of C4; not used in tests)

raw_text_en is read from <data_dir>/raw_text_en (see its PROVENANCE.md). Each
file is one document: 11 files (Tiny Shakespeare and ten Gutenberg books) are
"train"; "validation" holds two short books, pg35.txt (The Time Machine) and
pg46.txt (A Christmas Carol). Gutenberg licence headers are kept as written.

Sequence lengths come from the caller, e.g. {"inputs": 512, "targets": 114}
for span corruption (T5's), {"inputs": 512, "targets": 512} for the others.
`register_pretraining_task` registers the same objectives over any source.
"""
from __future__ import annotations

import functools
from typing import Callable

import seqio

from t5mtl.data import denoising, span_corruption, task_info
from t5mtl.data.sources import TextFilesSource, tfds_source
from t5mtl.data.vocab import get_vocabulary
from t5mtl.errors import T5mtlError

RAW_TEXT_EN_VALIDATION = ("raw_text_en/gutenberg/pg35.txt", "raw_text_en/gutenberg/pg46.txt")
RAW_TEXT_EN_TRAIN = (
    "raw_text_en/tinyshakespeare/input.txt",
    "raw_text_en/gutenberg/1400-0.txt",
    "raw_text_en/gutenberg/158-0.txt",
    "raw_text_en/gutenberg/2701-0.txt",
    "raw_text_en/gutenberg/98-0.txt",
    "raw_text_en/gutenberg/pg161.txt",
    "raw_text_en/gutenberg/76-0.txt",
    "raw_text_en/gutenberg/pg120.txt",
    "raw_text_en/gutenberg/pg345.txt",
    "raw_text_en/gutenberg/16-0.txt",
    "raw_text_en/gutenberg/244-0.txt",
)

OBJECTIVES: dict[str, Callable[..., object]] = {
    "span_corruption": span_corruption.span_corruption,
    "iid_denoising": denoising.iid_denoising,
    "prefix_lm": denoising.prefix_lm,
}

# T5's task feature lengths for each objective (inputs 512).
DEFAULT_LENGTHS = {
    "span_corruption": {"inputs": 512, "targets": 114},
    "iid_denoising": {"inputs": 512, "targets": 512},
    "prefix_lm": {"inputs": 512, "targets": 512},
}


def raw_text_en_source(data_dir: str | None = None) -> TextFilesSource:
    """shared/data/raw_text_en, one document per file (train / validation)."""
    return TextFilesSource({"train": RAW_TEXT_EN_TRAIN, "validation": RAW_TEXT_EN_VALIDATION},
                           unit="file", data_dir=data_dir)


def register_pretraining_task(name: str, source: seqio.DataSource,
                              objective: str = "span_corruption",
                              text_key: str = "text",
                              vocabulary: seqio.Vocabulary | None = None,
                              shuffle_buffer_size: int = 10_000,
                              overwrite: bool = True,
                              info: task_info.TaskInfo | None = None,
                              **objective_kwargs) -> seqio.Task:
    """Registers `objective` over the `text_key` field of `source` as Task `name`.

    Preprocessors: rekey text -> targets, tokenize, the objective, append EOS.
    `objective_kwargs` go to the objective (e.g. concat_batch_size=1 for
    sources whose documents are whole files, noise_density=...). With
    overwrite=False an existing task of that name is an error; otherwise it
    is replaced. `info` (a TaskInfo) is registered beside the task for
    `t5mtl tasks list`.
    """
    if objective not in OBJECTIVES:
        raise T5mtlError(f"unknown objective {objective!r}; choose one of {sorted(OBJECTIVES)}")
    vocab = vocabulary or get_vocabulary()
    output_features = {
        "inputs": seqio.Feature(vocab, add_eos=True, required=False),
        "targets": seqio.Feature(vocab, add_eos=True),
    }
    preprocessors = [
        functools.partial(seqio.preprocessors.rekey, key_map={"targets": text_key}),
        seqio.preprocessors.tokenize,
        functools.partial(OBJECTIVES[objective], **objective_kwargs),
        seqio.preprocessors.append_eos_after_trim,
    ]
    if name in seqio.TaskRegistry.names():
        if not overwrite:
            raise T5mtlError(f"task {name!r} is already registered")
        seqio.TaskRegistry.remove(name)
        task_info.remove_task_info(name)
    task = seqio.TaskRegistry.add(
        name, source=source, preprocessors=preprocessors,
        output_features=output_features, shuffle_buffer_size=shuffle_buffer_size,
        metric_fns=[])
    if info is not None:
        task_info.register_task_info(info, overwrite=True)
    return task


_DESCRIPTIONS = {
    "span_corruption": "T5 span corruption (15% noise, mean span 3)",
    "iid_denoising": "BERT-style masking of 15% of tokens (80/10/10), predict the text",
    "prefix_lm": "prefix LM: continue the text from a random split point",
}


def register(vocabulary: seqio.Vocabulary | None = None, overwrite: bool = False,
             data_dir: str | None = None) -> None:
    """Registers this module's tasks (done once at import).

    Args:
      vocabulary: overrides get_vocabulary() for these tasks.
      overwrite: replace tasks already registered under these names (without
        it, registering again is a no-op for names that exist).
      data_dir: where raw_text_en lives (default: the process-wide data_dir,
        resolved when data is read).
    """
    for objective in OBJECTIVES:
        name = f"raw_text_en_{objective}"
        if name in seqio.TaskRegistry.names() and not overwrite:
            continue
        info = task_info.TaskInfo(
            name=name, category="pretraining", schema="text_to_text",
            fields=("text",), splits=("train", "validation"), suite="pretraining",
            source="raw_text_en", license="public domain (see raw_text_en/PROVENANCE.md)",
            description=f"{_DESCRIPTIONS[objective]} over raw_text_en (13 books)")
        # Whole books are long documents: chunk each on its own (no
        # cross-document concatenation), so sharding cannot change the chunks.
        register_pretraining_task(name, raw_text_en_source(data_dir), objective=objective,
                                  vocabulary=vocabulary, info=info, concat_batch_size=1)
    if "c4_span_corruption" not in seqio.TaskRegistry.names() or overwrite:
        info = task_info.TaskInfo(
            name="c4_span_corruption", category="pretraining", schema="text_to_text",
            fields=("text",), splits=("train", "validation"), suite="pretraining",
            source="tfds:c4/en:3.*.*", license="ODC-BY (C4)",
            citation="Raffel et al. 2020, JMLR 21(140)",
            description=(_DESCRIPTIONS["span_corruption"]
                         + " over C4 via TFDS (prepared copy needed)"))
        register_pretraining_task(
            "c4_span_corruption", tfds_source("c4/en:3.*.*", splits=("train", "validation")),
            objective="span_corruption", vocabulary=vocabulary, info=info,
            concat_batch_size=128)


register()
