"""t5mtl/retrieval/embed.py over a mesh: on 8 CPU devices (data=8, and
data=2 x model=4) the embeddings equal the 1-device embeddings to 1e-5,
with batches the batch shards do not divide (rows padded); a mesh that does
not match the embedding function is named."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from t5mtl.errors import T5mtlError
from t5mtl.retrieval.embed import embed_texts, encoder_embedding_fn, mesh_embedding_fn
from t5mtl.train.partitioning import create_mesh
from tests.retrieval.embed_devices import CASES, LENGTH, TEXTS, setup

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_eight_devices_equal_one_device():
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
                          + " --xla_force_host_platform_device_count=8").strip(),
               PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "retrieval",
                                                        "embed_devices.py")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8 and len(out["cases"]) == len(CASES)
    model, params, vocab = setup()
    one = embed_texts(model, params, TEXTS, vocab, LENGTH, batch_size=4)
    assert one.shape == (11, 64) and not np.allclose(one[0], one[1])
    for case, (shape, count, _) in zip(out["cases"], CASES):
        assert tuple(case["shape"]) == shape
        assert case["shards"] == shape[0]                  # rows split over "data"
        # the mlp kernel [64, 128] ("embed", "mlp"): whole on data=8, split 4 ways on model=4
        assert case["mlp_kernel_shard"] == [64, 128 // shape[2]]
        np.testing.assert_allclose(np.asarray(case["embeddings"]), one[:count],
                                   rtol=0, atol=1e-5, err_msg=str(shape))


def test_a_mesh_and_an_embedding_function_must_agree():
    model, params, vocab = setup()
    mesh = create_mesh((1, 1, 1))
    with pytest.raises(T5mtlError, match="one-device function but a mesh was given"):
        embed_texts(model, params, TEXTS[:2], vocab, LENGTH, 2, encoder_embedding_fn(model),
                    mesh=mesh)
    other = create_mesh((1, 1, 1))
    other = type(other)(other.devices, ("data", "fsdp", "other"))
    with pytest.raises(T5mtlError, match=r"embed_fn is for mesh .*'model': 1.* not the mesh given"):
        embed_texts(model, params, TEXTS[:2], vocab, LENGTH, 2, mesh_embedding_fn(model, mesh),
                    mesh=other)
