"""Mixing rates: each formula against hand-computed values and 100k sampled examples."""
import collections
import math

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf

import t5mtl.data.registry  # noqa: F401  (registers tasks)
from t5mtl.data import mixing
from t5mtl.data.vocab import get_vocabulary
from t5mtl.errors import T5mtlError

N_SAMPLES = 100_000
COUNTS = {"a": 200, "b": 1_000, "c": 5_000, "d": 20_000}
CAP = 3_000


def _cheap_task(name: str, n: int, known_count: bool = True) -> str:
    """A task of exactly n one-token examples that carry their `_task_name`."""
    def dataset_fn(split, shuffle_files, seed=None):
        del split, shuffle_files, seed
        return tf.data.Dataset.from_tensors(
            {"inputs": tf.constant([4]), "targets": tf.constant([5]),
             "_task_name": tf.constant(name)}).repeat(n)

    vocab = get_vocabulary()
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(
            dataset_fn, splits=["train"],
            num_input_examples={"train": n} if known_count else None),
        preprocessors=[], metric_fns=[],
        output_features={"inputs": seqio.Feature(vocab), "targets": seqio.Feature(vocab)})
    return name


def _group(prefix: str, keys=COUNTS) -> list[str]:
    return [_cheap_task(f"mixtest_{prefix}_{k}", COUNTS[k]) for k in keys]


# The expected shares, written from the formulas (not from t5mtl.data.mixing).
def _normalize(rates):
    total = sum(rates.values())
    return {k: v / total for k, v in rates.items()}


EXPECTED = {
    "ep": _normalize({k: min(n, CAP) for k, n in COUNTS.items()}),         # cap 3000
    "temp": _normalize({k: n ** (1 / 2.0) for k, n in COUNTS.items()}),     # T=2, no cap
    "eq": _normalize({k: 1.0 for k in "abc"}),
    "w": _normalize({"a": 1.0, "b": 3.0}),
}
TOP_WEIGHTS = {"ep": 3.0, "temp": 3.0, "eq": 2.0, "w": 2.0, "leaf": 1.0}


