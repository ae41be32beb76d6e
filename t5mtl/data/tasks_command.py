"""`t5mtl tasks`: list registered tasks and inspect their examples.

    t5mtl tasks list [--category C] [--schema S] [--suite S] [--variants | --variant V]
    t5mtl tasks ... [--module_import MODULE] [--gin_file F] [--gin.X=Y]
    t5mtl tasks show NAME [--split S] [--n N] [--data_dir D]
    t5mtl tasks show NAME --card

`show` prints a task's metadata, then N raw examples as the source yields
them (fields before any formatting) and N preprocessed examples: the
inputs/targets text, token ids and lengths, as a model would receive them
(trimmed to --inputs_length/--targets_length, with EOS). `list` shows base
tasks; --variants adds their instruction variants ("<task>_zs", "_fs", ...),
--variant V lists only variants of kind V. With --card `show`
prints only the task's metadata card (category, schema, labels, languages,
licence, source, homepage, citation, ...) and reads no data. For a mixture
it prints each task's share of the samples. `show` also counts, over the
first --check_examples examples of the split, how many have inputs or
targets longer than --inputs_length/--targets_length (seqio cuts them).

Your own tasks: --module_import MODULE imports a module that registers them
(any command takes it); --gin_file / --gin.X=Y are parsed before listing, so
`register_task_specs.paths = [...]` (a JSON spec, docs/tasks.md) works too.
"""
from __future__ import annotations

import argparse
import difflib
from typing import Any, Iterable

from t5mtl.errors import T5mtlError


def _gin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gin_file", action="append", default=[],
                        help="gin file (repeatable), e.g. one binding register_task_specs.paths")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="list registered tasks and mixtures")
    _gin_arguments(ls)
    ls.add_argument("--category", help="only tasks of this category")
    ls.add_argument("--schema", help="only tasks of this schema")
    ls.add_argument("--suite", help="only tasks of this suite (synthetic, glue, ...)")
    ls.add_argument("--variants", action="store_true",
                    help="also list instruction variants (<task>_zs, _fs, _opt, _cot, _inv)")
    ls.add_argument("--variant", help="only instruction variants of this kind (zs, fs, opt, "
                                      "cot, inv)")
    show = sub.add_parser("show", help="print raw and preprocessed examples of a task")
    _gin_arguments(show)
    show.add_argument("--check_examples", type=int, default=200,
                      help="examples checked for truncation (0: skip the check)")
    show.add_argument("name", help="task (or mixture) name")
    show.add_argument("--split", help="split to read (default: train if the task has it)")
    show.add_argument("--n", type=int, default=3, help="number of examples (default 3)")
    show.add_argument("--card", action="store_true",
                      help="print the task's metadata card only (reads no data)")
    show.add_argument("--data_dir", help="directory holding local datasets "
                                         "(default: gin binding or $T5MTL_DATA_DIR)")
    show.add_argument("--inputs_length", type=int, default=512)
    show.add_argument("--targets_length", type=int, default=512)
    show.add_argument("--max_chars", type=int, default=300,
                      help="cut texts longer than this when printing (0: never)")
    show.add_argument("--max_ids", type=int, default=40,
                      help="print at most this many token ids per feature (0: all)")


def run(args: argparse.Namespace) -> int:
    if args.gin_file or args.gin_bindings:
        from t5mtl import gin_config
        gin_config.parse(args.gin_file, args.gin_bindings)
    if args.action == "list":
        return _list(args)
    return _show(args)


# ---------------------------------------------------------------- list

