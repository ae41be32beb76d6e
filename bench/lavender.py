"""LAVENDER at toy scale: video QA, text <-> video retrieval and captioning as
one masked-LM task, each task alone and all three with one set of params.

Data: t5mtl.data.vision_tasks' generated videos (4 frames of a coloured
shape or digit moving left/right/up/down; train 1,664 videos, test 416).
Model: t5mtl.models.lavender.Lavender, a video ViT (vit_tiny_video, patch
--patch) and T5's encoder (t5_tiny's shape, wordpiece_en's 8,000 ids), from
scratch. Every model is trained here through `t5mtl.train.trainer.train`:

  qa, retrieval, caption   one task each, --steps steps
  mtl                      lavender_mtl (equal rates), 3 x --steps steps: the
                           same examples per task as the single-task runs

Few-shot QA: lavender_qa's first --fewshot training questions, --fewshot_steps
steps, from scratch and from the caption-only model (its params as the
init); QA accuracy only.

Every model is scored on every task's test split (a model on a task it was
not trained on is zero-shot):
  QA         accuracy of the argmax id at the [MASK], over the whole vocabulary
             (all 1,248 test questions: colour, object, direction)
  match      accuracy of p(true) > p(false) on lavender_retrieval's 832 test
             pairs (every test video with its caption and with one attribute
             changed)
  retrieval  text -> video and video -> text R@1 / R@5 over the first
             --retrieval_videos test videos and their captions (a caption
             that is the same string as another video's counts for both)
  caption    iterative masked decoding; token F1 and BLEU vs the caption
Baselines: chance (QA: 1 / the answers of the question's kind, averaged;
match: 50%; recall: a random ranking), majority (QA: each question's most frequent
training answer; caption: the most frequent training caption for every video).

  python -m bench.lavender --out /tmp/t5mtl_lavender

Runs are kept under --out and reused by a rerun; --quick makes each run a
few steps (a smoke run, numbers meaningless).
"""
from __future__ import annotations

import os

import numpy as np

from bench import comparison

LENGTHS = {"inputs": 12, "targets": 8}
CAPTION_LENGTH = 10           # decoding: [CLS] + up to 9 ids
RUNS = {"qa": "lavender_qa", "retrieval": "lavender_retrieval",
        "caption": "lavender_caption", "mtl": "lavender_mtl"}
KEYS = ["qa_acc", "match_acc", "t2v_R@1", "t2v_R@5", "v2t_R@1", "v2t_R@5", "cap_token_f1",
        "cap_bleu"]
COLUMNS = ["QA acc", "match acc", "t2v R@1", "t2v R@5", "v2t R@1", "v2t R@5", "cap F1", "cap BLEU"]


def make_model(args):
    from t5mtl.models import get_config
    from t5mtl.models.lavender import Lavender
    from t5mtl.models.vit import get_vit_config
    return Lavender(get_config("t5_tiny", vocab_size=8000),
                    get_vit_config("vit_tiny_video", patch_size=args.patch))


def register_fewshot_qa(k: int) -> str:
    """lavender_qa with its train split cut to the first `k` questions (the
    validation split whole)."""
    import seqio
    name = f"lavender_qa_first{k}"
    if name in seqio.TaskRegistry.names():
        return name
    base = seqio.get_mixture_or_task("lavender_qa")

    def dataset_fn(split, shuffle_files=False, seed=None):
        ds = base.source.get_dataset(split, shuffle=False)
        return ds.take(k) if split == "train" else ds

    seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(dataset_fn, base.splits),
                           preprocessors=base.preprocessors,
                           output_features=base.output_features, metric_fns=[])
    return name


