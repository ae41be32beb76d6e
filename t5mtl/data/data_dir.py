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

from t5mtl import paths
from t5mtl.errors import T5mtlError

ENV_VAR = "T5MTL_DATA_DIR"
_data_dir: str | None = None


@gin.configurable
def set_data_dir(path: str | None) -> None:
    """Sets the process-wide data_dir (a flag or gin binding calls this)."""
    global _data_dir
    _data_dir = path


is_remote = paths.is_cloud


def _join(base: str, *parts: str) -> str:
    return paths.join(base, *parts) if parts else str(base)


def resolve_data_dir(explicit: str | None = None) -> str:
    """Returns the data_dir to read from (a directory or gs://... URL), checked to exist."""
    from etils import epath
    path = explicit or _data_dir or os.environ.get(ENV_VAR)
    if not path:
        raise T5mtlError(
            f"no data_dir given: pass --data_dir, bind set_data_dir.path in gin, "
            f"or set {ENV_VAR}")
    if not epath.Path(path).is_dir():
        paths.check_bucket(path)
        raise T5mtlError(f"data_dir {path!r} is not a directory")
    return path


def data_path(*parts: str, data_dir: str | None = None) -> str:
    """Joins `parts` under the data_dir and checks that the result exists.

    An absolute first part (/data/x.tsv, gs://bucket/x.tsv) is used as it is,
    without a data_dir.
    """
    from etils import epath
    if parts and (os.path.isabs(parts[0]) or is_remote(parts[0])):
        path = _join(parts[0], *parts[1:])
        if not epath.Path(path).exists():
            raise T5mtlError(f"missing data file {path!r}")
        return path
    path = _join(resolve_data_dir(data_dir), *parts)
    if not epath.Path(path).exists():
        raise T5mtlError(f"missing data file {path!r} (data_dir={resolve_data_dir(data_dir)!r})")
    return path
