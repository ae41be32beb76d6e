"""`t5mtl task-vector`: edit a model with task arithmetic (Ilharco et al. 2023).

  t5mtl task-vector --base B --add D1 [--add D2] [--negate D3] --scale 0.5 --out O
  t5mtl task-vector --base B --negate D --scales 0,0.25,0.5,0.75,1 \
      --target_task T --control_task C --out O         # the scale chosen on validation
  t5mtl task-vector --base B --add D1 --add D2 --scales 0.25,0.5,0.75,1 \
      --validation_task T1 --validation_task T2 --out O
  t5mtl task-vector --base B --analogy DA,DB,DC --scale 0.5 --out O   # A - B + C
  t5mtl task-vector --base B --analogy DA,DB,DC --scales 0.25,0.5,1 \
      --target_task T [--control_task C] --out O

O = B + scale * (sum of (D - B) over --add - sum of (D - B) over --negate),
a normal model_dir (checkpoint 0, B's model.json, vocabulary and config.gin,
B's scanned or per-layer layout) with its recipe in O/task_vector.json.
--analogy DA,DB,DC is the task analogy A - B + C: O = B + scale * ((DA - B)
- (DB - B) + (DC - B)), recorded as an analogy. Every D must be a finetune
of B (t5mtl/mtl/task_vectors.py), in either layout; adapter directories are
expanded first.

With --scales, each scale's model is evaluated on the validation split and
a rule picks one: negation, the lowest --target_task score while
--control_task keeps >= 95% of B's; addition, the best mean over the
--validation_task's (one per --add, in order) of score / that --add's own
score; analogy, the best --target_task score (the task the analogy is for,
which needs validation data), with --control_task among the scales keeping
>= 95% of B's control score. Lengths come from B's config.gin (EvalConfig /
DataConfig), as in `t5mtl eval`.
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
    parser.add_argument("--analogy", default=None, metavar="DA,DB,DC",
                        help="the task analogy A - B + C: add DA's vector, subtract DB's, "
                             "add DC's, one scale (instead of --add/--negate)")
    parser.add_argument("--out", required=True, help="the new model_dir (must not exist)")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--scale", type=float, default=None,
                       help="the scaling coefficient lambda (default 1.0)")
    scale.add_argument("--scales", default=None, metavar="L1,L2,...",
                       help="choose lambda from these on validation data (see above)")
    parser.add_argument("--target_task", default=None,
                        help="--scales with --negate: the task to forget; with --analogy: "
                            "the task the analogy is for")
    parser.add_argument("--control_task", default=None,
                        help="--scales with --negate (required) or --analogy (optional): "
                             "the task that must keep 95%% of the base's score")
    parser.add_argument("--validation_task", action="append", default=[],
                        help="--scales with --add: each --add's task, in order")
    parser.add_argument("--keep", type=float, default=0.95,
                        help="--scales with --negate or --analogy: the control score's "
                             "floor, as a fraction of the base's")
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
    signed = _signed_dirs(args)
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
    vectors = [tv.task_vector(base, d, max_relative_distance=limit) for _, d in signed]
    signs = [sign for sign, _ in signed]
    selection = None
    scale = 1.0 if args.scale is None else args.scale
    if grid is not None:
        scale, selection = _choose(args, base, vectors, signs, grid)
    terms = [(sign * scale, v) for sign, v in zip(signs, vectors)]
    params = tv.apply(base, terms, args.only)
    tv.write_model_dir(args.out, base, params, tv.recipe(
        base, terms, args.only, selection, vectors if args.analogy else None))
    edits = [f"{'+' if sign > 0 else '-'} {scale:g} x ({d} - base)" for sign, d in signed]
    print(f"wrote {args.out}: {args.base} {' '.join(edits)}")
    return 0


def _signed_dirs(args) -> list[tuple[float, str]]:
    """[(+1 or -1, finetuned dir)]: --add and --negate, or the --analogy's three."""
    from t5mtl.errors import T5mtlError
    if args.analogy is None:
        if not args.add and not args.negate:
            raise T5mtlError("nothing to apply: give --add DIR and/or --negate DIR, or "
                             "--analogy DA,DB,DC")
        return [(1.0, d) for d in args.add] + [(-1.0, d) for d in args.negate]
    if args.add or args.negate:
        raise T5mtlError("--analogy DA,DB,DC is the whole edit (A - B + C); give it without "
                         "--add/--negate")
    dirs = [d.strip() for d in args.analogy.split(",")]
    if len(dirs) != 3 or not all(dirs):
        raise T5mtlError(f"--analogy {args.analogy!r}: want three model_dirs DA,DB,DC "
                         f"(the edit A - B + C)")
    from t5mtl import paths
    a, b, c = map(paths.absolute, dirs)
    if b in (a, c):
        raise T5mtlError(f"--analogy {args.analogy!r}: {dirs[1]} is both subtracted and "
                         f"added, so the analogy cancels to one vector; give --add instead")
    return [(1.0, dirs[0]), (-1.0, dirs[1]), (1.0, dirs[2])]


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
    if args.analogy is not None:
        if not args.target_task or args.validation_task:
            raise T5mtlError("--scales with --analogy needs --target_task (the task the "
                             "analogy is for; --control_task optional), not "
                             "--validation_task")
        return
    if args.add and args.negate:
        raise T5mtlError("--scales chooses lambda for additions or for negations; with both, "
                         "give --scale")
    if args.negate and not (args.target_task and args.control_task):
        raise T5mtlError("--scales with --negate needs --target_task and --control_task")
    if args.add and len(args.validation_task) != len(args.add):
        raise T5mtlError(f"--scales with --add needs one --validation_task per --add "
                         f"({len(args.add)}), got {len(args.validation_task)}")


