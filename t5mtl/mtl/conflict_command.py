"""`t5mtl conflict --model_dir D`: the conflict probes' summary.

Reads the "conflict" rows of D/metrics.jsonl (written by a run with
``train.conflict_probe_period = K``, t5mtl.mtl.probes) and writes, into
``--out`` (default D/conflict):

  conflict.md            tables: mean cosine and mean lookahead transfer per task
                         pair, mean gradient-norm ratio, mean cosine per
                         parameter group and pair
  cosine.png             heat map of the mean whole-model cosine
  transfer.png           heat map of the mean transfer (row: the task stepped
                         on, column: the task whose loss moved)
  cosine_over_time.png   each pair's whole-model cosine against the step

A mean is over the probe steps where both tasks were in the batch; a pair
never measured together is blank ("" in tables, grey in maps).
"""
from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

import numpy as np

from t5mtl import paths
from t5mtl.errors import T5mtlError

PREFIX = "conflict/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model_dir", required=True, help="a run with conflict probes")
    parser.add_argument("--out", default=None, help="where to write (default MODEL_DIR/conflict)")


def read_rows(model_dir: str) -> list[dict]:
    """The "conflict" rows of model_dir/metrics.jsonl, by step."""
    path = paths.join(model_dir, "metrics.jsonl")
    if not paths.isfile(path):
        raise T5mtlError(f"{path} does not exist: is {model_dir!r} a training run's model_dir?")
    rows = []
    with paths.open_file(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise T5mtlError(f"{path}:{n}: not JSON ({e.msg})") from e
            if row.get("split") == "conflict":
                rows.append(row)
    if not rows:
        raise T5mtlError(f"{path} has no conflict probe rows; train with "
                         f"train.conflict_probe_period=K (K > 0)")
    return sorted(rows, key=lambda r: r["step"])


def summarize(rows: list[dict], tasks: list[str] | None = None) -> dict:
    """{"tasks", "cos", "transfer", "norm_ratio": [T, T] means (NaN: never
    measured), "groups": {group: {(ti, tj): mean}}, "steps", "cos_series":
    {(ti, tj): [(step, cos)]}}."""
    if tasks is None:
        tasks = sorted({k.split("/")[2] for r in rows for k in r
                        if k.startswith(PREFIX + "norm/")})
    index = {t: i for i, t in enumerate(tasks)}
    sums = {m: defaultdict(list) for m in ("cos", "transfer", "norm_ratio")}
    groups: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    series = defaultdict(list)
    for row in rows:
        for key, value in row.items():
            if not key.startswith(PREFIX) or isinstance(value, str):
                continue
            parts = key[len(PREFIX):].split("/")
            if parts[0] in sums and len(parts) == 3:
                sums[parts[0]][(parts[1], parts[2])].append(value)
                if parts[0] == "cos":
                    series[(parts[1], parts[2])].append((row["step"], value))
            elif parts[0] == "group_cos" and len(parts) == 4:
                groups[parts[1]][(parts[2], parts[3])].append(value)
    out = {"tasks": tasks, "steps": [r["step"] for r in rows], "cos_series": dict(series)}
    for metric, pairs in sums.items():
        m = np.full((len(tasks), len(tasks)), np.nan)
        for (a, b), values in pairs.items():
            if a in index and b in index:
                m[index[a], index[b]] = float(np.mean(values))
                if metric == "cos":
                    m[index[b], index[a]] = m[index[a], index[b]]
        if metric == "cos":
            np.fill_diagonal(m, 1.0)
        out[metric] = m
    out["groups"] = {g: {p: float(np.mean(v)) for p, v in pairs.items()}
                     for g, pairs in sorted(groups.items(), key=lambda kv: _group_key(kv[0]))}
    return out


def _group_key(group: str):
    order = {"embeddings": 0, "encoder": 1, "decoder": 2, "rest": 3}
    stack, _, layer = group.partition(".")
    return order.get(stack, 4), int(layer) if layer.isdigit() else -1


def _cell(x: float) -> str:
    return "" if np.isnan(x) else f"{x:.4f}"


def matrix_table(m: np.ndarray, tasks: list[str], corner: str) -> str:
    lines = [f"| {corner} | " + " | ".join(tasks) + " |",
             "|---|" + "---|" * len(tasks)]
    for i, t in enumerate(tasks):
        lines.append(f"| {t} | " + " | ".join(_cell(x) for x in m[i]) + " |")
    return "\n".join(lines)


def markdown(summary: dict, model_dir: str) -> str:
    tasks = summary["tasks"]
    pairs = [(a, b) for i, a in enumerate(tasks) for b in tasks[i + 1:]]
    parts = [f"# Task conflict: {model_dir}", "",
             f"{len(summary['steps'])} probe steps ({summary['steps'][0]} to "
             f"{summary['steps'][-1]}); means over the steps where both tasks were present.",
             "", "## Mean cosine of task gradients (whole model)", "",
             matrix_table(summary["cos"], tasks, "cos"), "",
             "## Mean lookahead transfer 1 - L_j(theta - lr g_i) / L_j(theta)", "",
             "Row i: the task whose gradient was stepped on; column j: the task whose loss "
             "changed (positive: the step on i lowered j's loss).", "",
             matrix_table(summary["transfer"], tasks, "i \\ j"), "",
             "## Mean gradient-norm ratio |g_i| / |g_j| (i < j)", "",
             matrix_table(summary["norm_ratio"], tasks, "i \\ j"), ""]
    if summary["groups"]:
        parts += ["## Mean cosine per parameter group", "",
                  "| group | " + " | ".join(f"{a} / {b}" for a, b in pairs) + " |",
                  "|---|" + "---|" * len(pairs)]
        for group, values in summary["groups"].items():
            parts.append(f"| {group} | " + " | ".join(
                _cell(values.get(p, np.nan)) for p in pairs) + " |")
        parts.append("")
    return "\n".join(parts)


def heat_map(m: np.ndarray, tasks: list[str], title: str, path: str, symmetric_range: bool):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    size = 1.2 + 0.9 * len(tasks)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    limit = np.nanmax(np.abs(m)) if np.any(np.isfinite(m)) else 1.0
    limit = limit if limit > 0 else 1.0
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(m), cmap=cmap,
                      vmin=-1.0 if symmetric_range else -limit,
                      vmax=1.0 if symmetric_range else limit)
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
    ax.set_yticks(range(len(tasks)), tasks)
    for i in range(len(tasks)):
        for j in range(len(tasks)):
            if np.isfinite(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def time_plot(series: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for (a, b), points in sorted(series.items()):
        steps, values = zip(*points)
        ax.plot(steps, values, marker=".", label=f"{a} / {b}")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("cosine (whole model)")
    ax.set_title("task-gradient cosine over training")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(model_dir: str, out: str | None = None) -> dict[str, str]:
    """Writes the summary files; returns {kind: path}."""
    rows = read_rows(model_dir)
    tasks = None
    model_json = paths.join(model_dir, "model.json")
    if paths.isfile(model_json):
        with paths.open_file(model_json) as f:
            tasks = json.load(f).get("tasks") or None
    summary = summarize(rows, tasks)
    out = out or paths.join(model_dir, "conflict")
    if paths.is_cloud(out):                 # written locally, then uploaded whole
        import tempfile
        with tempfile.TemporaryDirectory() as local:
            files = _write_files(summary, model_dir, local)
            paths.upload_tree(local, out)
        return {kind: paths.join(out, os.path.basename(p)) for kind, p in files.items()}
    return _write_files(summary, model_dir, out)


def _write_files(summary: dict, model_dir: str, out: str) -> dict[str, str]:
    os.makedirs(out, exist_ok=True)
    files = {"markdown": os.path.join(out, "conflict.md"),
             "cosine": os.path.join(out, "cosine.png"),
             "transfer": os.path.join(out, "transfer.png"),
             "cosine_over_time": os.path.join(out, "cosine_over_time.png")}
    with open(files["markdown"], "w") as f:
        f.write(markdown(summary, model_dir))
    heat_map(summary["cos"], summary["tasks"], "mean cosine of task gradients",
             files["cosine"], True)
    heat_map(summary["transfer"], summary["tasks"], "mean lookahead transfer (row i -> col j)",
             files["transfer"], False)
    time_plot(summary["cos_series"], files["cosine_over_time"])
    return files


def run(args: argparse.Namespace) -> int:
    files = write_report(args.model_dir, args.out)
    for kind, path in files.items():
        print(f"{kind}: {path}")
    return 0
