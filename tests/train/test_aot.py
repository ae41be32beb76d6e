"""`t5mtl compile`: TPU slice names, collective bytes counted from HLO
(loops times their trip counts), and the real train step compiled for 8
devices: per-device argument bytes equal the state and batch shards summed
by hand, the gradient all-reduce equals the parameters' bytes; and, with
libtpu, the same step compiled for a TPU v5e-8 slice from this CPU host."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from t5mtl.errors import T5mtlError
from t5mtl.models.configs import get_config
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.models.flops import t5_train_flops
from t5mtl.train import aot
from t5mtl.train.optimizers import create_optimizer
from t5mtl.train.train_step import TrainState

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GIN = ["--gin_file=gin/runs/quickstart.gin"]          # t5_small_cpu, batch 64, 64/16 packed


@pytest.mark.parametrize("name,topology", [
    ("v4-8", "v4:2x2x1"), ("v4-16", "v4:2x2x2"), ("v4-128", "v4:4x4x4"),
    ("v5p-8", "v5p:2x2x1"), ("v5e-1", "v5e:1x1"), ("v5e-8", "v5e:2x4"),
    ("v5e-16", "v5e:4x4"), ("v5e-256", "v5e:16x16"), ("v6e-64", "v6e:8x8")])
def test_slice_names_to_topologies(name, topology):
    assert aot.tpu_topology(name)[1] == topology


@pytest.mark.parametrize("name", ["v3-8", "v4-7", "v5e-12", "v5e"])
def test_bad_slice_names_are_named(name):
    with pytest.raises(T5mtlError, match=repr(name).replace("-", r"\-")):
        aot.tpu_topology(name)


HLO = """HloModule m

%body (p: (s32[], f32[4,8])) -> (s32[], f32[4,8]) {
  %p = (s32[], f32[4,8]{1,0}) parameter(0)
  %ag = f32[4,8]{1,0} all-gather(f32[1,8]{1,0} %x), dimensions={0}
  ROOT %t = (s32[], f32[4,8]{1,0}) tuple(%i, %ag)
}

%cond (p: (s32[], f32[4,8])) -> pred[] {
  ROOT %lt = pred[] compare(%a, %b), direction=LT
}

%cond2 (p: (s32[], f32[4,8])) -> pred[] {
  %c = s32[]{:T(128)} constant(5)
  %i = s32[]{:T(128)} get-tuple-element(%p), index=0
  ROOT %lt.2 = pred[]{:T(512)} compare(%i, %c), direction=LT, metadata={op_name="while/cond/lt"}
}

ENTRY %main (a: bf16[10]) -> bf16[10] {
  %a = bf16[10]{0} parameter(0)
  %w = (s32[], f32[4,8]{1,0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"3"}}
  %w2 = (s32[], f32[4,8]{1,0}) while(%init), condition=%cond2, body=%body
  %s = (f32[2]{0}, f32[8]{0}) all-gather-start(f32[2]{0} %y), dimensions={0}
  %d = f32[8]{0} all-gather-done(%s)
  ROOT %ar = bf16[10]{0} all-reduce(%a), to_apply=%add
}
"""


def test_collective_bytes_count_loops_by_their_trip_count():
    # all-gather: 3 trips (XLA's known_trip_count) + 5 trips (the condition's
    # i < 5, as TPU programs say it) of f32[4,8] (128 B), and the async
    # start's result f32[8] (32 B)
    assert aot.collective_bytes(HLO) == {"all-gather": (3 + 5) * 128 + 32, "all-reduce": 20}


def _compile(*extra, returncode=0):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, "-m", "t5mtl.cli", "compile", *GIN, "--json", *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == returncode, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _nbytes(tree) -> int:
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


@pytest.mark.slow
def test_data_parallel_step_on_eight_cpu_devices():
    # 0.01 GiB of "HBM" per device is too little: exit status 3, "does not fit".
    rep = _compile("--cpu_devices", "8", "--mesh", "8,1,1", "--hbm_gib", "0.01", returncode=3)
    assert rep["devices"] == 8 and rep["mesh"] == [8, 1, 1]
    # Data parallel: every device holds the whole state and 1/8 of the batch.
    model = EncoderDecoderModel(get_config("t5_small_cpu"))
    params = model.abstract_params()
    state = jax.eval_shape(lambda p: TrainState.create(
        p, create_optimizer("adafactor"), jax.numpy.zeros((2,), jax.numpy.uint32)), params)
    # 3 encoder and 6 decoder int32 features (task ids included) of 64 // 8 rows
    batch_bytes = 3 * (64 // 8) * 64 * 4 + 6 * (64 // 8) * 16 * 4
    # jit drops the inputs the step does not read (T5 reads no positions), so
    # the batch's share is an upper bound; the state is there whole.
    assert _nbytes(state) <= rep["argument_bytes"] <= _nbytes(state) + batch_bytes
    assert rep["argument_bytes"] > _nbytes(state) + batch_bytes // 2
    # The gradient all-reduce moves every float32 parameter's gradient, plus
    # what XLA reduces before summing (the tied embedding's two gradients,
    # the relative-position bias's as [heads, q, k]) and the metrics: 1.08x here.
    reduced = rep["collective_bytes"]["all-reduce"]
    assert _nbytes(params) <= reduced <= 1.1 * _nbytes(params)
    # T5's analytic step FLOPs (64 rows of 64 inputs, 16 targets) split over 8 devices.
    assert rep["flops_source"] == "analytic"
    assert rep["flops"] == t5_train_flops(get_config("t5_small_cpu"), 64, 64, 16) / 8
    assert rep["xla_flops"] > 0
    assert rep["total_bytes"] > rep["hbm_bytes"] == int(0.01 * aot.GIB)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed")
def test_the_step_compiles_for_a_tpu_slice_from_this_host():
    rep = _compile("--topology", "v5e-8", "--mesh", "1,8,1")
    assert rep["devices"] == 8 and rep["topology"] == "v5e:2x4"
    assert rep["hbm_bytes"] == 16 * aot.GIB and 0 < rep["total_bytes"] < rep["hbm_bytes"]
    # FSDP: each device holds about an eighth of the parameters (TPU tiles
    # pad small arrays, so at least that) and gathers them for the step.
    params = _nbytes(EncoderDecoderModel(get_config("t5_small_cpu")).abstract_params())
    assert rep["argument_bytes"] >= params / 8
    assert rep["collective_bytes"]["all-gather"] >= params * 7 / 8


def test_the_compilers_out_of_memory_is_the_report():
    err = RuntimeError("INTERNAL: while compiling\nRESOURCE_EXHAUSTED: Ran out of memory on HBM, "
                       "the total memory required for HLO temporaries (45.36G) exceeds "
                       "available HBM (30.75G).\nmore")
    assert aot.out_of_memory(err) == ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total "
                                      "memory required for HLO temporaries (45.36G) exceeds "
                                      "available HBM (30.75G).")
    assert aot.out_of_memory(ValueError("shapes do not match")) is None
