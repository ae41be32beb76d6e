"""The few-shot protocol: deterministic K-shot samples from the train split
only, clear errors, the mean ± std summary, and one tiny end-to-end run."""
import json

import numpy as np
import pytest
import seqio

import t5mtl.data.registry  # noqa: F401
from t5mtl.cli import main
from t5mtl.data.data_dir import set_data_dir
from t5mtl.errors import T5mtlError
from t5mtl.train.fewshot import (format_summary, register_kshot_task, sample_indices,
                                 summarize_runs)


@pytest.fixture(autouse=True)
def data_dir(shared_data_dir):
    set_data_dir(shared_data_dir)
    yield
    set_data_dir(None)


def _texts(name, split):
    task = seqio.get_mixture_or_task(name)
    ds = task.get_dataset(None, split=split, shuffle=False, num_epochs=1)
    return [ex["inputs_pretokenized"].decode() for ex in ds.as_numpy_iterator()]


def test_kshot_samples_are_deterministic_train_only_and_exactly_k():
    a = _texts(register_kshot_task("superglue_cb", 8, seed=3), "train")
    b = _texts(register_kshot_task("superglue_cb", 8, seed=3), "train")
    c = _texts(register_kshot_task("superglue_cb", 8, seed=4), "train")
    assert a == b and len(a) == 8 and len(set(a)) == 8 and a != c
    train, dev = set(_texts("superglue_cb", "train")), set(_texts("superglue_cb", "validation"))
    assert set(a) <= train and not set(a) & dev
    # The sample is the seeded choice of indices into the unshuffled split.
    idx = sample_indices(250, 8, seed=3)
    assert a == [_texts("superglue_cb", "train")[i] for i in idx]


def test_k_larger_than_the_train_split_and_missing_split():
    with pytest.raises(T5mtlError, match=r"k=251 is larger than the train split \(250"):
        register_kshot_task("superglue_cb", 251, seed=0)
    with pytest.raises(T5mtlError, match="has no 'train' split"):
        register_kshot_task("superglue_boolq", 8, seed=0)


def test_summary_is_mean_and_std_over_seeds():
    runs = [{"task": "t", "k": 8, "seed": s, "metrics": {"accuracy": v}}
            for s, v in enumerate([50.0, 60.0, 70.0])]
    summary = summarize_runs(runs)
    mean, std, n = summary["t"][8]["accuracy"]
    # The sample std (ddof=1): sqrt((10² + 0 + 10²) / 2) = 10, not the
    # population std 8.16 (CLUES and most papers report the sample std).
    assert (mean, n) == (60.0, 3) and std == pytest.approx(10.0)
    assert "60.0 ±  10.0 (n=3)" in format_summary(summary)
    single = summarize_runs(runs[:1])
    assert np.isnan(single["t"][8]["accuracy"][1])
    assert "50.0 ±     - (n=1)" in format_summary(single)


@pytest.mark.slow
def test_fewshot_command_end_to_end(tmp_path, capsys):
    rc = main(["fewshot", "--gin_file=gin/runs/fewshot_eval.gin", f"--model_dir={tmp_path}",
               "--gin.get_config.name='t5_tiny'", "--gin.FewShotConfig.tasks=['superglue_cb']",
               "--gin.FewShotConfig.ks=[4]", "--gin.FewShotConfig.seeds=[0, 1]",
               "--gin.FewShotConfig.num_steps=2", "--gin.FewShotConfig.eval_num_examples=6",
               "--gin.FewShotConfig.task_feature_lengths={'inputs': 64, 'targets': 8}"])
    assert rc == 0
    results = json.load(open(tmp_path / "fewshot_results.json"))
    assert [(r["k"], r["seed"]) for r in results["runs"]] == [(4, 0), (4, 1)]
    for run in results["runs"]:
        assert set(run["metrics"]) == {"accuracy", "mean_3class_f1", "rank_accuracy"}
        # 6 dev examples: every accuracy is a multiple of 100/6.
        assert run["metrics"]["rank_accuracy"] * 6 / 100 == pytest.approx(
            round(run["metrics"]["rank_accuracy"] * 6 / 100))
    assert "superglue_cb" in capsys.readouterr().out