def _list(args) -> int:
    import seqio

    import t5mtl.data.registry  # noqa: F401  (registers tasks)
    from t5mtl.data import task_info

    from t5mtl.data.templates import VARIANTS

    if args.variant is not None and args.variant not in VARIANTS:
        raise T5mtlError(f"unknown variant {args.variant!r}; choose from {', '.join(VARIANTS)}")
    infos = task_info.list_task_infos(category=args.category, schema=args.schema,
                                      suite=args.suite, variant=args.variant,
                                      variants=args.variants)
    hidden = 0 if args.variant or args.variants else len(task_info.list_task_infos(
        category=args.category, schema=args.schema, suite=args.suite, variants=True)) - len(infos)
    rows = [(i.name, i.category, i.schema, ",".join(i.metrics), i.instruction or i.description)
            for i in infos]
    unfiltered = (args.category is None and args.schema is None and args.suite is None
                  and args.variant is None)
    if unfiltered:  # seqio tasks registered without a TaskInfo
        rows += [(n, "-", "-", "-", "(no TaskInfo)")
                 for n in sorted(seqio.TaskRegistry.names()) if not task_info.has_task_info(n)]
    header = ("name", "category", "schema", "metrics", "instruction / description")
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(4)]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + r[4])
    cats = sorted({r[1] for r in rows})
    print(f"\n{len(rows)} tasks in {len(cats)} categories: {', '.join(cats)}")
    if hidden:
        print(f"and {hidden} instruction variants of them (--variants lists them)")
    if unfiltered:
        mixtures = sorted(seqio.MixtureRegistry.names())
        print(f"mixtures: {', '.join(mixtures) if mixtures else '(none)'}")
    return 0


# ---------------------------------------------------------------- show

def _show(args) -> int:
    import seqio

    import t5mtl.data.registry  # noqa: F401  (registers tasks)
    from t5mtl.data import task_info
    from t5mtl.data.data_dir import set_data_dir

    if args.n < 1:
        raise T5mtlError(f"--n must be at least 1, got {args.n}")
    if args.data_dir:
        set_data_dir(args.data_dir)
    name = args.name
    if args.card:
        return _show_card(name)
    if name in seqio.MixtureRegistry.names():
        return _show_mixture(seqio.get_mixture_or_task(name))
    if name not in seqio.TaskRegistry.names():
        names = list(seqio.TaskRegistry.names()) + list(seqio.MixtureRegistry.names())
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `t5mtl tasks list`"
        raise T5mtlError(f"unknown task {name!r}{hint}")
    task = seqio.get_mixture_or_task(name)
    split = args.split or ("train" if "train" in task.splits else task.splits[0])
    if split not in task.splits:
        raise T5mtlError(f"task {name!r} has no split {split!r}; it has {', '.join(task.splits)}")

    info = task_info.get_task_info(name) if task_info.has_task_info(name) else None
    _print_info(task, info, split)
    print(f"\nraw examples ({split}, first {args.n}):")
    for i, ex in enumerate(_raw_examples(task, split, args.n), 1):
        print(f"  [{i}]")
        for k, v in ex.items():
            print(f"    {k}: {_text(v, args.max_chars)}")
    lengths = {"inputs": args.inputs_length, "targets": args.targets_length}
    print(f"\npreprocessed examples (sequence lengths {lengths}):")
    for i, ex in enumerate(_preprocessed(task, split, args.n, lengths), 1):
        print(f"  [{i}]")
        for feature in task.output_features:
            if feature not in ex:
                continue
            ids = [int(t) for t in ex[feature]]
            text = ex.get(f"{feature}_pretokenized")
            if text is None:
                text = task.output_features[feature].vocabulary.decode(ids)
            shown = ids if not args.max_ids or len(ids) <= args.max_ids else ids[:args.max_ids]
            more = "" if len(shown) == len(ids) else f", ... ({len(ids) - len(shown)} more)"
            print(f"    {feature}: {_text(text, args.max_chars)}")
            print(f"    {feature} ids ({len(ids)} tokens): "
                  f"[{', '.join(map(str, shown))}{more}]")
    if args.check_examples:
        from t5mtl.data.truncation import WARN_FRACTION, count_truncated
        t = _guard(name, split, lambda: count_truncated(task, split, lengths,
                                                        args.check_examples))
        print(f"\ntruncation: {t.describe()}")
        if any(t.fraction(f) > WARN_FRACTION for f in t.truncated):
            print(f"warning: more than {100 * WARN_FRACTION:g}% of the checked examples are cut; "
                  f"pass larger --inputs_length/--targets_length here and raise "
                  f"DataConfig.task_feature_lengths to train on them whole")
    return 0


