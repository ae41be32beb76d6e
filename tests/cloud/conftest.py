"""A local GCS server for the gs:// tests: `gcp-storage-emulator` (run by
tests/cloud/emulator.py, which adds the generation headers tensorstore
reads), in memory, on a free localhost port, with one bucket; every client
the code uses is
pointed at it through the environment (this process's and so every
subprocess's):

  STORAGE_EMULATOR_HOST            gcsfs (etils.epath's gs:// backend here) and
                                   google-cloud-storage (orbax's GCS deletes)
  TENSORSTORE_GCS_HTTP_URL         tensorstore's gcs driver (orbax's arrays)
  GOOGLE_AUTH_TOKEN_FOR_TESTING    tensorstore's credentials (none needed)
  EPATH_USE_TF=false               epath through fsspec/gcsfs: TensorFlow's GCS
                                   client (epath's default) has no endpoint setting
  GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false   no gRPC bucket-type probe
"""
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.faults.runs import ROOT

BUCKET = "t5mtl-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clear_client_caches() -> None:
    """epath decides between TensorFlow and fsspec once per process, and
    caches its fsspec filesystems: both are decided again under the new
    environment."""
    from etils.epath import backend, gpath
    gpath._is_tf_installed.cache_clear()
    backend.fsspec_backend._get_filesystem.cache_clear()


@pytest.fixture(scope="package")
def gcs_bucket(tmp_path_factory):
    """"gs://<bucket>" on a fresh in-memory emulator; skips where it cannot start."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # Its log goes to a file: a pipe nobody reads would fill and stop the
    # (one-threaded) server in the middle of a request.
    log = tmp_path_factory.mktemp("gcs_emulator") / "emulator.log"
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.cloud.emulator", "start", "--host", "127.0.0.1",
                 "--port", str(port), "--in-memory", "--default-bucket", BUCKET, "-q"],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    except OSError as e:
        pytest.skip(f"gcp-storage-emulator cannot start: {e}")
    deadline = time.time() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            proc.wait()
            err = log.read_text(errors="replace").strip().splitlines()
            pytest.skip(f"gcp-storage-emulator did not start on {url}: "
                        f"{err[-1] if err else 'no output'}")
        time.sleep(0.1)
    variables = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
                 "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "EPATH_USE_TF": "false",
                 "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
                 "GOOGLE_CLOUD_PROJECT": "t5mtl-test"}
    previous = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    _clear_client_caches()
    yield f"gs://{BUCKET}"
    for k, v in previous.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    _clear_client_caches()
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
