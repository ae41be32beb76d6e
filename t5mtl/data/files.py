"""File sources (JSONL, TSV, CSV, line-parallel text; t5mtl.data.readers) and file tasks.

    register_file_task(
        "my_nli", {"train": "my_nli/train.jsonl", "validation": "my_nli/dev.jsonl"},
        "jsonl",
        template=Template("nli premise: {premise} hypothesis: {hypothesis}", "{label}"),
        metric_fns=[metrics.accuracy])

registers a seqio Task whose source reads the files lazily, from paths
relative to the data_dir (t5mtl.data.data_dir), when a dataset is built;
nothing is read at registration. Every record is checked in Python before it
reaches tf.data, and bad input raises T5mtlError naming file:line and the
field: a line that is not JSON, a missing field, an empty text, a label
outside its value map. `on_error="skip"` skips bad records with a logged
warning instead (off by default); a file that yields no examples is always
an error, never a silently empty dataset.

The pieces are reusable: `PythonSource` turns any per-split Python iterator
of dicts into a seqio DataSource (sharded by example index, so 1-way and
2-way sharding give the same union); `Template` formats raw fields into
inputs/targets; `register_task` adds a seqio Task plus its TaskInfo.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import string
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

import seqio
import tensorflow as tf

from t5mtl.data import task_info as task_info_lib
from t5mtl.data.data_dir import data_path
from t5mtl.data.readers import READERS, Reader, RecordError
from t5mtl.errors import T5mtlError

logger = logging.getLogger(__name__)

_DTYPES = {
    "string": tf.TensorSpec([], tf.string),
    "int": tf.TensorSpec([], tf.int64),
    "float": tf.TensorSpec([], tf.float32),
    "strings": tf.TensorSpec([None], tf.string),
}


# ------------------------------------------------------------------ fields

@dataclasses.dataclass(frozen=True)
class Field:
    """How one raw field of an example is read from a record.

    Attributes:
      column: the JSON key (dotted for nested objects), TSV/CSV header name,
        or column index for headerless files; default: the field's name.
      dtype: "string", "int", "float" or "strings" (a list of texts).
      values: maps raw values to the field's value (e.g. {"1": "acceptable"});
        any other raw value is an error naming the allowed ones.
      allow_empty: whether an empty or all-blank text is allowed.
      strip: strip surrounding whitespace from texts.
      missing_in: splits whose files lack this column (unlabelled test sets);
        there the field takes `default`.
      default: the value used in `missing_in` splits.
    """

    column: Union[str, int, None] = None
    dtype: str = "string"
    values: Mapping[Any, Any] | None = None
    allow_empty: bool = False
    strip: bool = True
    missing_in: tuple[str, ...] = ()
    default: Any = None

    def __post_init__(self):
        if self.dtype not in _DTYPES:
            raise T5mtlError(f"unknown field dtype {self.dtype!r}; choose from {list(_DTYPES)}")

    def read(self, name: str, record: Any, loc: str, split: str) -> Any:
        column = name if self.column is None else self.column
        found, raw = _lookup(record, column)
        where = f"{loc}: field {name!r}" + ("" if column == name else f" (column {column!r})")
        if not found:
            if split in self.missing_in:
                return self.default
            raise T5mtlError(f"{where} is missing{_present(record)}")
        if self.values is not None:
            if isinstance(raw, (dict, list)) or raw not in self.values:
                allowed = ", ".join(repr(v) for v in self.values)
                raise T5mtlError(f"{where} has value {raw!r}; expected one of {allowed}")
            raw = self.values[raw]
        return self._convert(raw, where)

    def _convert(self, raw: Any, where: str) -> Any:
        if self.dtype == "string":
            if not isinstance(raw, str):
                raise T5mtlError(f"{where} should be text, got {type(raw).__name__} {raw!r}")
            if not self.allow_empty and not raw.strip():
                raise T5mtlError(f"{where} is empty")
            return raw.strip() if self.strip else raw
        if self.dtype == "strings":
            if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
                raise T5mtlError(f"{where} should be a list of texts, got {raw!r}")
            if not raw or (not self.allow_empty and not all(r.strip() for r in raw)):
                raise T5mtlError(f"{where} is empty")
            return [r.strip() for r in raw] if self.strip else raw
        kind = int if self.dtype == "int" else float
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise T5mtlError(f"{where} should be a number, got {raw!r}")
        try:
            value = kind(raw)
        except ValueError:
            raise T5mtlError(f"{where} should be {'an integer' if kind is int else 'a number'}, "
                             f"got {raw!r}") from None
        return value


def _present(record: Any) -> str:
    """What a record does have, for the missing-field error."""
    if isinstance(record, dict):
        return f"; the record has {', '.join(repr(k) for k in record) or 'no fields'}"
    if isinstance(record, list):
        return f"; the row has {len(record)} columns (0 to {len(record) - 1})"
    return ""


def _lookup(record: Any, column: Union[str, int]) -> tuple[bool, Any]:
    if isinstance(record, list):
        if isinstance(column, int) and 0 <= column < len(record):
            return True, record[column]
        return False, None
    if column in record:
        return True, record[column]
    if isinstance(column, str) and "." in column:
        node = record
        for part in column.split("."):
            if not isinstance(node, dict) or part not in node:
                return False, None
            node = node[part]
        return True, node
    return False, None


# ------------------------------------------------------------------ sources

class PythonSource(seqio.DataSource):
    """A seqio DataSource over a per-split Python iterator of example dicts.

    `iter_examples(split)` must be deterministic; the dataset is sharded by
    example index, so any number of shards partitions the same examples.
    Shuffling is left to the seqio Task (its shuffle buffer).
    """

    def __init__(self, splits: Sequence[str], iter_examples: Callable[[str], Iterable[dict]],
                 dtypes: Mapping[str, str], num_examples: Mapping[str, int] | None = None):
        super().__init__(splits=splits, num_input_examples=num_examples)
        self._iter = iter_examples
        self._dtypes = dict(dtypes)
        self._counts: dict[str, int] = dict(num_examples or {})

    @property
    def dtypes(self) -> dict[str, str]:
        return dict(self._dtypes)

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def list_shards(self, split: str) -> Sequence[str]:
        return [split]

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise T5mtlError(f"unknown split {split!r}; this source has {list(self.splits)}")

    def iter_examples(self, split: str) -> Iterator[dict]:
        """The raw examples of `split` as Python dicts (errors are T5mtlError)."""
        self._check_split(split)
        return iter(self._iter(split))

    def num_input_examples(self, split: str) -> int:
        self._check_split(split)
        if split not in self._counts:
            self._counts[split] = sum(1 for _ in self.iter_examples(split))
        return self._counts[split]

    def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                    shard_info: seqio.ShardInfo | None = None, *, sequence_length=None,
                    use_cached: bool = False, num_epochs: int | None = 1) -> tf.data.Dataset:
        del shuffle, seed, sequence_length, use_cached, num_epochs
        self._check_split(split)
        index, count = (shard_info.index, shard_info.num_shards) if shard_info else (0, 1)

        def generate():
            for i, ex in enumerate(self.iter_examples(split)):
                if i % count == index:
                    yield ex

        signature = {k: _DTYPES[v] for k, v in self._dtypes.items()}
        return tf.data.Dataset.from_generator(generate, output_signature=signature)


class FileSource(PythonSource):
    """Examples read from local files, one list of files per split.

    Args:
      split_files: split -> path, list of paths, or (format "parallel") a
        mapping field -> path; paths are relative to the data_dir.
      format: "jsonl", "tsv", "csv", "parallel", or a reader function
        `reader(path_or_mapping) -> Iterator[("path:line", record)]`.
      fields: raw field name -> Field.
      data_dir: overrides the process-wide data_dir.
      on_error: "raise" (default) or "skip" (logged, per record).
      header: whether TSV/CSV files start with a header row.
    """

    def __init__(self, split_files: Mapping[str, Any], format: Union[str, Reader],
                 fields: Mapping[str, Field], data_dir: str | None = None,
                 on_error: str = "raise", header: bool = True):
        if on_error not in ("raise", "skip"):
            raise T5mtlError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if callable(format):
            reader = format
        elif format in READERS:
            reader = READERS[format]
            if format in ("tsv", "csv"):
                reader = functools.partial(reader, header=header)
        else:
            raise T5mtlError(f"unknown file format {format!r}; choose from {list(READERS)}")
        if not split_files:
            raise T5mtlError("split_files is empty: give at least one split")
        if not fields:
            raise T5mtlError("fields is empty: name the fields to read")
        self._split_files = dict(split_files)
        self._reader = reader
        self._format = format
        self._fields = dict(fields)
        self._data_dir = data_dir
        self._on_error = on_error
        super().__init__(list(split_files), self._read,
                         {name: f.dtype for name, f in self._fields.items()})

    @property
    def fields(self) -> dict[str, Field]:
        return dict(self._fields)

    def resolve(self, split: str) -> list[Any]:
        """The split's files as paths under the data_dir (checked to exist)."""
        self._check_split(split)
        spec = self._split_files[split]
        if isinstance(spec, Mapping):
            return [{k: data_path(v, data_dir=self._data_dir) for k, v in spec.items()}]
        specs = [spec] if isinstance(spec, str) else list(spec)
        return [data_path(s, data_dir=self._data_dir) for s in specs]

    def _read(self, split: str) -> Iterator[dict]:
        files = self.resolve(split)
        kept = skipped = 0
        for path in files:
            for loc, record in self._reader(path):
                try:
                    if isinstance(record, RecordError):
                        raise record
                    ex = {name: f.read(name, record, loc, split) for name, f in self._fields.items()}
                except T5mtlError as e:
                    if self._on_error == "raise":
                        raise
                    skipped += 1
                    logger.warning("skipping bad record (on_error='skip'): %s", e)
                    continue
                kept += 1
                yield ex
        if skipped:
            logger.warning("split %r: skipped %d bad records, kept %d", split, skipped, kept)
        if not kept:
            what = f"all {skipped} records were bad" if skipped else "no records"
            raise T5mtlError(f"split {split!r} of {files}: {what}; refusing an empty dataset")


