"""The real trainer (`t5mtl train`) gives the same losses, step by step, on
1 device; on 8 fake CPU devices as data=8, data=2 x model=4 and
fsdp=4 x model=2; and on 2 processes x 2 devices launched by
`python -m tpu_scripts train --local 2` (gloo collectives), within 1e-5
relative.

Same data in every layout: one synthetic task, unshuffled and unpacked.
The source shards by example index (i % num_shards), so the processes of a
data-parallel run feed exactly the examples of the single-device batch, in
another row order, which the token-averaged loss does not see.

Each configuration runs as its own subprocess (XLA_FLAGS must be set before
jax is imported); the three 8-device layouts share one process, calling
the CLI entry point in-process once per mesh shape. The three subprocesses
run at once. Run as a script, this file is that 8-device helper.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
NUM_STEPS = 5
RTOL = 1e-5

# gin/runs/quickstart.gin with the tiny model, a small batch, no eval, no
# dropout, a constant learning rate, logging every step.
TRAIN_ARGS = [
    "--gin_file=gin/runs/quickstart.gin",
    "--gin.get_config.name='t5_tiny'",
    "--gin.get_config.dropout_rate=0.0",
    "--gin.DataConfig.mixture_or_task_name='synth_add'",
    "--gin.DataConfig.batch_size=8",
    "--gin.DataConfig.task_feature_lengths={'inputs': 32, 'targets': 8}",
    "--gin.DataConfig.pack=False",
    "--gin.DataConfig.shuffle=False",
    "--gin.EvalConfig.tasks=[]",
    "--gin.learning_rate_schedule.name='constant'",
    "--gin.learning_rate_schedule.warmup_steps=0",
    f"--gin.train.num_steps={NUM_STEPS}",
    "--gin.train.log_period=1",
    "--gin.train.show_progress=False",
    "--gin.CheckpointConfig.async_save=False",
]
# name -> (data, fsdp, model)
LAYOUTS_8 = {"data=8": (8, 1, 1), "data=2 x model=4": (2, 1, 4), "fsdp=4 x model=2": (1, 4, 2)}
LAYOUT_2X2 = (2, 1, 2)  # data=2 across the processes, model=2 inside each
TIMEOUT_S = 600


def _mesh_arg(shape):
    return f"--gin.train.mesh_shape=({shape[0]}, {shape[1]}, {shape[2]})"


def _env(num_devices=None):
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    if num_devices:
        flags.append(f"--xla_force_host_platform_device_count={num_devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["JAX_PLATFORMS"] = "cpu"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    for key in ("T5MTL_COORDINATOR", "T5MTL_DISTRIBUTED", "T5MTL_NUM_PROCESSES",
                "T5MTL_PROCESS_ID"):
        env.pop(key, None)
    return env


def _losses(model_dir):
    rows = [json.loads(line) for line in open(os.path.join(model_dir, "metrics.jsonl"))]
    rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in rows] == list(range(1, NUM_STEPS + 1)), model_dir
    return [r["loss"] for r in rows]


def _finish(name, proc):
    try:
        stdout, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, _ = proc.communicate()
        pytest.fail(f"{name} timed out:\n{stdout[-3000:]}")
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{stdout[-4000:]}"
    return stdout


@pytest.fixture(scope="module")
def runs():
    """Starts the three subprocesses together and returns their results."""
    root = tempfile.mkdtemp(prefix="t5mtl_mesh_")
    common = dict(cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    one = subprocess.Popen(
        [sys.executable, "-m", "t5mtl.cli", "train", *TRAIN_ARGS, _mesh_arg((1, 1, 1)),
         f"--model_dir={root}/one_device"], env=_env(1), **common)
    eight = subprocess.Popen([sys.executable, __file__, root], env=_env(8), **common)
    two = subprocess.Popen(
        [sys.executable, "-m", "tpu_scripts", "train", "--local", "2",
         "--devices-per-process", "2", "--timeout", str(TIMEOUT_S - 60), "--",
         *TRAIN_ARGS, _mesh_arg(LAYOUT_2X2), f"--model_dir={root}/two_processes"],
        env=_env(), **common)
    procs = {"1 device": one, "8 devices": eight, "2 processes": two}
    try:
        outputs = {name: _finish(name, proc) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    eight_info = json.loads(outputs["8 devices"].strip().splitlines()[-1])
    return {"root": root, "outputs": outputs, "eight": eight_info}


@pytest.mark.slow
def test_trains(runs):
    losses = _losses(os.path.join(runs["root"], "one_device"))
    assert losses[-1] < 0.75 * losses[0], losses  # the parameters really move


@pytest.mark.parametrize("layout", list(LAYOUTS_8))
def test_eight_fake_devices(runs, layout):
    reference = _losses(os.path.join(runs["root"], "one_device"))
    info = runs["eight"][layout]
    assert info["mesh"] == dict(zip(("data", "fsdp", "model"), LAYOUTS_8[layout]))
    assert info["num_devices"] == 8
    # The layout reached the parameters: wi is sharded over fsdp and model.
    assert info["wi_spec"] == ["fsdp", "model"]
    assert info["wi_shards"] == LAYOUTS_8[layout][1] * LAYOUTS_8[layout][2]
    np.testing.assert_allclose(info["losses"], reference, rtol=RTOL, atol=0, err_msg=layout)


def test_two_processes_by_local_launcher(runs):
    reference = _losses(os.path.join(runs["root"], "one_device"))
    out = runs["outputs"]["2 processes"]
    assert "[launcher] exit codes: [0] 0, [1] 0" in out
    assert "[0] trained to step 5" in out  # process 0 prints the summary
    losses = _losses(os.path.join(runs["root"], "two_processes"))
    np.testing.assert_allclose(losses, reference, rtol=RTOL, atol=0)


# ----------------------------------------------------------------------------
# The 8-device helper: `python test_mesh_equivalence.py ROOT`
# ----------------------------------------------------------------------------

def _run_eight_layouts(root):
    import gin
    import jax

    from t5mtl import cli
    from t5mtl.train import partitioning, trainer

    seen = {}
    create_mesh, create_train_state = partitioning.create_mesh, trainer.create_train_state

    def recording_mesh(*args, **kwargs):
        mesh = create_mesh(*args, **kwargs)
        seen["mesh"] = {k: int(v) for k, v in mesh.shape.items()}
        seen["num_devices"] = int(mesh.devices.size)
        return mesh

    def recording_state(*args, **kwargs):
        state, shardings = create_train_state(*args, **kwargs)
        wi = state.params["decoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
        seen["wi_spec"] = list(wi.sharding.spec)
        seen["wi_shards"] = len({idx for idx in _shard_indices(wi)})
        return state, shardings

    partitioning.create_mesh, trainer.create_train_state = recording_mesh, recording_state
    results = {}
    for name, shape in LAYOUTS_8.items():
        gin.clear_config()
        seen.clear()
        model_dir = os.path.join(root, name.replace(" ", "").replace("=", ""))
        status = cli.main(["train", *TRAIN_ARGS, _mesh_arg(shape), f"--model_dir={model_dir}"])
        assert status == 0, (name, status)
        results[name] = {**seen, "losses": _losses(model_dir)}
    assert jax.device_count() == 8
    print(json.dumps(results))


def _shard_indices(array):
    return [tuple((s.start, s.stop) for s in shard.index) for shard in array.addressable_shards]


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    _run_eight_layouts(sys.argv[1])
