"""Passage index throughput on this CPU: passages embedded per second by a
T5 encoder (mean-pooled, t5mtl.retrieval.embed) and the faiss index built
over them (t5mtl.retrieval.index): build time, search time, and IVF-PQ's
recall@k against exact search.

Corpus: t5mtl.data.passages (SQuAD dev paragraphs, then raw_text_en's books
in 100-word windows; the stride is chosen to give --num_passages). The
encoder is --model_dir's (a trained T5), or --config with random weights
(the speed of the embedding does not depend on the weights; the index's
recall does) and the byte vocabulary, inputs cut to --length
tokens (bytes: a 100-word passage is about 600), batches of
--batch_size, one compile before the timing. Queries are --num_queries
passages' own embeddings (each query's exact top-1 is itself, so the
"nearest other passage" is the exact top-2).

  python -m bench.passage_index --data_dir ../shared/data              # 100k passages
  python -m bench.passage_index --data_dir ../shared/data --quick      # 2k, seconds

Writes --out/table.md and --out/results.json.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench import comparison


def corpus_texts(num_passages: int, words: int, data_dir: str | None) -> list[str]:
    """num_passages passage texts: SQuAD paragraphs, then book windows with a
    stride small enough to give enough of them."""
    from t5mtl.data import passages as passages_lib
    squad = passages_lib.squad_passages(data_dir)
    books = " ".join(p.text for p in passages_lib.book_passages(words, words, data_dir))
    need = max(num_passages - len(squad), 1)
    stride = max(1, min(words, len(books.split()) // need))
    texts = [p.text for p in squad] + passages_lib.word_windows(books, words, stride)
    return texts[:num_passages]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", default=None)
    p.add_argument("--out", default="/tmp/t5mtl_passage_index")
    p.add_argument("--config", default="t5_small_cpu")
    p.add_argument("--model_dir", default=None,
                   help="a trained T5 model_dir whose encoder embeds (default: --config, random)")
    p.add_argument("--num_passages", type=int, default=100_000)
    p.add_argument("--words", type=int, default=100)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--num_queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--pq_m", type=int, default=16)
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--quick", action="store_true", help="2,000 passages, 100 queries")
    args = p.parse_args(argv)
    if args.quick:
        args.num_passages, args.num_queries, args.nlist = 2000, 100, 16
    import jax
    from t5mtl.data.data_dir import set_data_dir
    from t5mtl.data.vocab import get_vocabulary
    from t5mtl.models import get_config
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.models.init import param_shapes
    from t5mtl.retrieval import embed
    from t5mtl.retrieval.index import PassageIndex
    set_data_dir(args.data_dir)

    texts = corpus_texts(args.num_passages, args.words, args.data_dir)
    if args.model_dir:
        import t5mtl
        loaded = t5mtl.load(args.model_dir)
        model, params, vocab = loaded.model, loaded.params, loaded.vocabulary
        args.config = os.path.basename(os.path.normpath(args.model_dir))
    else:
        model = EncoderDecoderModel(get_config(args.config))
        params = jax.tree.map(lambda s: np.random.RandomState(0).normal(0, 0.1, s.shape)
                              .astype(np.float32), param_shapes(model.config))
        vocab = get_vocabulary()              # bytes: t5_small_cpu's (vocab_size 384)
    fn = embed.encoder_embedding_fn(model)
    embed.embed_texts(model, params, texts[:args.batch_size], vocab, args.length,
                      args.batch_size, fn)                        # compile
    start = time.perf_counter()
    vectors = embed.embed_texts(model, params, texts, vocab, args.length, args.batch_size, fn)
    embed_s = time.perf_counter() - start
    ids = [str(i) for i in range(len(texts))]
    queries = vectors[np.random.RandomState(0).choice(len(texts), args.num_queries, False)]

    rows, found = [], {}
    for kind, kwargs in (("flat", {}), ("ivfpq", dict(nlist=args.nlist, pq_m=args.pq_m,
                                                       nprobe=args.nprobe))):
        start = time.perf_counter()
        index = PassageIndex.build(vectors, ids, kind=kind, **kwargs)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        _, found[kind] = index.search(queries, args.k)
        search_s = time.perf_counter() - start
        rows.append({"kind": kind, "build_s": build_s, "search_ms_per_query":
                     1000 * search_s / args.num_queries})
    recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(found["flat"],
                                                                     found["ivfpq"])])
    nearest = np.mean([a[1] in b for a, b in zip(found["flat"], found["ivfpq"])])
    rows[1]["recall_vs_exact"] = float(recall)
    rows[1]["nearest_other_found"] = float(nearest)
    result = {"passages": len(texts), "config": args.config, "length": args.length,
              "dim": int(vectors.shape[1]), "embed_s": embed_s,
              "passages_per_s": len(texts) / embed_s, "index": rows,
              "settings": {k: v for k, v in vars(args).items() if k != "out"}}
    table = "\n".join([
        f"| {len(texts):,} passages, {args.config} encoder ({result['dim']}-d), "
        f"{args.length} tokens | value |", "|---|---|",
        f"| passages embedded per second | {result['passages_per_s']:,.0f} |",
        f"| index build, exact (flat) | {rows[0]['build_s']:.2f} s |",
        f"| index build, IVF{args.nlist},PQ{args.pq_m} (train + add) | "
        f"{rows[1]['build_s']:.2f} s |",
        f"| search, exact, top-{args.k} | {rows[0]['search_ms_per_query']:.3f} ms/query |",
        f"| search, IVF-PQ nprobe {args.nprobe}, top-{args.k} | "
        f"{rows[1]['search_ms_per_query']:.3f} ms/query |",
        f"| IVF-PQ: share of the exact top-{args.k} in its top-{args.k} | {recall:.3f} |",
        f"| IVF-PQ: exact nearest other passage in its top-{args.k} | {nearest:.3f} |"])
    comparison.write_results(args, result, table)
    return result


if __name__ == "__main__":
    from t5mtl.host_memory import reexec_with_malloc_policy
    reexec_with_malloc_policy()          # the CLI's malloc policy (t5mtl/host_memory.py)
    main()
