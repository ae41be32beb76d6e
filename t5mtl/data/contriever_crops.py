"""Contriever's independent cropping (Izacard et al. 2021, "Unsupervised Dense
Information Retrieval with Contrastive Learning") as a seqio preprocessor and
a task over raw_text_en, so a DualEncoder trains on raw text unchanged.

From one document's token ids (n of them) two spans are drawn independently,
each by the same rule:

    ratio  ~ Uniform[min_ratio, max_ratio)          (Contriever: 0.1, 0.5)
    length = clip(floor(ratio * n), 1, n)           (computed in float64)
    start  ~ Uniform{0, ..., n - length}
    crop   = tokens[start : start + length]

The first span is "inputs" (the query), the second "targets" (the passage):
a (query, passage) pair whose positive is "from the same document", and
whose in-batch negatives are the other documents' crops. Contriever's
length is int(n * ratio) and may be 0; here it is at least 1 token, so a
document of 1 or 2 tokens gives two 1-token crops. Empty documents are dropped.

Randomness: each document's seed is the seqio seed folded with its tokens
(t5mtl/data/example_seeds.py), split in two, one per crop. So the same seed
gives the same crops, sharding does not change them, and, as for the other
objectives, a repeated document (num_epochs > 1, or two identical chunks)
gets the same crops again.

Registered on demand, not at import (`register()`; in gin:
`DataConfig.mixture_or_task_name = @register_contriever_crops()`):

    contriever_crops   raw_text_en's books (train / validation as in
                       t5mtl.data.pretraining_tasks), each tokenized whole,
                       cut into documents of `chunk_length` ids (Contriever
                       uses 256-token chunks; a book's last may be shorter),
                       two independent crops per document, EOS appended.

With chunk_length 256 and max_ratio 0.5 a crop has at most 127 ids, so
{"inputs": 128, "targets": 128} holds every crop with its EOS.
"""
from __future__ import annotations

import functools
from typing import Mapping

import gin
import seqio
import tensorflow as tf

from t5mtl.data import example_seeds, task_info
from t5mtl.data.pretraining_tasks import raw_text_en_source
from t5mtl.data.span_corruption import split_tokens
from t5mtl.data.vocab import get_vocabulary
from t5mtl.errors import T5mtlError

TASK = "contriever_crops"
MIN_RATIO = 0.1
MAX_RATIO = 0.5
CHUNK_LENGTH = 256
LENGTHS = {"inputs": 128, "targets": 128}


