"""bench/prompt_methods.py: the prompt-method tables over seeds, from each
seed's scores as the comparisons write them."""
import json

from bench import comparison, prompt_methods


def test_cells_are_mean_and_sample_std_over_the_seeds():
    per_seed = [[("a", [50.0, 1.0, None]), ("b", [10.0, 2.0, 3.0])],
                [("a", [60.0, 1.0, 4.0]), ("b", [20.0, 2.0, 3.0])],
                [("a", [70.0, 1.0, 5.0])]]
    rows = dict(comparison.over_seeds(per_seed))
    # [50, 60, 70]: mean 60, sample std sqrt(((-10)^2 + 0 + 10^2) / 2) = 10.
    assert rows["a"] == ["60.0 ± 10.0", "1.0", None]       # equal in every seed: no ±
    assert rows["b"] == [None, None, None]                  # seed 3 lacks row b


def test_hyperprompt_table_from_two_seed_directories(tmp_path):
    tasks = sorted(prompt_methods.hyperprompt.TASKS)
    for seed, acc in ((0, 50.0), (1, 56.0)):
        d = tmp_path / f"seed{seed}"
        d.mkdir()
        json.dump({"chance": {t: 55.0 for t in tasks},
                   "hyperprompt": {t: acc + i for i, t in enumerate(tasks)}},
                  open(d / "scores.json", "w"))
    text = prompt_methods.seed_table([tmp_path / "seed0", tmp_path / "seed1"],
                                     prompt_methods.hyperprompt_rows)
    lines = text.splitlines()
    assert lines[0] == "| method | " + " | ".join(tasks) + " | mean |"
    assert lines[2] == "| chance (majority class) | " + " | ".join(["55.0"] * 8) + " |"
    # Task i: seeds 50+i and 56+i -> 53+i ± 4.2 (sqrt(18)); the mean column: 56.0 ± 4.2.
    cells = lines[3].split(" | ")[1:]
    assert cells[0] == "53.0 ± 4.2" and cells[6] == "59.0 ± 4.2"
    assert cells[7] == "56.0 ± 4.2 |"
