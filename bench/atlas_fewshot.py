"""Atlas few-shot QA at CPU scale: joint training of a FiD reader and a
retriever on the 64 few-shot training questions (t5mtl.retrieval.rounds),
then the reader's exact match and F1 on the test questions closed-book,
with the gold passage and with the top-k retrieved, before and after; the
retriever's recall@1/5/20 before and after; and passages added to the
index after training (`added_documents`).

Start: the reader from --reader (a T5 model_dir), the retriever from
--retriever (a DualEncoder or T5 model_dir), its towers untied (query-side
training: the passage tower and so the index stay as built, Atlas's
few-shot setting). Corpus, questions and split as bench/retrieval_recall.py.

  python -m bench.atlas_fewshot --data_dir ../shared/data \\
      --reader /tmp/t5mtl_go/base500 --retriever /tmp/t5mtl_atlas/contriever400

Writes --out/table.md and --out/results.json.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from bench import comparison

SETTINGS = (("closed_book", 1), ("gold", 1), ("retrieved", None))


def build_model(args):
    import t5mtl
    from t5mtl.models.atlas import AtlasModel
    from t5mtl.models.dual_encoder import DualEncoder
    from t5mtl.models.fusion_in_decoder import FusionInDecoder
    reader = t5mtl.load(args.reader)
    retriever = t5mtl.load(args.retriever)
    if isinstance(retriever.model, DualEncoder):
        untied = DualEncoder.from_spec({**retriever.model.spec(), "shared": False})
    else:                                   # a T5 model_dir: its encoder on both sides
        untied = DualEncoder(retriever.model.config, shared=False)
    model = AtlasModel(FusionInDecoder(reader.model.config), untied,
                       distillation=args.distillation, retriever_training="query")
    return model


def reader_scores(model, params, rounds, by_id, test, retrieved, setting: str, k: int,
                  batch_size: int, max_decode_length: int) -> dict:
    """EM and F1 (percent) of the reader's greedy answers on `test`."""
    from t5mtl.data import fewshot_qa, fid_features
    from t5mtl.models.encoder_decoder import DecodeConfig
    decode = model.reader.decoder(DecodeConfig(max_decode_length=max_decode_length))
    answers = []
    for start in range(0, len(test), batch_size):
        chunk = list(test[start:start + batch_size])
        n = len(chunk)
        chunk += [chunk[0]] * (batch_size - n)             # one compiled shape
        ids = None if retrieved is None else retrieved[start:start + batch_size]
        if ids is not None:
            ids = list(ids) + [ids[0]] * (batch_size - n)
        batch = fid_features.fid_batch(chunk, rounds.vocabulary, by_id, setting, k, ids,
                                       rounds.lengths, rounds.title)
        out = np.asarray(decode(params["reader"], {"encoder_input_tokens":
                                                   batch["encoder_input_tokens"]}))
        answers += [rounds.vocabulary.decode([int(t) for t in row if t > 1]) for row in out[:n]]
    return fewshot_qa.qa_scores(test, answers)              # already percent


def evaluate(model, params, rounds, by_id, test, index, args) -> dict:
    from t5mtl.retrieval import recall
    ranked = rounds.retrieve(params["retriever"], index, test)  # top rounds.k
    wide = index.search(rounds.embed(params["retriever"], [q.question for q in test], "query"),
                        max(recall.RECALL_KS))[1]
    out = {f"recall@{k}": 100 * v for k, v in
           recall.recall_at_k([q.passage_id for q in test], wide).items()}
    for setting, k in SETTINGS:
        scores = reader_scores(model, params, rounds, by_id, test, ranked if setting == "retrieved"
                               else None, setting, k or args.k, args.eval_batch_size,
                               args.max_decode_length)
        out.update({f"{setting}/{name}": v for name, v in scores.items()})
        print(setting, scores, flush=True)
    return out


