"""Write a directory so that it appears whole or not at all."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from t5mtl.errors import T5mtlError


@contextlib.contextmanager
def atomic_directory(dst: str):
    """Yields a temporary sibling of `dst` to fill; renames it to `dst` on
    success and removes it on any error. Refuses a non-empty `dst`."""
    if os.path.exists(dst) and os.listdir(dst):
        raise T5mtlError(f"{dst}: exists and is not empty; refusing to overwrite")
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
