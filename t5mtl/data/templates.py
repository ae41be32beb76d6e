"""Flan-style instruction templates, applied by a seqio preprocessor.

For a base task T (its raw fields, e.g. premise/hypothesis/label) a table
(t5mtl.data.template_tables) gives several templates that turn an example
into an instruction and its answer. Each variant is an ordinary seqio Task:

- "T_zs"  zero-shot: one template, drawn per example;
- "T_fs"  few-shot: k solved exemplars from T's *train* split, rendered with
          the same template, before the example; exemplars are dropped (from
          the last) until the inputs fit sequence_length["inputs"];
- "T_opt" zero-shot plus an options suffix listing the task's label set
          (classification tasks);
- "T_cot" chain of thought: the target is a rationale, then the answer
          (tasks whose examples carry a "rationale" field);
- "T_inv" input inversion: produce the input from the output (where one
          determines the other well enough to learn).

Formats (literal):

    options suffix   inputs + "\\n\\nAnswer with one of: " + " | ".join(options)
    few-shot         shot_1 + SEP + ... + shot_j + SEP + inputs, SEP = "\\n\\n###\\n\\n"
                     (SHOT_SEPARATOR, which no template may contain, so the
                     exemplars split apart unambiguously even when a template
                     or a text holds blank lines),
                     shot_i = exemplar inputs + "\\n" + exemplar targets
    chain of thought targets end in "... <rationale>. Answer: <answer>"

Which template an example gets is a pure function of its content and a seed:
index = Fingerprint64(seed, fields) mod (number of templates), so rendering
is deterministic across runs, hosts and epochs. Few-shot exemplars come from
the first `pool_size` (default 1000) distinct train examples, in a seeded
order; each example takes k consecutive pool entries from a position hashed
from its content, skipping an exemplar equal to the example itself (when the
evaluated split is train), so the evaluated example is never its own
exemplar.

Examples keep their raw fields and gain metadata features: `_task_name`,
`_variant`, `_template_idx` and `_num_exemplars` (0 unless few-shot), so a
mixture of variants can pass them through (`passthrough_features=`).
Classification variants answer with each label's verbalizer (e.g. "yes" for
entailment); their postprocessor maps the answer back to the label before
the base task's postprocessor and metrics, and a chain-of-thought answer is
read after its last "Answer: ".
"""
from __future__ import annotations

import dataclasses
import itertools
import zlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from t5mtl.data import files
from t5mtl.errors import T5mtlError

Template = files.Template

OPTIONS_PREFIX = "\n\nAnswer with one of: "
OPTIONS_SEPARATOR = " | "
SHOT_SEPARATOR = "\n\n###\n\n"
ANSWER_SEPARATOR = "\n"
COT_ANSWER_MARK = "Answer: "
DEFAULT_K = 3
DEFAULT_POOL_SIZE = 1000


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    description: str
    fewshot: bool = False
    options: bool = False
    cot: bool = False
    inverted: bool = False


VARIANTS: dict[str, Variant] = {
    "zs": Variant("zs", "zero-shot instruction"),
    "fs": Variant("fs", "few-shot: solved train exemplars, then the instruction", fewshot=True),
    "opt": Variant("opt", "zero-shot instruction with the answer options listed", options=True),
    "cot": Variant("cot", "chain of thought: the reasoning, then the answer", cot=True),
    "inv": Variant("inv", "input inversion: produce the input from the output", inverted=True),
}


@dataclasses.dataclass(frozen=True)
class TaskTemplates:
    """The templates of one base task (one row of the template tables).

    Attributes:
      task: the base task's name.
      templates: zero-shot templates (also used for few-shot and options).
      label_field: the field holding the class label (classification tasks).
      verbalizers: the answer text of each label, in the order of the base
        task's TaskInfo.label_names (default: the label names themselves).
      cot_templates: templates whose targets use {rationale} and {answer}.
      cot_source: makes the DataSource whose examples carry "rationale"
        (default: the base task's source).
      inverse_templates: templates that produce the input from the output.
      inverse_metrics: metric functions of the inverted task.
      fewshot_k: default number of exemplars.
    """

    task: str
    templates: tuple[Template, ...]
    label_field: str = ""
    verbalizers: tuple[str, ...] = ()
    cot_templates: tuple[Template, ...] = ()
    cot_source: Callable[[], seqio.DataSource] | None = None
    inverse_templates: tuple[Template, ...] = ()
    inverse_metrics: tuple[Callable, ...] = ()
    fewshot_k: int = DEFAULT_K

    def templates_for(self, variant: str) -> tuple[Template, ...]:
        if variant == "cot":
            return self.cot_templates
        if variant == "inv":
            return self.inverse_templates
        return self.templates

    def has_variant(self, variant: str, splits: Sequence[str]) -> bool:
        if variant == "fs":
            return bool(self.templates) and "train" in splits
        if variant == "opt":
            return bool(self.label_field)
        return bool(self.templates_for(variant))


