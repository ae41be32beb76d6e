"""tpu_scripts: the exact gcloud commands of --dry-run, and the --local
launcher (environment, output prefixes, exit status, a hung peer stopped).

The launcher running the real trainer on 2 processes is exercised by
tests/train/test_mesh_equivalence.py.
"""
import io
import os
import subprocess
import sys
import textwrap

import pytest

from tpu_scripts import launch, local

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TPU = ["--name", "t5-pod", "--zone", "us-central2-b", "--project", "my-proj"]


def dry_run(*argv):
    out = io.StringIO()
    assert launch.main([argv[0], "--dry-run", *argv[1:]], out=out) == 0
    return out.getvalue().splitlines()


def test_create():
    assert dry_run("create", *TPU, "--accelerator-type", "v4-32") == [
        "gcloud compute tpus tpu-vm create t5-pod --zone=us-central2-b --project=my-proj "
        "--accelerator-type=v4-32 --version=tpu-ubuntu2204-base"]
    assert dry_run("create", "--name", "x", "--zone", "z", "--spot") == [
        "gcloud compute tpus tpu-vm create x --zone=z --accelerator-type=v4-8 "
        "--version=tpu-ubuntu2204-base --spot"]


def test_install():
    lines = dry_run("install", *TPU, "--archive", "/tmp/src.tgz", "--source-dir", "/repo")
    assert lines == [
        "git -C /repo archive --format=tar.gz --output=/tmp/src.tgz HEAD",
        "gcloud compute tpus tpu-vm scp /tmp/src.tgz t5-pod:t5mtl-src.tar.gz "
        "--zone=us-central2-b --project=my-proj --worker=all",
        "gcloud compute tpus tpu-vm ssh t5-pod --zone=us-central2-b --project=my-proj "
        "--worker=all --command '(command -v python3.11 >/dev/null || (sudo apt-get update -qq "
        "&& sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 "
        "python3.11-venv)) && rm -rf ~/t5mtl && mkdir -p ~/t5mtl && tar -xzf "
        "~/t5mtl-src.tar.gz -C ~/t5mtl && python3.11 -m venv ~/t5mtl-venv && "
        "~/t5mtl-venv/bin/pip install -q -U pip && ~/t5mtl-venv/bin/pip install -q -e "
        "~/t5mtl \"jax[tpu]>=0.10.2,<0.11\" && ~/t5mtl-venv/bin/python -c \"import jax; "
        "print(jax.process_index(), jax.device_count())\"'",
    ]


def test_train_on_every_worker():
    lines = dry_run("train", *TPU, "--env", "XLA_FLAGS=--xla_dump_to=/tmp/x", "--",
                    "--gin_file=gin/runs/quickstart.gin", "--model_dir=/mnt/runs/q",
                    "--gin.train.mesh_shape=(-1, 1, 4)")
    assert lines == [
        "gcloud compute tpus tpu-vm ssh t5-pod --zone=us-central2-b --project=my-proj "
        "--worker=all --command 'cd ~/t5mtl && T5MTL_DISTRIBUTED=auto TF_CPP_MIN_LOG_LEVEL=2 "
        "XLA_FLAGS=--xla_dump_to=/tmp/x setsid nohup ~/t5mtl-venv/bin/t5mtl train "
        "--gin_file=gin/runs/quickstart.gin --model_dir=/mnt/runs/q "
        "'\"'\"'--gin.train.mesh_shape=(-1, 1, 4)'\"'\"' > ~/t5mtl-train.log 2>&1 < /dev/null & "
        "echo $! > ~/t5mtl-train.pid'"]
    # --follow then tails worker 0's log.
    lines = dry_run("train", *TPU, "--follow", "--", "--gin_file=g.gin", "--model_dir=d")
    assert len(lines) == 2 and lines[1].endswith(
        "--worker=0 --command 'tail -n 100 -F ~/t5mtl-train.log'")


