"""Run by tests/retrieval/test_embed_sharded.py in a process with 8 CPU
devices: `embed_texts` over two meshes (data=8, and data=2 x model=4 with
the params split over "model" by the logical axis rules), for batches that
the batch shards do not divide, as JSON on the last line of stdout. `setup`
is the model, params and texts both processes use."""
import json
import sys

import numpy as np

LENGTH = 16
TEXTS = ["a short one", "one short a", "films and critics", "the time machine",
         "a text longer than the embedding length, so that it is cut", "x",
         "eleven texts in all", "some more words", "tiny", "Atlas retrieves passages",
         "the last one"]
# (mesh shape, texts, batch_size): 5 texts in one batch of 3 -> 8 rows on
# data=8 (3 of them padding); 11 texts in batches of 8 (the last 3 real),
# the same program; 5 texts in batches of 3 -> 4 rows on data=2.
CASES = (((8, 1, 1), 5, 3), ((8, 1, 1), 11, 8), ((2, 1, 4), 5, 3))


def setup():
    """(model, params, vocabulary): t5_tiny with normal(0, 0.5) weights drawn
    in numpy from the shapes (no init program), the byte vocabulary."""
    import jax
    from t5mtl.data.vocab import get_vocabulary
    from t5mtl.models import get_config
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.models.init import param_shapes
    model = EncoderDecoderModel(get_config("t5_tiny"))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.normal(0.0, 0.5, s.shape).astype(np.float32),
                          param_shapes(model.config))
    return model, params, get_vocabulary()


def main() -> None:
    import jax
    from t5mtl.retrieval.embed import embed_texts, mesh_embedding_fn
    from t5mtl.train.partitioning import create_mesh
    model, params, vocab = setup()
    out = {"devices": len(jax.devices()), "cases": []}
    fns = {}
    for shape, count, batch_size in CASES:
        if shape not in fns:
            fns[shape] = mesh_embedding_fn(model, create_mesh(shape))
        fn = fns[shape]
        got = embed_texts(model, params, TEXTS[:count], vocab, LENGTH, batch_size, fn)
        placed = fn.place_params(params)
        kernel = placed["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
        out["cases"].append({"shape": shape, "shards": fn.shards,
                             "mlp_kernel_shard": list(kernel.addressable_shards[0].data.shape),
                             "embeddings": got.tolist()})
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