def variant_name(base: str, variant: str) -> str:
    """The seqio task name of a variant: "<base>_<variant>"."""
    if variant not in VARIANTS:
        raise T5mtlError(f"unknown instruction variant {variant!r}; choose from "
                         f"{', '.join(VARIANTS)}")
    return f"{base}_{variant}"


def options_suffix(options: Sequence[str]) -> str:
    return OPTIONS_PREFIX + OPTIONS_SEPARATOR.join(options)


def cot_answer(text: str) -> str:
    """The answer of a chain-of-thought output: the text after its last "Answer: "."""
    return text.rsplit(COT_ANSWER_MARK, 1)[-1].strip()


# ---------------------------------------------------------------- rendering

def _hash(salt: str, key: tf.Tensor, buckets: int) -> tf.Tensor:
    return tf.strings.to_hash_bucket_fast(tf.strings.join([tf.constant(salt), key]), buckets)


def _as_text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _as_text(v.item())
    return str(v)


# ---------------------------------------------------------------- the spec

@dataclasses.dataclass(frozen=True, eq=False)
class InstructionSpec:
    """Everything the instruction preprocessor needs for one variant task."""

    task_name: str
    base_task: str
    variant: str
    templates: tuple[Template, ...]
    label_field: str = ""
    label_names: tuple[str, ...] = ()
    verbalizers: tuple[str, ...] = ()
    options: bool = False
    k: int = 0
    seed: int = 0
    pool_size: int = DEFAULT_POOL_SIZE
    train_source: seqio.DataSource | None = None
    raw_preprocessors: tuple[Callable, ...] = ()
    output_features: Mapping[str, seqio.Feature] | None = None

    def check_fields(self, fields: Sequence[str]) -> None:
        """Raises if a template references a field the examples lack."""
        for i, t in enumerate(self.templates):
            for f in t.fields():
                if f not in fields:
                    raise T5mtlError(
                        f"template {i} of {self.task_name!r} ({t.inputs!r} -> {t.targets!r}) "
                        f"references missing field {f!r}; the examples have "
                        f"{', '.join(sorted(fields))}")
        if self.label_field and self.label_field not in fields:
            raise T5mtlError(f"{self.task_name!r}: label field {self.label_field!r} is missing; "
                             f"the examples have {', '.join(sorted(fields))}")


def _string_fields(element_spec: Mapping[str, tf.TensorSpec]) -> list[str]:
    return sorted(k for k, s in element_spec.items()
                  if s.dtype == tf.string and s.shape.rank == 0 and not k.startswith("_")
                  and k not in ("inputs", "targets"))


def _verbalize_tf(label: tf.Tensor, label_names, verbalizers) -> tf.Tensor:
    names = tf.constant(list(label_names))
    hit = tf.equal(names, label)
    return tf.where(tf.reduce_any(hit),
                    tf.gather(tf.constant(list(verbalizers)), tf.argmax(tf.cast(hit, tf.int32))),
                    label)


# ---------------------------------------------------------------- few-shot pool

@dataclasses.dataclass(frozen=True)
class ExemplarPool:
    fields: tuple[str, ...]
    columns: dict[str, np.ndarray]   # field -> [P] texts (labels verbalized)
    keys: np.ndarray                 # [P] the content key of each exemplar

    def __len__(self) -> int:
        return len(self.keys)


_POOLS: dict[tuple, ExemplarPool] = {}


def content_key(values: Sequence[str]) -> str:
    return "\x1f".join(values)


def exemplar_pool(spec: InstructionSpec, fields: Sequence[str]) -> ExemplarPool:
    """The distinct train examples few-shot exemplars are drawn from (cached)."""
    cache_key = (spec.task_name, id(spec.train_source), tuple(fields), spec.pool_size, spec.seed,
                 spec.k)
    if cache_key in _POOLS:
        return _POOLS[cache_key]
    if spec.train_source is None or "train" not in spec.train_source.splits:
        raise T5mtlError(f"{spec.task_name!r}: few-shot exemplars come from the train split, "
                         f"and {spec.base_task!r} has none")
    if spec.pool_size < spec.k:
        raise T5mtlError(f"{spec.task_name!r}: pool_size {spec.pool_size} is smaller than "
                         f"k={spec.k}")
    if isinstance(spec.train_source, files.PythonSource) and not spec.raw_preprocessors:
        # Python examples as the tf.data source would yield them, without the graph.
        examples = itertools.islice(spec.train_source.iter_examples("train"), spec.pool_size)
    else:
        ds = spec.train_source.get_dataset(split="train", shuffle=False)
        for prep in spec.raw_preprocessors:
            ds = seqio.utils.add_kwargs_to_transform(
                prep, sequence_length=None, output_features=spec.output_features)(ds)
        examples = ds.take(spec.pool_size).as_numpy_iterator()
    verbal = dict(zip(spec.label_names, spec.verbalizers))
    rows, seen = [], set()
    for ex in examples:
        row = [_as_text(ex[f]) for f in fields]
        if spec.label_field:
            i = fields.index(spec.label_field)
            row[i] = verbal.get(row[i], row[i])
        key = content_key(row)
        if key not in seen:
            seen.add(key)
            rows.append(row)
    if len(rows) < spec.k:
        raise T5mtlError(f"{spec.task_name!r}: k={spec.k} exemplars asked, but the train split "
                         f"of {spec.base_task!r} has only {len(rows)} distinct examples")
    order = np.random.default_rng([spec.seed, zlib.crc32(spec.base_task.encode())]) \
        .permutation(len(rows))
    rows = [rows[i] for i in order]
    pool = ExemplarPool(tuple(fields), {f: np.array([r[j] for r in rows], dtype=object)
                                        for j, f in enumerate(fields)},
                        np.array([content_key(r) for r in rows], dtype=object))
    _POOLS[cache_key] = pool
    return pool


