"""`t5mtl transfer-map --out DIR`: the ExT5-style transfer map between task families.

  t5mtl transfer-map --out /tmp/transfer_map                  # the 7 synthetic categories
  t5mtl transfer-map --out O --families counting,arithmetic,classification --seeds 3
  t5mtl transfer-map --out O --families 'words=synth_first_word+synth_count_words,counting' \
      --init /tmp/t5mtl_quickstart

Trains each family alone and each pair of families (1:1) for the same
number of steps from the same init, evaluates every run on its families'
validation splits, and writes O/transfer_map.{json,md,png} (the relative
change R[i, j] of family i when co-trained with j; t5mtl/mtl/transfer_map.py).
Finished runs are cached in O/runs, so a rerun resumes; XLA programs are
cached in O/xla_cache, so runs after the first do not recompile.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from t5mtl.mtl.transfer_map import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, DEFAULT_STEPS
    parser.add_argument("--out", required=True, help="where runs, caches and the report go")
    parser.add_argument("--families", default=None, metavar="F1,F2,...",
                        help="synthetic categories and/or NAME=task1+task2 families "
                             "(default: every synthetic category)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"training steps of every run (default {DEFAULT_STEPS})")
    parser.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--seeds", type=int, default=1,
                        help="seeds 0..K-1 per run (init and data order); scores are averaged")
    parser.add_argument("--model", default=None,
                        help=f"a named model config (default {DEFAULT_MODEL})")
    parser.add_argument("--init", default=None, metavar="MODEL_DIR",
                        help="start every run from this model_dir instead of a random init")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--num_examples", type=int, default=None,
                        help="evaluate at most this many validation examples per task")
    parser.add_argument("--pair_step_factor", type=int, default=1,
                        help="pair runs train this many times --steps (default 1: the same "
                             "budget, so each family gets half the examples)")
    parser.add_argument("--learning_rate", type=float, default=None,
                        help="Adafactor's constant learning rate (default 0.01)")


def run(args: argparse.Namespace) -> int:
    import os

    from t5mtl.errors import T5mtlError
    from t5mtl.mtl import transfer_map as tm
    if getattr(args, "gin_bindings", None):
        raise T5mtlError("transfer-map takes no --gin bindings; its settings are its flags")
    if args.model and args.init:
        raise T5mtlError("give --model or --init, not both (--init's model.json names the "
                         "model)")
    settings = tm.Settings(model=args.model or tm.DEFAULT_MODEL, init=args.init,
                           steps=args.steps, batch_size=args.batch_size, seeds=args.seeds,
                           pair_step_factor=args.pair_step_factor,
                           learning_rate=tm.LEARNING_RATE if args.learning_rate is None
                           else args.learning_rate, num_examples=args.num_examples)
    settings.check()
    if not args.init:
        from t5mtl.models import get_config
        get_config(settings.model)              # an unknown name: one line, nothing written
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise T5mtlError(f"--out {args.out!r} exists and is not a directory")
    if args.data_dir:
        from t5mtl.data.data_dir import set_data_dir
        set_data_dir(args.data_dir)
    specs = None
    if args.families is not None:
        specs = [s for s in args.families.split(",") if s.strip()]
    families = tm.resolve_families(specs)
    if args.init:
        tm._model(settings)                     # not a model_dir: one line, nothing written
    from t5mtl.train.compile_cache import use_compilation_cache
    use_compilation_cache(os.path.join(args.out, "xla_cache"))
    n = len(families)
    print(f"{n} families, {n + n * (n - 1) // 2} runs x {settings.seeds} seed(s), "
          f"{settings.steps} steps each: {', '.join(families)}", flush=True)
    summary = tm.compute(args.out, families, settings)
    print()
    print(tm.markdown(summary))
    print(f"wrote {os.path.join(args.out, 'transfer_map.md')}, transfer_map.json and "
          f"transfer_map.png ({summary['seconds']:.0f} s)")
    return 0
