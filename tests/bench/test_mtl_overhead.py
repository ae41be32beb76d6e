"""bench/mtl_overhead.py --quick end to end (t5_tiny, 2 tasks, 1 step): the
step without surgery compiles to the same program as before the surgery
arguments existed, the chosen systems run (the plain step, one surgery, the
probe; every surgery's math is tests/mtl/test_surgery.py's), and the
per-task gradient memory is 2 x the trainable parameters in float32."""
import json

import pytest

from bench import mtl_overhead


@pytest.mark.slow
def test_quick_mode(tmp_path, capsys):
    out = tmp_path / "mtl.json"
    systems = ["plain", "pcgrad", "probe"]
    assert mtl_overhead.main(["--quick", "--systems", ",".join(systems),
                              "--json", str(out)]) == 0
    report = json.load(open(out))
    assert report["off"]["same_hlo"] and report["off"]["same_flops"]
    rows = {r["system"]: r for r in report["rows"]}
    assert list(rows) == systems
    total = 246_784                                    # t5_tiny (tests/bench/test_peft_step.py)
    assert rows["pcgrad"]["trainable_params"] == total
    assert rows["pcgrad"]["task_grad_mib"] == 2 * total * 4 / 2**20
    # Surgery computes a backward pass per task: more FLOPs than the plain step.
    assert rows["pcgrad"]["xla_flops"] > rows["plain"]["xla_flops"] > 0
    assert rows["plain"]["ratio_to_plain"] is None and rows["pcgrad"]["ratio_to_plain"] > 0
    assert "| 2 | probe |" in capsys.readouterr().out
