"""A transfer map between task families, in the manner of ExT5 (Aribandi et al. 2022).

Each family is trained alone and each unordered pair of families together
(the two family mixtures at 1:1), every run from the same init and, unless
`pair_step_factor` says otherwise, for the same number of steps, so a pair
run sees about half as many examples of each family (R then measures
co-training at equal compute; docs/mtl.md, "Transfer map"). Each run is
evaluated on its families' validation splits with the tasks' own metrics;
a family's score is the mean over its tasks of each task's primary metric
(its TaskInfo's first metric), and

    R[i, j] = 100 * (S_ij(i) - S_i(i)) / S_i(i)            (%)

with S_ij(i) family i's score trained with j, S_i(i) alone; over seeds,
R of the seed means. R is undefined on the diagonal and where S_i(i) = 0.
A family is a synthetic category's tasks (examples-proportional, cap 3,000)
or any named list of tasks. Runs are cached in out/runs/<run>/seed_<s>/
with the settings that made them (a map resumes; other settings are
refused); the report is out/transfer_map.{json,md,png}.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
import warnings
from typing import Mapping, Sequence

import numpy as np

from t5mtl.errors import T5mtlError

DEFAULT_MODEL = "t5_tiny"
DEFAULT_STEPS = 300
DEFAULT_BATCH_SIZE = 32
LENGTHS = {"inputs": 64, "targets": 16}
LEARNING_RATE = 0.01      # Adafactor, constant (the quickstart's)
EVAL_BATCH_SIZE = 64
FAMILY_CAP = 3000         # examples-proportional cap per task inside a family (FLAN's)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a map's runs share; each cached run records them."""
    model: str = DEFAULT_MODEL      # a named config; ignored when `init` is given
    init: str | None = None         # a model_dir every run starts from
    steps: int = DEFAULT_STEPS
    batch_size: int = DEFAULT_BATCH_SIZE
    seeds: int = 1
    pair_step_factor: int = 1
    learning_rate: float = LEARNING_RATE
    lengths: Mapping[str, int] = dataclasses.field(default_factory=lambda: dict(LENGTHS))
    num_examples: int | None = None     # per task and family evaluation (None: whole split)

    def check(self) -> None:
        for name in ("steps", "batch_size", "seeds", "pair_step_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise T5mtlError(f"{name} must be a positive integer, got {value!r}")
        if self.num_examples is not None and (not isinstance(self.num_examples, int)
                                              or self.num_examples < 1):
            raise T5mtlError(f"num_examples must be a positive integer, got "
                             f"{self.num_examples!r}")
        if not self.learning_rate > 0:
            raise T5mtlError(f"learning_rate must be positive, got {self.learning_rate!r}")


# ---------------------------------------------------------------- families and runs

def resolve_families(specs: Sequence[str] | None = None) -> dict[str, tuple[str, ...]]:
    """{family: its tasks}. A spec is a synthetic category ("counting") or
    "NAME=task1+task2"; None: every synthetic category."""
    from t5mtl.data import synthetic
    if specs is None:
        specs = list(synthetic.CATEGORIES)
    families: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        name, eq, tasks = str(spec).strip().partition("=")
        name = name.strip()
        if eq:
            members = tuple(t.strip() for t in tasks.split("+") if t.strip())
            if not name or not members:
                raise T5mtlError(f"family {spec!r}: write NAME=task1+task2")
            _check_tasks(spec, members)
        elif name in synthetic.CATEGORIES:
            members = tuple(synthetic.task_names(name))
        else:
            raise T5mtlError(f"unknown family {name!r}: name a synthetic category "
                             f"({', '.join(synthetic.CATEGORIES)}) or write NAME=task1+task2")
        if name in families:
            raise T5mtlError(f"family {name!r} is listed twice")
        if "+" in name or "/" in name:
            raise T5mtlError(f"family name {name!r} may not contain '+' or '/'")
        families[name] = members
    if len(families) < 2:
        raise T5mtlError(f"a transfer map needs at least 2 families, got {len(families)}: "
                         f"{', '.join(families) or 'none'}")
    return families


def _check_tasks(spec: str, tasks: Sequence[str]) -> None:
    import seqio
    import t5mtl.data.registry  # noqa: F401  (the built-in tasks)
    for task in tasks:
        if task not in seqio.TaskRegistry.names():
            raise T5mtlError(f"family {spec!r}: unknown task {task!r}")


def runs(families: Sequence[str]) -> list[tuple[str, ...]]:
    """Each family alone, then each unordered pair (in the families' order)."""
    return [(f,) for f in families] + list(itertools.combinations(families, 2))


def run_name(run: Sequence[str]) -> str:
    return "+".join(run)


def family_mixture(family: str, tasks: Sequence[str]) -> str:
    """The family's seqio mixture (examples-proportional, cap FAMILY_CAP)."""
    from t5mtl.data.mixing import register_mixture
    return register_mixture(f"transfer_map.{family}", list(tasks),
                            rate="examples_proportional", cap=FAMILY_CAP)


def run_mixture(run: Sequence[str], families: Mapping[str, Sequence[str]]) -> str:
    """A family's mixture, or a pair's: the two family mixtures at 1:1."""
    from t5mtl.data.mixing import register_mixture
    mixtures = [family_mixture(f, families[f]) for f in run]
    if len(mixtures) == 1:
        return mixtures[0]
    return register_mixture(f"transfer_map.{run_name(run)}", mixtures, rate="weights",
                            weights=[1.0] * len(mixtures))


def family_score(results: Mapping[str, Mapping[str, float]],
                 tasks: Sequence[str]) -> dict:
    """{"score": mean over tasks of the primary metric, "tasks": {task: value}}."""
    from t5mtl.data.task_info import get_task_info, has_task_info
    per_task = {}
    for task in tasks:
        metrics = results.get(task)
        if not metrics:
            raise T5mtlError(f"no evaluation results for task {task!r}")
        primary = get_task_info(task).metrics[0] if has_task_info(task) else None
        per_task[task] = float(metrics[primary] if primary in metrics
                               else next(iter(metrics.values())))
    return {"score": float(np.mean(list(per_task.values()))), "tasks": per_task}


# ---------------------------------------------------------------- the arithmetic

def relative_change(alone: Mapping[str, float],
                    pair: Mapping[str, Mapping[str, float]],
                    families: Sequence[str]) -> np.ndarray:
    """R [n, n] in %: row i = the family evaluated, column j = its partner;
    NaN on the diagonal, where a pair is missing and where alone[i] == 0."""
    n = len(families)
    r = np.full((n, n), np.nan)
    for i, a in enumerate(families):
        base = alone.get(a)
        for j, b in enumerate(families):
            if i == j or base is None or base == 0 or b not in pair.get(a, {}):
                continue
            r[i, j] = 100.0 * (pair[a][b] - base) / base
    return r


def summarize(families: Sequence[str], run_scores: Mapping[str, Mapping[int, dict]]) -> dict:
    """From {run name: {seed: {family: score}}}: the seed means ("alone",
    "pair" [i][j] = i's score trained with j, "alone_std"/"pair_std" sample
    std over seeds, None for one seed) and "relative_change" (R, None where
    undefined)."""
    def mean_std(values):
        std = float(np.std(values, ddof=1)) if len(values) > 1 else None
        return float(np.mean(values)), std

    alone, alone_std, pair, pair_std = {}, {}, {}, {}
    for f in families:
        if f in run_scores and run_scores[f]:
            alone[f], alone_std[f] = mean_std([s[f] for s in run_scores[f].values()])
    for a, b in itertools.combinations(families, 2):
        seeds = run_scores.get(run_name((a, b)))
        if not seeds:
            continue
        for x, y in ((a, b), (b, a)):
            pair.setdefault(x, {})[y], pair_std.setdefault(x, {})[y] = mean_std(
                [s[x] for s in seeds.values()])
    r = relative_change(alone, pair, families)
    return {"families": list(families), "alone": alone, "alone_std": alone_std,
            "pair": pair, "pair_std": pair_std,
            "relative_change": {a: {b: (None if np.isnan(r[i, j]) else float(r[i, j]))
                                    for j, b in enumerate(families)}
                                for i, a in enumerate(families)}}


def matrix(summary: dict) -> np.ndarray:
    """R of a summary as an [n, n] array (NaN where undefined)."""
    fams = summary["families"]
    rc = summary["relative_change"]
    return np.array([[np.nan if rc[a][b] is None else rc[a][b] for b in fams] for a in fams])


# ---------------------------------------------------------------- training one run

def _model(settings: Settings):
    from t5mtl.models import get_config
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    if settings.init:
        from t5mtl.train import model_dir as model_dir_lib
        if not model_dir_lib.is_model_dir(settings.init):
            raise T5mtlError(f"--init {settings.init!r} is not a t5mtl model_dir")
        return model_dir_lib.read_model_json(settings.init).model
    return EncoderDecoderModel(get_config(settings.model))


def _record(settings: Settings, run: Sequence[str], families, seed: int) -> dict:
    """What a cached run must match to be reused."""
    s = dataclasses.asdict(settings)
    s.pop("seeds")
    s["model"] = None if settings.init else settings.model
    s["steps"] = settings.steps * (settings.pair_step_factor if len(run) > 1 else 1)
    s.pop("pair_step_factor")
    s["lengths"] = dict(settings.lengths)
    s.update(run=list(run), seed=seed, tasks={f: list(families[f]) for f in run})
    return s


def train_and_score(out: str, run: Sequence[str], families: Mapping[str, Sequence[str]],
                    seed: int, settings: Settings) -> dict:
    """{family: score} of one run (trained and evaluated, or read from its cache)."""
    run_dir = os.path.join(out, "runs", run_name(run), f"seed_{seed}")
    cache = os.path.join(run_dir, "scores.json")
    record = _record(settings, run, families, seed)
    if os.path.exists(cache):
        with open(cache) as f:
            cached = json.load(f)
        if cached["settings"] != record:
            diff = sorted(k for k in record if cached["settings"].get(k) != record[k])
            raise T5mtlError(
                f"{cache} was made with other settings ({', '.join(diff)}: "
                f"{', '.join(repr(cached['settings'].get(k)) for k in diff)}); "
                f"use another --out or remove it")
        return {f: v["score"] for f, v in cached["families"].items()}
    from t5mtl.data.data_config import DataConfig
    from t5mtl.infer.evaluation import TaskEvaluator
    from t5mtl.train.model_dir import load_params
    from t5mtl.train.optimizers import create_optimizer, learning_rate_schedule
    from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
    start = time.time()
    model_dir = os.path.join(run_dir, "model")
    train(model_dir, model=_model(settings), num_steps=record["steps"],
          data=DataConfig(mixture_or_task_name=run_mixture(run, families),
                          task_feature_lengths=dict(settings.lengths),
                          batch_size=settings.batch_size, seed=seed,
                          truncation_check_examples=0),
          optimizer=create_optimizer("adafactor", learning_rate=learning_rate_schedule(
              "constant", settings.learning_rate, 0)),
          checkpoints=CheckpointConfig(period=10 ** 9, keep=1, async_save=False,
                                       init_from=settings.init),
          evaluation=EvalConfig(), seed=seed, log_period=10 ** 9, show_progress=False)
    trained = time.time()
    model, params = load_params(model_dir)
    scores = {}
    for family in run:
        results = TaskEvaluator(family_mixture(family, families[family]), settings.lengths,
                                "validation", settings.num_examples,
                                EVAL_BATCH_SIZE).evaluate(model, params)
        scores[family] = family_score(results, families[family])
    entry = {"settings": record, "families": scores,
             "seconds": {"train": trained - start, "eval": time.time() - trained}}
    _write_json(cache, entry)
    print(f"{run_name(run)} seed {seed}: " + ", ".join(
        f"{f} {v['score']:.1f}" for f, v in scores.items())
          + f" ({entry['seconds']['train']:.0f} s train, {entry['seconds']['eval']:.0f} s eval)",
          flush=True)
    return {f: v["score"] for f, v in scores.items()}


def compute(out: str, families: Mapping[str, Sequence[str]],
            settings: Settings | None = None) -> dict:
    """Trains (or reads from the cache) every run of every seed, then writes
    transfer_map.json, .md and .png into `out`; returns the summary."""
    settings = settings or Settings()
    settings.check()
    import t5mtl.data.registry  # noqa: F401  (the built-in tasks)
    start = time.time()
    names = list(families)
    scores = {run_name(r): {seed: train_and_score(out, r, families, seed, settings)
                            for seed in range(settings.seeds)} for r in runs(names)}
    summary = summarize(names, scores)
    summary.update(tasks={f: list(t) for f, t in families.items()},
                   settings={**dataclasses.asdict(settings), "lengths": dict(settings.lengths)},
                   runs={name: {str(s): v for s, v in by_seed.items()}
                         for name, by_seed in scores.items()},
                   seconds=time.time() - start)
    write_report(summary, out)
    return summary


# ---------------------------------------------------------------- the report

def _write_json(path: str, value) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1)
    os.replace(path + ".tmp", path)


