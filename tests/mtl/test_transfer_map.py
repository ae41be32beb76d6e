"""The transfer map (t5mtl/mtl/transfer_map.py, `t5mtl transfer-map`).

The arithmetic and the report are checked on hand-made scores; the argument
errors through the CLI; and one tiny map end to end (2 families of 2
synthetic tasks each, t5_tiny, 8 steps): every run cached, R recomputed from the cached scores,
a rerun trained nothing, another step count refused.
"""
import json
import math
import os

import numpy as np
import pytest

from t5mtl import cli
from t5mtl.errors import T5mtlError
from t5mtl.mtl import transfer_map as tm

FAMILIES = ["a", "b", "c"]
# {run: {seed: {family: score}}}; two seeds, so the map takes seed means.
SCORES = {
    "a": {0: {"a": 40.0}, 1: {"a": 60.0}},                  # mean 50
    "b": {0: {"b": 80.0}, 1: {"b": 80.0}},                  # mean 80
    "c": {0: {"c": 0.0}, 1: {"c": 0.0}},                    # 0: R of c undefined
    "a+b": {0: {"a": 50.0, "b": 70.0}, 1: {"a": 60.0, "b": 50.0}},   # a 55, b 60
    "a+c": {0: {"a": 40.0, "c": 10.0}, 1: {"a": 40.0, "c": 10.0}},   # a 40, c 10
    "b+c": {0: {"b": 90.0, "c": 5.0}, 1: {"b": 70.0, "c": 5.0}},     # b 80, c 5
}


def test_relative_change_by_hand():
    s = tm.summarize(FAMILIES, SCORES)
    assert s["alone"] == {"a": 50.0, "b": 80.0, "c": 0.0}
    assert s["pair"]["a"] == {"b": 55.0, "c": 40.0}
    assert s["pair"]["b"] == {"a": 60.0, "c": 80.0}
    assert s["pair"]["c"] == {"a": 10.0, "b": 5.0}
    assert s["alone_std"]["a"] == pytest.approx(math.sqrt(200.0))     # 40, 60
    r = s["relative_change"]
    # (55 - 50) / 50 = +10%; (40 - 50) / 50 = -20%; (60 - 80) / 80 = -25%; 80 = 80: 0.
    assert r["a"] == {"a": None, "b": pytest.approx(10.0), "c": pytest.approx(-20.0)}
    assert r["b"] == {"a": pytest.approx(-25.0), "b": None, "c": 0.0}
    assert r["c"] == {"a": None, "b": None, "c": None}       # alone 0: no relative change
    m = tm.matrix(s)
    assert np.isnan(np.diag(m)).all() and m[0, 1] == pytest.approx(10.0)


def test_missing_pair_is_blank():
    s = tm.summarize(FAMILIES, {k: v for k, v in SCORES.items() if k != "a+b"})
    assert s["relative_change"]["a"]["b"] is None and s["relative_change"]["b"]["a"] is None
    assert s["relative_change"]["a"]["c"] == pytest.approx(-20.0)


