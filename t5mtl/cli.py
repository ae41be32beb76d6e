"""The `t5mtl` command line.

Each subcommand lives in its own module next to the code it drives and
exposes two functions:

  add_arguments(parser: argparse.ArgumentParser) -> None
  run(args: argparse.Namespace) -> int

Modules are imported only when their subcommand runs, so `t5mtl params`
does not pay for TensorFlow or seqio.

Every error is one line on stderr: bad input (T5mtlError, a file that
cannot be read or written) exits 2, anything else 1; `--verbose` (anywhere
on the command line) or T5MTL_DEBUG=1 adds the traceback and TensorFlow's
start-up notices (t5mtl/quiet_start.py).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# TensorFlow (behind seqio) logs C++ warnings on import; keep the console for
# what the user asked for.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from t5mtl.errors import T5mtlError
from t5mtl.quiet_start import debug_requested

# Commands that read data (TensorFlow behind seqio).
DATA_COMMANDS = ("train", "eval", "fewshot", "infer", "tasks", "task-vector",
                 "transfer-map", "atlas", "compile")

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "params": ("t5mtl.models.params_command", "count a named model's parameters"),
    "convert": ("t5mtl.convert.command", "import/export HF T5 and t5x checkpoints"),
    "train": ("t5mtl.train.command", "train or finetune a model from gin configs"),
    "compile": ("t5mtl.train.compile_command",
                "compile a run's train step for a TPU slice: memory per device, FLOPs, "
                "collectives"),
    "eval": ("t5mtl.infer.eval_command", "evaluate a checkpoint on tasks or mixtures"),
    "fewshot": ("t5mtl.train.fewshot_command", "the K-shot x seeds finetuning protocol"),
    "infer": ("t5mtl.infer.command", "decode text with a trained or converted model"),
    "atlas": ("t5mtl.retrieval.atlas_command",
              "Atlas few-shot QA: retriever and FiD reader trained by retrieval rounds"),
    "tasks": ("t5mtl.data.tasks_command", "list and inspect registered tasks"),
    "conflict": ("t5mtl.mtl.conflict_command",
                 "tables and heat maps of a run's task-conflict probes"),
    "task-vector": ("t5mtl.mtl.task_vector_command",
                    "add or negate task vectors (finetuned - base): task arithmetic"),
    "transfer-map": ("t5mtl.mtl.transfer_map_command",
                     "train task families alone and in pairs: the ExT5 transfer heat map"),
}


def _build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace | None]:
    parser = argparse.ArgumentParser(prog="t5mtl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    # Parse only the command name first, then let that command's module
    # describe its own arguments.
    if not argv or argv[0] not in COMMANDS:
        return parser, None
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    cmd_parser = argparse.ArgumentParser(prog=f"t5mtl {name}", description=COMMANDS[name][1])
    module.add_arguments(cmd_parser)
    cmd_parser.add_argument(
        "--module_import", action="append", default=[], metavar="MODULE",
        help="import MODULE first (repeatable), e.g. one that registers your own tasks; "
             "searched on sys.path and the current directory (seqio's flag of that name)")
    from t5mtl.gin_config import split_gin_overrides
    rest, bindings = split_gin_overrides(argv[1:])
    rest, modules = _split_module_imports(rest)
    args = cmd_parser.parse_args(rest)
    args.gin_bindings = bindings
    args.module_import = modules
    args._run = module.run
    return parser, args


def _split_module_imports(argv: list[str]) -> tuple[list[str], list[str]]:
    """Takes every `--module_import M` / `--module_import=M` out of argv (they
    may stand anywhere, also after a subcommand's action like `tasks list`)."""
    rest, modules = [], []
    it = iter(argv)
    for arg in it:
        if arg == "--module_import":
            modules.append(next(it, ""))
        elif arg.startswith("--module_import="):
            modules.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return rest, modules


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        # The process's entry point (not a call from Python): restart once with
        # the glibc malloc policy for XLA's per-step buffers (T5MTL_HOST_MALLOC,
        # t5mtl/host_memory.py); with an accelerator the default policy keeps
        # glibc's settings and nothing restarts.
        from t5mtl.host_memory import reexec_with_malloc_policy
        try:
            reexec_with_malloc_policy()
        except T5mtlError as e:
            print(f"t5mtl: error: {e}", file=sys.stderr)
            return 2
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv or debug_requested()
    argv = [a for a in argv if a != "--verbose"]
    name = argv[0] if argv else "t5mtl"
    prog = f"t5mtl {name}" if name in COMMANDS else "t5mtl"
    try:
        parser, args = _build_parser(argv)
        if args is None:
            if argv and argv[0] not in ("-h", "--help"):
                parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
            parser.print_help()
            return 0 if argv else 2
        if name in DATA_COMMANDS:
            from t5mtl.quiet_start import prepare
            prepare(verbose)
        if not verbose:
            _drop_orbax_error_logs()
        if args.module_import:
            from t5mtl.gin_config import import_modules
            import_modules(args.module_import)
        return int(args._run(args) or 0)
    except T5mtlError as e:
        return _report(prog, _one_line(e), 2, verbose)
    except OSError as e:
        # A model_dir or file that cannot be written or read: name it.
        return _report(prog, _os_error(e), 2, verbose)
    except KeyboardInterrupt:
        return _report(prog, "interrupted", 130, verbose)
    except Exception as e:  # noqa: BLE001 - a bug: one line unless asked for more
        return _report(prog, f"{type(e).__name__}: {_one_line(e)}", 1, verbose,
                       hint=" (rerun with --verbose or T5MTL_DEBUG=1 for the traceback)")


def _not_an_orbax_error(record) -> bool:
    import logging
    return not (record.levelno >= logging.ERROR and
                f"{os.sep}orbax{os.sep}" in (record.pathname or ""))


def _drop_orbax_error_logs() -> None:
    """orbax logs a failed async save from each of its threads, traceback
    included, before raising it; the command reports it once, in one line.
    (One filter object: adding it again is a no-op.)"""
    import logging
    logging.getLogger("absl").addFilter(_not_an_orbax_error)


def _os_error(error: OSError) -> str:
    """"<path>: <cause> (errno N)"; gin re-raises an OSError from a
    configurable with its text only ("[Errno 30] Read-only file system: 'p'")."""
    errno, cause, where = error.errno, error.strerror, error.filename
    if errno is None:
        import re
        found = re.match(r"\[Errno (\d+)\] ([^:]+)(?:: '([^']*)')?", _one_line(error))
        if not found:
            return _one_line(error)
        errno, cause, where = int(found.group(1)), found.group(2), found.group(3)
    return f"{where + ': ' if where else ''}{cause} (errno {errno})"


def _one_line(error: BaseException) -> str:
    """The error's message on one line, without gin's "In call to
    configurable" notes."""
    lines = [line.strip() for line in str(error).splitlines()
             if line.strip() and not line.startswith("  In call to configurable ")]
    return " ".join(lines) or type(error).__name__


def _report(prog: str, message: str, code: int, verbose: bool, hint: str = "") -> int:
    if verbose:
        import traceback
        traceback.print_exc()
        hint = ""
    print(f"{prog}: error: {message}{hint}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
