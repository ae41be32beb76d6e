"""bench/conflict_study.py --quick: the tables' numbers are the runs' probe
rows (metrics.jsonl) averaged again here, independently of the bench."""
import json
import os

import numpy as np
import pytest

from t5mtl.errors import T5mtlError

RUNS = ("t2t_pcgrad", "mh")          # both architectures, with and without surgery (table order)


def _probe_rows(model_dir):
    rows = [json.loads(line) for line in open(os.path.join(model_dir, "metrics.jsonl"))]
    return [r for r in rows if r["split"] == "conflict"]


def _md_rows(md, section):
    """{first cell: [other cells]} of the table under '## section'."""
    lines = md.split(f"## {section}", 1)[1].split("\n## ", 1)[0].splitlines()
    return {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in lines
             if line.startswith("| ") and not line.startswith("|---"))}


@pytest.mark.slow
def test_quick_study_tables_equal_the_probe_rows_averaged(tmp_path, shared_data_dir):
    from bench.conflict_study import TITLES, main
    out = str(tmp_path / "study")
    study = main(["--quick", "--out", out, "--runs", ",".join(RUNS),
                  "--data_dir", shared_data_dir])
    tasks = study["tasks"]
    assert tasks == ["synth_parity", "synth_sign"]              # the mixture's order
    a, b = tasks
    md = open(os.path.join(out, "study.md")).read()
    enc_table = _md_rows(md, "Mean cosine, shared encoder")
    cos_table = _md_rows(md, "Mean cosine, whole model")
    tr_table = _md_rows(md, "Mean lookahead transfer")
    acc_table = _md_rows(md, "Accuracy")
    summary = _md_rows(md, "Summary over task pairs")
    for col, run in enumerate(RUNS):
        rows = _probe_rows(os.path.join(out, run))
        assert [r["step"] for r in rows] == [0, 2, 4]           # every 2 of 6 steps
        cos = np.mean([r[f"conflict/cos/{a}/{b}"] for r in rows])
        blocks = sorted({k.split("/")[2] for r in rows for k in r
                         if k.startswith("conflict/group_cos/encoder.")})
        assert blocks == ["encoder.0", "encoder.1"]            # t5_tiny: 2 layers
        enc = np.mean([np.mean([r[f"conflict/group_cos/{g}/{a}/{b}"] for r in rows])
                       for g in blocks])
        got = study["runs"][run]
        assert got["cos"][f"{a}/{b}"] == pytest.approx(cos, abs=1e-12)
        assert got["enc_cos"][f"{a}/{b}"] == pytest.approx(enc, abs=1e-12)
        assert cos_table[f"{a}/{b}"][col] == f"{cos:.3f}"
        assert enc_table[f"{a}/{b}"][col] == f"{enc:.3f}"
        for i, j in ((a, b), (b, a)):
            tr = np.mean([r[f"conflict/transfer/{i}/{j}"] for r in rows])
            assert got["transfer"][f"{i}/{j}"] == pytest.approx(tr, abs=1e-12)
            assert tr_table[f"{i} -> {j}"][col] == f"{tr:.4f}"
        transfers = [np.mean([r[f"conflict/transfer/{i}/{j}"] for r in rows])
                     for i, j in ((a, b), (b, a))]
        late = np.mean([np.mean([r[f"conflict/group_cos/{g}/{a}/{b}"] for g in blocks])
                        for r in rows if r["step"] >= 3])        # the second half of 6 steps
        assert summary[TITLES[run]] == [
            f"{enc:.3f}", f"{late:.3f}", f"{int(enc < 0)} of 1", f"{cos:.3f}", f"{np.mean(transfers):.4f}",
            f"{np.mean(np.abs(transfers)):.4f}", f"{sum(t < 0 for t in transfers)} of 2"]
        # the over-time plot's series are the same probe rows
        assert [s for s, _ in got["enc_series"][f"{a}/{b}"]] == [0, 2, 4]
        for t in tasks:
            acc = got["accuracy"][t]
            assert acc["n"] == 16 and 0.0 <= acc["accuracy"] <= 100.0
            # 16 examples: every accuracy and chance is a multiple of 100/16
            assert (acc["accuracy"] * 16 / 100) == pytest.approx(round(acc["accuracy"] * 0.16))
            assert acc["chance"] >= 50.0
            row = acc_table[f"{t} (n=16)"]
            assert row[0] == f"{acc['chance']:.1f}" and row[1 + col] == f"{acc['accuracy']:.1f}"
    for png in ("cosine_over_time.png", "heat_maps.png"):
        assert os.path.getsize(os.path.join(out, png)) > 10_000
    # rerun: every run is cached in study.json, nothing retrained
    mtime = os.path.getmtime(os.path.join(out, RUNS[0], "metrics.jsonl"))
    again = main(["--quick", "--out", out, "--runs", ",".join(RUNS),
                  "--data_dir", shared_data_dir])
    assert again["runs"] == json.loads(json.dumps(study["runs"]))
    assert os.path.getmtime(os.path.join(out, RUNS[0], "metrics.jsonl")) == mtime


def test_unknown_task_or_run_is_one_line(tmp_path, shared_data_dir):
    from bench.conflict_study import main
    with pytest.raises(T5mtlError, match="unknown task or mixture 'synth_nope'"):
        main(["--tasks", "synth_sign,synth_nope", "--out", str(tmp_path)])
    with pytest.raises(T5mtlError, match="unknown run"):
        main(["--runs", "t2t,mh_gradvac", "--out", str(tmp_path)])
    with pytest.raises(T5mtlError, match="not a classification task"):
        main(["--tasks", "synth_sign,glue_stsb", "--out", str(tmp_path)])
    # ../shared/data holds only QNLI's dev set: nothing to train on
    with pytest.raises(T5mtlError, match="'glue_qnli' has no train split"):
        main(["--tasks", "synth_sign,glue_qnli", "--out", str(tmp_path),
              "--data_dir", shared_data_dir])
