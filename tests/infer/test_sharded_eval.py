"""Evaluation over a device mesh (t5mtl.infer.sharded) gives the 1-device
results: a t5_tiny model trained a few steps on synth_parity, evaluated on 32
validation examples by TaskEvaluator (decode accuracy and a score metric),
rank classification and the decoder itself, on 8 fake CPU devices as data=8
and data=2 x model=4, equals the same evaluation with mesh=None (one device):
decoded ids identical, scores within 1e-5 relative. So does `t5mtl eval
--rank` on the saved model directory, with --mesh_shape 2,1,4 on 8 devices
and as 2 processes x 4 devices (jax.distributed) with --mesh_shape 4,1,2.

The 8-device runs share one subprocess (XLA_FLAGS must be set before jax is
imported); it and the 2-process launch run while this process computes the
1-device reference. Run as a script, this file is that helper:
`python test_sharded_eval.py DIR` loads the model directory DIR and prints
one JSON line.
"""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

TASK = "synth_parity"
SCORED_TASK = "synth_parity_with_scores"   # synth_parity plus a score metric
OPTIONS = ["even", "odd"]
LENGTHS = {"inputs": 32, "targets": 8}
NUM_EXAMPLES = 32
BATCH_SIZE = 16          # two eval batches, so batching is part of what's compared
TRAIN_STEPS = 30
LAYOUTS = {"data=8": (8, 1, 1), "data=2 x model=4": (2, 1, 4)}
TWO_PROCESS_MESH = "4,1,2"   # data spans the 2 processes, model=2 inside each
PAD_ROWS = 13            # not a multiple of the 8 batch shards
RTOL, ATOL = 1e-5, 1e-6
TIMEOUT_S = 600


def mean_log_likelihood(targets, scores):
    """A seqio score metric (its (targets, scores) arguments make it one)."""
    del targets
    return {"mean_log_likelihood": float(np.mean(scores))}


def _setup():
    import seqio

    import t5mtl.data.registry  # noqa: F401
    from t5mtl.models.configs import get_config
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    if SCORED_TASK not in seqio.TaskRegistry.names():
        task = seqio.get_mixture_or_task(TASK)
        seqio.TaskRegistry.add(
            SCORED_TASK, source=task.source, output_features=task.output_features,
            preprocessors=task.preprocessors, postprocess_fn=task.postprocessor,
            metric_fns=[*task.metric_fns, mean_log_likelihood])
    return EncoderDecoderModel(get_config("t5_tiny", dropout_rate=0.0))


