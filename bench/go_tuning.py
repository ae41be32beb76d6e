"""Go-tuning: zero-shot rank-classification accuracy before and after a
masked-LM update on task-aware unlabeled text, single- and multi-task.

From one base (gin/runs/peft_base.gin: t5_small_cpu pretrained on span
corruption and the synthetic instruction suite; never trained on the
target tasks), for the target tasks (default glue_sst2, superglue_rte,
superglue_cb):

  1. a pool of unlabeled text is read from ../shared/data: book paragraphs,
     image captions, Wikipedia sentences (SQuAD contexts), STS-B's news,
     forum and caption sentences, CoLA's sentences, dialogue turns,
     instructions, and the unlabeled *test* inputs of SST-2, RTE and CB (no
     label of any split is read; evaluation uses the validation splits);
  2. the pool and each target task's unlabeled train inputs are embedded with
     the base's encoder (mean-pooled), and t5mtl.mtl.go_tuning selects
     --budget texts per task (the geometry-guided rule); a control draws
     the same budget uniformly from the pool;
  3. the base is updated with T5's span corruption on: each task's own
     selection (single-task Go-tuning, one model per task); all selections
     mixed at equal rates (multi-task, the paper's mgo-T5, one model); the
     random control (one model); same steps, batch and learning rate;
  4. every model is scored zero-shot on the validation split by rank
     classification over label words, in two prompt formats: each task's
     "<task>_zs" instruction variant (its verbalizers as targets), and a
     cloze prompt whose blank is T5's first sentinel (CLOZE; targets
     "<extra_id_0> word", the form span corruption trains).

Writes --out/table.md (accuracy in each format: chance, base, control,
single-task, multi-task; then what each selection is made of) and
--out/results.json.

  python -m bench.go_tuning --data_dir ../shared/data --out /tmp/t5mtl_go
  python -m bench.go_tuning --data_dir ../shared/data --quick   # tiny base, minutes

The base is trained at --base when missing (bench.peft_compare.ensure_base);
embeddings, selections, runs and scores are cached under --out, so a rerun
resumes.
"""
from __future__ import annotations

import glob
import json
import os
import random
import re

import numpy as np

from bench import comparison

TASKS = ("glue_sst2", "superglue_rte", "superglue_cb")
MIN_CHARS, MAX_CHARS = 20, 400
EVAL_INPUT_LENGTH = 512
SOURCE_ORDER = ("books", "captions", "wikipedia", "stsb", "cola", "dialogues", "instructions",
                "sst2_test", "rte_test", "cb_test")


# ---------------------------------------------------------------------------
# The pool of unlabeled text.

def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _keep(texts):
    return [t for t in (_clean(x) for x in texts) if MIN_CHARS <= len(t) <= MAX_CHARS]


def _jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _tsv_column(path, column, header=True):
    """One column of a TSV file, by header name (or index without a header)."""
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    if header:
        column, rows = rows[0].index(column), rows[1:]
    return [r[column] for r in rows if len(r) > column]


def pool_sources(data_dir: str) -> dict[str, list[str]]:
    """{source: texts} read from the shared data folders (no labels read)."""
    d = lambda *p: os.path.join(data_dir, *p)  # noqa: E731
    books = []
    for path in sorted(glob.glob(d("raw_text_en", "gutenberg", "*.txt"))
                       + [d("raw_text_en", "tinyshakespeare", "input.txt")]):
        with open(path, encoding="utf-8-sig") as f:
            books += re.split(r"\n\s*\n", f.read())
    squad = json.load(open(d("squad_v1.1", "dev-v1.1.json")))
    wiki = [s for doc in squad["data"] for p in doc["paragraphs"]
            for s in re.split(r"(?<=[.!?])\s+", p["context"])]
    stsb = (_tsv_column(d("glue_stsb", "train.tsv"), "sentence1")
            + _tsv_column(d("glue_stsb", "train.tsv"), "sentence2"))
    turns = [re.sub(r"^#Person\d#:\s*", "", turn)
             for f in ("dialogsum.dev.jsonl", "dialogsum.test.jsonl")
             for ex in _jsonl(d("dialogsum", f)) for turn in ex["dialogue"].split("\n")]
    instructions = [ex["instruction"] for ex in _jsonl(d("self_instruct", "seed_tasks.jsonl"))]
    instructions += [ex["instruction"] for ex in
                     _jsonl(d("self_instruct", "user_oriented_instructions.jsonl"))]
    pair = lambda ex: f"{ex['hypothesis']} {ex['premise']}"  # noqa: E731  (task_texts' order)
    sources = {
        "books": books,
        "captions": open(d("multi30k", "train.en"), encoding="utf-8").read().splitlines(),
        "wikipedia": wiki,
        "stsb": stsb,
        "cola": _tsv_column(d("cola", "in_domain_train.tsv"), 3, header=False),
        "dialogues": turns,
        "instructions": instructions,
        "sst2_test": _tsv_column(d("glue_sst2", "test.tsv"), "sentence"),
        "rte_test": [pair(ex) for ex in _jsonl(d("superglue_rte", "test.jsonl"))],
        "cb_test": [pair(ex) for ex in _jsonl(d("superglue_cb", "test.jsonl"))],
    }
    return {name: list(dict.fromkeys(_keep(texts))) for name, texts in sources.items()}


