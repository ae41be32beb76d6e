"""AtlasModel trains through `train()` on a round's FiD rows registered as a
seqio task (t5mtl/data/fid_task.py): the trainer reads the [k, l] rows, the
distillation metrics are logged over the batch's questions, and with
separate towers and query-side training the passage tower is left exactly
as it was while the query tower moves."""
import json

import jax
import numpy as np

import t5mtl
from t5mtl.data.data_config import DataConfig
from t5mtl.data.fid_task import register_fid_task
from t5mtl.data.vocab import get_vocabulary
from t5mtl.models import get_config
from t5mtl.models.atlas import AtlasModel
from t5mtl.models.dual_encoder import DualEncoder
from t5mtl.models.fusion_in_decoder import FusionInDecoder
from t5mtl.train.trainer import CheckpointConfig, train

CONFIG = get_config("t5_tiny")
B, K, L, LQ, LP, T = 4, 3, 10, 6, 8, 5


def _rows():
    rng = np.random.RandomState(0)
    ids = lambda *shape: rng.randint(2, CONFIG.vocab_size, shape).astype(np.int32)  # noqa: E731
    tokens, passages, query, targets = ids(B, K, L), ids(B, K, LP), ids(B, LQ), ids(B, T)
    tokens[1, 2], passages[1, 2] = 0, 0                  # question 1 has two passages
    targets[:, 4:] = 0
    return {"encoder_input_tokens": tokens, "query_tokens": query, "passage_tokens": passages,
            "decoder_target_tokens": targets}


def test_atlas_trains_on_a_registered_round(tmp_path):
    register_fid_task("test_atlas_round", _rows(), get_vocabulary("byte"))
    model = AtlasModel(FusionInDecoder(CONFIG), DualEncoder(CONFIG, shared=False),
                       distillation="adist", retriever_training="query")
    data = DataConfig("test_atlas_round", {"inputs": L, "queries": LQ, "passages": LP,
                                           "targets": T}, batch_size=B, pack=False,
                      shuffle=False, truncation_check_examples=0)
    summary = train(str(tmp_path), model=model, data=data, num_steps=2,
                    checkpoints=CheckpointConfig(period=1, keep=2, async_save=False),
                    log_period=1, show_progress=False)
    assert summary["step"] == 2 and np.isfinite(summary["loss"])
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")
            if '"train"' in line]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["num_questions"] == B and r["distillation_kl"] > 0
        np.testing.assert_allclose(r["loss"], r["reader_loss"] + r["distillation_kl"],
                                   rtol=1e-5)
    before, after = (t5mtl.load(str(tmp_path), step=s).params["retriever"] for s in (1, 2))
    same = lambda a, b: all(np.array_equal(x, y) for x, y in  # noqa: E731
                            zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert same(before["passage"], after["passage"])
    assert not same(before["query"], after["query"])
