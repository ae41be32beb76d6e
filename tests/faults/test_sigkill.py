"""SIGKILL at 3 seeded random steps of one run (each restart resumes from
its latest checkpoint, async saves included), then the same result, bit for
bit, as the run never interrupted."""
import json
import os
import random
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

import t5mtl
from tests.faults.runs import ROOT, cli_train, env, tiny_args, train_command

NUM_STEPS = 24
ARGS = tiny_args(**{"train.num_steps": NUM_STEPS, "CheckpointConfig.period": 3,
                    "CheckpointConfig.keep": 100, "CheckpointConfig.async_save": True})


def _flat(tree):
    return {jax.tree_util.keystr(path): np.asarray(v)
            for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _last_step_since(metrics, offset):
    if not os.path.exists(metrics):
        return 0
    with open(metrics) as f:
        f.seek(offset)
        rows = [json.loads(line) for line in f.read().splitlines() if line.endswith("}")]
    return max([r["step"] for r in rows if r["split"] == "train"], default=0)


@pytest.mark.slow
def test_resume_after_sigkill_at_3_random_points_is_bit_identical(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    assert cli_train(full, *ARGS) == 0
    metrics = os.path.join(killed, "metrics.jsonl")
    points = sorted(random.Random(0).sample(range(2, NUM_STEPS - 1), 3))
    kills = []
    for point in points:
        offset = os.path.getsize(metrics) if os.path.exists(metrics) else 0
        proc = subprocess.Popen(train_command(killed, *ARGS), cwd=ROOT, env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline, size, step = time.time() + 300, -1, 0
        while proc.poll() is None and time.time() < deadline and step < point:
            # Parsed only when the file grew: a busy poll took a core from the run.
            time.sleep(0.005)
            if os.path.exists(metrics) and os.path.getsize(metrics) != size:
                size, step = os.path.getsize(metrics), _last_step_since(metrics, offset)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills.append(_last_step_since(metrics, offset))
    assert max(kills) < NUM_STEPS, f"a run finished before its kill: {kills}"
    done = subprocess.run(train_command(killed, *ARGS), cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stdout and f"trained to step {NUM_STEPS}" in done.stdout
    a, b = _flat(t5mtl.load(full).params), _flat(t5mtl.load(killed).params)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
