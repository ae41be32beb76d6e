"""Conflict probes: the arithmetic on hand-made gradients, lookahead transfer
on a softmax-regression model computed by hand in numpy, and a tiny 2-task
run (PCGrad on, probes every step) summarized by `t5mtl conflict`."""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import seqio

from t5mtl import cli
from t5mtl.errors import T5mtlError
from t5mtl.mtl import conflict_command, probes


def _hand_grads():
    """Three tasks; per group (embeddings, encoder.0, decoder.0 and .1 of a
    scanned stack, rest) gradients with cosines worked out below."""
    emb = np.array([[1, 0], [0, 1], [-2, 0]], np.float32)       # cos 01 = 0, 02 = -1, 12 = 0
    enc = np.array([[3, 4], [3, 4], [0, 5]], np.float32)        # 01 = 1, 02 = 0.8, 12 = 0.8
    dec = np.array([[[1, 0], [0, 0]], [[1, 0], [0, 2]], [[0, 1], [0, 0]]], np.float32)
    head = np.array([[2], [-1], [0]], np.float32)               # task 2: zero here
    return {"token_embedder": {"embedding": emb},
            "encoder": {"layers_0": {"mlp": {"wo": {"kernel": enc}}}},
            "decoder": {"layers": {"mlp": {"wo": {"kernel": dec}}},
                        "logits_dense": {"kernel": head}}}


def test_groups_from_names():
    assert probes.leaf_group("token_embedder/embedding") == "embeddings"
    assert probes.leaf_group("encoder/layers_11/attention/query/kernel") == "encoder.11"
    assert probes.leaf_group("lora/decoder/layers_2/self_attention/value/kernel/a") \
        == "decoder.2"
    assert probes.leaf_group("decoder/layers/mlp/wo/kernel") == ("decoder", None)
    assert probes.leaf_group("decoder/logits_dense/kernel") == "rest"
    assert probes.leaf_group("encoder/relpos_bias/rel_embedding") == "rest"