def _choose(args, base, vectors, signs, grid):
    """(scale, what the choice saw) by the rule for the edit, on validation data."""
    from t5mtl import gin_config
    from t5mtl.data.data_config import DataConfig
    from t5mtl.models import param_names
    from t5mtl.mtl import task_vectors as tv
    from t5mtl.train.trainer import EvalConfig
    import t5mtl.data.registry  # noqa: F401  (the built-in tasks)
    gin_config.parse(gin_config.run_config(args.base), args.gin_bindings)
    cfg = EvalConfig()
    lengths = cfg.task_feature_lengths or DataConfig().task_feature_lengths
    negation = args.analogy is None and signs[0] < 0
    if args.analogy is not None or negation:
        tasks = [t for t in (args.target_task, args.control_task) if t]
    else:
        tasks = list(args.validation_task)

    def evaluate(params):
        return tv.task_scores(base.model, params, tasks, lengths, args.split,
                              args.num_examples)
    scores = tv.scale_grid(base, vectors, signs, grid, evaluate, args.only)
    own = None
    if args.analogy is not None:
        scale = tv.analogy_scale(scores, args.target_task, args.control_task, args.keep)
        rule = f"best {args.target_task}" + (
            f" with {args.control_task} >= {args.keep} x the base's" if args.control_task
            else "")
    elif negation:
        scale = tv.negation_scale(scores, args.target_task, args.control_task, args.keep)
        rule = f"lowest {args.target_task} with {args.control_task} >= {args.keep} x the base's"
    else:
        own = {t: tv.task_scores(base.model, base.model.adapt_params(param_names.unflatten(
                   dict(v.finetuned))), [t], lengths, args.split, args.num_examples)[t]
               for t, v in zip(tasks, vectors)}
        scale = tv.addition_scale(scores, own)
        rule = "best mean normalized accuracy (score / the finetuned model's)"
    for s, row in scores.items():
        print(f"scale {s:g}: " + ", ".join(f"{t} {v:.1f}" for t, v in row.items())
              + ("   <- chosen" if s == scale else ""))
    return scale, {"rule": rule, "split": args.split, "scales": sorted(scores),
                   "scores": {str(s): row for s, row in scores.items()},
                   "finetuned_scores": own, "chosen": scale}
