"""PMR at toy scale: SQuAD v1.1 exact match / F1 of a small BERT machine
reader, with and without PMR's Wiki-Anchor-Extraction-style pretraining.

Every model is made here, through `t5mtl.train.trainer.train`:
  1. mlm:  BERT (bert_small_cpu) masked-LM pretrained on raw_text_en with the
           shipped WordPiece vocabulary (bert_mlm_raw_text_en: 15%, 80/10/10);
  2. wae:  the MLM's encoder plus PMR's span extractor, trained on WAE-style
           examples built from raw_text_en (data/wae_data.py: anchors are names
           found in two or more documents; the query is the anchor and a
           sentence of one document, the context a passage of another);
  3. SQuAD finetuning of a reader started from (a) nothing, (b) the MLM,
     (c) the WAE-pretrained reader; the same data, steps and batch.
SQuAD here is its dev set (the train file is not in ../shared/data), split
by article: 80% of the articles train, questions of the other 20% are
scored (EM/F1, the official normalization), one window of --length tokens
per question (an answer the window cuts off counts as missed). The "zero-shot"
row scores the WAE reader on SQuAD with no SQuAD training.

  python -m bench.pmr --data_dir ../shared/data --out /tmp/t5mtl_pmr

Runs are kept under --out and reused by a rerun; --quick makes every stage a
few steps (a smoke run, numbers meaningless).
"""
from __future__ import annotations

import os

import numpy as np

from bench import comparison

CONFIG_NAME = "bert_small_cpu"


def _schedule(lr: float, steps: int):
    import optax
    warmup = max(1, steps // 10)
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1),
                                              end_value=lr * 0.1)


def train_run(run: str, model, task: str, lengths: dict, args, steps: int, lr: float,
              init_from: str | None = None) -> str:
    from t5mtl.data.data_config import DataConfig
    from t5mtl.train.optimizers import create_optimizer
    from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
    train(run, model=model,
          data=DataConfig(mixture_or_task_name=task, task_feature_lengths=lengths,
                          batch_size=args.batch_size, pack=False, seed=args.seed,
                          truncation_check_examples=0),
          num_steps=steps, optimizer=create_optimizer("adamw", learning_rate=_schedule(lr, steps)),
          checkpoints=CheckpointConfig(period=10 ** 9, keep=1, async_save=False,
                                       init_from=init_from),
          evaluation=EvalConfig(), seed=args.seed, log_period=max(steps // 10, 1),
          show_progress=False)
    return run


def squad_scores(model, params, examples, layout, length: int, batch_size: int) -> dict:
    """EM / F1 of the best context span of each example's (first) window."""
    import jax
    from t5mtl.data import metrics
    from t5mtl.data.mrc_features import window_record
    from t5mtl.data.pmr_data import best_answer, encode_mrc
    best = jax.jit(lambda p, b: model.best_spans(p, b))
    predictions = []
    windows = [encode_mrc(ex, layout)[0] for ex in examples]
    for i in range(0, len(windows), batch_size):
        chunk = windows[i:i + batch_size]
        records = [window_record(w) for w in chunk]
        batch = {"encoder_input_tokens": np.zeros((batch_size, length), np.int32),
                 "encoder_token_types": np.zeros((batch_size, length), np.int32),
                 "context_mask": np.zeros((batch_size, length), np.int32),
                 "cls_span": np.zeros((batch_size,), np.int32)}
        for r, rec in enumerate(records):
            n = len(rec["inputs"])
            batch["encoder_input_tokens"][r, :n] = rec["inputs"]
            batch["encoder_token_types"][r, :n] = rec["token_types"]
            batch["context_mask"][r, :n] = rec["context_mask"]
        starts, ends, scores = (np.asarray(x) for x in best(params, batch))
        for r, w in enumerate(chunk):
            predictions.append(best_answer([w], starts[r, :1], ends[r, :1], scores[r, :1]))
    return metrics.squad([ex.references for ex in examples], predictions)


def main(argv=None) -> str:
    parser = comparison.parser(__doc__, "/tmp/t5mtl_pmr", 500,
                               "a few steps per stage (a smoke run)")
    parser.add_argument("--length", type=int, default=192, help="tokens per MRC window")
    parser.add_argument("--mlm_steps", type=int, default=300)
    parser.add_argument("--wae_steps", type=int, default=300)
    parser.add_argument("--squad_steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args(argv)
    if args.quick:
        args.mlm_steps = args.wae_steps = args.squad_steps = 3
        args.num_examples, args.batch_size = 16, 8
    comparison.prepare(args, train_base=False)

    from t5mtl.data import bert_tasks, mrc_tasks
    from t5mtl.models.bert_config import get_bert_config
    from t5mtl.models.machine_reader import MachineReader
    from t5mtl.models.masked_lm import MaskedLanguageModel

    layout = mrc_tasks.layout(args.length)
    config = get_bert_config(CONFIG_NAME, vocab_size=layout.vocab.vocab_size)
    out = lambda name: os.path.join(args.out, name)       # noqa: E731

    bert_tasks.register(layout.vocab)
    mlm_lengths = {k: 128 for k in bert_tasks.MLM_LENGTHS}
    mlm = train_run(out("mlm"), MaskedLanguageModel(config), bert_tasks.MLM_TASK, mlm_lengths,
                    args, args.mlm_steps, args.lr)

    reader = MachineReader(config)
    lengths = {"inputs": args.length}
    wae_task = mrc_tasks.register_pmr_wae(args.length, args.seed)
    wae_run = train_run(out("wae"), reader, wae_task, lengths, args, args.wae_steps, args.lr,
                        init_from=mlm)

    squad_task = mrc_tasks.register_pmr_squad(args.length, args.seed)
    squad_eval = mrc_tasks.squad_split(args.seed)[1][:args.num_examples]

    cache = comparison.ScoreCache(out("scores.json"))

    def score(row: str, run: str) -> None:
        if row in cache.rows:
            return
        model, params = _load(run)
        s = squad_scores(model, params, squad_eval, layout, args.length, args.batch_size)
        cache.record(row, "em", s["em"])
        cache.record(row, "f1", s["f1"])

    score("PMR zero-shot (WAE only, no SQuAD training)", wae_run)
    for row, init in (("no pretraining", None), ("MLM", mlm), ("MLM + WAE (PMR)", wae_run)):
        name = {"no pretraining": "squad_scratch", "MLM": "squad_mlm"}.get(row, "squad_pmr")
        run = train_run(out(name), reader, squad_task, lengths, args, args.squad_steps,
                        args.lr, init_from=init)
        score(row, run)
    rows = [(row, [cache.rows[row]["em"], cache.rows[row]["f1"]])
            for row in ("PMR zero-shot (WAE only, no SQuAD training)", "no pretraining", "MLM",
                        "MLM + WAE (PMR)")]
    return comparison.write_table(args, comparison.markdown(
        f"reader init ({len(squad_eval)} held-out questions)", ["EM", "F1"], rows))


def _load(run: str):
    from t5mtl.train.model_dir import load_params
    return load_params(run)


if __name__ == "__main__":
    main()
