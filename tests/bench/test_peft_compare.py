"""bench/peft_compare.py's table: mean ± sample std per method and task."""
from bench.peft_compare import cell, table


def test_cells_are_mean_and_sample_std():
    assert cell([]) == "-"
    assert cell([61.25]) == "61.2"
    # mean 60, sample std sqrt(((-10)^2 + 0 + 10^2) / 2) = 10
    assert cell([50.0, 60.0, 70.0]) == "60.0 ± 10.0"


def test_table_rows_in_method_order_with_missing_cells():
    results = {"synth_is_sorted": {"chance": [54.7], "none": [40.6], "lora": [60.0, 70.0],
                                   "prompt_class_labels": [64.0, 66.0]},
               "glue_sst2": {"chance": [50.9], "none": [49.0]}}
    lines = table(results).splitlines()
    assert lines[0] == "| method | synth_is_sorted | glue_sst2 |"
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| chance (majority class)", "| no adaptation", "| prompt tuning, class_labels init",
        "| LoRA r=8 (query, value)"]
    assert lines[-1] == "| LoRA r=8 (query, value) | 65.0 ± 7.1 | - |"


def test_log_loss_rows_have_three_digits():
    results = {"glue_sst2": {"ensemble_log_loss": [0.69312], "ensemble_members_log_loss": [0.7]}}
    lines = table(results).splitlines()[2:]
    assert lines == ["| ensemble, option log-loss (nats) | 0.693 |",
                     "|   mean of its members' log-loss | 0.700 |"]


def test_targets_hold_the_longest_label_and_its_eos():
    import t5mtl.data.registry  # noqa: F401  (registers the tasks)
    from bench.peft_compare import feature_lengths
    # byte vocabulary: 'unacceptable' is 12 tokens, + EOS; 'positive'/'negative' 8 + EOS
    assert feature_lengths("glue_cola") == {"inputs": 128, "targets": 13}
    assert feature_lengths("glue_sst2") == {"inputs": 128, "targets": 9}