# ---------------------------------------------------------------- the preprocessor

def instruct(dataset: tf.data.Dataset, sequence_length: Mapping[str, int] | None = None,
             output_features: Mapping[str, seqio.Feature] | None = None, *,
             spec: InstructionSpec) -> tf.data.Dataset:
    """seqio preprocessor: renders "inputs"/"targets" from raw fields with a template.

    Raw fields pass through; adds _task_name, _variant, _template_idx and
    _num_exemplars.
    """
    fields = _string_fields(dataset.element_spec)
    spec.check_fields(fields)
    n = len(spec.templates)
    suffix = options_suffix(spec.verbalizers) if spec.options else ""
    pool = exemplar_pool(spec, fields) if spec.k else None
    features = output_features or spec.output_features
    vocab = features["inputs"].vocabulary if features else None
    max_len = (sequence_length or {}).get("inputs")
    salt = f"{spec.seed}\x1f"

    def fn(ex):
        out = dict(ex)
        if spec.label_field and spec.verbalizers:
            out[spec.label_field] = _verbalize_tf(ex[spec.label_field], spec.label_names,
                                                  spec.verbalizers)
        key = tf.strings.join([out[f] for f in fields], separator="\x1f")
        idx = _hash(salt + "template\x1f", key, n)
        rendered = [(files.render_tf(t.inputs, out), files.render_tf(t.targets, out))
                    for t in spec.templates]
        inputs = tf.gather(tf.stack([r[0] for r in rendered]), idx) + suffix
        targets = tf.gather(tf.stack([r[1] for r in rendered]), idx)
        used = tf.constant(0, tf.int32)
        if pool is not None:
            inputs, used = _few_shot(inputs, key, idx, pool, spec, suffix, vocab, max_len, salt)
        out["_num_exemplars"] = used
        out.update(inputs=inputs, targets=targets, _task_name=tf.constant(spec.task_name),
                   _variant=tf.constant(spec.variant), _template_idx=tf.cast(idx, tf.int32))
        return out

    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def _few_shot(inputs, key, idx, pool: ExemplarPool, spec: InstructionSpec, suffix: str,
              vocab, max_len, salt):
    size = len(pool)
    k = spec.k
    start = _hash(salt + "shots\x1f", key, size)
    candidates = (start + tf.range(k + 1, dtype=tf.int64)) % size
    not_self = tf.not_equal(tf.gather(tf.constant(pool.keys.tolist()), candidates), key)
    chosen = tf.boolean_mask(candidates, not_self)[:k]
    shot_ex = {f: tf.gather(tf.constant(pool.columns[f].tolist()), chosen) for f in pool.fields}
    shot_inputs = tf.gather(tf.stack([files.render_tf(t.inputs, shot_ex, chosen)
                                      for t in spec.templates]), idx) + suffix
    shot_targets = tf.gather(tf.stack([files.render_tf(t.targets, shot_ex, chosen)
                                       for t in spec.templates]), idx)
    shots = shot_inputs + ANSWER_SEPARATOR + shot_targets
    candidates_text = [inputs] + [
        tf.strings.reduce_join(shots[:j], separator=SHOT_SEPARATOR) + SHOT_SEPARATOR + inputs
        for j in range(1, k + 1)]
    if max_len and vocab is not None:
        lengths = tf.stack([tf.size(vocab.encode_tf(c)) for c in candidates_text])
        fits = lengths <= max_len - 1  # room for EOS
        j = tf.reduce_max(tf.where(fits, tf.range(k + 1), tf.zeros([k + 1], tf.int32)))
    else:
        j = tf.constant(k)
    used = tf.minimum(j, tf.size(chosen))
    return tf.gather(tf.stack(candidates_text), tf.minimum(j, k)), tf.cast(used, tf.int32)


# ---------------------------------------------------------------- postprocessing

@dataclasses.dataclass(frozen=True, eq=False)
class AnswerPostprocessor:
    """Maps a variant's answer back to the base task's label, then its postprocessor."""

    base: Callable | None = None
    label_names: tuple[str, ...] = ()
    verbalizers: tuple[str, ...] = ()
    cot: bool = False

    def __call__(self, output, example=None, is_target=False):
        text = _as_text(output)
        if self.cot:
            text = cot_answer(text)
        if self.verbalizers and text.strip() in self.verbalizers:
            text = self.label_names[self.verbalizers.index(text.strip())]
        if self.base is None:
            return text
        return self.base(text, example=example, is_target=is_target)
