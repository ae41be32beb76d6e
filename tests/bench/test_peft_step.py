"""bench/peft_step.py end to end at a tiny scale (t5_tiny, 2 steps): its
table's trainable-parameter counts are the exact figures, and the compiled
steps of prompt tuning and LoRA count fewer FLOPs than full finetuning's."""
import json

import pytest

from bench import peft_step


@pytest.mark.slow
def test_table_counts_and_compiled_flops(tmp_path, capsys):
    out = tmp_path / "peft_step.json"
    assert peft_step.main(["--model", "t5_tiny", "--shape", "32/8", "--batch", "2",
                           "--prompt-lengths", "4", "--kernels", "xla", "--rounds", "1",
                           "--settle", "0", "--steps", "2", "--json", str(out)]) == 0
    rows = {r["method"]: r for r in json.load(open(out))["rows"]}
    assert list(rows) == ["prompt P=4", "lora", "full"]
    # t5_tiny by hand (T5 1.1 layout, tests/peft/test_prompt_tuning.py): untied
    # embedding and logits [384, 64]; per encoder layer 4 attention kernels
    # [64, 4 x 16], a gated MLP (3 x 64 x 128) and 2 norms; per decoder layer
    # 2 attentions, the MLP and 3 norms; a relative-position table [32, 4] and
    # a final norm per stack.
    d, attention, mlp = 64, 4 * 64 * 64, 3 * 64 * 128
    total = (2 * 384 * d + 2 * (attention + mlp + 2 * d) + 2 * (2 * attention + mlp + 3 * d)
             + 2 * (32 * 4 + d))
    assert total == 246_784
    full, prompt, lora = rows["full"], rows["prompt P=4"], rows["lora"]
    assert full["trainable_params"] == full["total_params"] == 246_784
    assert prompt["trainable_params"] == 4 * d == 256
    assert prompt["total_params"] == 246_784 + 256
    # Rank 8 on query and value [64, 64]: 8 (64 + 64) each, 2 per encoder
    # layer and 4 per decoder layer (self and cross attention).
    assert lora["trainable_params"] == (2 * 2 + 2 * 4) * 8 * (64 + 64) == 12_288
    assert lora["total_params"] == 246_784 + 12_288
    assert 0 < prompt["xla_flops"] < full["xla_flops"]
    assert 0 < lora["xla_flops"] < full["xla_flops"]
    assert prompt["flops_ratio_to_full"] == prompt["xla_flops"] / full["xla_flops"]
    assert full["ratio_to_full"] == 1.0 and len(full["step_s_rounds"]) == 1
    assert all(r["peak_mib"] > 0 and r["kernels"] == "xla" for r in rows.values())
    table = capsys.readouterr().out
    assert "| xla | prompt P=4 | 256 (0.104%) |" in table
    assert "| xla | lora | 12,288 (4.74%) |" in table
    assert "| xla | full | 246,784 (100%) |" in table
