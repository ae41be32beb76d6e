"""bench/go_tuning.py's pool and table (the comparison itself is run by hand:
docs/encoders.md)."""
import json
import os

from bench import go_tuning


def test_pool_is_capped_unique_and_holds_inputs_only(shared_data_dir):
    pool = go_tuning.build_pool(shared_data_dir, per_source=30, seed=0)
    texts = [t for _, t in pool]
    assert len(set(texts)) == len(texts)
    assert all(go_tuning.MIN_CHARS <= len(t) <= go_tuning.MAX_CHARS for t in texts)
    counts = {s: sum(src == s for src, _ in pool) for s in go_tuning.SOURCE_ORDER}
    assert set(counts) == {src for src, _ in pool} and all(0 < n <= 30 for n in counts.values())
    # RTE's unlabeled test inputs, written as task_texts writes its train inputs.
    with open(os.path.join(shared_data_dir, "superglue_rte", "test.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    written = {" ".join(f"{r['hypothesis']} {r['premise']}".split()) for r in rows}
    assert all(t in written for src, t in pool if src == "rte_test")


def test_table_rows_and_means():
    scores = {"chance": {"a": 50.0, "b": 60.0}, "base": {"a": 40.0, "b": 70.0},
              "cloze_base": {"a": 52.0, "b": 58.0}, "single": {"a": 45.0}}
    summary = {"go/a": {"selected": 2, "inside": 9, "radius": 0.1,
                        "sources": {s: (2 if s == "books" else 0)
                                    for s in go_tuning.SOURCE_ORDER}}}

    class Args:
        base, pool_size, per_source, task_examples, budget, coverage = "B", 9, 3, 4, 2, 0.9
        steps, batch_size, learning_rate, seed, num_examples, eval_length = 1, 2, 0.1, 0, 0, 8

    text = go_tuning.tables(scores, summary, ["a", "b"], Args)
    lines = text.splitlines()
    assert lines[2] == "| chance (majority class) | 50.0 | 60.0 | 55.0 |"
    assert lines[3] == "| base, no update | 40.0 | 70.0 | 55.0 |"
    assert "| Go-tuned, single-task | 45.0 | - | - |" in lines       # b missing: no mean
    assert "| base, no update | 52.0 | 58.0 | 55.0 |" in lines       # the cloze table
    assert "| go/a (2 of 9 inside) | 100.0 | " + " | ".join(["0.0"] * 9) + " |" in lines