def check_ratios(min_ratio: float, max_ratio: float) -> tuple[float, float]:
    """(min_ratio, max_ratio) as floats; T5mtlError naming the bad value unless
    0 < min_ratio <= max_ratio <= 1."""
    for name, value in (("min_ratio", min_ratio), ("max_ratio", max_ratio)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0.0 < value <= 1.0:
            raise T5mtlError(f"crop {name} must be a number in (0, 1], got {value!r}")
    if min_ratio > max_ratio:
        raise T5mtlError(f"crop min_ratio {min_ratio!r} is larger than max_ratio {max_ratio!r}")
    return float(min_ratio), float(max_ratio)


def crop_span(num_tokens: tf.Tensor, seed: tf.Tensor, min_ratio: float = MIN_RATIO,
              max_ratio: float = MAX_RATIO) -> tuple[tf.Tensor, tf.Tensor]:
    """(start, length), int32 scalars: one random crop of a document of
    `num_tokens` >= 1 ids (the rule in the module docstring), a pure function
    of `seed` (int64 [2])."""
    ratio_seed, start_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    n = tf.cast(num_tokens, tf.int32)
    ratio = tf.random.stateless_uniform([], ratio_seed, min_ratio, max_ratio, tf.float64)
    length = tf.cast(tf.floor(ratio * tf.cast(n, tf.float64)), tf.int32)
    length = tf.clip_by_value(length, 1, tf.maximum(n, 1))
    start = tf.random.stateless_uniform([], start_seed, 0, n - length + 1, tf.int32)
    return start, length


def independent_crops(dataset: tf.data.Dataset,
                      sequence_length: Mapping[str, int] | None = None,
                      output_features: Mapping[str, seqio.Feature] | None = None,
                      min_ratio: float = MIN_RATIO, max_ratio: float = MAX_RATIO,
                      feature_key: str = "targets") -> tf.data.Dataset:
    """Each tokenized document in `feature_key` -> {"inputs": one crop,
    "targets": another, drawn independently}; empty documents dropped.

    Add seqio.preprocessors.append_eos_after_trim after it (a crop longer
    than its feature length is then cut to fit).
    """
    del sequence_length, output_features
    min_ratio, max_ratio = check_ratios(min_ratio, max_ratio)
    base_seed = example_seeds.draw_base_seed()

    def crop(x):
        tokens = x[feature_key]
        seeds = tf.random.experimental.stateless_split(
            example_seeds.example_seed(base_seed, tokens), 2)
        out = {}
        for key, seed in zip(("inputs", "targets"), tf.unstack(seeds)):
            start, length = crop_span(tf.size(tokens), seed, min_ratio, max_ratio)
            out[key] = tokens[start:start + length]
        return out

    dataset = dataset.filter(lambda x: tf.size(x[feature_key]) > 0)
    return dataset.map(crop, num_parallel_calls=tf.data.AUTOTUNE)


def register(vocabulary: seqio.Vocabulary | None = None, overwrite: bool = False,
             data_dir: str | None = None, min_ratio: float = MIN_RATIO,
             max_ratio: float = MAX_RATIO, chunk_length: int = CHUNK_LENGTH) -> seqio.Task:
    """Registers `contriever_crops` over raw_text_en and returns it (the
    registered one, unchanged, if it exists and not `overwrite`).

    Args:
      vocabulary: default get_vocabulary() (bytes).
      data_dir: where raw_text_en lives (default: the process-wide data_dir,
        resolved when data is read).
      min_ratio, max_ratio: each crop's share of its document.
      chunk_length: the documents: each book cut into chunks of this many ids.
    """
    min_ratio, max_ratio = check_ratios(min_ratio, max_ratio)
    if isinstance(chunk_length, bool) or not isinstance(chunk_length, int) or chunk_length < 1:
        raise T5mtlError(f"crop chunk_length must be a positive integer, got {chunk_length!r}")
    if TASK in seqio.TaskRegistry.names():
        if not overwrite:
            return seqio.get_mixture_or_task(TASK)
        unregister()
    vocab = vocabulary or get_vocabulary()
    preprocessors = [
        functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
        seqio.preprocessors.tokenize,
        functools.partial(split_tokens, max_tokens=chunk_length),
        functools.partial(independent_crops, min_ratio=min_ratio, max_ratio=max_ratio),
        seqio.preprocessors.append_eos_after_trim,
    ]
    task = seqio.TaskRegistry.add(
        TASK, source=raw_text_en_source(data_dir), preprocessors=preprocessors,
        output_features={"inputs": seqio.Feature(vocab), "targets": seqio.Feature(vocab)},
        shuffle_buffer_size=10_000, metric_fns=[])
    task_info.register_task_info(task_info.TaskInfo(
        name=TASK, category="pretraining", schema="text_to_text", fields=("text",),
        splits=("train", "validation"), suite="pretraining", source="raw_text_en",
        license="public domain (see raw_text_en/PROVENANCE.md)",
        citation="Izacard et al. 2021, Unsupervised Dense Information Retrieval with "
                 "Contrastive Learning, arXiv:2112.09118",
        description=f"two independent random crops ({min_ratio:g}-{max_ratio:g} of a "
                    f"{chunk_length}-id chunk of raw_text_en) as (query, passage)"),
        overwrite=True)
    return task


def unregister() -> None:
    """Removes contriever_crops (no error if absent)."""
    seqio.TaskRegistry.remove(TASK)
    task_info.remove_task_info(TASK)


@gin.configurable
def register_contriever_crops(min_ratio: float = MIN_RATIO, max_ratio: float = MAX_RATIO,
                              chunk_length: int = CHUNK_LENGTH) -> str:
    """Registers contriever_crops with these settings (replacing one
    registered before) and returns its name, for a run's task in gin."""
    register(overwrite=True, min_ratio=min_ratio, max_ratio=max_ratio,
             chunk_length=chunk_length)
    return TASK
