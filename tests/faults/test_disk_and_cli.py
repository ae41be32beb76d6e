"""A disk that fills mid-save, a read-only model_dir, unparsable gin values,
a quiet start: each one line on stderr, its exit code, and no earlier
checkpoint changed."""
import logging
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.faults.runs import (ROOT, checkpoint_files, cli_train, env, error_lines, files,
                               remount, steps, tiny_args, tmpfs)

RESUME = {"train.num_steps": 10, "CheckpointConfig.period": 1, "CheckpointConfig.keep": 10,
          "CheckpointConfig.async_save": True}


def _used_bytes(path):
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_a_disk_that_fills_mid_save_stops_at_once_and_keeps_every_checkpoint(
        finished_run, monkeypatch, capsys, caplog):
    monkeypatch.chdir(ROOT)
    with tmpfs("64m") as (mount, why):
        if mount is None:
            pytest.skip(f"cannot mount a tmpfs here ({why})")
        run = os.path.join(mount, "run")
        shutil.copytree(finished_run, run)
        ckpt_bytes = sum(os.path.getsize(os.path.join(r, f))
                         for r, _, fs in os.walk(os.path.join(run, "checkpoints", "4"))
                         for f in fs)
        # Room for about one and a half more checkpoints (async saves).
        remount(mount, f"size={_used_bytes(mount) + int(1.5 * ckpt_bytes) + (64 << 10)}")
        before = {s: checkpoint_files(run, s) for s in (2, 4)}
        with caplog.at_level(logging.WARNING):
            assert cli_train(run, *tiny_args(**RESUME)) == 2
        err = error_lines(capsys.readouterr().err)
        assert len(err) == 1, err
        found = re.search(r"t5mtl train: error: checkpoint (\S+)/checkpoints/(\d+) was not "
                          r"saved: No space left on device \(errno 28\)\. Training stopped; "
                          r"earlier checkpoints are unchanged \(latest kept: step (\d+)\)", err[0])
        assert found and found.group(1) == run, err
        failed, kept = int(found.group(2)), int(found.group(3))
        assert kept == failed - 1 >= 4 and steps(run) == list(range(2, 4, 2)) + \
            list(range(4, failed))
        assert {s: checkpoint_files(run, s) for s in (2, 4)} == before
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        # The error surfaced at the step after the failed save, not at exit.
        import json
        rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
        assert max(r["step"] for r in rows) <= failed + 1
        assert any(".orbax-checkpoint-tmp" in d for d in os.listdir(os.path.join(run,
                                                                                 "checkpoints")))
        # With room again, the next start removes the torn directory and finishes.
        remount(mount, "size=64m")
        with caplog.at_level(logging.WARNING):
            assert cli_train(run, *tiny_args(**RESUME)) == 0
        assert "removing torn checkpoint" in caplog.text
        assert not [d for d in os.listdir(os.path.join(run, "checkpoints")) if not d.isdigit()]
        assert steps(run)[-1] == 10
        assert {s: checkpoint_files(run, s) for s in (2, 4)} == before


def test_a_read_only_model_dir_is_one_line(finished_run, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    with tmpfs("64m") as (mount, why):
        if mount is None:
            pytest.skip(f"cannot mount a tmpfs here ({why})")
        run = os.path.join(mount, "run")
        shutil.copytree(finished_run, run)
        before = files(run)
        remount(mount, "ro")
        assert cli_train(run, *tiny_args(**RESUME)) == 2
        err = error_lines(capsys.readouterr().err)
        assert len(err) == 1 and err[0].startswith("t5mtl train: error: ") and \
            "Read-only file system (errno 30)" in err[0] and run in err[0], err
        assert files(run) == before


@pytest.mark.parametrize("binding,expected", [
    ("train.num_steps=((", "--gin.train.num_steps=((: cannot parse the value (EOF in "
                           "multi-line statement)"),
    ("train.num_steps=", "--gin.train.num_steps=: cannot parse the value"),
    ("train.num_stepz=3", "--gin.train.num_stepz=3: Configurable 'train' doesn't have a "
                          "parameter named 'num_stepz'"),
])
def test_a_bad_gin_value_is_one_line_naming_it(tmp_path, monkeypatch, capsys, binding,
                                               expected):
    monkeypatch.chdir(ROOT)
    assert cli_train(str(tmp_path / "run"), *TINY, f"--gin.{binding}") == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith(f"t5mtl train: error: {expected}"), err
    assert not os.path.exists(tmp_path / "run")


TINY = tiny_args()


def test_start_up_is_quiet_on_a_cpu_only_host():
    """No CUDA or TensorFlow notices (the CLI re-executes itself once: nothing
    may print twice either); a tf.data pipeline runs."""
    done = subprocess.run([sys.executable, "-m", "t5mtl.cli", "tasks", "show", "synth_parity",
                           "--n", "1"], cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip()
    noise = [line for line in done.stderr.splitlines()
             if re.search(r"cuInit|CUDA|cuda|oneDNN|cudart|absl::InitializeLog|cpu_feature_guard",
                          line)]
    assert not noise, noise
