"""What the prompt-method comparisons (bench/hyperprompt.py, attempt.py,
match_prompt.py, schema_prompts.py) share: their command line's common
flags, the setup before the first run, resumable scores and the table file.
"""
from __future__ import annotations

import argparse
import json
import os

PEFT_BASE = os.path.expanduser("~/.cache/t5mtl/peft_base")


class ScoreCache:
    """A comparison's {row: {task: value}}, kept in a JSON file that every
    `record` rewrites atomically, so an interrupted comparison resumes from
    the scores it finished."""

    def __init__(self, path: str):
        self.path = path
        self.rows = json.load(open(path)) if os.path.exists(path) else {}

    def record(self, row: str, task: str, value) -> None:
        self.rows.setdefault(row, {})[task] = value
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path + ".tmp", "w") as f:
            json.dump(self.rows, f, indent=1)
        os.replace(self.path + ".tmp", self.path)


def parser(doc: str, out: str, num_examples: int, quick_help: str) -> argparse.ArgumentParser:
    """--base, --out, --batch_size, --num_examples, --seed, --data_dir, --quick;
    the caller adds its own."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--base", default=PEFT_BASE, help="the frozen base's model directory "
                   "(gin/runs/peft_base.gin trains it when missing)")
    p.add_argument("--out", default=out, help="runs, scores and table.md; a rerun resumes")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--num_examples", type=int, default=num_examples,
                   help="validation examples scored per task")
    p.add_argument("--seed", type=int, default=0, help="initializations and data order")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--quick", action="store_true", help=quick_help)
    return p


def prepare(args, train_base: bool = True) -> None:
    """Compilation cache under --out, the data directory, the registered
    tasks, and the base (trained when missing and `train_base`)."""
    from t5mtl.train.compile_cache import use_compilation_cache
    use_compilation_cache(os.path.join(args.out, "xla_cache"))
    from t5mtl.data import data_dir
    data_dir.set_data_dir(args.data_dir)
    import t5mtl.data.registry  # noqa: F401  (registers tasks and mixtures)
    if train_base:
        from bench.peft_compare import ensure_base
        ensure_base(args.base, args.data_dir)


def write_table(args, text: str) -> str:
    """Prints the table and keeps it as --out/table.md."""
    print(text, flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(text + "\n")
    return text


def write_results(args, result: dict, table: str) -> str:
    """--out/results.json (`result`) and --out/table.md (`write_table`)."""
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    return write_table(args, table)


def markdown(first: str, columns, rows) -> str:
    """A markdown table: `rows` are (label, cells); a float cell prints with
    one decimal, None as '-', a string as it is."""
    def cell(v):
        return "-" if v is None else v if isinstance(v, str) else f"{v:.1f}"
    lines = [f"| {first} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(cell(v) for v in cells) + " |"
              for label, cells in rows]
    return "\n".join(lines)


def mean(values) -> float | None:
    """The mean, or None when any value is missing."""
    return None if not values or None in values else sum(values) / len(values)


def over_seeds(per_seed, digits: int = 1) -> list[tuple[str, list]]:
    """The same tables from several seeds as one: each cell 'mean ± sample
    std' over the seeds (the value alone where every seed gave the same, as
    chance and the untrained base do; '-' where a seed lacks the cell)."""
    import numpy as np
    tables = [dict(rows) for rows in per_seed]
    out = []
    for label, first in per_seed[0]:
        cells = []
        for i in range(len(first)):
            values = [t[label][i] if label in t else None for t in tables]
            if None in values:
                cells.append(None)
            elif len(set(values)) == 1:
                cells.append(f"{values[0]:.{digits}f}")
            else:
                cells.append(f"{np.mean(values):.{digits}f} ± "
                             f"{np.std(values, ddof=1):.{digits}f}")
        out.append((label, cells))
    return out
