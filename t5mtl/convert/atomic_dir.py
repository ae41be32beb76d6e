"""Write a directory so that it appears whole or not at all."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from t5mtl import paths
from t5mtl.errors import T5mtlError


@contextlib.contextmanager
def atomic_directory(dst: str, stage_locally: bool = False):
    """Yields a temporary sibling of `dst` to fill; renames it to `dst` on
    success and removes it on any error. Refuses a non-empty `dst`.

    A URL `dst` (gs://...) has no rename: it yields `dst` itself, whose
    writers write the file that marks it complete (model.json, config.json)
    last, and removes everything under it on any error. With
    `stage_locally` (writers that need local files), it yields a local
    temporary directory instead and uploads it to `dst` on success, the
    top-level files last.
    """
    if paths.listdir(dst):
        raise T5mtlError(f"{dst}: exists and is not empty; refusing to overwrite")
    if paths.is_cloud(dst):
        paths.check_bucket(dst)
        tmp = tempfile.mkdtemp(prefix="t5mtl-upload-") if stage_locally else None
        try:
            yield tmp or dst
            if tmp:
                paths.upload_tree(tmp, dst)
        except BaseException:
            paths.rmtree(dst)
            raise
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        return
    parent = os.path.dirname(os.path.abspath(dst))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(dst))}.partial-",
                           dir=parent)
    try:
        yield tmp
        if os.path.exists(dst):
            os.rmdir(dst)
        os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