def _cell(mean: float | None, std: float | None = None, signed: bool = False) -> str:
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return ""
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    return text + (f" ± {std:.1f}" if std is not None else "")


def markdown(summary: dict) -> str:
    fams = summary["families"]
    r = matrix(summary)
    settings = summary.get("settings", {})
    lines = ["# Transfer map", ""]
    if settings:
        lines += [f"Model {settings.get('init') or settings.get('model')}, "
                  f"{settings.get('steps')} steps (pairs x{settings.get('pair_step_factor', 1)}),"
                  f" batch {settings.get('batch_size')}, {settings.get('seeds')} seed(s); "
                  f"pairs mixed 1:1. Scores: mean over each family's tasks of the primary "
                  f"metric, validation split" + (" (± sample std over seeds)"
                                                 if settings.get("seeds", 1) > 1 else "") + ".",
                  ""]
    lines += ["## Scores", "",
              "Row: the family evaluated; `alone`: trained on it alone; column j: trained on "
              "it and j.", "",
              "| family | alone | " + " | ".join(fams) + " |",
              "|---|---|" + "---|" * len(fams)]
    for a in fams:
        cells = [_cell(summary["pair"].get(a, {}).get(b), summary["pair_std"].get(a, {}).get(b))
                 if a != b else "-" for b in fams]
        lines.append(f"| {a} | {_cell(summary['alone'].get(a), summary['alone_std'].get(a))} "
                     f"| " + " | ".join(cells) + " |")
    lines += ["", "## Relative change R (%)", "",
              "R[i, j] = 100 (score of i trained with j - score of i alone) / score of i "
              "alone. Row i: the family evaluated; column j: its partner; n/a: undefined (score "
              "alone 0, or the pair not run). `mean`: over i's partners (what co-training "
              "does to i); `mean as partner`: over column j (what j does to the others).", "",
              "| i \\ j | " + " | ".join(fams) + " | mean |",
              "|---|" + "---|" * (len(fams) + 1)]
    with warnings.catch_warnings():     # an all-blank row or column: no mean
        warnings.simplefilter("ignore", RuntimeWarning)
        row_mean, col_mean = np.nanmean(r, axis=1), np.nanmean(r, axis=0)
    for i, a in enumerate(fams):
        cells = ["" if i == j else "n/a" if np.isnan(x) else _cell(x, signed=True)
                 for j, x in enumerate(r[i])]
        lines.append(f"| {a} | " + " | ".join(cells)
                     + f" | {_cell(row_mean[i], signed=True)} |")
    lines.append("| mean as partner | " + " | ".join(_cell(x, signed=True) for x in col_mean)
                 + " | |")
    finite = r[np.isfinite(r)]
    if finite.size:
        lines += ["", f"{int((finite > 0).sum())} of {finite.size} cells positive, "
                      f"{int((finite < 0).sum())} negative; mean {finite.mean():+.1f}%."]
    return "\n".join(lines) + "\n"