# ------------------------------------------------------------------ templates

@dataclasses.dataclass(frozen=True)
class Template:
    """Formats raw text fields into "inputs" and "targets" ("{field}" slots)."""

    inputs: str
    targets: str

    def __post_init__(self):
        for text in (self.inputs, self.targets):
            _parse(text)

    def fields(self) -> tuple[str, ...]:
        names = [n for text in (self.inputs, self.targets) for _, n in _parse(text) if n]
        return tuple(dict.fromkeys(names))

    def input_fields(self) -> tuple[str, ...]:
        """The fields the inputs name that the targets do not, in order."""
        targets = {n for _, n in _parse(self.targets) if n}
        return tuple(dict.fromkeys(n for _, n in _parse(self.inputs) if n and n not in targets))

    def check(self, fields: Mapping[str, str], task: str = "") -> None:
        """Raises unless every slot names a text field in `fields` (name -> dtype)."""
        prefix = f"task {task!r}: " if task else ""
        for name in self.fields():
            if name not in fields:
                raise T5mtlError(f"{prefix}template references missing field {name!r}; "
                                 f"fields are {sorted(fields)}")
            if fields[name] != "string":
                raise T5mtlError(f"{prefix}template field {name!r} has dtype {fields[name]!r}; "
                                 f"only text fields can be formatted")

    def render(self, example: Mapping[str, str]) -> dict[str, str]:
        """The template applied to a Python example."""
        def fill(text):
            return "".join(lit + (_as_str(example[n]) if n else "") for lit, n in _parse(text))
        return {"inputs": fill(self.inputs), "targets": fill(self.targets)}