def _train_params(model):
    """TRAIN_STEPS Adam steps on 4 fixed batches of synth_parity's train split."""
    import jax
    import optax
    import seqio
    ds = seqio.get_mixture_or_task(TASK).get_dataset(LENGTHS, split="train", shuffle=False)
    ds = seqio.EncDecFeatureConverter(pack=False)(ds, LENGTHS).batch(32).take(4)
    batches = list(ds.as_numpy_iterator())
    params = model.init_params(jax.random.PRNGKey(0))
    tx = optax.adam(3e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        grads = jax.grad(lambda p: model.loss_fn(p, batch, None)[0])(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for i in range(TRAIN_STEPS):
        params, opt_state = step(params, opt_state, batches[i % len(batches)])
    return jax.tree.map(np.asarray, params)


def _encoder_tokens():
    import seqio
    ds = seqio.get_mixture_or_task(TASK).get_dataset(LENGTHS, split="validation", shuffle=False)
    ds = seqio.EncDecFeatureConverter(pack=False)(ds, LENGTHS).take(NUM_EXAMPLES)
    return np.stack([ex["encoder_input_tokens"] for ex in ds.as_numpy_iterator()])


def evaluate_all(model, params, mesh) -> dict:
    """Everything compared, as JSON-able values (mesh None: one device)."""
    from t5mtl.infer import sharded
    from t5mtl.infer.evaluation import TaskEvaluator
    from t5mtl.infer.rank_classification import rank_classify
    from t5mtl.models.encoder_decoder import DecodeConfig
    metrics = TaskEvaluator(SCORED_TASK, LENGTHS, num_examples=NUM_EXAMPLES,
                            batch_size=BATCH_SIZE, mesh=mesh).evaluate(model, params)
    rank = rank_classify(model, params, TASK, OPTIONS, num_examples=NUM_EXAMPLES,
                         input_length=LENGTHS["inputs"], mesh=mesh)
    mesh = sharded.default_mesh() if mesh is None else mesh
    decode = sharded.decode_function(model, DecodeConfig(max_decode_length=LENGTHS["targets"]),
                                     mesh)
    ids = decode(sharded.place_params(model, params, mesh),
                 {"encoder_input_tokens": _encoder_tokens()})
    return {"metrics": metrics[SCORED_TASK], "rank_accuracy": rank["accuracy"],
            "rank_scores": rank["scores"].tolist(), "ids": ids.tolist()}


def _save_model_dir(path, model, params):
    import seqio

    from t5mtl.train import model_dir
    from t5mtl.data.vocab import vocabulary_spec
    vocab = seqio.get_mixture_or_task(TASK).output_features["targets"].vocabulary
    model_dir.write_model_json(path, model, vocabulary_spec(vocab))
    model_dir.save_params(path, params, step=TRAIN_STEPS)


def _eval_args(model_dir, mesh_shape):
    return ["eval", f"--model_dir={model_dir}", f"--task={TASK}", "--rank",
            f"--num_examples={NUM_EXAMPLES}", f"--mesh_shape={mesh_shape}",
            f"--gin.EvalConfig.batch_size={BATCH_SIZE}",
            f"--gin.EvalConfig.task_feature_lengths={LENGTHS!r}"]


def _two_processes(model_dir, result):
    """`t5mtl eval` as 2 processes x 4 CPU devices (jax.distributed, gloo)."""
    import io

    from tpu_scripts.local import run_local
    out = io.StringIO()
    result["status"] = run_local(
        2, [], devices_per_process=4, timeout_s=TIMEOUT_S - 60, cwd=ROOT, out=out,
        command=[sys.executable, "-m", "t5mtl.cli", *_eval_args(model_dir, TWO_PROCESS_MESH)])
    result["output"] = out.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Starts the 8-device helper and the 2-process `t5mtl eval`, computes
    the 1-device reference meanwhile, and returns all three."""
    model = _setup()
    params = _train_params(model)
    root = str(tmp_path_factory.mktemp("sharded_eval"))
    for name in ("eight", "two"):
        _save_model_dir(os.path.join(root, name), model, params)
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    for key in ("T5MTL_COORDINATOR", "T5MTL_DISTRIBUTED"):
        env.pop(key, None)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + ["--xla_force_host_platform_device_count=8"])
    proc = subprocess.Popen([sys.executable, __file__, os.path.join(root, "eight")], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    two = {}
    thread = threading.Thread(target=_two_processes, args=(os.path.join(root, "two"), two))
    thread.start()
    try:
        one = evaluate_all(model, params, None)      # meanwhile, the 1-device reference
        stdout, _ = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        thread.join()
    assert proc.returncode == 0, f"8-device helper exited {proc.returncode}:\n{stdout[-4000:]}"
    with open(os.path.join(root, "two", "metrics.jsonl")) as f:
        two["metrics"] = [json.loads(line) for line in f]
    return {"one": one, "eight": json.loads(stdout.strip().splitlines()[-1]), "two": two}


@pytest.mark.slow
def test_reference_is_not_degenerate(runs):
    one = runs["one"]
    ids = np.array(one["ids"])
    assert len({tuple(r) for r in ids}) > 1, "every example decodes the same"
    assert 0 < one["metrics"]["accuracy"] < 100, one["metrics"]
    assert 0 < one["rank_accuracy"] < 100, one["rank_accuracy"]
    assert np.isfinite(one["metrics"]["mean_log_likelihood"])
    assert one["metrics"]["mean_log_likelihood"] < 0
    scores = np.array(one["rank_scores"])
    assert scores.shape == (NUM_EXAMPLES, len(OPTIONS))
    assert len({tuple(np.round(r, 4)) for r in scores}) > 1


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_eight_devices_match_one(runs, layout):
    one, got = runs["one"], runs["eight"]["layouts"][layout]
    assert got["mesh"] == dict(zip(("data", "fsdp", "model"), LAYOUTS[layout]))
    assert got["ids"] == one["ids"]
    assert got["metrics"]["accuracy"] == one["metrics"]["accuracy"]
    np.testing.assert_allclose(got["metrics"]["mean_log_likelihood"],
                               one["metrics"]["mean_log_likelihood"], rtol=RTOL)
    assert got["rank_accuracy"] == one["rank_accuracy"]
    np.testing.assert_allclose(got["rank_scores"], one["rank_scores"], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_batch_and_params_are_sharded(runs, layout):
    data, fsdp, model = LAYOUTS[layout]
    got = runs["eight"]["layouts"][layout]
    # 16 rows over data x fsdp blocks, each block on model-many devices.
    block = 16 // (data * fsdp)
    rows = [tuple(r) for r in got["batch_rows"]]
    assert len(rows) == 8
    assert sorted(set(rows)) == [(i * block, (i + 1) * block) for i in range(data * fsdp)]
    assert all(rows.count(r) == model for r in set(rows))
    assert got["wi_spec"] == ["fsdp", "model"]
    assert got["wi_shards"] == fsdp * model
    assert got["params_kept"] is True      # params already on the mesh are not copied


def test_eval_command_on_a_mesh(runs):
    """`t5mtl eval --mesh_shape 2,1,4 --rank` on 8 devices: the 1-device numbers."""
    one, got = runs["one"], runs["eight"]["cli"]
    assert got["status"] == 0
    assert got["meshes"] == [{"data": 2, "fsdp": 1, "model": 4}]
    assert got["metrics"][f"{TASK}/accuracy"] == one["metrics"]["accuracy"]
    assert got["metrics"][f"{TASK}/rank_accuracy"] == one["rank_accuracy"]


def test_eval_command_on_two_processes(runs):
    """The same command as 2 cooperating processes: one global mesh, the
    batch split across them; process 0 writes the 1-device numbers."""
    one, two = runs["one"], runs["two"]
    assert two["status"] == 0, two["output"][-4000:]
    assert "[launcher] exit codes: [0] 0, [1] 0" in two["output"]
    assert len(two["metrics"]) == 1, two["metrics"]      # written once, by process 0
    assert two["metrics"][0][f"{TASK}/accuracy"] == one["metrics"]["accuracy"]
    assert two["metrics"][0][f"{TASK}/rank_accuracy"] == one["rank_accuracy"]


def test_eval_command_mesh_choice(runs):
    """--mesh_shape wins over gin's train.mesh_shape, which wins over data=all."""
    choice = runs["eight"]["mesh_choice"]
    assert choice["flag"] == {"data": 2, "fsdp": 1, "model": 4}
    assert choice["gin"] == {"data": 4, "fsdp": 2, "model": 1}
    assert choice["flag_over_gin"] == {"data": 1, "fsdp": 8, "model": 1}
    assert choice["default"] == {"data": 8, "fsdp": 1, "model": 1}


def test_padding_keeps_row_order():
    from t5mtl.infer.sharded import pad_rows
    x = np.arange(PAD_ROWS * 3).reshape(PAD_ROWS, 3)
    padded, n = pad_rows({"x": x, "y": -x[:, 0]}, 8)
    assert n == PAD_ROWS
    assert padded["x"].shape == (16, 3) and padded["y"].shape == (16,)
    np.testing.assert_array_equal(padded["x"][:PAD_ROWS], x)
    np.testing.assert_array_equal(padded["x"][PAD_ROWS:], np.repeat(x[:1], 3, axis=0))
    np.testing.assert_array_equal(padded["y"][:PAD_ROWS], -x[:, 0])
    same, n = pad_rows({"x": x[:8]}, 8)
    assert n == 8 and same["x"].shape == (8, 3)


def test_sharded_function_trims_to_rows_in_order(runs):
    """13 rows on data=8 (padded to 16, 2 per device) come back as 13, in order."""
    x = np.arange(PAD_ROWS * 3).reshape(PAD_ROWS, 3)
    for layout in LAYOUTS:
        got = runs["eight"]["layouts"][layout]["pad_trim"]
        np.testing.assert_array_equal(got, x.sum(axis=1) * 10 + 1, err_msg=layout)


# ----------------------------------------------------------------------------
# The 8-device helper: `python test_sharded_eval.py DIR`
# ----------------------------------------------------------------------------

def _run_eight(root):
    import jax

    import t5mtl
    from t5mtl.infer import sharded
    from t5mtl.train import partitioning
    assert jax.device_count() == 8, jax.devices()
    model = _setup()
    params = t5mtl.load(root).params          # numpy, as `t5mtl eval` gets them
    out = {}
    for name, shape in LAYOUTS.items():
        mesh = partitioning.create_mesh(shape)
        placed = sharded.place_params(model, params, mesh)
        wi = placed["decoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
        kept = sharded.place_params(model, placed, mesh)
        batch = sharded.place_batch({"x": np.zeros((16, 2), np.int32)}, mesh)["x"]
        fn = sharded.MeshFunction(lambda p, b: b["x"].sum(axis=1) * p + 1, mesh)
        x = np.arange(PAD_ROWS * 3).reshape(PAD_ROWS, 3)
        out[name] = {
            **evaluate_all(model, placed, mesh),
            "mesh": {k: int(v) for k, v in mesh.shape.items()},
            "wi_spec": list(wi.sharding.spec),
            "wi_shards": len({tuple((s.start, s.stop) for s in sh.index)
                              for sh in wi.addressable_shards}),
            "params_kept": all(a is b for a, b in zip(jax.tree.leaves(placed),
                                                      jax.tree.leaves(kept))),
            "batch_rows": [[sh.index[0].start, sh.index[0].stop]
                           for sh in batch.addressable_shards],
            "pad_trim": fn(np.int32(10), {"x": x}).tolist(),
        }
    print(json.dumps({"layouts": out, "cli": _run_cli(root),
                      "mesh_choice": _mesh_choice()}))


def _run_cli(root):
    from t5mtl import cli
    from t5mtl.train import partitioning
    meshes, create_mesh = [], partitioning.create_mesh

    def recording_mesh(*args, **kwargs):
        mesh = create_mesh(*args, **kwargs)
        meshes.append({k: int(v) for k, v in mesh.shape.items()})
        return mesh

    partitioning.create_mesh = recording_mesh
    try:
        status = cli.main(_eval_args(root, "2,1,4"))
    finally:
        partitioning.create_mesh = create_mesh
    with open(os.path.join(root, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {"status": status, "meshes": meshes, "metrics": rows[-1]}


def _mesh_choice():
    import gin

    from t5mtl import gin_config
    from t5mtl.infer.eval_command import eval_mesh

    def shape(mesh):
        return {k: int(v) for k, v in mesh.shape.items()}

    gin.clear_config()
    gin_config.parse([], [])
    out = {"default": shape(eval_mesh(None)), "flag": shape(eval_mesh("2,1,4"))}
    gin.clear_config()
    gin_config.parse([], ["train.mesh_shape = (4, 2, 1)"])
    out.update(gin=shape(eval_mesh(None)), flag_over_gin=shape(eval_mesh("1,-1,1")))
    gin.clear_config()
    return out


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    _run_eight(sys.argv[1])