@pytest.fixture(scope="module")
def nested():
    """A nested mixture with one sub-mixture per formula, sampled 100k times."""
    groups = {"ep": _group("ep"), "temp": _group("temp"), "eq": _group("eq", "abc"),
              "w": _group("w", "ab")}
    mixing.register_mixture("mixtest_ep", groups["ep"], rate="examples_proportional", cap=CAP)
    mixing.register_mixture("mixtest_temp", groups["temp"], rate="temperature",
                            temperature=2.0, cap=None)
    mixing.register_mixture("mixtest_eq", groups["eq"], rate="equal")
    mixing.register_mixture("mixtest_w", groups["w"], rate="weights", weights=[1, 3])
    leaf = _cheap_task("mixtest_leaf", 10)
    top = mixing.register_mixture(
        "mixtest_nested", [("mixtest_ep", 3), ("mixtest_temp", 3), ("mixtest_eq", 2),
                           ("mixtest_w", 2), (leaf, 1)])
    ds = seqio.get_mixture_or_task(top).get_dataset(
        None, split="train", shuffle=False, seed=0, num_epochs=None,
        passthrough_features=["_task_name"])
    names = np.concatenate(list(ds.map(lambda ex: ex["_task_name"]).batch(10_000)
                                .take(N_SAMPLES // 10_000).as_numpy_iterator()))
    assert len(names) == N_SAMPLES
    counts = collections.Counter(n.decode() for n in names)
    return groups, counts


def _conditional(counts, members):
    total = sum(counts[m] for m in members)
    return {m.rsplit("_", 1)[1]: counts[m] / total for m in members}, total


@pytest.mark.parametrize("formula", ["ep", "temp", "eq", "w"])
def test_sampled_share_within_each_formula(nested, formula):
    groups, counts = nested
    observed, total = _conditional(counts, groups[formula])
    assert total > 15_000
    for k, expected in EXPECTED[formula].items():
        assert abs(observed[k] - expected) < 0.01, (formula, k, observed[k], expected)


def test_sampled_share_of_nested_mixture(nested):
    groups, counts = nested
    top_total = sum(TOP_WEIGHTS.values())
    for formula, members in groups.items():
        share = sum(counts[m] for m in members) / N_SAMPLES
        assert abs(share - TOP_WEIGHTS[formula] / top_total) < 0.01
        for m in members:  # each leaf: sub-mixture share x share inside it
            expected = TOP_WEIGHTS[formula] / top_total * EXPECTED[formula][m.rsplit("_", 1)[1]]
            assert abs(counts[m] / N_SAMPLES - expected) < 0.01
    assert abs(counts["mixtest_leaf"] / N_SAMPLES - 1 / top_total) < 0.01
    props = mixing.mixture_proportions("mixtest_nested")
    assert props["mixtest_ep_a"] == pytest.approx(3 / 11 * EXPECTED["ep"]["a"], rel=1e-9)
    assert sum(props.values()) == pytest.approx(1.0)


def test_rates_match_seqio_reference(nested):
    """Our count-based rates equal seqio.utils.mixing_rate_num_examples (T5's)."""
    groups, _ = nested
    for name in groups["ep"]:
        task = seqio.get_mixture_or_task(name)
        for cap, temperature in [(CAP, 1.0), (None, 2.0), (CAP, 3.0), (None, 1.0)]:
            ref = seqio.utils.mixing_rate_num_examples(task, maximum=cap,
                                                       temperature=temperature)
            ours = mixing.ExampleCountRate(cap=cap, temperature=temperature)(task)
            assert ours == pytest.approx(ref, rel=1e-12)
    assert mixing.rate_from_count(20_000, cap=CAP) == 3000.0
    assert mixing.rate_from_count(10_000, cap=None, temperature=2.0) == 100.0
    assert mixing.examples_proportional_rate(cap=500)(task) == 500.0
    assert mixing.temperature_rate(2.0)(task) == pytest.approx(math.sqrt(20_000))


def test_counts_come_from_the_data_when_the_source_does_not_know():
    name = _cheap_task("mixtest_uncounted", 37, known_count=False)
    task = seqio.get_mixture_or_task(name)
    assert task.num_input_examples("train") is None
    assert mixing.num_examples(task) == 37
    mixing.register_mixture("mixtest_uncounted_mix", [name], cap=None)
    mix = seqio.get_mixture_or_task("mixtest_uncounted_mix")
    assert mix.get_rate(task) == 37.0


def test_nested_count_rate_counts_the_submixture_as_one_member():
    a, b = _cheap_task("mixtest_n_a", 100), _cheap_task("mixtest_n_b", 300)
    c = _cheap_task("mixtest_n_c", 4000)
    mixing.register_mixture("mixtest_n_inner", [a, b], rate="equal")
    mixing.register_mixture("mixtest_n_outer", ["mixtest_n_inner", c], cap=1000)
    props = mixing.mixture_proportions("mixtest_n_outer")
    # inner: n = 400 (uncapped), c: min(4000, 1000); inside inner: equal.
    assert props[a] == pytest.approx(400 / 1400 / 2)
    assert props[b] == pytest.approx(400 / 1400 / 2)
    assert props[c] == pytest.approx(1000 / 1400)


def test_synth_counts_are_the_split_sizes():
    from t5mtl.data import synthetic
    task = seqio.get_mixture_or_task("synth_add")
    assert mixing.num_examples(task, "train") == synthetic.SPLIT_SIZES["train"]
    assert mixing.num_examples(task, "validation") == synthetic.SPLIT_SIZES["validation"]


def test_bad_input_is_a_clear_error():
    a = _cheap_task("mixtest_err_a", 10)
    with pytest.raises(T5mtlError, match=r"unknown task or mixture 'synth_ad'; did you mean "
                                         r"synth_add"):
        mixing.register_mixture("mixtest_bad", ["synth_ad", a])
    with pytest.raises(T5mtlError, match="mixture 'mixtest_bad' is empty"):
        mixing.register_mixture("mixtest_bad", [])
    with pytest.raises(T5mtlError, match=r"weight of 'mixtest_err_a' is 0; rates and weights "
                                         r"must be positive"):
        mixing.register_mixture("mixtest_bad", [(a, 0), ("synth_add", 1)])
    with pytest.raises(T5mtlError, match=r"weight of 'synth_add' is -2"):
        mixing.register_mixture("mixtest_bad", [a, "synth_add"], rate="weights",
                                weights={a: 1, "synth_add": -2})
    with pytest.raises(T5mtlError, match="no weight for 'synth_add'"):
        mixing.register_mixture("mixtest_bad", [a, "synth_add"], rate="weights", weights={a: 1})
    with pytest.raises(T5mtlError, match="2 weights for 1 members"):
        mixing.register_mixture("mixtest_bad", [a], rate="weights", weights=[1, 2])
    with pytest.raises(T5mtlError, match="cap must be a positive number"):
        mixing.register_mixture("mixtest_bad", [a], cap=0)
    with pytest.raises(T5mtlError, match="temperature must be a positive number"):
        mixing.register_mixture("mixtest_bad", [a], rate="temperature", temperature=-1.0)
    with pytest.raises(T5mtlError, match="unknown rate 'proportional'"):
        mixing.register_mixture("mixtest_bad", [a], rate="proportional")
    with pytest.raises(T5mtlError, match="lists 'mixtest_err_a' twice"):
        mixing.register_mixture("mixtest_bad", [a, a])
    with pytest.raises(T5mtlError, match=r"task 'glue_qnli' has no 'train' split"):
        mixing.register_mixture("mixtest_bad", ["glue_qnli", a])
    with pytest.raises(T5mtlError, match="already a task name"):
        mixing.register_mixture(a, ["synth_add"])
    assert "mixtest_bad" not in seqio.MixtureRegistry.names()
    empty = _cheap_task("mixtest_err_empty", 0)
    mixing.register_mixture("mixtest_bad", [empty, a])  # counts are read lazily ...
    with pytest.raises(T5mtlError, match="'mixtest_err_empty' has no 'train' examples"):
        mixing.mixture_proportions("mixtest_bad")  # ... and a zero count is an error
    seqio.MixtureRegistry.remove("mixtest_bad")


def test_register_mixture_from_gin():
    a, b = _cheap_task("mixtest_gin_a", 100), _cheap_task("mixtest_gin_b", 900)
    gin.clear_config()
    try:
        gin.parse_config([
            "register_mixture.name = 'mixtest_gin'",
            f"register_mixture.tasks_or_mixtures = ['{a}', '{b}']",
            "register_mixture.rate = 'temperature'",
            "register_mixture.temperature = 2.0",
            "register_mixture.cap = None",
        ])
        assert mixing.register_mixture() == "mixtest_gin"
    finally:
        gin.clear_config()
    props = mixing.mixture_proportions("mixtest_gin")
    assert props[a] == pytest.approx(10 / 40) and props[b] == pytest.approx(30 / 40)