def test_logs_stop_status_delete():
    assert dry_run("logs", *TPU) == [
        "gcloud compute tpus tpu-vm ssh t5-pod --zone=us-central2-b --project=my-proj "
        "--worker=0 --command 'tail -n 100 -F ~/t5mtl-train.log'"]
    assert dry_run("logs", "--name", "p", "--zone", "z", "--worker", "all", "--lines", "5",
                   "--no-follow") == [
        "gcloud compute tpus tpu-vm ssh p --zone=z --worker=all --command 'tail -n 5 "
        "~/t5mtl-train.log | sed -u \"s/^/[$(hostname)] /\"'"]
    assert dry_run("stop", "--name", "p", "--zone", "z") == [
        "gcloud compute tpus tpu-vm ssh p --zone=z --worker=all --command 'if [ -f "
        "~/t5mtl-train.pid ]; then kill -TERM $(cat ~/t5mtl-train.pid) 2>/dev/null || true; "
        "rm -f ~/t5mtl-train.pid; fi'"]
    assert "kill -KILL" in dry_run("stop", "--name", "p", "--zone", "z", "--force")[0]
    status = dry_run("status", "--name", "p", "--zone", "z")
    assert status[0] == ("gcloud compute tpus tpu-vm describe p --zone=z "
                         "'--format=value(state,acceleratorType)'")
    assert dry_run("delete", *TPU) == [
        "gcloud compute tpus tpu-vm delete t5-pod --zone=us-central2-b --project=my-proj "
        "--quiet"]


def test_name_and_zone_from_environment(monkeypatch):
    monkeypatch.setenv("T5MTL_TPU_NAME", "env-pod")
    monkeypatch.setenv("T5MTL_TPU_ZONE", "europe-west4-a")
    assert dry_run("delete") == [
        "gcloud compute tpus tpu-vm delete env-pod --zone=europe-west4-a --quiet"]


@pytest.mark.parametrize("argv, message", [
    (["delete"], "needs --name and --zone"),
    (["train", "--name", "p", "--zone", "z"], "arguments after `--`"),
    (["train", "--local", "2"], "arguments after `--`"),
    (["logs", "--name", "p", "--zone", "z", "--", "x"], "takes no arguments after `--`"),
    (["train", "--name", "p", "--zone", "z", "--env", "NOPE", "--", "a"], "NAME=VALUE"),
])
def test_bad_input_names_the_problem(argv, message, monkeypatch, capsys):
    monkeypatch.delenv("T5MTL_TPU_NAME", raising=False)
    monkeypatch.delenv("T5MTL_TPU_ZONE", raising=False)
    with pytest.raises(SystemExit) as e:
        launch.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_local_dry_run_shows_each_process():
    lines = local.describe(2, ["--gin_file=g.gin", "--model_dir=/tmp/m"], 4, port=12345,
                           python="python")
    assert lines == [
        f"T5MTL_COORDINATOR=127.0.0.1:12345 T5MTL_NUM_PROCESSES=2 T5MTL_PROCESS_ID={i} "
        f"T5MTL_CPU_COLLECTIVES=gloo JAX_PLATFORMS=cpu "
        f"XLA_FLAGS=--xla_force_host_platform_device_count=4 "
        f"python -m t5mtl.cli train --gin_file=g.gin --model_dir=/tmp/m" for i in range(2)]
    cli_lines = dry_run("train", "--local", "3", "--", "--gin_file=g.gin", "--model_dir=m")
    assert [line.split()[2] for line in cli_lines] == [f"T5MTL_PROCESS_ID={i}" for i in range(3)]


def test_process_env_replaces_device_count_and_keeps_other_flags():
    env = local.process_env(1, 2, 999, 3, base={
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_cpu_foo=1",
        "T5MTL_DISTRIBUTED": "auto"})
    assert env["XLA_FLAGS"] == "--xla_cpu_foo=1 --xla_force_host_platform_device_count=3"
    assert "T5MTL_DISTRIBUTED" not in env
    assert (env["T5MTL_COORDINATOR"], env["T5MTL_PROCESS_ID"]) == ("127.0.0.1:999", "1")


def _stand_in(body):
    """A child that runs `body` with its process id in `i`."""
    code = "import os, sys, time\ni = int(os.environ['T5MTL_PROCESS_ID'])\n" + \
        textwrap.dedent(body)
    return [sys.executable, "-c", code]


