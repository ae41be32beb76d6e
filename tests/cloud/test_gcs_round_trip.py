"""A model_dir on gs:// (the emulator), end to end: `t5mtl train` there,
SIGKILLed mid-run and resumed, ends bit for bit where the same run on local
disk ends; `t5mtl eval` and `t5mtl convert` read and write it there."""
import json
import signal
import subprocess
import time

import gin
import jax
import numpy as np
import pytest

import t5mtl
from t5mtl import cli, paths
from tests.faults.runs import ROOT, cli_train, env, tiny_args, train_command

NUM_STEPS = 12
KILL_AFTER = 7          # checkpoints every 3 steps: the kill comes after 6 is (being) saved
ARGS = tiny_args(**{"train.num_steps": NUM_STEPS, "CheckpointConfig.period": 3,
                    "CheckpointConfig.keep": 100, "CheckpointConfig.async_save": True})


def _cli(*args) -> int:
    """`t5mtl ARGS` in this process, with gin cleared first."""
    gin.clear_config()
    return cli.main(list(args))


def _flat(tree):
    return {jax.tree_util.keystr(path): np.asarray(v)
            for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _assert_same_params(a, b):
    a, b = _flat(a), _flat(b)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def _last_train_step(metrics: str) -> int:
    try:
        rows = [json.loads(line) for line in paths.read_text(metrics).splitlines()
                if line.endswith("}")]
    except FileNotFoundError:
        return 0
    return max([r["step"] for r in rows if r["split"] == "train"], default=0)


@pytest.mark.slow
def test_gs_model_dir_sigkill_resume_is_bit_identical_then_eval_and_convert(
        gcs_bucket, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    local, run = str(tmp_path / "local"), f"{gcs_bucket}/run"
    assert cli_train(local, *ARGS) == 0

    proc = subprocess.Popen(train_command(run, *ARGS), cwd=ROOT, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = paths.join(run, "metrics.jsonl")
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and \
            _last_train_step(metrics) < KILL_AFTER:
        time.sleep(0.05)    # each poll is a request the emulator serves
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    killed_at = _last_train_step(metrics)
    assert KILL_AFTER <= killed_at < NUM_STEPS, (killed_at, err[-2000:])

    done = subprocess.run(train_command(run, *ARGS), cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed from {run}/checkpoints/" in done.stdout
    assert f"trained to step {NUM_STEPS}" in done.stdout
    assert paths.isfile(paths.join(run, "config.gin"))
    assert any(n.startswith("events.out.tfevents") for n in paths.listdir(paths.join(run, "train")))
    params = t5mtl.load(run).params
    _assert_same_params(t5mtl.load(local).params, params)

    # eval reads the gs:// run (its config.gin included) and appends its metrics there
    capsys.readouterr()
    assert _cli("eval", f"--model_dir={run}", "--task=synth_parity", "--num_examples=8") == 0
    assert "synth_parity" in capsys.readouterr().out
    rows = [json.loads(line) for line in paths.read_text(metrics).splitlines()]
    assert rows[-1]["split"] == "eval"

    # convert: gs:// model_dir -> gs:// HF directory -> gs:// model_dir, same params
    hf, back = f"{gcs_bucket}/hf", f"{gcs_bucket}/back"
    assert _cli("convert", "--to", "hf", "--src", run, "--dst", hf) == 0
    assert paths.listdir(hf) == ["config.json", "model.safetensors"]
    assert _cli("convert", "--from", "hf", "--src", hf, "--dst", back) == 0
    _assert_same_params(params, t5mtl.load(back).params)


def test_a_missing_bucket_stops_train_and_eval_with_one_line(gcs_bucket, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    missing = "gs://no-such-bucket-t5mtl/run"
    assert cli_train(missing, *ARGS) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0] and missing in err[0] \
        and "does not exist" in err[0], err
    assert _cli("eval", f"--model_dir={missing}", "--task=synth_parity") != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and missing in err[0] and "does not exist" in err[0], err
