"""t5mtl/models/dual_encoder.py: the loss against numpy InfoNCE over the
pooled embeddings, padding rows, separate towers filled from one encoder,
and a trainer run (through the converter) that learns a synthetic pairing."""
import json

import jax
import numpy as np
import pytest
import seqio
import tensorflow as tf

from t5mtl.data.data_config import DataConfig
from t5mtl.data.vocab import get_vocabulary
from t5mtl.errors import T5mtlError
from t5mtl.models import get_config
from t5mtl.models.dual_encoder import DualEncoder
from t5mtl.models.encoder_backbone import mean_pool
from t5mtl.models.init import param_shapes
from t5mtl.models.t5 import Transformer
from t5mtl.train.optimizers import create_optimizer
from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
from tests.models.test_contrastive import numpy_info_nce

CONFIG = get_config("t5_tiny")


def _random(tree, seed=0):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.normal(0.0, 0.3, s.shape).astype(np.float32), tree)


def _batch(n=6, seed=1):
    rng = np.random.RandomState(seed)
    q = rng.randint(2, CONFIG.vocab_size, (n, 8)).astype(np.int32)
    p = rng.randint(2, CONFIG.vocab_size, (n, 12)).astype(np.int32)
    q[1, 5:] = 0
    p[2, 7:] = 0
    return {"query_tokens": q, "passage_tokens": p}


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_loss_is_numpy_info_nce_of_the_mean_pooled_t5_encoder(similarity):
    model = DualEncoder(CONFIG, similarity=similarity, temperature=0.1)
    params = _random(model.abstract_params())
    batch = _batch()
    loss, metrics = jax.jit(model.loss_fn)(params, batch, None)
    # the reference embeddings: T5's encoder (the full Transformer's, same
    # names), mean over real tokens, normalized for cosine
    full = {**_random(param_shapes(CONFIG), 5), **params}
    encode = jax.jit(lambda t: mean_pool(Transformer(CONFIG).apply(
        {"params": full}, t, method=Transformer.encode)))
    q, p = (np.asarray(encode(batch[k]), np.float64) for k in ("query_tokens", "passage_tokens"))
    if similarity == "cosine":
        q, p = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (q, p))
    want = numpy_info_nce(q, p, 10.0, symmetric=False)[0]
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    top1 = np.mean(np.argmax(q @ p.T, axis=1) == np.arange(6))
    np.testing.assert_allclose(float(metrics["accuracy"]), top1)
    # an all-padding query drops out: as if its pair were not in the batch
    padded = {k: np.concatenate([v, np.zeros_like(v[:1])]) for k, v in batch.items()}
    padded["passage_tokens"][-1, :3] = 7
    np.testing.assert_allclose(float(jax.jit(model.loss_fn)(params, padded, None)[0]),
                               float(loss), rtol=1e-6)


def test_separate_towers_start_from_one_encoder_and_round_trip():
    shared, separate = DualEncoder(CONFIG), DualEncoder(CONFIG, shared=False)
    assert set(separate.abstract_params()) == {"query", "passage"}
    one = _random(shared.abstract_params())
    both = separate.adapt_params(one)
    batch = _batch()
    np.testing.assert_allclose(np.asarray(separate.loss_fn(both, batch, None)[0]),
                               np.asarray(shared.loss_fn(one, batch, None)[0]), rtol=1e-6)
    again = DualEncoder.from_spec(separate.spec())
    assert again.spec() == separate.spec() and again.architecture()["shared"] is False
    with pytest.raises(T5mtlError, match="similarity must be one of"):
        DualEncoder(CONFIG, similarity="l2")
    with pytest.raises(T5mtlError, match="pack = False"):
        shared.feature_converter(pack=True)


def _pairing_task(name="dual_encoder_pairs_test"):
    """Query: three random letters; its passage: each letter moved 13 places
    (ROT13) and doubled, e.g. "abc" -> "nn oo pp": no letter in common, so
    an untrained encoder's embeddings do not pair them. A text-to-text task."""
    letters = "abcdefghijklmnopqrstuvwxyz"

    def dataset_fn(split, shuffle_files, seed=None):
        rng = np.random.RandomState(0 if split == "train" else 1)
        queries = ["".join(rng.choice(list(letters), 3)) for _ in range(2000)]
        return tf.data.Dataset.from_tensor_slices({
            "inputs": queries,
            "targets": [" ".join(letters[(letters.index(c) + 13) % 26] * 2 for c in q)
                        for q in queries]})

    vocab = get_vocabulary()
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(dataset_fn, ["train"]),
                           preprocessors=[seqio.preprocessors.tokenize,
                                          seqio.preprocessors.append_eos],
                           output_features={"inputs": seqio.Feature(vocab),
                                            "targets": seqio.Feature(vocab)},
                           metric_fns=[])
    return name


@pytest.mark.slow
def test_the_trainer_learns_to_pair_queries_with_passages(tmp_path):
    task = _pairing_task()
    try:
        summary = train(str(tmp_path / "run"), model=DualEncoder(CONFIG, temperature=0.1),
                        data=DataConfig(mixture_or_task_name=task, batch_size=32, pack=False,
                                        task_feature_lengths={"inputs": 4, "targets": 12}),
                        num_steps=120, optimizer=create_optimizer("adafactor",
                                                                  learning_rate=0.01),
                        checkpoints=CheckpointConfig(period=10 ** 6, async_save=False),
                        evaluation=EvalConfig(), log_period=10, show_progress=False)
    finally:
        seqio.TaskRegistry.remove(task)
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    train_rows = [r for r in rows if r.get("split") == "train"]
    first, last = train_rows[0], train_rows[-1]
    # chance is 1 in 32 in-batch. When written: steps 1-10 averaged 0.19
    # (learning already), steps 111-120 0.92.
    assert first["accuracy"] < 0.35 and last["accuracy"] > 0.8, (first, last)
    assert summary["step"] == 120
