"""Create, install, launch, watch and stop a t5mtl run on a TPU VM pod slice.

  python -m tpu_scripts create  --name NAME --zone ZONE --accelerator-type v4-32
  python -m tpu_scripts install --name NAME --zone ZONE
  python -m tpu_scripts train   --name NAME --zone ZONE -- --gin_file=... --model_dir=...
  python -m tpu_scripts logs    --name NAME --zone ZONE [--worker all]
  python -m tpu_scripts stop    --name NAME --zone ZONE      (SIGTERM: checkpoint, exit)
  python -m tpu_scripts delete  --name NAME --zone ZONE

  python -m tpu_scripts train --local 2 --devices-per-process 2 -- --gin_file=... --model_dir=...

Every command takes --dry-run, which prints the exact commands (gcloud, or
the local processes with their environment) instead of running them.
--name, --zone and --project default to $T5MTL_TPU_NAME, $T5MTL_TPU_ZONE
and $T5MTL_TPU_PROJECT.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from typing import Sequence, TextIO

from tpu_scripts import gcloud, local

DEFAULT_ACCELERATOR = "v4-8"
DEFAULT_VERSION = "tpu-ubuntu2204-base"


def _split_train_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Our options before `--`, `t5mtl train`'s after it."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dry-run", action="store_true",
                        help="print the commands instead of running them")
    tpu = argparse.ArgumentParser(add_help=False)
    tpu.add_argument("--name", default=os.environ.get("T5MTL_TPU_NAME"),
                     help="the TPU VM name (default $T5MTL_TPU_NAME)")
    tpu.add_argument("--zone", default=os.environ.get("T5MTL_TPU_ZONE"),
                     help="e.g. us-central2-b (default $T5MTL_TPU_ZONE)")
    tpu.add_argument("--project", default=os.environ.get("T5MTL_TPU_PROJECT"),
                     help="GCP project (default $T5MTL_TPU_PROJECT, else gcloud's default)")

    parser = argparse.ArgumentParser(prog="python -m tpu_scripts",
                                     description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("create", parents=[common, tpu], help="create the TPU VM slice")
    p.add_argument("--accelerator-type", default=DEFAULT_ACCELERATOR,
                   help=f"e.g. v4-8, v4-32, v5litepod-16 (default {DEFAULT_ACCELERATOR})")
    p.add_argument("--version", default=DEFAULT_VERSION,
                   help=f"TPU VM software image (default {DEFAULT_VERSION})")
    p.add_argument("--spot", action="store_true", help="a spot (preemptible) slice")

    p = sub.add_parser("install", parents=[common, tpu],
                       help="copy this checkout (git HEAD) to every worker and pip install it")
    p.add_argument("--source-dir", default=".", help="the t5mtl checkout (default .)")
    p.add_argument("--archive", default=os.path.join(tempfile.gettempdir(), "t5mtl-src.tar.gz"),
                   help="where to write the local source archive")
    p.add_argument("--python", default="python3.11", help="the workers' Python (3.11 or 3.12)")
    p.add_argument("--requirement", action="append", default=[],
                   help="an extra pip requirement for the workers (repeatable)")

    p = sub.add_parser("train", parents=[common, tpu],
                       help="start `t5mtl train ARGS` on every worker (or --local N here)")
    p.add_argument("--local", type=int, default=0, metavar="N",
                   help="run N processes on this machine instead of a TPU")
    p.add_argument("--devices-per-process", type=int, default=1, metavar="K",
                   help="--local: fake CPU devices per process (default 1)")
    p.add_argument("--timeout", type=float, default=None,
                   help="--local: stop all processes after this many seconds")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="TPU: an extra environment variable for t5mtl train (repeatable)")
    p.add_argument("--follow", action="store_true", help="TPU: then tail worker 0's log")
    p.epilog = "Arguments after `--` go to `t5mtl train` unchanged."

    p = sub.add_parser("logs", parents=[common, tpu], help="tail the training log")
    p.add_argument("--worker", default="0", help="a worker index or 'all' (default 0)")
    p.add_argument("--lines", type=int, default=100)
    p.add_argument("--no-follow", dest="follow", action="store_false")

    p = sub.add_parser("stop", parents=[common, tpu],
                       help="SIGTERM the training on every worker (it saves a checkpoint)")
    p.add_argument("--force", action="store_true", help="SIGKILL instead")

    sub.add_parser("status", parents=[common, tpu], help="slice state and training processes")
    sub.add_parser("delete", parents=[common, tpu], help="delete the TPU VM slice")
    return parser


def _spec(parser: argparse.ArgumentParser, args: argparse.Namespace) -> gcloud.TpuSpec:
    if not args.name or not args.zone:
        parser.error(f"`{args.command}` needs --name and --zone (or $T5MTL_TPU_NAME and "
                     f"$T5MTL_TPU_ZONE)")
    return gcloud.TpuSpec(args.name, args.zone, args.project)


def commands_for(parser: argparse.ArgumentParser, args: argparse.Namespace,
                 train_args: Sequence[str]) -> list[gcloud.Command]:
    """The gcloud (and git) commands of a TPU subcommand."""
    tpu = _spec(parser, args)
    if args.command == "create":
        return gcloud.create(tpu, args.accelerator_type, args.version, args.spot)
    if args.command == "install":
        return gcloud.install(tpu, args.archive, args.source_dir, args.python, args.requirement)
    if args.command == "train":
        if not train_args:
            parser.error("train: give `t5mtl train` arguments after `--`")
        try:
            cmds = gcloud.train(tpu, train_args, args.env)
        except ValueError as e:
            parser.error(str(e))
        return cmds + (gcloud.logs(tpu) if args.follow else [])
    if args.command == "logs":
        return gcloud.logs(tpu, args.worker, args.lines, args.follow)
    if args.command == "stop":
        return gcloud.stop(tpu, args.force)
    if args.command == "status":
        return gcloud.status(tpu)
    if args.command == "delete":
        return gcloud.delete(tpu)
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    ours, train_args = _split_train_args(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(ours)
    if train_args and args.command != "train":
        parser.error(f"`{args.command}` takes no arguments after `--`")

    if args.command == "train" and args.local:
        if not train_args:
            parser.error("train: give `t5mtl train` arguments after `--`")
        if args.local < 1 or args.devices_per_process < 1:
            parser.error("--local and --devices-per-process must be at least 1")
        if args.dry_run:
            for line in local.describe(args.local, train_args, args.devices_per_process,
                                       port=local.free_port()):
                out.write(line + "\n")
            return 0
        return local.run_local(args.local, train_args, args.devices_per_process,
                               timeout_s=args.timeout, out=out)

    commands = commands_for(parser, args, train_args)
    for cmd in commands:
        if args.dry_run:
            out.write(shlex.join(cmd) + "\n")
            continue
        out.write(f"+ {shlex.join(cmd)}\n")
        out.flush()
        try:
            status = subprocess.call(cmd)
        except FileNotFoundError:
            out.write(f"{cmd[0]}: not found; install the Google Cloud SDK "
                      f"(https://cloud.google.com/sdk) or use --dry-run\n")
            return 127
        except KeyboardInterrupt:
            return 130
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
