"""Shared pieces of the fault-injection suite: one tiny run's arguments, the
CLI in-process and as a subprocess, file hashes, processes, mounts."""
from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A tiny run through `t5mtl train` (config.gin included): t5_tiny, 8 x 32
# tokens; a few hundred milliseconds per step at most on 2 CPU cores.
TINY_ARGS = [
    "--gin_file=gin/runs/quickstart.gin",
    "--gin.get_config.name='t5_tiny'",
    "--gin.DataConfig.mixture_or_task_name='synth_parity'",
    "--gin.DataConfig.task_feature_lengths={'inputs': 32, 'targets': 8}",
    "--gin.DataConfig.batch_size=8",
    "--gin.EvalConfig.tasks=[]",
    "--gin.train.num_steps=2",
    "--gin.train.log_period=1",
    "--gin.train.show_progress=False",
    "--gin.CheckpointConfig.period=1",
    "--gin.CheckpointConfig.async_save=False",
]


def tiny_args(**overrides) -> list[str]:
    """TINY_ARGS with bindings replaced or added: tiny_args(**{"train.num_steps": 4})."""
    args = [a for a in TINY_ARGS
            if not any(a.startswith(f"--gin.{name}=") for name in overrides)]
    return args + [f"--gin.{name}={value}" for name, value in overrides.items()]


def cli_train(model_dir, *args) -> int:
    """`t5mtl train` in this process (args: tiny_args(...) or TINY_ARGS)."""
    import gin
    from t5mtl import cli
    gin.clear_config()
    return cli.main(["train", f"--model_dir={model_dir}", *(args or TINY_ARGS)])


def env(**extra) -> dict[str, str]:
    """A subprocess environment that imports this checkout on the CPU alone."""
    out = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    for key in ("T5MTL_COORDINATOR", "T5MTL_DISTRIBUTED", "T5MTL_NUM_PROCESSES",
                "T5MTL_PROCESS_ID", "T5MTL_DEBUG", "TF_CPP_MIN_LOG_LEVEL"):
        out.pop(key, None)
    out.update(extra)
    return out


def train_command(model_dir, *args) -> list[str]:
    return [sys.executable, "-m", "t5mtl.cli", "train", f"--model_dir={model_dir}",
            *(args or TINY_ARGS)]


def files(model_dir) -> dict[str, str]:
    """relative path -> sha256 of every file under model_dir."""
    out = {}
    for root, _, names in os.walk(model_dir):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, model_dir)] = hashlib.sha256(f.read()).hexdigest()
    return out


def checkpoint_files(model_dir, step: int) -> dict[str, str]:
    return {k: v for k, v in files(model_dir).items()
            if k.startswith(f"checkpoints/{step}/")}


def steps(model_dir) -> list[int]:
    ckpts = os.path.join(model_dir, "checkpoints")
    return sorted(int(d) for d in os.listdir(ckpts) if d.isdigit()) if os.path.isdir(ckpts) else []


def error_lines(stderr: str) -> list[str]:
    """stderr's lines other than the warnings a healthy run prints too."""
    return [line for line in stderr.splitlines()
            if line.strip() and not line.startswith("WARNING:absl:Features not in")]


def children(pid: int) -> dict[int, int]:
    """{T5MTL_PROCESS_ID: pid} of the processes `pid` started (Linux /proc)."""
    kids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            if int(stat.rsplit(")", 1)[1].split()[1]) != pid:
                continue
            environ = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        for var in environ:
            if var.startswith(b"T5MTL_PROCESS_ID="):
                kids[int(var.split(b"=", 1)[1])] = int(entry)
    return kids


@contextlib.contextmanager
def tmpfs(size: str, options: str = ""):
    """A fresh tmpfs of `size` (e.g. "6m"), unmounted on exit; None where
    this process may not mount (not root, or a container without the right)."""
    path = tempfile.mkdtemp(prefix="t5mtl-tmpfs-")
    opts = f"size={size}" + (f",{options}" if options else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path],
                          capture_output=True, text=True)
    if done.returncode != 0:
        os.rmdir(path)
        yield None, done.stderr.strip() or f"mount exited {done.returncode}"
        return
    try:
        yield path, ""
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)
        os.rmdir(path)


def remount(path: str, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", path], check=True,
                   capture_output=True)
