"""`--local N`: a multi-process run on this machine, through `t5mtl train`.

The same entry point the TPU workers run, started N times with explicit
jax.distributed settings instead of TPU metadata:

  T5MTL_COORDINATOR=127.0.0.1:<free port>  T5MTL_NUM_PROCESSES=N
  T5MTL_PROCESS_ID=i  T5MTL_CPU_COLLECTIVES=gloo  JAX_PLATFORMS=cpu
  XLA_FLAGS=... --xla_force_host_platform_device_count=K

Each process's output lines are prefixed with "[i] ". The launcher waits for
all of them; if one fails the others get `grace_s` seconds to finish (they
usually hang in a collective), then SIGTERM, then SIGKILL. The exit status
is 0 only if every process exited 0.
"""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from typing import Mapping, Sequence, TextIO

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def free_port() -> int:
    """A TCP port nothing listens on right now (for the coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(index: int, num_processes: int, port: int, devices_per_process: int,
                base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of local process `index` (base: os.environ)."""
    env = dict(os.environ if base is None else base)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_COUNT_FLAG)]
    flags.append(f"{DEVICE_COUNT_FLAG}={devices_per_process}")
    env.update({
        "T5MTL_COORDINATOR": f"127.0.0.1:{port}",
        "T5MTL_NUM_PROCESSES": str(num_processes),
        "T5MTL_PROCESS_ID": str(index),
        "T5MTL_CPU_COLLECTIVES": "gloo",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": " ".join(flags),
        "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    })
    env.pop("T5MTL_DISTRIBUTED", None)
    return env


def train_command(train_args: Sequence[str], python: str = sys.executable) -> list[str]:
    """`t5mtl train ARGS`, via the interpreter running this launcher."""
    return [python, "-m", "t5mtl.cli", "train", *train_args]


def describe(num_processes: int, train_args: Sequence[str], devices_per_process: int,
             port: int, python: str = sys.executable) -> list[str]:
    """The shell lines a run would start (for --dry-run), one per process."""
    keys = ("T5MTL_COORDINATOR", "T5MTL_NUM_PROCESSES", "T5MTL_PROCESS_ID",
            "T5MTL_CPU_COLLECTIVES", "JAX_PLATFORMS", "XLA_FLAGS")
    lines = []
    for i in range(num_processes):
        env = process_env(i, num_processes, port, devices_per_process, base={})
        lines.append(" ".join([*(f"{k}={shlex.quote(env[k])}" for k in keys),
                               shlex.join(train_command(train_args, python))]))
    return lines


def _pump(index: int, stream, out: TextIO, lock: threading.Lock) -> None:
    for line in iter(stream.readline, ""):
        with lock:
            out.write(f"[{index}] {line if line.endswith(chr(10)) else line + chr(10)}")
            out.flush()
    stream.close()


def run_local(num_processes: int, train_args: Sequence[str], devices_per_process: int = 1,
              *, port: int | None = None, grace_s: float = 30.0, timeout_s: float | None = None,
              python: str = sys.executable, cwd: str | None = None,
              out: TextIO | None = None, command: Sequence[str] | None = None) -> int:
    """Runs `t5mtl train TRAIN_ARGS` as `num_processes` cooperating processes.

    `command` replaces `t5mtl train TRAIN_ARGS` (tests start stand-ins).
    Returns 0 if all exited 0, else the first failing process's exit status
    (124 if `timeout_s` ran out first, 130 on Ctrl-C).
    """
    if num_processes < 1 or devices_per_process < 1:
        raise ValueError(f"--local {num_processes} with {devices_per_process} devices per "
                         f"process: both must be at least 1")
    out = sys.stdout if out is None else out
    port = free_port() if port is None else port
    lock = threading.Lock()
    with lock:
        out.write(f"[launcher] {num_processes} processes x {devices_per_process} CPU devices, "
                  f"coordinator 127.0.0.1:{port}\n")
        out.flush()
    procs, pumps = [], []
    try:
        for i in range(num_processes):
            proc = subprocess.Popen(
                list(command) if command else train_command(train_args, python), cwd=cwd,
                env=process_env(i, num_processes, port, devices_per_process),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                text=True, bufsize=1, errors="replace")
            procs.append(proc)
            pump = threading.Thread(target=_pump, args=(i, proc.stdout, out, lock), daemon=True)
            pump.start()
            pumps.append(pump)
        status = _wait(procs, grace_s, timeout_s)
    except KeyboardInterrupt:
        _terminate(procs)
        status = 130
    for pump in pumps:
        pump.join(timeout=5)
    with lock:
        codes = ", ".join(f"[{i}] {p.returncode}" for i, p in enumerate(procs))
        out.write(f"[launcher] exit codes: {codes}\n")
        out.flush()
    return status


def _wait(procs: list[subprocess.Popen], grace_s: float, timeout_s: float | None) -> int:
    start = time.monotonic()
    failed_at, status = None, 0
    while True:
        codes = [p.poll() for p in procs]
        if status == 0:
            bad = [c for c in codes if c not in (None, 0)]
            if bad:
                status, failed_at = bad[0], time.monotonic()
        if all(c is not None for c in codes):
            return status
        now = time.monotonic()
        if failed_at is not None and now - failed_at > grace_s:
            _terminate(procs)
            return status
        if timeout_s is not None and now - start > timeout_s:
            _terminate(procs)
            return 124
        time.sleep(0.1)


def _terminate(procs: list[subprocess.Popen], wait_s: float = 10.0) -> None:
    """SIGTERM the processes still running, then SIGKILL those that stay."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + wait_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
