"""The multi-task prompt methods over seeds: one table per method, each cell
mean ± sample std.

Runs each method's comparison (bench/hyperprompt.py, attempt.py,
match_prompt.py, schema_prompts.py, with their defaults) once per seed
into --out/<method>/seed<k>, skipping a seed whose table.md exists (each
comparison also resumes inside a seed), then reads every seed's scores and
writes --out/tables.md.

  python -m bench.prompt_methods --data_dir ../shared/data --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import json
import os

from bench import attempt, comparison, hyperprompt, match_prompt, schema_prompts

SCHEMA_ARGS = ["--steps", "400", "--num_examples", "100"]      # docs/peft.md's run


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def hyperprompt_rows(seed_dir: str):
    return hyperprompt.rows(_load(os.path.join(seed_dir, "scores.json")),
                            sorted(hyperprompt.TASKS))


def match_prompt_rows(seed_dir: str):
    return match_prompt.rows(_load(os.path.join(seed_dir, "scores.json")),
                             sorted(match_prompt.TRAIN_TASKS), match_prompt.UNSEEN)


def schema_rows(seed_dir: str):
    return schema_prompts.rows(_load(os.path.join(seed_dir, "results.json")),
                               list(schema_prompts.EVAL_TASKS))


def attempt_rows(seed_dir: str):
    return attempt.rows(_load(os.path.join(seed_dir, "results.json")))


def attempt_attention_rows(seed_dir: str):
    return attempt.attention_rows(_load(os.path.join(seed_dir, "results.json")))


# method -> (its comparison's main, extra arguments, [(table title, rows of a seed dir)])
METHODS = {
    "hyperprompt": (hyperprompt.main, [], [
        ("HyperPrompt: rank accuracy (%) on 7 tasks, one multi-task run", hyperprompt_rows)]),
    "attempt": (attempt.main, [], [
        ("ATTEMPT: rank accuracy (%) per target", attempt_rows),
        ("ATTEMPT: mean attention per target (uniform 0.200)", attempt_attention_rows)]),
    "match_prompt": (match_prompt.main, [], [
        ("Match-Prompt: rank accuracy (%), in-domain and unseen", match_prompt_rows)]),
    "schema_prompts": (schema_prompts.main, SCHEMA_ARGS, [
        ("Schema prompts: score (%) on held-out and seen tasks", schema_rows)]),
}


def seed_table(seed_dirs, rows_of, digits: int = 1) -> str:
    """One markdown table over the seeds' directories."""
    per_seed = [rows_of(d) for d in seed_dirs]
    first, columns, _ = per_seed[0]
    for d, (_, other, _) in zip(seed_dirs, per_seed):
        if list(other) != list(columns):
            raise ValueError(f"{d}: columns {other} differ from the first seed's {columns}")
    return comparison.markdown(first, columns, comparison.over_seeds(
        [rows for _, _, rows in per_seed], digits))


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/t5mtl_prompt_methods")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--base", default=comparison.PEFT_BASE)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    sections = []
    for name in args.methods.split(","):
        run, extra, tables = METHODS[name]
        dirs = [os.path.join(args.out, name, f"seed{s}") for s in seeds]
        for seed, d in zip(seeds, dirs):
            if not os.path.exists(os.path.join(d, "table.md")):
                run(["--out", d, "--seed", str(seed), "--base", args.base, *extra,
                     *(["--data_dir", args.data_dir] if args.data_dir else [])])
        for title, rows_of in tables:
            digits = 3 if "attention" in title else 1
            sections.append(f"{title}, seeds {args.seeds}\n\n"
                            + seed_table(dirs, rows_of, digits))
    text = "\n\n".join(sections)
    print(text, flush=True)
    with open(os.path.join(args.out, "tables.md"), "w") as f:
        f.write(text + "\n")
    return text


if __name__ == "__main__":
    main()
