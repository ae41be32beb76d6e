"""Data sources: plain-text files, TFDS by name, and HF datasets (if installed).

All are lazy: building a source reads nothing, so registering tasks at import
is cheap and works without data. Locations are resolved when a dataset is
built, from an explicit argument or the data_dir (t5mtl.data.data_dir:
argument, gin `set_data_dir.path`, or T5MTL_DATA_DIR).

Plain text (`TextFilesSource`) gives examples {"text": ..., "id": file path}.
What one example holds is the `unit`:

- "file" (the default): a whole file is one document (a UTF-8 BOM at its start
  is dropped). Chunking then happens per document, so which host reads which
  file does not change the chunks.
- "paragraph": blank-line-separated paragraphs, stripped; empty ones dropped.
- "line": non-blank lines.

Bad input fails loudly with a T5mtlError naming the path: a pattern that
matches nothing, a missing file, a file that is empty or only whitespace.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from t5mtl.data import data_dir as data_dir_lib
from t5mtl.errors import T5mtlError

TEXT_UNITS = ("file", "paragraph", "line")
_BOM = "\ufeff"
_PARAGRAPH_BREAK = "\x1d"  # a control character that plain text does not contain


# ---------------------------------------------------------------------------
# Plain-text files.

def _is_remote(path: str) -> bool:
    return "://" in path


def _check_text_file(path: str) -> None:
    """Raises T5mtlError unless `path` is a file with some non-whitespace text."""
    if not tf.io.gfile.exists(path):
        raise T5mtlError(f"text file {path!r} does not exist")
    if tf.io.gfile.isdir(path):
        raise T5mtlError(f"text file {path!r} is a directory")
    with tf.io.gfile.GFile(path, "rb") as f:
        while True:
            block = f.read(1 << 16)
            if not block:
                raise T5mtlError(f"text file {path!r} is empty (no non-whitespace text)")
            if block.replace(_BOM.encode(), b"").strip():
                return


def _read_whole_file(path: tf.Tensor) -> tf.data.Dataset:
    text = tf.strings.regex_replace(tf.io.read_file(path), "^" + _BOM, "")
    return tf.data.Dataset.from_tensors({"text": text, "id": path})


def _read_paragraphs(path: tf.Tensor) -> tf.data.Dataset:
    text = tf.strings.regex_replace(tf.io.read_file(path), "^" + _BOM, "")
    text = tf.strings.regex_replace(text, "\r\n?", "\n")
    text = tf.strings.regex_replace(text, r"\n[ \t]*\n\s*", _PARAGRAPH_BREAK)
    paragraphs = tf.strings.strip(tf.strings.split(text, _PARAGRAPH_BREAK))
    paragraphs = tf.boolean_mask(paragraphs, tf.strings.length(paragraphs) > 0)
    ids = tf.fill(tf.shape(paragraphs), path)
    return tf.data.Dataset.from_tensor_slices({"text": paragraphs, "id": ids})


def _read_lines(path: tf.Tensor) -> tf.data.Dataset:
    lines = tf.data.TextLineDataset(path).map(
        lambda line: tf.strings.regex_replace(line, "^" + _BOM, ""))
    lines = lines.filter(lambda line: tf.strings.length(tf.strings.strip(line)) > 0)
    return lines.map(lambda line: {"text": line, "id": path})


_READERS: Mapping[str, Callable[[tf.Tensor], tf.data.Dataset]] = {
    "file": _read_whole_file, "paragraph": _read_paragraphs, "line": _read_lines}


class TextFilesSource(seqio.FileDataSource):
    """Plain-text files as a seqio source: {"text": str, "id": file path}.

    Args:
      split_to_patterns: split name -> file pattern(s) (globs). Relative
        patterns are joined to the data_dir when a dataset is built; absolute
        paths and URLs (gs://...) are used as they are.
      unit: "file", "paragraph" or "line" (see the module docstring).
      data_dir: overrides the process-wide data_dir for relative patterns.

    Shards are files: with at least as many files as hosts each host reads
    its own files; with fewer, seqio shards the examples.
    """

    def __init__(self, split_to_patterns: Mapping[str, str | Sequence[str]],
                 unit: str = "file", data_dir: str | None = None,
                 cycle_length: int = 16, block_length: int = 16):
        if unit not in TEXT_UNITS:
            raise T5mtlError(f"unknown text unit {unit!r}; choose one of {TEXT_UNITS}")
        if not split_to_patterns:
            raise T5mtlError("TextFilesSource needs at least one split")
        patterns = {split: (p,) if isinstance(p, str) else tuple(p)
                    for split, p in split_to_patterns.items()}
        for split, p in patterns.items():
            if not p:
                raise T5mtlError(f"split {split!r} has no file patterns")
        self._unit = unit
        self._data_dir = data_dir
        super().__init__(
            read_file_fn=_READERS[unit],
            split_to_filepattern=patterns,
            cycle_length=cycle_length,
            block_length=block_length)

    @property
    def unit(self) -> str:
        return self._unit

    def resolve_patterns(self, split: str) -> list[str]:
        """The split's patterns as full paths (reads the data_dir, not the files)."""
        if split not in self.splits:
            raise T5mtlError(f"unknown split {split!r}; this source has {list(self.splits)}")
        out = []
        for pattern in self._split_to_filepattern[split]:
            if os.path.isabs(pattern) or _is_remote(pattern):
                out.append(pattern)
            else:
                out.append(os.path.join(
                    data_dir_lib.resolve_data_dir(self._data_dir), pattern))
        return out

    def list_shards(self, split: str) -> Sequence[str]:
        """The split's files, sorted per pattern, each checked to hold text."""
        files = []
        for pattern in self.resolve_patterns(split):
            matches = sorted(tf.io.gfile.glob(pattern))
            if not matches:
                raise T5mtlError(f"no text file matches {pattern!r} (split {split!r})")
            files.extend(matches)
        for path in files:
            _check_text_file(path)
        return files


# ---------------------------------------------------------------------------
# TFDS.

def _configured_data_dir() -> str | None:
    """The t5mtl data_dir if one is configured (gin or env), else None."""
    configured = data_dir_lib._data_dir  # pylint: disable=protected-access
    if configured or os.environ.get(data_dir_lib.ENV_VAR):
        return data_dir_lib.resolve_data_dir()
    return None


class TfdsSource(seqio.TfdsDataSource):
    """seqio.TfdsDataSource whose data_dir is resolved when data is first read.

    Where TFDS looks: `data_dir` if given; else the t5mtl data_dir if one is
    configured (TFDS's layout under it: <data_dir>/c4/en/3.0.1/...); else
    TFDS's own default (TFDS_DATA_DIR or ~/tensorflow_datasets).
    """

    def __init__(self, tfds_name: str, data_dir: str | None = None,
                 splits: Iterable[str] | Mapping[str, str] | None = None,
                 **kwargs: Any):
        super().__init__(tfds_name=tfds_name, tfds_data_dir=data_dir,
                         splits=splits, **kwargs)
        self._data_dir_explicit = data_dir is not None

    def _resolve_data_dir(self) -> None:
        if not self._data_dir_explicit and self.tfds_dataset.data_dir is None:
            configured = _configured_data_dir()
            if configured:
                self.tfds_dataset.override_data_dir(configured)
        self._data_dir_explicit = True  # resolve once

    def get_dataset(self, split=None, shuffle=True, seed=None, shard_info=None, **kwargs):
        self._resolve_data_dir()
        return super().get_dataset(split, shuffle=shuffle, seed=seed,
                                   shard_info=shard_info, **kwargs)

    def list_shards(self, split: str) -> Sequence[str]:
        self._resolve_data_dir()
        return super().list_shards(split)

    def num_input_examples(self, split: str):
        self._resolve_data_dir()
        return super().num_input_examples(split)


def tfds_source(name: str, data_dir: str | None = None,
                splits: Iterable[str] | Mapping[str, str] | None = None) -> TfdsSource:
    """A TFDS dataset by name and version, e.g. tfds_source("c4/en:3.*.*")."""
    if not name or ":" not in name:
        raise T5mtlError(
            f"TFDS name {name!r} needs a version, e.g. 'c4/en:3.*.*' "
            f"(seqio pins versions for reproducibility)")
    return TfdsSource(name, data_dir=data_dir, splits=splits)


# ---------------------------------------------------------------------------
# HF datasets.

def _import_datasets():
    try:
        import datasets  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise T5mtlError(
            "HF datasets sources need the `datasets` package: pip install datasets") from e
    return datasets


def _tf_spec(name: str, value: Any, where: str) -> tf.TensorSpec:
    """A TensorSpec for one field, inferred from its first value."""
    def dtype_of(v):
        if isinstance(v, (str, bytes)):
            return tf.string
        if isinstance(v, (bool, np.bool_, int, np.integer)):
            return tf.int64
        if isinstance(v, (float, np.floating)):
            return tf.float32
        return None

    if isinstance(value, (list, tuple)):
        if not value:
            raise T5mtlError(f"{where}: field {name!r} is an empty list in the first row; "
                             f"its type cannot be inferred")
        dtype = dtype_of(value[0])
        shape = [None]
    else:
        dtype, shape = dtype_of(value), []
    if dtype is None:
        raise T5mtlError(f"{where}: field {name!r} has unsupported type "
                         f"{type(value).__name__} (strings, numbers or lists of them)")
    return tf.TensorSpec(shape, dtype)


def hf_source(path: str, name: str | None = None,
              splits: Sequence[str] = ("train", "validation"),
              data_dir: str | None = None,
              fields: Sequence[str] | None = None,
              **load_kwargs: Any) -> seqio.FunctionDataSource:
    """An HF `datasets.load_dataset(path, name, split=...)` as a seqio source.

    `path` is a hub name or a local dataset directory/script. A relative
    `path` that exists under the t5mtl data_dir is read from there, so local
    copies need no network. `fields` picks columns (default: all of the
    scalar, string and list-of-scalar columns of the first row). `datasets`
    is imported only when data is read; without it, a T5mtlError says so.
    """
    fields = tuple(fields) if fields is not None else None

    def resolve_path() -> str:
        if os.path.isabs(path) or os.path.exists(path):
            return path
        root = data_dir or _configured_data_dir()
        if root and os.path.exists(os.path.join(root, path)):
            return os.path.join(root, path)
        return path  # a hub name

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
        datasets = _import_datasets()
        where = f"HF dataset {path!r}" + (f" ({name})" if name else "") + f" split {split!r}"
        rows = datasets.load_dataset(resolve_path(), name, split=split, **load_kwargs)
        if shuffle_files and hasattr(rows, "shuffle"):
            rows = rows.shuffle(seed=seed)
        try:
            first = next(iter(rows))
        except StopIteration:
            raise T5mtlError(f"{where} is empty") from None
        keys = fields or tuple(k for k, v in first.items()
                               if _is_supported(v))
        missing = [k for k in keys if k not in first]
        if missing:
            raise T5mtlError(f"{where} has no field(s) {missing}; it has {sorted(first)}")
        signature = {k: _tf_spec(k, first[k], where) for k in keys}

        def generate():
            for row in rows:
                yield {k: row[k] for k in keys}

        return tf.data.Dataset.from_generator(generate, output_signature=signature)

    return seqio.FunctionDataSource(dataset_fn, splits=splits)


def _is_supported(value: Any) -> bool:
    scalar = (str, bytes, bool, int, float, np.integer, np.floating, np.bool_)
    if isinstance(value, (list, tuple)):
        return bool(value) and isinstance(value[0], scalar)
    return isinstance(value, scalar)