def _as_str(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


@functools.lru_cache(maxsize=None)
def _parse(text: str) -> tuple[tuple[str, str | None], ...]:
    pieces = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:
        raise T5mtlError(f"bad template {text!r}: {e}") from None
    for literal, name, spec, conversion in parsed:
        if name is not None and (not name or spec or conversion):
            raise T5mtlError(f"bad template {text!r}: use plain {{field}} slots")
        pieces.append((literal, name))
    return tuple(pieces)


def render_tf(text: str, ex: Mapping[str, tf.Tensor], shape_like: tf.Tensor | None = None
              ) -> tf.Tensor:
    """A template string ("{field}" slots) filled from tensors: scalars, or
    vectors shaped like `shape_like`."""
    parts = [] if shape_like is None else [tf.fill(tf.shape(shape_like), "")]
    for literal, name in _parse(text):
        if literal:
            parts.append(tf.constant(literal))
        if name:
            parts.append(ex[name])
    return tf.strings.join(parts) if parts else tf.constant("")


def task_template(task: seqio.Task) -> Template | None:
    """The Template a task's `apply_template` step renders (None without one)."""
    for p in task.preprocessors:
        if getattr(p, "func", None) is apply_template:
            return p.keywords["template"]
    return None


def apply_template(dataset: tf.data.Dataset, template: Template) -> tf.data.Dataset:
    """seqio preprocessor: adds "inputs"/"targets"; raw fields pass through."""
    def fn(ex):
        out = dict(ex)
        out["inputs"] = render_tf(template.inputs, ex)
        out["targets"] = render_tf(template.targets, ex)
        return out
    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


# ------------------------------------------------------------------ tasks

def output_features(vocabulary: seqio.Vocabulary | None = None) -> dict[str, seqio.Feature]:
    """"inputs"/"targets" text features with EOS, in the shared vocabulary."""
    if vocabulary is None:
        from t5mtl.data.vocab import get_vocabulary
        vocabulary = get_vocabulary()
    return {
        "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True),
        "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
    }


def claim_task_name(name: str, overwrite: bool) -> None:
    """Frees `name` for a new task: removes the registered task and its
    TaskInfo when `overwrite`, else refuses a name already taken."""
    if overwrite:
        seqio.TaskRegistry.remove(name)
        task_info_lib.remove_task_info(name)
    elif name in seqio.TaskRegistry.names():
        raise T5mtlError(f"task {name!r} is already registered")


def register_task(name: str, source: seqio.DataSource, preprocessors: Sequence[Callable],
                  info: task_info_lib.TaskInfo, metric_fns: Sequence[Callable] = (),
                  postprocess_fn: Callable | None = None,
                  vocabulary: seqio.Vocabulary | None = None,
                  overwrite: bool = False) -> seqio.Task:
    """Adds a seqio Task (text preprocessors, then tokenize + EOS) and its TaskInfo.

    `preprocessors` must leave "inputs" and "targets" strings in each example.
    """
    if info.name != name:
        raise T5mtlError(f"TaskInfo name {info.name!r} differs from task name {name!r}")
    claim_task_name(name, overwrite)
    task = seqio.TaskRegistry.add(
        name,
        source=source,
        preprocessors=[*preprocessors, seqio.preprocessors.tokenize,
                       seqio.preprocessors.append_eos_after_trim],
        output_features=output_features(vocabulary),
        metric_fns=list(metric_fns),
        postprocess_fn=postprocess_fn,
    )
    task_info_lib.register_task_info(info, overwrite=overwrite)
    return task


def register_file_task(
    name: str,
    split_files: Mapping[str, Any],
    format: Union[str, Reader],
    template: Template | None = None,
    *,
    fields: Mapping[str, Field] | None = None,
    preprocessors: Sequence[Callable] = (),
    metric_fns: Sequence[Callable] = (),
    postprocess_fn: Callable | None = None,
    info: task_info_lib.TaskInfo | None = None,
    data_dir: str | None = None,
    on_error: str = "raise",
    header: bool = True,
    vocabulary: seqio.Vocabulary | None = None,
    overwrite: bool = False,
) -> seqio.Task:
    """Registers a seqio Task that reads local files and formats them with a template.

    Args:
      name: the task name.
      split_files: split -> file(s) relative to the data_dir (see FileSource).
      format: "jsonl", "tsv", "csv", "parallel", or a reader function.
      template: maps raw fields to inputs/targets; may be None only when
        `preprocessors` produce "inputs" and "targets" themselves.
      fields: raw field -> Field; default: each template slot read as text
        from the column of the same name.
      preprocessors: seqio preprocessors run on the raw fields before the
        template (e.g. to turn a number into text).
      metric_fns, postprocess_fn: as for seqio.Task.
      info: the TaskInfo; default: category "uncategorized", schema
        "text_to_text".
      data_dir: overrides the process-wide data_dir.
      on_error: "raise" (default) or "skip" bad records with a logged warning.
      header: whether TSV/CSV files start with a header row.
      vocabulary: default t5mtl.data.vocab.get_vocabulary().
      overwrite: replace a task already registered under `name`.
    """
    if template is None and not preprocessors:
        raise T5mtlError(f"task {name!r}: give a template (or preprocessors that make "
                         f"'inputs' and 'targets')")
    if fields is None:
        if template is None:
            raise T5mtlError(f"task {name!r}: give fields when there is no template")
        fields = {f: Field() for f in template.fields()}
    source = FileSource(split_files, format, fields, data_dir=data_dir, on_error=on_error,
                        header=header)
    if template is not None and not preprocessors:
        template.check(source.dtypes, task=name)
    if info is None:
        info = task_info_lib.TaskInfo(
            name=name, category="uncategorized", schema="text_to_text",
            metrics=tuple(getattr(f, "__name__", str(f)) for f in metric_fns),
            fields=tuple(fields), splits=tuple(split_files),
            source=", ".join(sorted({str(v) for v in split_files.values()})))
    steps = list(preprocessors)
    if template is not None:
        steps.append(functools.partial(apply_template, template=template))
    return register_task(name, source, steps, info, metric_fns=metric_fns,
                         postprocess_fn=postprocess_fn, vocabulary=vocabulary,
                         overwrite=overwrite)