def test_local_prefixes_lines_and_passes_the_environment():
    out = io.StringIO()
    status = local.run_local(3, [], 2, port=4321, out=out, command=_stand_in("""
        print('hello from', i, os.environ['T5MTL_NUM_PROCESSES'],
              os.environ['T5MTL_COORDINATOR'], os.environ['XLA_FLAGS'].split()[-1])
        print('partial line', end='')
    """))
    assert status == 0
    lines = out.getvalue().splitlines()
    for i in range(3):
        assert (f"[{i}] hello from {i} 3 127.0.0.1:4321 "
                f"--xla_force_host_platform_device_count=2") in lines
        assert f"[{i}] partial line" in lines
    assert lines[-1] == "[launcher] exit codes: [0] 0, [1] 0, [2] 0"


def test_local_failure_stops_a_hung_peer_and_returns_its_status():
    out = io.StringIO()
    # Process 1 fails; process 0 would wait forever (as in a collective).
    status = local.run_local(2, [], 1, out=out, grace_s=0.5, command=_stand_in("""
        if i == 1:
            print('failing'); sys.exit(3)
        time.sleep(600)
    """))
    assert status == 3
    text = out.getvalue()
    assert "[1] failing" in text
    assert "[launcher] exit codes: [0] -15, [1] 3" in text  # 0 got SIGTERM


def test_local_timeout():
    out = io.StringIO()
    status = local.run_local(1, [], 1, out=out, timeout_s=0.5,
                             command=_stand_in("time.sleep(600)"))
    assert status == 124


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "tpu_scripts", "create", "--dry-run",
                           "--name", "n", "--zone", "z"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gcloud compute tpus tpu-vm create n --zone=z ")


# ----------------------------------------------------------------------------
# The other side: how `t5mtl train` reads what the launchers set
# ----------------------------------------------------------------------------

@pytest.fixture
def recorded_initialize(monkeypatch):
    import jax
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    for key in ("T5MTL_DISTRIBUTED", "T5MTL_COORDINATOR", "T5MTL_NUM_PROCESSES",
                "T5MTL_PROCESS_ID", "T5MTL_CPU_COLLECTIVES"):
        monkeypatch.delenv(key, raising=False)
    return calls


def test_train_joins_as_the_launchers_ask(recorded_initialize, monkeypatch):
    from t5mtl.train.command import maybe_initialize_distributed
    maybe_initialize_distributed()                       # nothing set: one process
    assert recorded_initialize == []
    monkeypatch.setenv("T5MTL_DISTRIBUTED", "auto")      # TPU: from the TPU metadata
    maybe_initialize_distributed()
    assert recorded_initialize == [((), {})]
    monkeypatch.delenv("T5MTL_DISTRIBUTED")
    monkeypatch.setenv("T5MTL_COORDINATOR", "127.0.0.1:1234")   # --local
    monkeypatch.setenv("T5MTL_NUM_PROCESSES", "2")
    monkeypatch.setenv("T5MTL_PROCESS_ID", "1")
    maybe_initialize_distributed()
    assert recorded_initialize[-1] == (("127.0.0.1:1234", 2, 1), {})


@pytest.mark.parametrize("env, message", [
    ({"T5MTL_DISTRIBUTED": "yes"}, "T5MTL_DISTRIBUTED='yes'"),
    ({"T5MTL_COORDINATOR": "h:1", "T5MTL_NUM_PROCESSES": "2"}, "T5MTL_PROCESS_ID not set"),
    ({"T5MTL_COORDINATOR": "h:1", "T5MTL_NUM_PROCESSES": "two", "T5MTL_PROCESS_ID": "0"},
     "must be integers"),
])
def test_train_rejects_half_set_environment(recorded_initialize, monkeypatch, env, message):
    from t5mtl.errors import T5mtlError
    from t5mtl.train.command import maybe_initialize_distributed
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(T5mtlError, match=message):
        maybe_initialize_distributed()
    assert recorded_initialize == []
