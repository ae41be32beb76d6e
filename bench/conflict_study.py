"""Task conflict, text-to-text vs multi-head, with and without PCGrad.

After Mueller, Andrews & Dredze (2022, "Do Text-to-Text Multi-Task Learners
Suffer from Task Conflict?"). One mixture of classification tasks (equal
rates) is trained four ways, with the same seed, data order, optimizer and
steps:

  t2t           text-to-text T5 (EncoderDecoderModel), plain summed gradient
  t2t_pcgrad    the same with train.gradient_surgery = 'pcgrad'
  mh            MultiHeadClassifier (the same encoder size, a head per task)
  mh_pcgrad     the same with PCGrad

with conflict probes every K steps (t5mtl.mtl.probes). Per run and task
pair, from the run's metrics.jsonl (summarized by t5mtl.mtl.conflict_command):
the mean whole-model cosine, the mean encoder cosine (the mean over the
encoder blocks' per-block cosines, ``group_cos/encoder.<i>``: the multi-head
model has no decoder, so the encoder is the comparable part) and the mean
lookahead transfer; and per task the rank-classification accuracy over its
labels (for the multi-head model rank classification picks what its head
predicts) next to chance (the majority share of the evaluated examples).

  python -m bench.conflict_study --out /tmp/conflict_study --data_dir ../shared/data

Writes out/study.json (one entry per finished run, so an interrupted study
resumes), out/study.md, out/cosine_over_time.png, out/heat_maps.png, and each
run's own `t5mtl conflict` report under out/<run>/conflict.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

SYNTH = ("synth_sign", "synth_parity", "synth_greater")
REAL = ("glue_sst2", "glue_cola", "superglue_rte")
RUNS = {"t2t": ("t2t", None), "t2t_pcgrad": ("t2t", "pcgrad"),
        "mh": ("mh", None), "mh_pcgrad": ("mh", "pcgrad")}
TITLES = {"t2t": "text-to-text", "t2t_pcgrad": "text-to-text + PCGrad",
          "mh": "multi-head", "mh_pcgrad": "multi-head + PCGrad"}


def feature_lengths(tasks, input_length: int) -> dict:
    """Targets: the longest label of any task plus EOS (no label is cut)."""
    import seqio
    from t5mtl.data.task_info import get_task_info
    longest = 0
    for task in tasks:
        vocab = seqio.get_mixture_or_task(task).output_features["targets"].vocabulary
        longest = max([longest] + [len(vocab.encode(label))
                                   for label in get_task_info(task).label_names])
    return {"inputs": input_length, "targets": longest + 1}


def check_tasks(tasks) -> list:
    """The tasks in the mixture's order (the probes' and heads' order); one
    line (T5mtlError) for a task that is unknown, not classification or
    without a train split."""
    import seqio
    from t5mtl.data.data_config import resolve_mixture
    from t5mtl.data.task_ids import task_names
    from t5mtl.data.task_info import get_task_info
    from t5mtl.errors import T5mtlError
    if len(tasks) < 2:
        raise T5mtlError(f"a conflict study needs at least 2 tasks, got {list(tasks)}")
    mixture = resolve_mixture(list(tasks))
    for task in tasks:
        if not get_task_info(task).label_names:
            raise T5mtlError(f"{task!r} is not a classification task (no label names)")
        if "train" not in seqio.get_mixture_or_task(task).splits:
            raise T5mtlError(f"{task!r} has no train split (in this data_dir)")
    return task_names(mixture)


def train_run(run: str, tasks, args) -> str:
    import optax
    from t5mtl.data.data_config import DataConfig
    from t5mtl.models import get_config
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.models.multi_head import MultiHeadClassifier
    from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
    arch, surgery = RUNS[run]
    config = get_config(args.config)
    model = (EncoderDecoderModel(config) if arch == "t2t"
             else MultiHeadClassifier(config, list(tasks), head="mlp"))
    model_dir = os.path.join(args.out, run)
    train(model_dir, model=model,
          data=DataConfig(mixture_or_task_name=list(tasks), batch_size=args.batch_size,
                          task_feature_lengths=feature_lengths(tasks, args.input_length),
                          pack=False, seed=args.seed),
          num_steps=args.steps, optimizer=optax.adam(args.lr),
          checkpoints=CheckpointConfig(period=10 ** 9, keep=1, async_save=False),
          evaluation=EvalConfig(), seed=args.seed, log_period=args.probe_period,
          show_progress=False, gradient_surgery=surgery,
          conflict_probe_period=args.probe_period, conflict_probe_lr=args.probe_lr)
    return model_dir


def encoder_cosine(summary: dict) -> dict:
    """{(ti, tj): mean over the encoder blocks of their mean per-block cosine}."""
    blocks = [g for g in summary["groups"] if g.startswith("encoder.")]
    pairs = {p for g in blocks for p in summary["groups"][g]}
    return {p: float(np.mean([summary["groups"][g][p] for g in blocks
                              if p in summary["groups"][g]])) for p in pairs}


def encoder_series(rows, pair) -> list:
    """[(step, mean over encoder blocks of that probe's cosine)] for one pair."""
    out = []
    for row in rows:
        values = [v for k, v in row.items() if k.startswith("conflict/group_cos/encoder.")
                  and k.endswith(f"/{pair[0]}/{pair[1]}")]
        if values:
            out.append((row["step"], float(np.mean(values))))
    return out


def accuracies(model_dir: str, tasks, args) -> dict:
    import t5mtl
    from t5mtl.data.task_info import get_task_info
    from t5mtl.infer.evaluation import majority_share
    from t5mtl.infer.rank_classification import rank_classify
    loaded = t5mtl.load(model_dir)
    out = {}
    for task in tasks:
        r = rank_classify(loaded.model, loaded.params, task,
                          list(get_task_info(task).label_names),
                          num_examples=args.num_examples, input_length=args.input_length)
        out[task] = {"accuracy": float(r["accuracy"]),
                     "chance": float(majority_share(r["targets"])), "n": len(r["targets"])}
    return out


def study_run(run: str, tasks, args) -> dict:
    """Trains (unless finished), probes' summary and accuracies of one run."""
    import time
    from t5mtl.mtl import conflict_command
    model_dir = os.path.join(args.out, run)
    start = time.time()
    if not os.path.exists(os.path.join(model_dir, "checkpoints")):
        train_run(run, tasks, args)
    train_s = time.time() - start
    conflict_command.write_report(model_dir)
    rows = conflict_command.read_rows(model_dir)
    summary = conflict_command.summarize(rows, list(tasks))
    enc = encoder_cosine(summary)
    pairs = [(a, b) for i, a in enumerate(tasks) for b in tasks[i + 1:]]
    idx = {t: i for i, t in enumerate(tasks)}

    def num(x):
        return None if np.isnan(x) else float(x)
    return {
        "probe_steps": summary["steps"],
        "cos": {f"{a}/{b}": num(summary["cos"][idx[a], idx[b]]) for a, b in pairs},
        "enc_cos": {f"{a}/{b}": enc.get((a, b)) for a, b in pairs},
        "transfer": {f"{a}/{b}": num(summary["transfer"][idx[a], idx[b]])
                     for a in tasks for b in tasks if a != b},
        "cos_series": {f"{a}/{b}": summary["cos_series"].get((a, b), []) for a, b in pairs},
        "enc_series": {f"{a}/{b}": encoder_series(rows, (a, b)) for a, b in pairs},
        "accuracy": accuracies(model_dir, tasks, args),
        "train_s": round(train_s, 1)}


def _cell(x, digits=3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def markdown(study: dict) -> str:
    tasks, runs = study["tasks"], [r for r in RUNS if r in study["runs"]]
    res = study["runs"]
    pairs = [f"{a}/{b}" for i, a in enumerate(tasks) for b in tasks[i + 1:]]
    head = "| pair | " + " | ".join(TITLES[r] for r in runs) + " |\n|---|" + "---|" * len(runs)
    s = study["setup"]
    out = ["# Conflict study: text-to-text vs multi-head, with and without PCGrad", "",
           f"Tasks: {', '.join(tasks)}. `{s['config']}`, {s['steps']} Adam steps at lr "
           f"{s['lr']}, batch {s['batch_size']} (equal-rate mixture), inputs "
           f"{s['input_length']}, seed {s['seed']}; probes every {s['probe_period']} steps "
           f"(lookahead SGD lr {s['probe_lr']}); accuracy on up to {s['num_examples']} "
           "validation examples per task.", "",
           "## Summary over task pairs", "",
           f"Second half: probe steps >= {s['steps'] // 2}.", "",
           "| run | encoder cos: mean | 2nd half | < 0 | whole cos: mean | transfer: mean "
           "| mean abs | < 0 |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        enc, cos, tr = ([v for v in res[r][k].values() if v is not None]
                        for k in ("enc_cos", "cos", "transfer"))
        late = _mean(_mean(v for step, v in points if step >= s["steps"] // 2)
                     for points in res[r]["enc_series"].values())
        out.append(f"| {TITLES[r]} | {_cell(_mean(enc))} | {_cell(late)} | "
                   f"{sum(v < 0 for v in enc)} of "
                   f"{len(enc)} | {_cell(_mean(cos))} | {_cell(_mean(tr), 4)} | "
                   f"{_cell(_mean(map(abs, tr)), 4)} | {sum(v < 0 for v in tr)} of {len(tr)} |")
    out.append("")
    for key, title in (("enc_cos", "Mean cosine, shared encoder (mean over encoder blocks)"),
                       ("cos", "Mean cosine, whole model")):
        out += [f"## {title}", "", head]
        out += [f"| {p} | " + " | ".join(_cell(res[r][key][p]) for r in runs) + " |"
                for p in pairs]
        out += ["| mean | " + " | ".join(_cell(_mean(res[r][key].values())) for r in runs)
                + " |", ""]
    out += ["## Mean lookahead transfer 1 - L_j(theta - lr g_i) / L_j(theta)", "",
            "Row i -> j: a step on task i's gradient, the relative change of task j's loss "
            "(positive: i helps j).", "",
            head.replace("| pair |", "| i -> j |")]
    out += [f"| {a} -> {b} | " + " | ".join(_cell(res[r]["transfer"][f"{a}/{b}"], 4)
                                           for r in runs) + " |"
            for a in tasks for b in tasks if a != b]
    out += ["| mean | " + " | ".join(_cell(_mean(res[r]["transfer"].values()), 4)
                                     for r in runs) + " |", ""]
    out += ["## Accuracy (%, rank classification over the task's labels)", "",
            "| task | chance | " + " | ".join(TITLES[r] for r in runs) + " |",
            "|---|---|" + "---|" * len(runs)]
    for t in tasks:
        first = res[runs[0]]["accuracy"][t]
        out.append(f"| {t} (n={first['n']}) | {first['chance']:.1f} | " + " | ".join(
            f"{res[r]['accuracy'][t]['accuracy']:.1f}" for r in runs) + " |")
    out += ["", "Training time per run (s): " + ", ".join(
        f"{r} {res[r]['train_s']}" for r in runs), ""]
    return "\n".join(out)


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def plots(study: dict, out: str) -> dict:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks, runs = study["tasks"], [r for r in RUNS if r in study["runs"]]
    res = study["runs"]
    files = {"time": os.path.join(out, "cosine_over_time.png"),
             "heat": os.path.join(out, "heat_maps.png")}
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.6), sharey=True,
                             squeeze=False)
    for ax, r in zip(axes[0], runs):
        for pair, points in sorted(res[r]["enc_series"].items()):
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker=".", linewidth=1, label=pair.replace("/", " / "))
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_title(TITLES[r], fontsize=10)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("encoder cosine")
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(files["time"], dpi=90)
    plt.close(fig)
    n = len(tasks)
    fig, axes = plt.subplots(2, len(runs), figsize=(3.4 * len(runs), 6.4), squeeze=False)
    idx = {t: i for i, t in enumerate(tasks)}
    for col, r in enumerate(runs):
        cos, tr = np.full((n, n), np.nan), np.full((n, n), np.nan)
        for p, v in res[r]["enc_cos"].items():
            a, b = p.split("/")
            cos[idx[a], idx[b]] = cos[idx[b], idx[a]] = np.nan if v is None else v
        for p, v in res[r]["transfer"].items():
            a, b = p.split("/")
            tr[idx[a], idx[b]] = np.nan if v is None else v
        lim = max(1e-9, float(np.nanmax(np.abs(tr)))) if np.isfinite(tr).any() else 1.0
        for row, (m, vmax, name) in enumerate(((cos, 1.0, "encoder cosine"),
                                                (tr, lim, "transfer i -> j"))):
            ax = axes[row][col]
            im = ax.imshow(np.ma.masked_invalid(m), cmap="RdBu", vmin=-vmax, vmax=vmax)
            ax.set_xticks(range(n), tasks, rotation=60, ha="right", fontsize=6)
            ax.set_yticks(range(n), tasks, fontsize=6)
            for i in range(n):
                for j in range(n):
                    if np.isfinite(m[i, j]):
                        ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=5)
            ax.set_title(f"{TITLES[r]}: {name}", fontsize=8)
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(files["heat"], dpi=90)
    plt.close(fig)
    return files


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/t5mtl_conflict_study")
    parser.add_argument("--tasks", default=",".join(SYNTH + REAL))
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--config", default="t5_tiny")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--input_length", type=int, default=128)
    parser.add_argument("--probe_period", type=int, default=20)
    parser.add_argument("--probe_lr", type=float, default=0.01)
    parser.add_argument("--num_examples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 2 synthetic tasks, 6 steps, probes every 2")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.steps, args.probe_period = "synth_sign,synth_parity", 6, 2
        args.batch_size, args.input_length, args.num_examples = 8, 32, 16
    from t5mtl.train.compile_cache import use_compilation_cache
    use_compilation_cache(os.path.join(args.out, "xla_cache"))
    from t5mtl.data import data_dir
    from t5mtl.errors import T5mtlError
    data_dir.set_data_dir(args.data_dir)
    import t5mtl.data.registry  # noqa: F401  (registers tasks and mixtures)
    tasks = [t for t in args.tasks.split(",") if t]
    runs = [r for r in args.runs.split(",") if r]
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        raise T5mtlError(f"unknown run(s) {unknown}; choose from {list(RUNS)}")
    tasks = check_tasks(tasks)
    setup = {k: getattr(args, k) for k in ("config", "steps", "batch_size", "lr",
                                           "input_length", "probe_period", "probe_lr",
                                           "num_examples", "seed")}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "study.json")
    study = json.load(open(path)) if os.path.exists(path) else {}
    if study.get("tasks") != tasks or study.get("setup") != setup:
        study = {"tasks": tasks, "setup": setup, "runs": {}}
    for run in runs:
        if run not in study["runs"]:
            study["runs"][run] = study_run(run, tasks, args)
            with open(path + ".tmp", "w") as f:
                json.dump(study, f, indent=1)
            os.replace(path + ".tmp", path)
            print(f"{run}: done in {study['runs'][run]['train_s']} s", flush=True)
    study["runs"] = {r: study["runs"][r] for r in RUNS if r in study["runs"] and r in runs}
    with open(os.path.join(args.out, "study.md"), "w") as f:
        f.write(markdown(study))
    plots(study, args.out)
    print(markdown(study), flush=True)
    return study


if __name__ == "__main__":
    from t5mtl.errors import T5mtlError
    try:
        main()
    except T5mtlError as e:
        raise SystemExit(f"error: {e}")
