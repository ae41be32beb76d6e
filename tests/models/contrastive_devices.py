"""Run by tests/models/test_contrastive.py in a process with 8 CPU devices:
the contrastive losses and their gradients with the batch sharded over the
mesh's data axis, as JSON on the last line of stdout."""
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from t5mtl.models import contrastive


def main(path: str) -> None:
    data = np.load(path)
    q, k, valid, scale = data["q"], data["k"], data["valid"], float(data["scale"])
    mesh = jax.make_mesh((8, 1, 1), ("data", "fsdp", "model"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 3)
    rows = NamedSharding(mesh, P("data"))
    q8, k8, v8 = (jax.device_put(x, rows) for x in (q, k, valid))
    out = {"devices": len(jax.devices())}
    for symmetric in (True, False):
        forms = {
            "sharded": lambda a, b, s, v: contrastive.info_nce_sharded(
                a, b, s, mesh, ("data",), symmetric, v),
            "gspmd": lambda a, b, s, v: contrastive.info_nce(a, b, s, symmetric, v),
        }
        for form, fn in forms.items():
            for masked in (False, True):
                v = v8 if masked else None
                loss, grads = jax.jit(jax.value_and_grad(
                    lambda a, b, s: fn(a, b, s, v), argnums=(0, 1, 2)))(q8, k8, jnp.float32(scale))
                out[f"{form}/{symmetric}/{masked}"] = {
                    "loss": float(loss), "grads": [np.asarray(g).tolist() for g in grads]}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