def _show_card(name: str) -> int:
    import seqio

    from t5mtl.data import task_info

    if not task_info.has_task_info(name):
        if name in seqio.MixtureRegistry.names():
            raise T5mtlError(f"{name!r} is a mixture; cards are for tasks "
                             f"(`t5mtl tasks show {name}` lists its tasks)")
        if name in seqio.TaskRegistry.names():
            raise T5mtlError(f"task {name!r} has no TaskInfo, so no card")
    print(task_info.format_card(task_info.get_task_info(name)))  # unknown: names close ones
    return 0


def _print_info(task, info, split: str) -> None:
    print(f"task {task.name}")
    if info is not None:
        print(f"  category: {info.category}   schema: {info.schema}   suite: {info.suite or '-'}")
        if info.instruction:
            print(f"  instruction: {info.instruction}")
        if info.label_names:
            print(f"  labels: {', '.join(info.label_names)}")
        print(f"  metrics: {', '.join(info.metrics) or '-'}   fields: {', '.join(info.fields)}")
        print(f"  source: {info.source}   licence: {info.license or 'not stated'}")
    print(f"  splits: {', '.join(task.splits)}")
    from t5mtl.data.files import PythonSource
    if isinstance(task.source, PythonSource):
        print(f"  {split}: {task.source.num_input_examples(split)} examples")


def _raw_examples(task, split: str, n: int) -> Iterable[dict]:
    from t5mtl.data.files import PythonSource

    if isinstance(task.source, PythonSource):
        it = task.source.iter_examples(split)
        for _ in range(n):
            ex = next(it, None)
            if ex is None:
                return
            yield ex
        return
    ds = _guard(task.name, split, lambda: task.source.get_dataset(split=split, shuffle=False))
    yield from _guard(task.name, split, lambda: list(ds.take(n).as_numpy_iterator()))


def _preprocessed(task, split: str, n: int, lengths) -> list[dict]:
    def build():
        ds = task.get_dataset(sequence_length=lengths, split=split, shuffle=False,
                              use_cached=False, num_epochs=1)
        return list(ds.take(n).as_numpy_iterator())
    return _guard(task.name, split, build)


def _guard(name: str, split: str, fn):
    """Runs fn; data errors (raised inside tf.data too) become one T5mtlError."""
    import tensorflow as tf

    try:
        return fn()
    except T5mtlError:
        raise
    except Exception as e:  # noqa: BLE001  (TFDS, tf.data and IO errors all end here)
        message = (isinstance(e, tf.errors.OpError) and e.message) or str(e) or repr(e)
        lines = [line for line in message.splitlines() if "T5mtlError" in line]
        detail = (lines[-1].split("T5mtlError: ", 1)[-1] if lines
                  else f"{type(e).__name__}: {message.splitlines()[0]}")
        raise T5mtlError(f"task {name!r}, split {split!r}: {detail}") from e


def _show_mixture(mixture) -> int:
    print(f"mixture {mixture.name}: {len(mixture.tasks)} tasks")
    total = sum(mixture.get_rate(t) for t in mixture.tasks)
    width = max(32, *(len(t.name) for t in mixture.tasks))
    for t in mixture.tasks:
        rate = mixture.get_rate(t)
        print(f"  {t.name:{width}s} rate {rate:g} ({100 * rate / total:.1f}%)")
    print("show one of its tasks for examples: t5mtl tasks show NAME")
    return 0


def _text(v: Any, max_chars: int) -> str:
    if isinstance(v, bytes):
        v = v.decode("utf-8", errors="replace")
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, list):
        v = [x.decode("utf-8", errors="replace") if isinstance(x, bytes) else x for x in v]
        return repr(v) if not max_chars or len(repr(v)) <= max_chars else repr(v)[:max_chars] + "..."
    if not isinstance(v, str):
        return repr(v)
    if max_chars and len(v) > max_chars:
        return repr(v[:max_chars]) + f" ... (+{len(v) - max_chars} chars)"
    return repr(v)