def test_report_from_fake_scores(tmp_path):
    s = tm.summarize(FAMILIES, SCORES)
    s["settings"] = {"model": "t5_tiny", "steps": 300, "batch_size": 32, "seeds": 2,
                     "pair_step_factor": 1}
    files = tm.write_report(s, str(tmp_path))
    with open(files["heat_map"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image
    height, width = matplotlib.image.imread(files["heat_map"]).shape[:2]
    assert height > 200 and width > 200
    md = open(files["markdown"]).read().splitlines()
    # scores: alone (± std over the 2 seeds), then i's score trained with each j
    assert "| a | 50.0 ± 14.1 | - | 55.0 ± 7.1 | 40.0 ± 0.0 |" in md
    assert "| b | 80.0 ± 0.0 | 60.0 ± 14.1 | - | 80.0 ± 14.1 |" in md
    assert "| c | 0.0 ± 0.0 | 10.0 ± 0.0 | 5.0 ± 0.0 | - |" in md
    # R with the row mean; the column means (how a partner moves the others)
    assert "| a |  | +10.0 | -20.0 | -5.0 |" in md
    assert "| b | -25.0 |  | +0.0 | -12.5 |" in md
    assert "| c | n/a | n/a |  |  |" in md
    assert "| mean as partner | -25.0 | +10.0 | -10.0 | |" in md
    assert "1 of 4 cells positive, 2 negative; mean -8.8%." in md
    saved = json.load(open(files["json"]))
    assert saved["relative_change"]["b"]["a"] == pytest.approx(-25.0)
    assert saved["relative_change"]["c"]["a"] is None


@pytest.mark.parametrize("args, message", [
    (["--families", "counting,nonesuch"], "unknown family 'nonesuch'"),
    (["--families", "counting"], "at least 2 families, got 1: counting"),
    (["--families", "counting,counting"], "family 'counting' is listed twice"),
    (["--families", "x=synth_parity+synth_nonesuch,counting"], "unknown task 'synth_nonesuch'"),
    (["--steps", "0"], "steps must be a positive integer, got 0"),
    (["--steps", "-3"], "steps must be a positive integer, got -3"),
    (["--batch_size", "0"], "batch_size must be a positive integer, got 0"),
    (["--seeds", "0"], "seeds must be a positive integer, got 0"),
    (["--model", "t5_nonesuch"], "unknown model name 't5_nonesuch'"),
    (["--pair_step_factor", "0"], "pair_step_factor must be a positive integer, got 0"),
    (["--model", "t5_tiny", "--init", "/nonexistent/dir"], "give --model or --init, not both"),
    (["--init", "/nonexistent/dir"], "--init '/nonexistent/dir' is not a t5mtl model_dir"),
])
def test_argument_errors(tmp_path, capsys, args, message):
    out = tmp_path / "map"
    rc = cli.main(["transfer-map", "--out", str(out), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("t5mtl transfer-map: error: ")
    assert message in err[0]
    assert not out.exists()                 # nothing written


def test_default_families_are_the_synthetic_categories():
    from t5mtl.data import synthetic
    families = tm.resolve_families()
    assert list(families) == list(synthetic.CATEGORIES)
    assert families["counting"] == ("synth_count_letter", "synth_count_words",
                                    "synth_string_length", "synth_count_vowels")
    explicit = tm.resolve_families(["pc=synth_parity+synth_count_words", "counting"])
    assert explicit["pc"] == ("synth_parity", "synth_count_words")


def test_pair_mixture_is_one_to_one():
    import t5mtl.data.registry  # noqa: F401
    from t5mtl.data.mixing import mixture_proportions
    families = tm.resolve_families(["counting", "classification"])
    shares = mixture_proportions(tm.run_mixture(("counting", "classification"), families),
                                 "train")
    counting = sum(v for k, v in shares.items() if k in families["counting"])
    assert counting == pytest.approx(0.5)
    assert shares["synth_count_words"] == pytest.approx(0.5 / 4)     # 4 tasks, equal counts


@pytest.mark.slow
def test_end_to_end_tiny(tmp_path, monkeypatch):
    out = str(tmp_path / "map")
    families = tm.resolve_families(["counting=synth_count_words+synth_string_length",
                                    "classification=synth_parity+synth_sign"])
    settings = tm.Settings(model="t5_tiny", steps=8, batch_size=8, num_examples=8)
    summary = tm.compute(out, families, settings)
    cached = {}
    for run in ("counting", "classification", "counting+classification"):
        path = os.path.join(out, "runs", run, "seed_0", "scores.json")
        entry = json.load(open(path))
        assert entry["settings"]["steps"] == 8 and entry["settings"]["seed"] == 0
        assert sorted(entry["families"]) == sorted(run.split("+"))
        for fam, v in entry["families"].items():
            assert sorted(v["tasks"]) == sorted(families[fam])
            assert v["score"] == pytest.approx(np.mean(list(v["tasks"].values())))
        cached[run] = {f: v["score"] for f, v in entry["families"].items()}
    pair = cached["counting+classification"]
    for fam, partner in (("counting", "classification"), ("classification", "counting")):
        alone = cached[fam][fam]
        expected = None if alone == 0 else 100 * (pair[fam] - alone) / alone
        assert summary["relative_change"][fam][partner] == pytest.approx(expected)
        assert summary["pair"][fam][partner] == pair[fam]
    written = json.load(open(os.path.join(out, "transfer_map.json")))
    assert written["relative_change"] == json.loads(json.dumps(summary["relative_change"]))
    assert os.path.getsize(os.path.join(out, "transfer_map.png")) > 0
    # A rerun reads the cache and trains nothing; other settings are refused.
    from t5mtl.train import trainer

    def no_training(*a, **k):
        raise AssertionError("a cached run was trained again")
    monkeypatch.setattr(trainer, "train", no_training)
    assert tm.compute(out, families, settings)["relative_change"] == summary["relative_change"]
    with pytest.raises(T5mtlError, match="other settings.*steps"):
        tm.compute(out, families, tm.Settings(model="t5_tiny", steps=9, batch_size=8,
                                              num_examples=8))