def test_cosines_norms_and_ratios_on_hand_made_gradients():
    stats = probes.gradient_stats(jax.tree.map(jnp.asarray, _hand_grads()))
    groups = {k: np.asarray(v) for k, v in stats["groups"].items()}
    assert sorted(groups) == ["decoder.0", "decoder.1", "embeddings", "encoder.0", "rest"]
    np.testing.assert_array_equal(groups["decoder.0"], [[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(groups["decoder.1"], [[0, 0, 0], [0, 4, 0], [0, 0, 0]])
    # Whole model: squared norms 1+25+1+0+4 = 31, 1+25+1+4+1 = 32, 4+25+1 = 30;
    # dots 01: 0+25+1+0-2 = 24, 02: -2+20+0 = 18, 12: 0+20+0 = 20.
    np.testing.assert_array_equal(np.asarray(stats["gram"]),
                                  [[31, 24, 18], [24, 32, 20], [18, 20, 30]])
    result = {**stats, "present": np.array([True, True, True]),
              "task_loss": np.array([2.0, 4.0, 1.0]),
              "lookahead": np.array([[1.0, 5.0, 1.0], [2.0, 3.0, 0.5], [2.0, 4.0, 1.0]])}
    s = probes.probe_scalars(result, ["a", "b", "c"])
    assert s["conflict/cos/a/b"] == pytest.approx(24 / np.sqrt(31 * 32))
    assert s["conflict/cos/a/c"] == pytest.approx(18 / np.sqrt(31 * 30))
    assert s["conflict/norm/b"] == pytest.approx(np.sqrt(32))
    assert s["conflict/norm_ratio/a/c"] == pytest.approx(np.sqrt(31 / 30))
    assert s["conflict/group_cos/embeddings/a/c"] == pytest.approx(-1.0)
    assert s["conflict/group_cos/embeddings/a/b"] == 0.0
    assert s["conflict/group_cos/encoder.0/b/c"] == pytest.approx(0.8)
    assert s["conflict/group_cos/decoder.1/a/b"] == 0.0            # a zero gradient: 0
    assert s["conflict/group_cos/rest/a/b"] == pytest.approx(-1.0)
    assert s["conflict/transfer/a/b"] == pytest.approx(1 - 5 / 4)
    assert s["conflict/transfer/b/c"] == pytest.approx(0.5)
    assert s["conflict/transfer/c/c"] == 0.0
    assert "conflict/cos/b/a" not in s and "conflict/norm_ratio/c/a" not in s
    # An absent task: no scalar names it.
    absent = probes.probe_scalars({**result, "present": np.array([True, False, True])},
                                  ["a", "b", "c"])
    assert not any("/b" in k for k in absent) and "conflict/cos/a/c" in absent


def _softmax_loss(params, batch, rng, num_tasks=2):
    """Softmax regression, each task's mean cross-entropy over its rows."""
    logits = batch["x"] @ params["w"]
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["y"][:, None], 1)[:, 0]
    onehot = jax.nn.one_hot(batch["task"], num_tasks)
    counts = onehot.sum(0)
    task_loss = (onehot * ce[:, None]).sum(0) / jnp.maximum(counts, 1)
    return ce.mean(), {"task/loss": task_loss, "task/target_tokens": counts}


def test_lookahead_transfer_by_hand_on_softmax_regression():
    rng = np.random.default_rng(0)
    n, d, k, lr = 10, 4, 3, 0.7
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, k, size=n)
    task = np.array([0] * 4 + [1] * 6)
    w = rng.normal(size=(d, k)).astype(np.float32)

    def np_losses(w):
        z = x.astype(np.float64) @ w
        logp = z - z.max(1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
        ce = -logp[np.arange(n), y]
        return np.array([ce[task == t].mean() for t in (0, 1)]), np.exp(logp)

    loss0, p = np_losses(w.astype(np.float64))
    onehot_y = np.eye(k)[y]
    grads = [x[task == t].T.astype(np.float64) @ (p - onehot_y)[task == t] / (task == t).sum()
             for t in (0, 1)]                       # d/dW of a mean softmax cross-entropy
    want_transfer = np.array([1 - np_losses(w - lr * grads[i])[0] / loss0 for i in (0, 1)])
    want_cos = (grads[0] * grads[1]).sum() / np.linalg.norm(grads[0]) / np.linalg.norm(grads[1])

    probe = jax.jit(probes.make_probe(_softmax_loss, 2, lr))
    result = probe({"w": jnp.asarray(w)}, {"x": x, "y": y, "task": task})
    np.testing.assert_allclose(result["task_loss"], loss0, rtol=1e-5)
    np.testing.assert_allclose(probes.transfer(result["task_loss"], result["lookahead"]),
                               want_transfer, rtol=1e-4, atol=1e-5)
    assert np.abs(want_transfer).min() > 1e-3                      # not trivially zero
    s = probes.probe_scalars(result, ["t0", "t1"])
    assert s["conflict/cos/t0/t1"] == pytest.approx(want_cos, rel=1e-4)
    assert s["conflict/norm/t1"] == pytest.approx(np.linalg.norm(grads[1]), rel=1e-4)
    assert s["conflict/transfer/t0/t1"] == pytest.approx(want_transfer[0, 1], rel=1e-4)
    with pytest.raises(T5mtlError, match="conflict_probe_lr must be > 0, got 0"):
        probes.make_probe(_softmax_loss, 2, 0.0)


MIXTURE = "test_probes_mix"
TASKS = ["synth_add", "synth_uppercase"]
LENGTHS = {"inputs": 32, "targets": 8}


@pytest.mark.slow
def test_two_task_run_with_pcgrad_and_probes_and_the_conflict_command(tmp_path):
    import t5mtl.data.registry  # noqa: F401  (the synthetic suite)
    from t5mtl.data.batches import host_batches
    from t5mtl.data.data_config import DataConfig
    from t5mtl.models import get_config
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
    if MIXTURE not in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.add(MIXTURE, [(t, 1.0) for t in TASKS])
    model = EncoderDecoderModel(get_config("t5_tiny", dropout_rate=0.0))
    summary = train(str(tmp_path), model=model,
                    data=DataConfig(mixture_or_task_name=MIXTURE, task_feature_lengths=LENGTHS,
                                    batch_size=8, seed=3),
                    num_steps=2, optimizer=optax.sgd(0.1), log_period=1,
                    checkpoints=CheckpointConfig(async_save=False), evaluation=EvalConfig(),
                    show_progress=False, gradient_surgery="pcgrad", conflict_probe_period=1,
                    conflict_probe_lr=0.5)
    assert np.isfinite(summary["loss"])
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    conflict = [r for r in rows if r["split"] == "conflict"]
    assert [r["step"] for r in conflict] == [0, 1]
    a, b = sorted(TASKS)
    # Step 0's probe, recomputed: the run's initial params on its first batch.
    params = model.init_params(jax.random.PRNGKey(0))
    batch = next(host_batches(MIXTURE, LENGTHS, batch_size_per_host=8, seed=3, pack=True,
                              task_ids=True, shard_info=seqio.ShardInfo(0, 1)))
    direct = probes.probe_scalars(jax.jit(probes.make_probe(
        functools.partial(model.loss_fn, num_tasks=2), 2, 0.5))(params, batch), [a, b])
    for key in (f"conflict/cos/{a}/{b}", f"conflict/transfer/{a}/{b}",
                f"conflict/norm/{a}", f"conflict/group_cos/decoder.1/{a}/{b}"):
        assert conflict[0][key] == pytest.approx(direct[key], rel=1e-4, abs=1e-6), key
    assert conflict[0][f"conflict/transfer/{a}/{a}"] > 0        # a step on a lowers a's loss

    assert cli.main(["conflict", "--model_dir", str(tmp_path)]) == 0
    out = tmp_path / "conflict"
    for name in ("conflict.md", "cosine.png", "transfer.png", "cosine_over_time.png"):
        assert (out / name).stat().st_size > 0, name
    assert open(out / "cosine.png", "rb").read(4) == b"\x89PNG"
    table = open(out / "conflict.md").read()
    mean_cos = np.mean([r[f"conflict/cos/{a}/{b}"] for r in conflict])
    mean_transfer = np.mean([r[f"conflict/transfer/{b}/{a}"] for r in conflict])
    assert f"| {a} | 1.0000 | {mean_cos:.4f} |" in table
    assert f"| {b} | {mean_cos:.4f} | 1.0000 |" in table
    assert f"| {b} | {mean_transfer:.4f} |" in table
    assert "| decoder.1 |" in table and "| embeddings |" in table


def test_conflict_command_errors(tmp_path):
    with pytest.raises(T5mtlError, match="metrics.jsonl does not exist"):
        conflict_command.read_rows(str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "train"}) + "\n")
    with pytest.raises(T5mtlError, match="no conflict probe rows; train with "
                                         "train.conflict_probe_period"):
        conflict_command.read_rows(str(tmp_path))
    assert not os.path.exists(tmp_path / "conflict")
