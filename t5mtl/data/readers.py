"""Readers of the file formats tasks are made from: JSONL, TSV/CSV (with or
without a header) and line-aligned parallel text, local or gs://.

Each yields ("path:line", record) pairs; a bad line (not JSON, the wrong
number of columns) comes as a RecordError in place of its record, so a
caller's skip policy can step over it, while a file that is not UTF-8 text
raises at once. A leading UTF-8 byte-order mark is skipped.
"""
from __future__ import annotations

import csv
import functools
import io
import json
from typing import Any, Callable, Iterator, Mapping

from t5mtl import paths
from t5mtl.errors import T5mtlError

# A record as read from a file, with its location ("path:line") for errors.
# Line-based readers yield a RecordError in place of a record for a bad line
# (not JSON, wrong number of columns), so a skip policy can step over it.
Located = tuple[str, Any]
Reader = Callable[[Any], Iterator[Located]]


class RecordError(T5mtlError):
    """One bad record (its message starts with "path:line:")."""


def _open(path: str, mode: str = "rb"):
    """Opens a local or cloud (gs://...) file (t5mtl.paths); mode "rb",
    or "rt" for UTF-8 text with a leading byte-order mark skipped and line
    endings kept (as open(..., newline="") keeps them, which csv needs)."""
    raw = paths.open_file(path, "rb")
    if mode == "rb":
        return raw
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def read_jsonl(path: str) -> Iterator[Located]:
    """Yields ("path:line", object) for each non-blank line of a JSONL file.

    A UTF-8 byte-order mark at the start of the file is skipped.
    """
    with _open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            loc = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise T5mtlError(f"{loc}: not UTF-8 text ({e.reason})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield loc, RecordError(f"{loc}: not valid JSON: {e.msg} (column {e.colno})")
                continue
            if not isinstance(record, dict):
                record = RecordError(f"{loc}: expected a JSON object, got {type(record).__name__}")
            yield loc, record


def read_delimited(path: str, delimiter: str = "\t", header: bool = True) -> Iterator[Located]:
    """Yields ("path:line", row) for a TSV/CSV file; blank lines are skipped.

    With a header, rows are dicts keyed by column name; without, lists.
    A UTF-8 byte-order mark at the start (GLUE's MRPC files have one) is
    skipped, so the first column keeps its name. TSV is read with quoting off (GLUE files hold unbalanced quotes), CSV
    with standard quoting. Every row must have as many cells as the header
    (or the first row).
    """
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    kind = "tab-separated" if delimiter == "\t" else f"{delimiter!r}-separated"
    with _open(path, "rt") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        names, width = None, None
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as e:
                raise T5mtlError(f"{path}:{reader.line_num + 1}: not UTF-8 text ({e.reason})") from None
            except csv.Error as e:
                raise T5mtlError(f"{path}:{reader.line_num}: {e}") from None
            loc = f"{path}:{reader.line_num}"
            if not row or row == [""]:
                continue
            if width is None:
                width = len(row)
                if header:
                    names = row
                    continue
            if len(row) != width:
                yield loc, RecordError(f"{loc}: expected {width} {kind} columns, found {len(row)}")
                continue
            yield loc, (dict(zip(names, row)) if names else row)


def read_parallel(paths: Mapping[str, str]) -> Iterator[Located]:
    """Yields ("path:line", {field: line}) from line-aligned text files."""
    names = list(paths)
    files = [_open(paths[n], "rt") for n in names]
    try:
        lineno = 0
        while True:
            lines = [f.readline() for f in files]
            lineno += 1
            ended = [not line for line in lines]
            if all(ended):
                return
            if any(ended):
                short = paths[names[ended.index(True)]]
                longer = paths[names[ended.index(False)]]
                raise T5mtlError(
                    f"{short} has {lineno - 1} lines but {longer} has more; "
                    f"parallel files must have the same number of lines")
            yield (f"{paths[names[0]]}:{lineno}",
                   {n: line.rstrip("\r\n") for n, line in zip(names, lines)})
    finally:
        for f in files:
            f.close()


READERS: dict[str, Reader] = {
    "jsonl": read_jsonl,
    "tsv": functools.partial(read_delimited, delimiter="\t"),
    "csv": functools.partial(read_delimited, delimiter=","),
    "parallel": read_parallel,
}