def heat_map(summary: dict, path: str) -> None:
    """R as a heat map: diverging colormap centered at 0, annotated cells,
    rows = the family evaluated, columns = the partner, diagonal blank,
    undefined cells grey ("n/a")."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt
    fams = summary["families"]
    r = matrix(summary)
    size = 1.5 + 0.9 * len(fams)
    fig, ax = plt.subplots(figsize=(size + 1.8, size))
    finite = np.abs(r[np.isfinite(r)])
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="white")
    image = ax.imshow(np.ma.masked_invalid(r), cmap=cmap, vmin=-limit, vmax=limit)
    alone = summary["alone"]
    ax.set_xticks(range(len(fams)), fams, rotation=45, ha="right")
    ax.set_yticks(range(len(fams)), [f"{f} ({alone[f]:.1f})" if f in alone else f
                                     for f in fams])
    ax.set_xlabel("co-trained with (partner family)")
    ax.set_ylabel("family evaluated (score alone)")
    for i in range(len(fams)):
        for j in range(len(fams)):
            if np.isfinite(r[i, j]):
                ax.text(j, i, f"{r[i, j]:+.1f}", ha="center", va="center", fontsize=8,
                        color="white" if abs(r[i, j]) > 0.6 * limit else "black")
            elif i != j:        # undefined (score alone 0, or the pair not run): grey
                ax.add_patch(matplotlib.patches.Rectangle((j - 0.5, i - 0.5), 1, 1,
                                                          color="lightgrey"))
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=8)
    ax.set_title("relative change when co-trained (%)")
    fig.colorbar(image, ax=ax, label="R (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(summary: dict, out: str) -> dict[str, str]:
    """transfer_map.json, .md and .png in `out`; returns {kind: path}."""
    os.makedirs(out, exist_ok=True)
    files = {"json": os.path.join(out, "transfer_map.json"),
             "markdown": os.path.join(out, "transfer_map.md"),
             "heat_map": os.path.join(out, "transfer_map.png")}
    _write_json(files["json"], summary)
    with open(files["markdown"], "w") as f:
        f.write(markdown(summary))
    heat_map(summary, files["heat_map"])
    return files