def build_pool(data_dir: str, per_source: int, seed: int = 0) -> list[tuple[str, str]]:
    """[(source, text)]: up to `per_source` texts of each source (a seeded
    sample, in file order), texts of 20-400 characters, no duplicates."""
    pool, seen = [], set()
    for name, texts in pool_sources(data_dir).items():
        rng = random.Random(f"{seed}:{name}")
        keep = sorted(rng.sample(range(len(texts)), min(per_source, len(texts))))
        for i in keep:
            if texts[i] not in seen:
                seen.add(texts[i])
                pool.append((name, texts[i]))
    return pool


# ---------------------------------------------------------------------------
# Steps.

def quick_base(path: str, steps: int) -> None:
    """--quick's base: t5_tiny on the peft base's mixture for a few steps."""
    from t5mtl.data.data_config import DataConfig
    from t5mtl.models import get_config
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.train.optimizers import create_optimizer
    from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
    train(path, model=EncoderDecoderModel(get_config("t5_tiny")),
          data=DataConfig(mixture_or_task_name=["raw_text_en_span_corruption",
                                                "synth_seen_train"],
                          task_feature_lengths={"inputs": 128, "targets": 64}, batch_size=16),
          num_steps=steps, optimizer=create_optimizer("adafactor", learning_rate=1e-2),
          checkpoints=CheckpointConfig(period=10 ** 9, keep=1, async_save=False),
          evaluation=EvalConfig(), log_period=10 ** 9, show_progress=False)


def embeddings(args, base, pool, tasks) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The pool's and each task's train inputs' embeddings (cached in --out)."""
    from t5mtl.mtl import go_tuning
    path = os.path.join(args.out, "embeddings.npz")
    if os.path.exists(path):
        cached = np.load(path)
        if set(cached.files) >= {"pool", *(f"task:{t}" for t in tasks)}:
            return cached["pool"], {t: cached[f"task:{t}"] for t in tasks}
    embed = lambda texts: go_tuning.embed_texts(  # noqa: E731
        base.model, base.params, texts, base.vocabulary, args.embed_length)
    out = {"pool": embed([text for _, text in pool])}
    for task in tasks:
        out[f"task:{task}"] = embed(go_tuning.task_texts(task, "train",
                                                         limit=args.task_examples))
    os.makedirs(args.out, exist_ok=True)
    np.savez(path, **out)
    return out["pool"], {t: out[f"task:{t}"] for t in tasks}


def write_selections(args, pool, pool_emb, task_emb) -> dict:
    """Selection files (go: per task; random: the control) and their summary."""
    from t5mtl.data.go_tuning_tasks import selection_path, write_selection
    from t5mtl.mtl import go_tuning
    chosen = {f"go/{t}": s for t, s in go_tuning.select_for_tasks(
        task_emb, pool_emb, args.budget, args.coverage).items()}
    chosen["random/random"] = go_tuning.select_random(len(pool), args.budget, args.seed)
    summary = {}
    for key, sel in chosen.items():
        tag, target = key.split("/")
        rows = [{"text": pool[i][1], "source": pool[i][0], "pool_index": int(i),
                 "score": None if np.isnan(s) else float(s)}
                for i, s in zip(sel.indices, sel.scores)]
        write_selection(selection_path(os.path.join(args.out, "selection", tag), target), rows)
        counts = {src: sum(r["source"] == src for r in rows) for src in SOURCE_ORDER}
        summary[key] = {"selected": len(rows), "inside": sel.num_inside,
                        "radius": sel.radius, "sources": counts}
    return summary


