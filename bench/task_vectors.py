"""Task arithmetic on the synthetic suite (docs/mtl.md, "Task vectors").

  nice -n 19 python bench/task_vectors.py --work_dir /tmp/tv_bench \
      --report /tmp/tv_bench/report.json

A base (the quickstart's model and tasks, or --base_dir), finetuned on task
A and on task B alone, and trained on A+B together, all from the base with
t5mtl's own trainer; then, from the task vectors (t5mtl/mtl/task_vectors.py):
base - lambda tau_A (lambda chosen on validation: lowest A while the control
keeps 95% of the base's) and base + lambda (tau_A + tau_B) (lambda: best
mean normalized accuracy on validation). The table is on the test split.
Directories already in --work_dir are reused (a rerun only evaluates).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

QUICKSTART_TASKS = [
    "synth_first_word", "synth_lookup_value", "synth_uppercase", "synth_reverse_letters",
    "synth_double_letters", "synth_parity", "synth_greater", "synth_count_words",
    "synth_sort_letters", "synth_add_one"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work_dir", required=True)
    p.add_argument("--model", default="t5_small_cpu")
    p.add_argument("--base_dir", default=None, help="an existing base (else one is trained)")
    p.add_argument("--base_tasks", default=",".join(QUICKSTART_TASKS))
    p.add_argument("--base_steps", type=int, default=300)
    p.add_argument("--task_a", default="synth_first_word")
    p.add_argument("--task_b", default="synth_count_words")
    p.add_argument("--control", default="synth_parity")
    p.add_argument("--ft_steps", type=int, default=150)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--learning_rate", type=float, default=0.01)
    p.add_argument("--neg_scales", default="0.25,0.5,0.75,1,1.25,1.5,2")
    p.add_argument("--add_scales", default="0.25,0.5,0.75,1")
    p.add_argument("--num_examples", type=int, default=200, help="per task and split")
    p.add_argument("--report", default=None)
    return p.parse_args(argv)


def train_dir(path, model, tasks, steps, args, init_from=None):
    """A t5mtl training run (skipped when `path` holds one already)."""
    from t5mtl.data.data_config import DataConfig
    from t5mtl.train.optimizers import create_optimizer, learning_rate_schedule
    from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
    if not os.path.exists(os.path.join(path, "model.json")):
        start = time.time()
        train(path, model=model, num_steps=steps,
              data=DataConfig(mixture_or_task_name=tasks, batch_size=args.batch_size, pack=True,
                              task_feature_lengths=LENGTHS),
              optimizer=create_optimizer("adafactor", learning_rate=learning_rate_schedule(
                  "constant", args.learning_rate, 0)),
              checkpoints=CheckpointConfig(async_save=False, period=10 ** 9, init_from=init_from),
              evaluation=EvalConfig(), show_progress=False, log_period=10 ** 9)
        print(f"trained {path} ({steps} steps, {time.time() - start:.0f} s)", flush=True)
    return path


LENGTHS = {"inputs": 64, "targets": 16}


def main(argv=None) -> int:
    args = parse_args(argv)
    import t5mtl.data.registry  # noqa: F401
    from t5mtl.models import get_config, param_names
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.mtl import task_vectors as tv
    start = time.time()
    model = EncoderDecoderModel(get_config(args.model))
    w = args.work_dir
    A, B, C = args.task_a, args.task_b, args.control
    base_dir = args.base_dir or train_dir(f"{w}/base", model, args.base_tasks.split(","),
                                          args.base_steps, args)
    dirs = {"ft_A": train_dir(f"{w}/ft_A", model, A, args.ft_steps, args, base_dir),
            "ft_B": train_dir(f"{w}/ft_B", model, B, args.ft_steps, args, base_dir),
            "multitask_AB": train_dir(f"{w}/multitask_AB", model, [A, B], 2 * args.ft_steps,
                                      args, base_dir)}
    train_time = time.time() - start
    base = tv.load_model(base_dir)
    va, vb = tv.task_vector(base, dirs["ft_A"]), tv.task_vector(base, dirs["ft_B"])

    def nested(flat):
        return base.model.adapt_params(param_names.unflatten(dict(flat)))

    def scores(flat, tasks, split):
        return tv.task_scores(base.model, nested(flat), tasks, LENGTHS, split, args.num_examples)

    scales = lambda text: [float(s) for s in text.split(",")]
    neg = tv.scale_grid(base, [va], -1.0, scales(args.neg_scales),
                        lambda p: tv.task_scores(base.model, p, [A, C], LENGTHS, "validation",
                                                 args.num_examples))
    neg_scale = tv.negation_scale(neg, A, C)
    own = {A: scores(va.finetuned, [A], "validation")[A],
           B: scores(vb.finetuned, [B], "validation")[B]}
    add = tv.scale_grid(base, [va, vb], 1.0, scales(args.add_scales),
                        lambda p: tv.task_scores(base.model, p, [A, B], LENGTHS, "validation",
                                                 args.num_examples))
    add_scale = tv.addition_scale(add, own)
    rows = {
        "base": base.params, "ft_A": va.finetuned, "ft_B": vb.finetuned,
        f"base - {neg_scale:g} tau_A": tv.apply(base, [(-neg_scale, va)]),
        f"base + {add_scale:g} (tau_A + tau_B)": tv.apply(base, [(add_scale, va),
                                                                  (add_scale, vb)]),
        "multitask A+B": tv.load_model(dirs["multitask_AB"]).params}
    table = {name: scores(flat, [A, B, C], "test") for name, flat in rows.items()}
    print(f"\nA = {A}, B = {B}, control = {C}; test split, {args.num_examples} examples each")
    print(f"| model | {A} | {B} | {C} |\n|---|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[t]:.1f}" for t in (A, B, C)) + " |")
    print(f"\nvalidation, negation grid: {neg}\nvalidation, addition grid: {add} "
          f"(finetuned: {own})")
    print(f"|tau_A| / |base| = {va.norm() / tv._norm(base.params):.3f}, "
          f"|tau_B| / |base| = {vb.norm() / tv._norm(base.params):.3f}; "
          f"training {train_time:.0f} s, total {time.time() - start:.0f} s")
    from bench.common import write_report
    write_report(args.report, table=table, negation_grid=neg, negation_scale=neg_scale,
                 addition_grid=add, addition_scale=add_scale, finetuned_validation=own,
                 seconds=time.time() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
