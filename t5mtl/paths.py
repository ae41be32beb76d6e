"""Local paths and cloud URLs (gs://bucket/...) behind one set of calls.

Every place that reads or writes a model_dir, a data_dir, an init_from
source or an adapter directory goes through these functions: a local path
takes the `os` route it always did (renames for atomic writes), a URL goes
through etils.epath (orbax and tensorstore reach the same URLs themselves).

Cloud object stores have no atomic rename. A single object appears whole or
not at all, so `write_text` writes the object in one upload; a directory is
"complete" where its marker file exists (a model_dir's model.json, an orbax
step's commit_success.txt), and writers upload that marker last.

A URL whose bucket does not exist is a one-line T5mtlError naming the path
(`check_bucket`), raised before anything is written.
"""
from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
from typing import IO, Iterator

from t5mtl.errors import T5mtlError


def is_cloud(path) -> bool:
    """Whether `path` is a URL (gs://..., s3://...) rather than a local path."""
    return "://" in os.fspath(path)


def _epath(path):
    from etils import epath
    return epath.Path(path)


def join(base, *parts) -> str:
    """`base`/`parts` as a string: os.path.join locally, "/"-joined for a URL."""
    base = os.fspath(base)
    if not is_cloud(base):
        return os.path.join(base, *parts)
    return posixpath.join(base.rstrip("/"), *parts) if parts else base


def dirname(path) -> str:
    path = os.fspath(path)
    return posixpath.dirname(path.rstrip("/")) if is_cloud(path) else os.path.dirname(path)


def basename(path) -> str:
    path = os.fspath(path)
    return posixpath.basename(path.rstrip("/")) if is_cloud(path) else \
        os.path.basename(os.path.normpath(path))


def absolute(path) -> str:
    """An absolute local path; a URL as it is (without a trailing "/")."""
    path = os.fspath(path)
    return path.rstrip("/") if is_cloud(path) else os.path.abspath(path)


def exists(path) -> bool:
    return _epath(path).exists() if is_cloud(path) else os.path.exists(path)


def isfile(path) -> bool:
    return _epath(path).is_file() if is_cloud(path) else os.path.isfile(path)


def isdir(path) -> bool:
    """A local directory; for a URL, a prefix that holds at least one object."""
    return _epath(path).is_dir() if is_cloud(path) else os.path.isdir(path)


def listdir(path) -> list[str]:
    """The names (not paths) directly under `path`, sorted; [] where there is none."""
    if not is_cloud(path):
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    p = _epath(path)
    return sorted(child.name for child in p.iterdir()) if p.is_dir() else []


def bucket(path) -> str:
    """"gs://bucket" of a URL."""
    scheme, rest = os.fspath(path).split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def check_bucket(path) -> None:
    """Raises T5mtlError (one line naming `path`) if `path` is a URL whose
    bucket does not exist or cannot be listed with these credentials."""
    if not is_cloud(path):
        return
    root = bucket(path)
    try:
        found = _epath(root).exists()
    except Exception as e:  # noqa: BLE001 - the client's error, reduced to its first line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise T5mtlError(f"{path}: cannot reach bucket {root} ({first[:200]})") from e
    if not found:
        raise T5mtlError(f"{path}: bucket {root} does not exist (or these credentials "
                         f"cannot see it); create it first")


def kvstore(path) -> dict:
    """A tensorstore kvstore spec of a local directory or a gs:// prefix."""
    path = os.fspath(path)
    if not is_cloud(path):
        return {"driver": "file", "path": path}
    if not path.startswith("gs://"):
        raise T5mtlError(f"{path}: tensorstore reads gs:// URLs and local paths only")
    root, _, rest = path[len("gs://"):].partition("/")
    return {"driver": "gcs", "bucket": root, "path": rest}


def kvstore_url(path) -> str:
    """The same as a tensorstore URL (file:///abs/path or gs://bucket/path)."""
    return absolute(path) if is_cloud(path) else f"file://{os.path.abspath(path)}"


def makedirs(path) -> None:
    """Creates a local directory (and its parents); for a URL, checks the
    bucket (an object store has no directories to create)."""
    if is_cloud(path):
        check_bucket(path)
    else:
        os.makedirs(path, exist_ok=True)


def open_file(path, mode: str = "r") -> IO:
    """`open` for a local path, epath's file object for a URL."""
    return _epath(path).open(mode) if is_cloud(path) else open(path, mode)


def read_text(path) -> str:
    with open_file(path) as f:
        return f.read()


def write_text(path, text: str) -> None:
    """Writes `text` (UTF-8) whole: see write_bytes."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path, data: bytes) -> None:
    """Writes `data` so that readers see the old file or the new one, never
    a part: locally a temporary sibling renamed over `path`, for a URL one
    object upload."""
    path = os.fspath(path)
    if is_cloud(path):
        _epath(path).write_bytes(data)
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def copy_file(src, dst) -> None:
    """Copies one file between any two local paths or URLs."""
    if not is_cloud(src) and not is_cloud(dst):
        shutil.copy(src, dst)
        return
    with open_file(src, "rb") as f, open_file(dst, "wb") as out:
        shutil.copyfileobj(f, out, 16 << 20)


def rmtree(path) -> None:
    """Removes a directory tree (every object under a URL prefix); nothing
    where there is none."""
    if is_cloud(path):
        p = _epath(path)
        if p.exists():
            p.rmtree()
    else:
        shutil.rmtree(path, ignore_errors=True)


def move_dir(src, dst) -> None:
    """Renames a directory; under a URL, copies each object and then
    removes the source (object stores cannot rename a prefix)."""
    if not is_cloud(src):
        os.rename(src, dst)
        return
    for rel in _relative_files(src):
        _epath(join(src, rel)).copy(_epath(join(dst, rel)), overwrite=True)
    rmtree(src)


def _relative_files(root) -> list[str]:
    """Paths of every file under `root`, relative to it, sorted."""
    out = []
    if is_cloud(root):
        for name in listdir(root):
            child = join(root, name)
            if isdir(child):
                out += [f"{name}/{rel}" for rel in _relative_files(child)]
            else:
                out.append(name)
    else:
        for directory, _, names in os.walk(root):
            rel = os.path.relpath(directory, root)
            out += [n if rel == "." else os.path.join(rel, n) for n in names]
    return sorted(out)


def upload_tree(local_dir: str, dst: str) -> None:
    """Copies every file under `local_dir` to the URL `dst`: the files in
    subdirectories first, then the top-level ones (model.json, config.json,
    model.gin: what marks the directory as complete) last."""
    files = _relative_files(local_dir)
    nested = [f for f in files if os.sep in f]
    top = [f for f in files if os.sep not in f]
    for rel in nested + top:
        copy_file(os.path.join(local_dir, rel), join(dst, *rel.split(os.sep)))


def download_tree(src: str, local_dir: str) -> None:
    """Copies every object under the URL `src` into `local_dir`."""
    for rel in _relative_files(src):
        target = os.path.join(local_dir, *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        copy_file(join(src, rel), target)


@contextlib.contextmanager
def local_copy(path: str, what: str) -> Iterator[str]:
    """Yields a local directory with `path`'s files: `path` itself when
    local, else a temporary download removed afterwards (for readers that
    need local files, e.g. an HF directory's safetensors)."""
    if not is_cloud(path):
        yield path
        return
    if not isdir(path):
        check_bucket(path)
        raise T5mtlError(f"{path}: no such {what}")
    tmp = tempfile.mkdtemp(prefix="t5mtl-download-")
    try:
        download_tree(path, tmp)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
