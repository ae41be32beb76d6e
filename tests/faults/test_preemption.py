"""Re-running a finished run, and SIGTERM / SIGINT on and between checkpoint
steps, on 1 and 2 processes: exit 0, one save at one agreed step, earlier
checkpoints unchanged."""
import json
import os
import signal
import subprocess
import sys

import pytest

from t5mtl.train import nonfinite
from tests.faults.runs import (ROOT, checkpoint_files, children, cli_train, env, files, steps,
                               tiny_args)

RESUME = {"CheckpointConfig.period": 3, "CheckpointConfig.keep": 10,
          "train.num_steps": 100000}


def test_rerun_of_a_finished_run_says_so_and_changes_nothing(run_copy, capsys):
    before = files(run_copy)
    args = tiny_args(**{"train.num_steps": 4, "CheckpointConfig.period": 2,
                        "CheckpointConfig.keep": 10})
    assert cli_train(run_copy, *args) == 0
    out = capsys.readouterr().out
    assert f"{run_copy} is already trained to step 4 (train.num_steps=4); nothing to do" in out
    assert files(run_copy) == before


@pytest.mark.parametrize("signum,at_step,saved", [
    (signal.SIGTERM, 6, [2, 4, 6]),         # on checkpoint step 6 (period 3)
    (signal.SIGTERM, 7, [2, 4, 6, 7]),      # between checkpoint steps
    (signal.SIGINT, 5, [2, 4, 5]),          # Ctrl-C between checkpoint steps
], ids=["sigterm-on-checkpoint", "sigterm-between", "sigint-between"])
def test_a_signal_saves_once_and_exits_0(run_copy, monkeypatch, capsys, signum, at_step, saved):
    """The signal lands right after step `at_step`, before the loop decides
    to save it (where a checkpoint step blocks, so where it tends to land)."""
    add = nonfinite.NonFiniteGuard.add

    def add_then_signal(self, step, flag):
        add(self, step, flag)
        if step == at_step:
            os.kill(os.getpid(), signum)
    monkeypatch.setattr(nonfinite.NonFiniteGuard, "add", add_then_signal)
    before = {s: checkpoint_files(run_copy, s) for s in (2, 4)}
    assert cli_train(run_copy, *tiny_args(**RESUME)) == 0
    assert f"trained to step {at_step}" in capsys.readouterr().out
    assert steps(run_copy) == saved
    assert {s: checkpoint_files(run_copy, s) for s in (2, 4)} == before
    progress = json.load(open(os.path.join(run_copy, "checkpoints", str(at_step), "progress",
                                           "metadata")))
    assert progress["step"] == at_step and progress["data_position"] == at_step


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the processes in /proc")
@pytest.mark.parametrize("period", [1, 1000], ids=["on-checkpoint", "between"])
def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(tmp_path, period):
    """`tpu_scripts train --local 2` (2 processes x 1 CPU device, gloo);
    SIGTERM to process 1 alone after its step 3. Both leave the loop at the
    same step and save it together, once (with period 1 that step is already
    saved), and exit 0."""
    model_dir = str(tmp_path / "run")
    args = tiny_args(**{"train.num_steps": 100000, "CheckpointConfig.period": period,
                        "CheckpointConfig.keep": 100})
    launcher = subprocess.Popen(
        [sys.executable, "-m", "tpu_scripts", "train", "--local", "2", "--devices-per-process",
         "1", "--timeout", "240", "--", *args, "--gin_file=tests/faults/signal_hook.gin",
         f"--model_dir={model_dir}"],
        cwd=ROOT, env=env(T5MTL_TEST_SIGNAL_STEP="3", T5MTL_TEST_SIGNAL_PROCESS="1"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = launcher.communicate(timeout=240)
    finally:
        if launcher.poll() is None:         # a hang: stop the trainers, then the launcher
            for pid in children(launcher.pid).values():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            launcher.kill()
            out, _ = launcher.communicate()
    assert launcher.returncode == 0, out[-4000:]
    assert "[launcher] exit codes: [0] 0, [1] 0" in out
    stops = {}
    for line in out.splitlines():
        if "all processes save a checkpoint at step" in line:
            stops[line[:3]] = int(line.rsplit("step ", 1)[1].split()[0])
    assert sorted(stops) == ["[0]", "[1]"] and stops["[0]"] == stops["[1]"], out[-4000:]
    step = stops["[0]"]
    assert step >= 3 and f"[0] trained to step {step}" in out
    assert steps(model_dir) == (list(range(1, step + 1)) if period == 1 else [step])
    progress = json.load(open(os.path.join(model_dir, "checkpoints", str(step), "progress",
                                           "metadata")))
    assert progress["step"] == step


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_a_damaged_latest_checkpoint_is_skipped_kept_and_retrained(run_copy, caplog, damage):
    """Checkpoint 4's params files cut to nothing, or overwritten with
    garbage: the run resumes from 2, keeps the damaged step as
    4.unreadable, and saves step 4 again, bit for bit the original."""
    import jax
    import numpy as np

    import t5mtl
    original = [np.asarray(x) for x in jax.tree.leaves(t5mtl.load(run_copy).params)]
    before = checkpoint_files(run_copy, 2)
    for root, _, names in os.walk(os.path.join(run_copy, "checkpoints", "4", "params")):
        for name in names:
            path = os.path.join(root, name)
            size = os.path.getsize(path)
            with open(path, "wb") as f:
                f.write(b"" if damage == "truncated" else bytes(range(256)) * (size // 256 + 1))
    args = tiny_args(**{"train.num_steps": 4, "CheckpointConfig.period": 2,
                        "CheckpointConfig.keep": 10})
    with caplog.at_level("WARNING"):
        assert cli_train(run_copy, *args) == 0
    assert "skipping unreadable checkpoint" in caplog.text and "moving unreadable" in caplog.text
    assert steps(run_copy) == [2, 4]
    assert os.path.isdir(os.path.join(run_copy, "checkpoints", "4.unreadable"))
    assert checkpoint_files(run_copy, 2) == before
    again = [np.asarray(x) for x in jax.tree.leaves(t5mtl.load(run_copy).params)]
    assert all(np.array_equal(a, b) for a, b in zip(original, again))