def go_tune(args, run: str, names, lengths: dict) -> str:
    """The base updated with span corruption on `names` (cached)."""
    from t5mtl.data.data_config import DataConfig
    from t5mtl.train import model_dir as model_dir_lib
    from t5mtl.train.optimizers import create_optimizer
    from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
    path = os.path.join(args.out, "runs", run)
    train(path, model=model_dir_lib.read_model_json(args.base).model,
          data=DataConfig(mixture_or_task_name=names, task_feature_lengths=lengths,
                          batch_size=args.batch_size, pack=True, seed=args.seed),
          num_steps=args.steps, optimizer=create_optimizer("adafactor",
                                                           learning_rate=args.learning_rate),
          checkpoints=CheckpointConfig(period=10 ** 9, keep=1, async_save=False,
                                       init_from=args.base),
          evaluation=EvalConfig(), seed=args.seed, log_period=max(args.steps // 4, 1),
          show_progress=False)
    return path


def zero_shot(model, params, task: str, args) -> dict:
    """Rank classification of "<task>_zs" (validation) over its verbalizers."""
    from t5mtl.data.instruction_tasks import answer_options
    from t5mtl.infer.evaluation import majority_share
    from t5mtl.infer.rank_classification import rank_classify
    name = f"{task}_zs"
    result = rank_classify(model, params, name, list(answer_options(name)),
                           num_examples=args.num_examples, input_length=args.eval_length)
    return {"accuracy": result["accuracy"], "chance": majority_share(result["targets"])}


# Cloze prompts: the label word fills T5's first sentinel, the way span
# corruption (the Go-tuning update) trains the model to fill blanks. The
# words are this benchmark's choice (sentiment: LM-BFF's great / terrible).
CLOZE = {
    "glue_sst2": ("{sentence} It was <X> .", ("terrible", "great")),
    "superglue_rte": ("{premise} Question: {hypothesis} Yes or no? Answer: <X> .",
                      ("yes", "no")),
    "superglue_cb": ("{premise} Question: {hypothesis} Yes, no or maybe? Answer: <X> .",
                     ("yes", "no", "maybe")),
}


def cloze_zero_shot(model, params, vocabulary, task: str, args) -> dict:
    """Rank classification of CLOZE[task] on the validation split (the same
    examples as zero_shot's): the input with <extra_id_0> at the blank (the
    text before it cut from the left to fit), each option "<extra_id_0> word"."""
    import seqio
    from t5mtl.data.task_info import get_task_info
    from t5mtl.data.vocab import sentinel_id
    from t5mtl.infer.rank_classification import option_log_likelihoods
    template, words = CLOZE[task]
    before, after = template.split("<X>")
    blank = sentinel_id(vocabulary, 0)
    labels = list(get_task_info(task).label_names)
    rows = list(seqio.get_mixture_or_task(task).source.iter_examples("validation"))
    rows = rows[:args.num_examples] if args.num_examples else rows
    inputs = []
    for row in rows:
        tail = list(vocabulary.encode(after.format(**row))) + [1]
        head = list(vocabulary.encode(before.format(**row)))
        inputs.append(head[-(args.eval_length - 1 - len(tail)):] + [blank] + tail)
    options = [[blank] + list(vocabulary.encode(w)) + [1] for w in words]
    scores = option_log_likelihoods(model, params, inputs, options)
    gold = np.array([labels.index(row["label"]) for row in rows])
    return {"accuracy": 100.0 * float(np.mean(scores.argmax(axis=1) == gold))}


# ---------------------------------------------------------------------------
# The table.

ROWS = (("chance", "chance (majority class)"), ("base", "base, no update"),
        ("random", "MLM on random pool texts (control)"),
        ("single", "Go-tuned, single-task"), ("multi", "Go-tuned, multi-task (mgo)"))


def tables(scores: dict, summary: dict, tasks, args) -> str:
    rows = []
    for key, label in ROWS:
        cells = [scores.get(key, {}).get(t) for t in tasks]
        rows.append((label, cells + [comparison.mean(cells)]))
    acc = comparison.markdown("zero-shot accuracy (%), instruction prompts",
                              [*tasks, "mean"], rows)
    rows = []
    for key, label in ROWS:
        cells = [scores.get(key if key == "chance" else f"cloze_{key}", {}).get(t)
                 for t in tasks]
        rows.append((label, cells + [comparison.mean(cells)]))
    cloze = comparison.markdown("zero-shot accuracy (%), cloze prompts",
                                [*tasks, "mean"], rows)
    comp_rows = []
    for key, s in summary.items():
        shares = [100.0 * s["sources"][src] / max(s["selected"], 1) for src in SOURCE_ORDER]
        comp_rows.append((f"{key} ({s['selected']} of {s['inside']} inside)", shares))
    comp = comparison.markdown("selection: % from each source", list(SOURCE_ORDER), comp_rows)
    settings = (f"base {args.base}; pool {args.pool_size} texts ({args.per_source} per source "
                f"at most); {args.task_examples} train inputs per task embedded; budget "
                f"{args.budget}, coverage {args.coverage}; {args.steps} steps, batch "
                f"{args.batch_size}, Adafactor lr {args.learning_rate}, seed {args.seed}; "
                f"{args.num_examples or 'all'} validation examples per task, inputs "
                f"{args.eval_length} bytes")
    return f"{acc}\n\n{cloze}\n\n{comp}\n\n{settings}"


def main(argv=None) -> None:
    p = comparison.parser(__doc__, "/tmp/t5mtl_go", 0, "a tiny base and a small pool: minutes")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--per_source", type=int, default=2500, help="pool texts per source, at most")
    p.add_argument("--task_examples", type=int, default=1000,
                   help="unlabeled train inputs embedded per task")
    p.add_argument("--budget", type=int, default=500, help="texts selected per task")
    p.add_argument("--coverage", type=float, default=0.9)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--learning_rate", type=float, default=3e-3)
    p.add_argument("--embed_length", type=int, default=128)
    p.add_argument("--eval_length", type=int, default=EVAL_INPUT_LENGTH)
    args = p.parse_args(argv)
    if args.quick:
        if args.base == comparison.PEFT_BASE:
            args.base = os.path.join(args.out, "quick_base")
        args.tasks = ",".join(TASKS[:2])
        args.per_source, args.task_examples, args.budget = 40, 40, 24
        args.steps, args.batch_size = 6, 8
        args.num_examples, args.eval_length, args.embed_length = 16, 128, 64
    args.num_examples = args.num_examples or None
    tasks = args.tasks.split(",")
    comparison.prepare(args, train_base=not args.quick)
    from t5mtl.data.data_dir import resolve_data_dir
    from t5mtl.train.model_dir import is_model_dir
    if args.quick and not is_model_dir(args.base):
        quick_base(args.base, 20)
    import t5mtl
    from t5mtl.data.go_tuning_tasks import register_go_tuning_tasks
    from t5mtl.data.span_corruption import plan_span_corruption_lengths

    pool = build_pool(resolve_data_dir(args.data_dir), args.per_source, args.seed)
    args.pool_size = len(pool)
    base = t5mtl.load(args.base)
    pool_emb, task_emb = embeddings(args, base, pool, tasks)
    summary = write_selections(args, pool, pool_emb, task_emb)
    plan = plan_span_corruption_lengths(128)
    lengths = {"inputs": 128, "targets": plan.targets_length}
    selection = lambda tag: os.path.join(args.out, "selection", tag)  # noqa: E731

    cache = comparison.ScoreCache(os.path.join(args.out, "scores.json"))
    models = {"base": (args.base, tasks)}
    names = register_go_tuning_tasks(selection("random"), ["random"], prefix="control")
    models["random"] = (go_tune(args, "random", names, lengths), tasks)
    for task in tasks:
        names = register_go_tuning_tasks(selection("go"), [task])
        models[f"single:{task}"] = (go_tune(args, f"single_{task}", names, lengths), [task])
    names = register_go_tuning_tasks(selection("go"), tasks)
    models["multi"] = (go_tune(args, "multi", names, lengths), tasks)
    for key, (path, evaluated) in models.items():
        row = key.split(":")[0]
        todo = [t for t in evaluated if t not in cache.rows.get(row, {})
                or t not in cache.rows.get(f"cloze_{row}", {})]
        if not todo:
            continue
        loaded = t5mtl.load(path)
        for task in todo:
            result = zero_shot(loaded.model, loaded.params, task, args)
            cache.record(row, task, result["accuracy"])
            cache.record("chance", task, result["chance"])
            cloze = cloze_zero_shot(loaded.model, loaded.params, loaded.vocabulary, task, args)
            cache.record(f"cloze_{row}", task, cloze["accuracy"])
            print(f"{row} {task}: {result['accuracy']:.1f} (cloze {cloze['accuracy']:.1f})",
                  flush=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"scores": cache.rows, "selection": summary, "args": vars(args)}, f, indent=1)
    comparison.write_table(args, tables(cache.rows, summary, tasks, args))


if __name__ == "__main__":
    main()