def train_run(run: str, model, task: str, args, steps: int, init_from: str | None = None
              ) -> str:
    import optax
    from t5mtl.data.data_config import DataConfig
    from t5mtl.train.optimizers import create_optimizer
    from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
    warmup = max(1, steps // 10)
    schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, warmup, max(steps, warmup + 1),
                                                  end_value=args.lr * 0.1)
    train(run, model=model,
          data=DataConfig(mixture_or_task_name=task, task_feature_lengths=LENGTHS,
                          batch_size=args.batch_size, pack=False, seed=args.seed,
                          truncation_check_examples=0),
          num_steps=steps, optimizer=create_optimizer("adamw", learning_rate=schedule),
          checkpoints=CheckpointConfig(period=10 ** 9, keep=1, async_save=False,
                                       init_from=init_from),
          evaluation=EvalConfig(), seed=args.seed, log_period=max(steps // 5, 1),
          show_progress=False)
    return run


def test_data(args, vocab):
    """The test splits as ids and strings."""
    from t5mtl.data import vision_tasks as vt
    qa_videos, _, qa_texts = vt.task_arrays("lavender_qa", "validation", args.seed)
    videos, records, _ = vt.task_arrays("lavender_caption", "validation", args.seed)
    n = min(args.retrieval_videos, len(videos))
    m_videos, _, m_texts = vt.task_arrays("lavender_retrieval", "validation", args.seed)
    return {"qa_videos": qa_videos, "questions": [q for q, _ in qa_texts],
            "answers": [a for _, a in qa_texts],
            "question_ids": [list(vocab.encode(q)) for q, _ in qa_texts],
            "answer_ids": [int(vocab.encode(a)[0]) for _, a in qa_texts],
            "videos": videos, "captions": [r.caption for r in records],
            "m_videos": m_videos, "m_captions": [list(vocab.encode(c)) for c, _ in m_texts],
            "m_labels": np.array([t == "true" for _, t in m_texts]),
            "r_videos": videos[:n], "r_captions": [r.caption for r in records[:n]]}


def scores(model, params, data, vocab, args) -> dict:
    from t5mtl.infer import lavender_eval as le
    out = {}
    out["qa_acc"], pred = le.qa_accuracy(model, params, data["qa_videos"],
                                         data["question_ids"], data["answer_ids"],
                                         LENGTHS["inputs"], args.batch_size)
    right = pred == np.asarray(data["answer_ids"])
    for q in sorted(set(data["questions"])):
        rows = np.asarray(data["questions"]) == q
        out[f"qa_acc[{q}]"] = 100.0 * float(right[rows].mean())
    true_false = (vocab.encode("true")[0], vocab.encode("false")[0])
    lp = le.answer_log_probs(model, params, data["m_videos"], data["m_captions"],
                             LENGTHS["inputs"], args.batch_size, ids=true_false)
    out["match_acc"] = 100.0 * float(np.mean((lp[:, 0] > lp[:, 1]) == data["m_labels"]))
    cap_ids = [list(vocab.encode(c)) for c in data["r_captions"]]
    matrix = le.retrieval_matrix(model, params, data["r_videos"], cap_ids, LENGTHS["inputs"],
                                 *true_false, batch_size=4 * args.batch_size)
    out.update(le.retrieval_recall(matrix, data["r_captions"]))
    decoded = le.decode_captions(model, params, data["videos"], CAPTION_LENGTH,
                                 args.batch_size)
    texts = [vocab.decode([int(t) for t in row if t > 0]) for row in decoded]
    out.update({f"cap_{k}": v for k, v in le.caption_scores(data["captions"], texts).items()})
    out["caption_examples"] = texts[:4]
    return out


def baselines(data, args) -> dict:
    from t5mtl.data import vision_data as vd
    from t5mtl.data import vision_tasks as vt
    from t5mtl.infer import lavender_eval as le
    _, _, train_qa = vt.task_arrays("lavender_qa", "train", args.seed)
    majority = le.majority_answers([q for q, _ in train_qa], [a for _, a in train_qa])
    answers = np.asarray(data["answers"])
    guess = np.asarray([majority[q] for q in data["questions"]])
    kinds = {vd.QUESTIONS["colour"]: len(vd.COLOURS), vd.QUESTIONS["object"]:
             len(vd.VIDEO_OBJECTS), vd.QUESTIONS["direction"]: len(vd.DIRECTIONS)}
    chance_qa = 100.0 * float(np.mean([1.0 / kinds[q] for q in data["questions"]]))
    _, train_records, _ = vt.task_arrays("lavender_caption", "train", args.seed)
    common = max(set(r.caption for r in train_records),
                 key=[r.caption for r in train_records].count)
    constant = le.caption_scores(data["captions"], [common] * len(data["captions"]))
    zeros = np.zeros((len(data["r_captions"]),) * 2)
    recall = le.retrieval_recall(zeros, data["r_captions"])
    chance = [chance_qa, 50.0] + [recall[f"{k}_chance"] for k in KEYS[2:6]]
    return {"chance": chance + [None, None],
            "majority": [100.0 * float(np.mean(guess == answers))] + [None] * 5
            + [constant["token_f1"], constant["bleu"]],
            "majority_caption": common}


def main(argv=None) -> str:
    parser = comparison.parser(__doc__, "/tmp/t5mtl_lavender", 0,
                               "a few steps per run (a smoke run)")
    parser.add_argument("--steps", type=int, default=1500, help="steps of a single-task run")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--patch", type=int, default=8, help="the ViT's patch size")
    parser.add_argument("--retrieval_videos", type=int, default=100)
    parser.add_argument("--fewshot", type=int, default=64,
                        help="QA training questions of the few-shot runs (0: none)")
    parser.add_argument("--fewshot_steps", type=int, default=100)
    parser.set_defaults(batch_size=32)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.retrieval_videos, args.fewshot_steps = 3, 12, 3
    comparison.prepare(args, train_base=False)

    from t5mtl.data import vision_tasks as vt
    from t5mtl.data.vocab import get_vocabulary
    from t5mtl.infer import lavender_eval as le
    from t5mtl.train.model_dir import load_params
    vt.register(seed=args.seed)
    vocab = get_vocabulary("wordpiece_en")
    data = test_data(args, vocab)
    cache = comparison.ScoreCache(os.path.join(args.out, "scores.json"))
    model = make_model(args)
    for name, task in RUNS.items():
        if all(k in cache.rows.get(name, {}) for k in KEYS):
            continue
        steps = 3 * args.steps if name == "mtl" else args.steps
        run = train_run(os.path.join(args.out, name), model, task, args, steps)
        trained, params = load_params(run)
        for k, v in scores(trained, params, data, vocab, args).items():
            cache.record(name, k, v)
    fewshot = {}
    if args.fewshot:
        task = register_fewshot_qa(args.fewshot)
        for name, init in (("scratch", None), ("caption", os.path.join(args.out, "caption"))):
            row = f"fewshot_{name}"
            fewshot[row] = (f"QA few-shot ({args.fewshot} questions, {args.fewshot_steps} "
                            f"steps) from " + ("scratch" if init is None else
                                               "the caption-only model"))
            if "qa_acc" in cache.rows.get(row, {}):
                continue
            run = train_run(os.path.join(args.out, row), model, task, args,
                            args.fewshot_steps, init_from=init)
            trained, params = load_params(run)
            acc, _ = le.qa_accuracy(trained, params, data["qa_videos"], data["question_ids"],
                                    data["answer_ids"], LENGTHS["inputs"], args.batch_size)
            cache.record(row, "qa_acc", acc)
    base = baselines(data, args)
    label = {"qa": "QA only", "retrieval": "retrieval only", "caption": "caption only",
             "mtl": "multi-task (lavender_mtl, one model)"}
    rows = [(label[n], [cache.rows[n][k] for k in KEYS]) for n in RUNS]
    rows += [(text, [cache.rows[row]["qa_acc"]] + [None] * 7) for row, text in fewshot.items()]
    rows += [("chance", base["chance"]), ("majority / constant caption", base["majority"])]
    table = comparison.markdown(f"trained on ({args.steps} steps/task)", COLUMNS, rows)
    return comparison.write_results(args, {"rows": cache.rows, "baselines": base,
                                           "args": vars(args)}, table)


if __name__ == "__main__":
    main()
