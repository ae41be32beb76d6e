"""`t5mtl task-vector`: edit a model with task arithmetic (Ilharco et al. 2023).

  t5mtl task-vector --base B --add D1 [--add D2] [--negate D3] --scale 0.5 --out O
  t5mtl task-vector --base B --negate D --scales 0,0.25,0.5,0.75,1 \
      --target_task T --control_task C --out O         # the scale chosen on validation
  t5mtl task-vector --base B --add D1 --add D2 --scales 0.25,0.5,0.75,1 \
      --validation_task T1 --validation_task T2 --out O

O = B + scale * (sum of (D - B) over --add - sum of (D - B) over --negate),
a normal model_dir (checkpoint 0, B's model.json, vocabulary and config.gin)
with its recipe in O/task_vector.json. Every D must be a finetune of B
(t5mtl/mtl/task_vectors.py); adapter directories are expanded first.

With --scales, each scale's model is evaluated on the validation split and
the paper's rule picks one: negation, the lowest --target_task score while
--control_task keeps >= 95% of B's; addition, the best mean over the
--validation_task's (one per --add, in order) of score / that --add's own
score. Lengths come from B's config.gin (EvalConfig / DataConfig), as in
`t5mtl eval`.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True,
                        help="the model the finetunes started from (t5mtl model_dir or HF dir)")
    parser.add_argument("--add", action="append", default=[], metavar="DIR",
                        help="a finetuned model_dir whose task vector is added (repeatable)")
    parser.add_argument("--negate", action="append", default=[], metavar="DIR",
                        help="a finetuned model_dir whose task vector is subtracted "
                             "(repeatable)")
    parser.add_argument("--out", required=True, help="the new model_dir (must not exist)")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--scale", type=float, default=None,
                       help="the scaling coefficient lambda (default 1.0)")
    scale.add_argument("--scales", default=None, metavar="L1,L2,...",
                       help="choose lambda from these on validation data (see above)")
    parser.add_argument("--target_task", default=None,
                        help="--scales with --negate: the task to forget")
    parser.add_argument("--control_task", default=None,
                        help="--scales with --negate: the task that must keep 95%% of the "
                             "base's score")
    parser.add_argument("--validation_task", action="append", default=[],
                        help="--scales with --add: each --add's task, in order")
    parser.add_argument("--keep", type=float, default=0.95,
                        help="--scales with --negate: the control score's floor, as a "
                             "fraction of the base's")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--num_examples", type=int, default=None,
                        help="evaluate at most this many examples per task")
    parser.add_argument("--only", action="append", default=[], metavar="REGEX",
                        help="edit only parameters whose name matches (repeatable); the rest "
                             "stay the base's")
    parser.add_argument("--step", type=int, default=None, help="the base's checkpoint step")
    parser.add_argument("--max_relative_distance", type=float,
                        default=None, metavar="R",
                        help="refuse a full finetune farther than R x the base's norm from "
                             "it (default 0.5; another base is ~1.4 away)")


def run(args: argparse.Namespace) -> int:
    from t5mtl.errors import T5mtlError
    from t5mtl.mtl import task_vectors as tv
    if not args.add and not args.negate:
        raise T5mtlError("nothing to apply: give --add DIR and/or --negate DIR")
    grid = _parse_scales(args.scales) if args.scales else None
    if grid is None and (args.target_task or args.control_task or args.validation_task):
        raise T5mtlError("--target_task, --control_task and --validation_task choose the "
                         "scale among --scales; give --scales")
    if grid is not None:
        _check_selection_args(args)
    from t5mtl import paths
    if paths.listdir(args.out):
        raise T5mtlError(f"{args.out}: exists and is not empty; refusing to overwrite")
    limit = tv.MAX_RELATIVE_DISTANCE if args.max_relative_distance is None \
        else args.max_relative_distance
    base = tv.load_model(args.base, args.step)
    added = [tv.task_vector(base, d, max_relative_distance=limit) for d in args.add]
    negated = [tv.task_vector(base, d, max_relative_distance=limit) for d in args.negate]
    selection = None
    scale = 1.0 if args.scale is None else args.scale
    if grid is not None:
        scale, selection = _choose(args, base, added, negated, grid)
    terms = [(scale, v) for v in added] + [(-scale, v) for v in negated]
    params = tv.apply(base, terms, args.only)
    tv.write_model_dir(args.out, base, params, tv.recipe(base, terms, args.only, selection))
    edits = [f"+ {scale:g} x ({d} - base)" for d in args.add] + \
        [f"- {scale:g} x ({d} - base)" for d in args.negate]
    print(f"wrote {args.out}: {args.base} {' '.join(edits)}")
    return 0


def _parse_scales(text: str) -> list[float]:
    from t5mtl.errors import T5mtlError
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise T5mtlError(f"--scales {text!r}: want numbers separated by commas") from None
    if not scales:
        raise T5mtlError("--scales is empty")
    return scales


def _check_selection_args(args) -> None:
    from t5mtl.errors import T5mtlError
    if args.add and args.negate:
        raise T5mtlError("--scales chooses lambda for additions or for negations; with both, "
                         "give --scale")
    if args.negate and not (args.target_task and args.control_task):
        raise T5mtlError("--scales with --negate needs --target_task and --control_task")
    if args.add and len(args.validation_task) != len(args.add):
        raise T5mtlError(f"--scales with --add needs one --validation_task per --add "
                         f"({len(args.add)}), got {len(args.validation_task)}")


def _choose(args, base, added, negated, grid):
    """(scale, what the choice saw) by the paper's rule, on validation data."""
    from t5mtl import gin_config
    from t5mtl.data.data_config import DataConfig
    from t5mtl.models import param_names
    from t5mtl.mtl import task_vectors as tv
    from t5mtl.train.trainer import EvalConfig
    import t5mtl.data.registry  # noqa: F401  (the built-in tasks)
    gin_config.parse(gin_config.run_config(args.base), args.gin_bindings)
    cfg = EvalConfig()
    lengths = cfg.task_feature_lengths or DataConfig().task_feature_lengths
    tasks = [args.target_task, args.control_task] if negated else list(args.validation_task)

    def evaluate(params):
        return tv.task_scores(base.model, params, tasks, lengths, args.split,
                              args.num_examples)
    sign, vectors = (-1.0, negated) if negated else (1.0, added)
    scores = tv.scale_grid(base, vectors, sign, grid, evaluate, args.only)
    if negated:
        scale = tv.negation_scale(scores, args.target_task, args.control_task, args.keep)
        rule = f"lowest {args.target_task} with {args.control_task} >= {args.keep} x the base's"
        own = None
    else:
        own = {t: tv.task_scores(base.model, base.model.adapt_params(param_names.unflatten(
                   dict(v.finetuned))), [t], lengths, args.split, args.num_examples)[t]
               for t, v in zip(tasks, added)}
        scale = tv.addition_scale(scores, own)
        rule = "best mean normalized accuracy (score / the finetuned model's)"
    for s, row in scores.items():
        print(f"scale {s:g}: " + ", ".join(f"{t} {v:.1f}" for t, v in row.items())
              + ("   <- chosen" if s == scale else ""))
    return scale, {"rule": rule, "split": args.split, "scales": sorted(scores),
                   "scores": {str(s): row for s, row in scores.items()},
                   "finetuned_scores": own, "chosen": scale}
