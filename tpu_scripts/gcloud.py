"""The gcloud commands behind each tpu_scripts step, as argv lists.

Everything here is a pure function of a :class:`TpuSpec` (and the step's
options): nothing runs. ``launch.py`` prints these lists under ``--dry-run``
and runs them otherwise, so what a dry run shows is exactly what runs.

Remote layout on every worker of the slice (all paths under the login
user's home):

  ~/t5mtl/            the source tree (``git archive HEAD`` of this checkout)
  ~/t5mtl-venv/       the virtual environment (``pip install -e ~/t5mtl jax[tpu]``)
  ~/t5mtl-train.log   stdout and stderr of the running ``t5mtl train``
  ~/t5mtl-train.pid   its process id (``stop`` sends it SIGTERM)
  ~/t5mtl-src.tar.gz  the archive ``install`` copied
"""
from __future__ import annotations

import dataclasses
import shlex
from typing import Sequence

Command = list[str]

REMOTE_DIR = "~/t5mtl"
REMOTE_VENV = "~/t5mtl-venv"
REMOTE_LOG = "~/t5mtl-train.log"
REMOTE_PID = "~/t5mtl-train.pid"
REMOTE_ARCHIVE = "t5mtl-src.tar.gz"   # relative to the home directory
# The jax pin of setup.py, with the TPU runtime (libtpu) as an extra.
JAX_TPU_REQUIREMENT = "jax[tpu]>=0.10.2,<0.11"


@dataclasses.dataclass(frozen=True)
class TpuSpec:
    """Which TPU VM slice: its name, zone and (optionally) project."""
    name: str
    zone: str
    project: str | None = None

    def __post_init__(self):
        if not self.name or not self.zone:
            raise ValueError(f"a TPU needs a name and a zone, got name={self.name!r} "
                             f"zone={self.zone!r}")

    def flags(self) -> list[str]:
        out = [f"--zone={self.zone}"]
        if self.project:
            out.append(f"--project={self.project}")
        return out


def _double_quote(text: str) -> str:
    """`text` in double quotes for the remote shell (pip requirements)."""
    if any(c in text for c in '"$`\\!'):
        raise ValueError(f"cannot quote {text!r} for the remote shell")
    return f'"{text}"'


def _tpu_vm(*verb: str) -> Command:
    return ["gcloud", "compute", "tpus", "tpu-vm", *verb]


def _ssh(tpu: TpuSpec, remote_command: str, worker: str = "all") -> Command:
    return _tpu_vm("ssh", tpu.name, *tpu.flags(), f"--worker={worker}",
                   "--command", remote_command)


def create(tpu: TpuSpec, accelerator_type: str, version: str, spot: bool = False) -> list[Command]:
    """Creates the TPU VM slice (all its workers)."""
    cmd = _tpu_vm("create", tpu.name, *tpu.flags(), f"--accelerator-type={accelerator_type}",
                  f"--version={version}")
    if spot:
        cmd.append("--spot")
    return [cmd]


def install(tpu: TpuSpec, archive: str, source_dir: str = ".", python: str = "python3.11",
            extra_requirements: Sequence[str] = ()) -> list[Command]:
    """Ships this checkout (committed files, ``git archive HEAD``) to every
    worker and installs it with pip in a fresh venv, with jax[tpu].

    setup.py wants Python 3.11 or 3.12; Ubuntu 22.04 TPU images carry 3.10,
    so ``python`` is installed with apt when missing.
    """
    packages = [JAX_TPU_REQUIREMENT, *extra_requirements]
    pip = f"{REMOTE_VENV}/bin/pip"
    remote = " && ".join([
        f"(command -v {python} >/dev/null || (sudo apt-get update -qq && "
        f"sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {python} {python}-venv))",
        f"rm -rf {REMOTE_DIR} && mkdir -p {REMOTE_DIR}",
        f"tar -xzf ~/{REMOTE_ARCHIVE} -C {REMOTE_DIR}",
        f"{python} -m venv {REMOTE_VENV}",
        f"{pip} install -q -U pip",
        f"{pip} install -q -e {REMOTE_DIR} " + " ".join(_double_quote(p) for p in packages),
        f'{REMOTE_VENV}/bin/python -c "import jax; print(jax.process_index(), jax.device_count())"',
    ])
    return [
        ["git", "-C", source_dir, "archive", "--format=tar.gz", f"--output={archive}", "HEAD"],
        _tpu_vm("scp", archive, f"{tpu.name}:{REMOTE_ARCHIVE}", *tpu.flags(), "--worker=all"),
        _ssh(tpu, remote),
    ]


def train(tpu: TpuSpec, train_args: Sequence[str], env: Sequence[str] = ()) -> list[Command]:
    """Starts ``t5mtl train TRAIN_ARGS`` on every worker at once, detached.

    Each worker's process joins the run with ``jax.distributed.initialize()``
    (T5MTL_DISTRIBUTED=auto: JAX reads the coordinator and process ids from
    the TPU metadata). Output goes to ~/t5mtl-train.log on each worker.
    """
    for item in env:
        if "=" not in item or not item.split("=", 1)[0].isidentifier():
            raise ValueError(f"--env {item!r} must look like NAME=VALUE")
    variables = ["T5MTL_DISTRIBUTED=auto", "TF_CPP_MIN_LOG_LEVEL=2", *env]
    command = " ".join([*(shlex.quote(v) for v in variables), "setsid", "nohup",
                        f"{REMOTE_VENV}/bin/t5mtl", "train",
                        *(shlex.quote(a) for a in train_args)])
    remote = (f"cd {REMOTE_DIR} && {command} > {REMOTE_LOG} 2>&1 < /dev/null & "
              f"echo $! > {REMOTE_PID}")
    return [_ssh(tpu, remote)]


def logs(tpu: TpuSpec, worker: str = "0", lines: int = 100, follow: bool = True) -> list[Command]:
    """Shows (and by default follows) the training log of one or all workers;
    with ``worker="all"`` each line starts with the worker's host name."""
    tail = f"tail -n {int(lines)}{' -F' if follow else ''} {REMOTE_LOG}"
    if worker == "all":
        tail += ' | sed -u "s/^/[$(hostname)] /"'
    return [_ssh(tpu, tail, worker=worker)]


def stop(tpu: TpuSpec, force: bool = False) -> list[Command]:
    """Stops the training on every worker: SIGTERM (the trainer saves a
    checkpoint and exits), or SIGKILL with ``force``."""
    signal_name = "KILL" if force else "TERM"
    remote = (f"if [ -f {REMOTE_PID} ]; then kill -{signal_name} $(cat {REMOTE_PID}) "
              f"2>/dev/null || true; rm -f {REMOTE_PID}; fi")
    return [_ssh(tpu, remote)]


def status(tpu: TpuSpec) -> list[Command]:
    """The slice's state, then whether training runs on each worker."""
    remote = (f"if [ -f {REMOTE_PID} ] && kill -0 $(cat {REMOTE_PID}) 2>/dev/null; then "
              f"echo \"$(hostname): training (pid $(cat {REMOTE_PID}))\"; else "
              f"echo \"$(hostname): not training\"; fi")
    return [_tpu_vm("describe", tpu.name, *tpu.flags(), "--format=value(state,acceleratorType)"),
            _ssh(tpu, remote)]


def delete(tpu: TpuSpec) -> list[Command]:
    """Deletes the slice (and every worker's disk)."""
    return [_tpu_vm("delete", tpu.name, *tpu.flags(), "--quiet")]
