"""bench/schema_prompts.py: the --quick run end to end (both arms trained,
a held-out task scored) and its table."""
import json

import pytest

from bench.schema_prompts import HELDOUT, table


def test_table_marks_held_out_tasks_and_missing_cells():
    results = {"chance": {"superglue_rte": 52.5, "superglue_cb": 50.0},
               "schema": {"superglue_rte": 61.25}}
    lines = table(results, ["superglue_rte", "superglue_cb"]).splitlines()
    assert lines[0] == "| model | superglue_rte (held out) | superglue_cb |"
    assert lines[2:] == ["| chance (most common target) | 52.5 | 50.0 |",
                         "| multi-task, schema prompts | 61.2 | - |"]


@pytest.mark.slow
def test_quick_run_trains_both_arms_and_scores_the_held_out_tasks(tmp_path, shared_data_dir):
    from bench.schema_prompts import main
    from t5mtl.data import schema_prompts as sp
    try:
        text = main(["--quick", "--out", str(tmp_path), "--data_dir", shared_data_dir])
    finally:
        sp.unregister()
    results = json.load(open(tmp_path / "results.json"))
    assert set(results) == {"chance", "plain", "schema"}     # --quick: no base row
    # Two scored examples of the held-out superglue_rte: each score 0, 50 or 100.
    for row in results.values():
        assert set(row) == {"superglue_rte"} and row["superglue_rte"] in (0.0, 50.0, 100.0)
    assert "superglue_rte" in HELDOUT
    assert "SchemaPrompts" in (tmp_path / "schema" / "model.json").read_text()
    assert "SchemaPrompts" not in (tmp_path / "plain" / "model.json").read_text()
    assert text == (tmp_path / "table.md").read_text().strip()