def added_documents(rounds, params, index, test) -> dict:
    """Index refresh after training: the corpus indexed without the test
    questions' gold passages, then those passages embedded with the trained
    retriever and added; recall@k (percent) of the test questions before and
    after the add, and how many questions the grown index ranks exactly as
    the index built with them from the start."""
    from t5mtl.retrieval import recall
    from t5mtl.retrieval.index import PassageIndex
    gold = sorted({q.passage_id for q in test} & set(rounds.by_id))
    ids = index.ids
    vectors = index.embeddings()
    keep = [i for i, pid in enumerate(ids) if pid not in set(gold)]
    grown = PassageIndex.build(vectors[keep], [ids[i] for i in keep])
    queries = rounds.embed(params["retriever"], [q.question for q in test], "query")
    ks = recall.RECALL_KS
    golds = [q.passage_id for q in test]
    out = {"added": len(gold), "before": {
        k: 100 * v for k, v in recall.recall_at_k(golds, grown.search(queries, max(ks))[1]).items()}}
    new = [p.text for p in (rounds.by_id[g] for g in gold)]
    fresh = rounds.embed(params["retriever"], new, "passage")
    grown.add(fresh, gold)
    after = grown.search(queries, max(ks))[1]
    out["after"] = {k: 100 * v for k, v in recall.recall_at_k(golds, after).items()}
    full = index.search(queries, max(ks))[1]
    position = {pid: i for i, pid in enumerate(ids)}
    # the added passages as re-embedded against as stored; faiss breaks a tie
    # in score by insertion order, which the add changed
    out["max_abs_embedding_difference"] = float(np.max(np.abs(
        fresh - vectors[[position[g] for g in gold]])))
    out["questions_ranked_identically"] = sum(a == f for a, f in zip(after, full))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", default=None)
    p.add_argument("--out", default="/tmp/t5mtl_atlas_fewshot")
    p.add_argument("--reader", required=True, help="a T5 model_dir")
    p.add_argument("--retriever", required=True, help="a DualEncoder or T5 model_dir")
    p.add_argument("--distillation", default="adist", choices=("adist", "pdist", "none"))
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--inputs_length", type=int, default=384)
    p.add_argument("--embed_length", type=int, default=128)
    p.add_argument("--max_decode_length", type=int, default=32)
    p.add_argument("--eval_batch_size", type=int, default=50)
    p.add_argument("--test_size", type=int, default=500)
    p.add_argument("--corpus_limit", type=int, default=None)
    args = p.parse_args(argv)
    import t5mtl
    from t5mtl.data import fewshot_qa, passages
    from t5mtl.data.data_dir import set_data_dir
    from t5mtl.retrieval import rounds as atlas_rounds
    from t5mtl.retrieval.atlas_fewshot import atlas_fewshot_train
    from t5mtl.retrieval.index import PassageIndex
    set_data_dir(args.data_dir)

    model = build_model(args)
    run = os.path.join(args.out, "run")
    lengths = {"inputs": args.inputs_length, "query": args.embed_length,
               "passages": args.embed_length, "targets": args.max_decode_length}
    rounds = atlas_fewshot_train(run, model=model, reader_from=args.reader,
                                 retriever_from=args.retriever, k=args.k,
                                 num_steps=args.steps, batch_size=args.batch_size,
                                 lengths=lengths, learning_rate=args.learning_rate,
                                 corpus_limit=args.corpus_limit, show_progress=False)
    corpus = rounds.passages
    _, test = fewshot_qa.fewshot_split(fewshot_qa.squad_questions(args.data_dir),
                                       test_size=args.test_size, seed=0)
    init = os.path.join(run, "init")
    index = PassageIndex.load(atlas_rounds.index_dir(run, 0))
    by_id = {**{p.id: p for p in passages.squad_passages(args.data_dir)}, **rounds.by_id}
    rows = []
    for name, path in (("before (start)", init), (f"after {args.steps} steps", run)):
        params = model.adapt_params(t5mtl.load(path).params)
        rows.append({"model": name, **evaluate(model, params, rounds, by_id, test, index,
                                               args)})
    added = added_documents(rounds, params, index, test)
    print("added documents", added, flush=True)
    cols = ["closed_book/em", "gold/em", "retrieved/em", "closed_book/f1", "gold/f1",
            "retrieved/f1", "recall@1", "recall@5", "recall@20"]
    header = (f"| reader + retriever ({len(test)} test questions, {len(corpus):,} passages, "
              f"k = {args.k}) | EM closed-book | EM gold | EM top-{args.k} | F1 closed-book "
              f"| F1 gold | F1 top-{args.k} | recall@1 | recall@5 | recall@20 |")
    table = "\n".join([header, "|---|" + "---|" * len(cols)] + [
        f"| {r['model']} | " + " | ".join(f"{r[c]:.1f}" for c in cols) + " |" for r in rows])
    table += (f"\n\nAdded after training: the index without the test questions' "
              f"{added['added']} gold passages, then those passages embedded with the trained "
              f"retriever and added. recall@1/5/20 before the add "
              + "/".join(f"{added['before'][k]:.1f}" for k in sorted(added['before']))
              + ", after " + "/".join(f"{added['after'][k]:.1f}" for k in sorted(added['after']))
              + f"; {added['questions_ranked_identically']} of {len(test)} questions get "
              f"the same top-20 as from the index built with them (the re-embedded passages "
              f"differ from the stored ones by at most "
              f"{added['max_abs_embedding_difference']:.1e})")
    result = {"rows": rows, "added_documents": added, "passages": len(corpus),
              "questions": len(test),
              "settings": {k: v for k, v in vars(args).items() if k != "out"}}
    comparison.write_results(args, result, table)
    return result


if __name__ == "__main__":
    from t5mtl.host_memory import reexec_with_malloc_policy
    reexec_with_malloc_policy()          # the CLI's malloc policy (t5mtl/host_memory.py)
    main()
