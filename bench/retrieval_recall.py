"""Retrieval recall@1/5/20 on the few-shot QA test questions (Atlas's
retriever table): for each retriever, the share of the test questions whose
gold SQuAD paragraph is among the top k passages of an exact inner-product
index over the whole corpus.

Corpus: t5mtl.data.passages.passage_corpus (every SQuAD dev paragraph, then
raw_text_en's books in 100-word windows); questions: the test set of
t5mtl.data.fewshot_qa.fewshot_split (seed 0, 500 questions, articles apart
from the 64 training questions'). Passages and questions are cut to
--length tokens; the passage side embeds the paragraph text alone.

Retrievers (--retriever NAME=SPEC, repeatable):
  untrained          a DualEncoder on --config with its random initialization
  t5:MODEL_DIR       a trained T5's encoder, mean-pooled (t5mtl.retrieval.embed)
  dual:MODEL_DIR     a trained DualEncoder (query and passage sides)

  python -m bench.retrieval_recall --data_dir ../shared/data \\
      --retriever untrained=untrained --retriever t5=t5:/tmp/t5mtl_go/base500 \\
      --retriever contriever=dual:/tmp/t5mtl_atlas/contriever400

Writes --out/table.md and --out/results.json. Chance: k / passages.
"""
from __future__ import annotations

import argparse

from bench import comparison


def embedder(spec: str, config: str, length: int, batch_size: int):
    """embed(texts, side) -> float32 [n, d] for a --retriever SPEC."""
    import jax
    from t5mtl.retrieval import embed
    if spec.startswith("t5:"):
        import t5mtl
        loaded = t5mtl.load(spec[3:])
        fn = embed.encoder_embedding_fn(loaded.model)
        return lambda texts, side: embed.embed_texts(
            loaded.model, loaded.params, texts, loaded.vocabulary, length, batch_size, fn)
    if spec.startswith("dual:"):
        import t5mtl
        loaded = t5mtl.load(spec[5:])
        model, params, vocab = loaded.model, loaded.params, loaded.vocabulary
    elif spec == "untrained":
        import flax.linen as nn
        from t5mtl.data.vocab import get_vocabulary
        from t5mtl.models import get_config
        from t5mtl.models.dual_encoder import DualEncoder
        model = DualEncoder(get_config(config))
        params = nn.unbox(model.init_boxed(jax.random.PRNGKey(0)))
        vocab = get_vocabulary()
    else:
        raise SystemExit(f"--retriever spec must be untrained, t5:DIR or dual:DIR, got {spec!r}")
    fns = {side: jax.jit(lambda p, t, side=side: model.embed(p, t, side))
           for side in ("query", "passage")}
    return lambda texts, side: embed.embed_texts(model, params, texts, vocab, length,
                                                 batch_size, fns[side])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", default=None)
    p.add_argument("--out", default="/tmp/t5mtl_retrieval_recall")
    p.add_argument("--retriever", action="append", required=True, help="NAME=SPEC")
    p.add_argument("--config", default="t5_small_cpu", help="the untrained retriever's")
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--test_size", type=int, default=500)
    p.add_argument("--corpus_limit", type=int, default=None)
    args = p.parse_args(argv)
    from t5mtl.data import fewshot_qa, passages
    from t5mtl.data.data_dir import set_data_dir
    from t5mtl.retrieval import recall
    from t5mtl.retrieval.index import PassageIndex
    set_data_dir(args.data_dir)

    corpus = passages.passage_corpus(limit=args.corpus_limit, data_dir=args.data_dir)
    _, test = fewshot_qa.fewshot_split(fewshot_qa.squad_questions(args.data_dir),
                                       test_size=args.test_size, seed=0)
    gold = [q.passage_id for q in test]
    rows = []
    for item in args.retriever:
        name, _, spec = item.partition("=")
        embed = embedder(spec, args.config, args.length, args.batch_size)
        index = PassageIndex.build(embed([x.text for x in corpus], "passage"),
                                   [x.id for x in corpus])
        ranked = recall.retrieve([q.question for q in test],
                                 lambda texts: embed(texts, "query"), index)
        rows.append({"retriever": name, "spec": spec, **{f"recall@{k}": v for k, v in
                                                           recall.recall_at_k(gold, ranked).items()}})
        print(rows[-1], flush=True)
    ks = recall.RECALL_KS
    chance = {f"recall@{k}": k / len(corpus) for k in ks}
    table = "\n".join(
        [f"| retriever ({len(test)} test questions, {len(corpus):,} passages) | "
         + " | ".join(f"recall@{k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        + [f"| {r['retriever']} | " + " | ".join(f"{100 * r[f'recall@{k}']:.1f}" for k in ks)
           + " |" for r in rows]
        + ["| chance (k / passages) | " + " | ".join(f"{100 * chance[f'recall@{k}']:.2f}"
                                                    for k in ks) + " |"])
    result = {"passages": len(corpus), "questions": len(test), "rows": rows, "chance": chance,
              "settings": {k: v for k, v in vars(args).items() if k != "out"}}
    comparison.write_results(args, result, table)
    return result


if __name__ == "__main__":
    from t5mtl.host_memory import reexec_with_malloc_policy
    reexec_with_malloc_policy()          # the CLI's malloc policy (t5mtl/host_memory.py)
    main()
