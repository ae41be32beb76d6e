"""Where local datasets live.

A data_dir comes, in order of precedence, from an explicit argument, the gin
binding `t5mtl.data.data_dir.set_data_dir.path` (or a CLI flag that calls
`set_data_dir`), or the T5MTL_DATA_DIR environment variable. Nothing is
hard-coded: a task that needs files and finds no data_dir raises an error
that says how to give one.
"""
from __future__ import annotations

import os

import gin

from t5mtl.errors import T5mtlError

ENV_VAR = "T5MTL_DATA_DIR"
_data_dir: str | None = None


@gin.configurable
def set_data_dir(path: str | None) -> None:
    """Sets the process-wide data_dir (a flag or gin binding calls this)."""
    global _data_dir
    _data_dir = path


def resolve_data_dir(explicit: str | None = None) -> str:
    """Returns the data_dir to read from, checking that it exists."""
    path = explicit or _data_dir or os.environ.get(ENV_VAR)
    if not path:
        raise T5mtlError(
            f"no data_dir given: pass --data_dir, bind set_data_dir.path in gin, "
            f"or set {ENV_VAR}")
    if not os.path.isdir(path):
        raise T5mtlError(f"data_dir {path!r} is not a directory")
    return path


def data_path(*parts: str, data_dir: str | None = None) -> str:
    """Joins `parts` under the data_dir and checks that the result exists."""
    path = os.path.join(resolve_data_dir(data_dir), *parts)
    if not os.path.exists(path):
        raise T5mtlError(f"missing data file {path!r} (data_dir={resolve_data_dir(data_dir)!r})")
    return path
