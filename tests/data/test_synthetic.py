"""The built-in synthetic suite: size, determinism, disjoint splits, metrics."""
import collections

import pytest
import seqio

import t5mtl.data.registry  # noqa: F401  (registers tasks)
from t5mtl.data import synthetic, task_info
from t5mtl.errors import T5mtlError

TASKS = synthetic.TASKS
IDS = [t.name for t in TASKS]


def test_suite_size_and_registration():
    assert len(TASKS) >= 24
    assert len(set(IDS)) == len(IDS)
    cats = collections.Counter(t.category for t in TASKS)
    assert len(cats) >= 6 and min(cats.values()) >= 4, cats
    for t in TASKS:
        assert t.task_name in seqio.TaskRegistry.names()
        info = task_info.get_task_info(t.task_name)
        assert info.category == t.category and info.instruction == t.instruction
        assert info.suite == "synthetic" and info.metrics == (t.metric,)
    infos = task_info.list_task_infos(suite="synthetic")
    assert [i.name for i in infos] == sorted(t.task_name for t in TASKS)
    assert {i.name for i in task_info.list_task_infos(category="arithmetic")} == \
        set(synthetic.task_names("arithmetic"))
    with pytest.raises(T5mtlError, match="unknown category 'nope'"):
        task_info.list_task_infos(category="nope")
    assert synthetic.get("synth_add").name == "add"


def test_literal_example():
    task = seqio.get_mixture_or_task("synth_reverse_letters")
    ex = next(task.get_dataset({"inputs": 64, "targets": 16}, split="validation",
                               shuffle=False).as_numpy_iterator())
    assert ex["inputs_pretokenized"] == b"Reverse the letters: bajaboii"
    assert ex["targets_pretokenized"] == b"iiobajab"
    assert list(ex["targets"]) == [c + 3 for c in b"iiobajab"] + [1]  # bytes + EOS


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_deterministic_by_seed(task):
    first = list(synthetic.generate(task, "validation", n=20))
    assert first == list(synthetic.generate(task, "validation", n=20))
    assert first != list(synthetic.generate(task, "validation", seed=1, n=20))


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_disjoint_splits_and_well_formed(task):
    splits = {s: list(synthetic.generate(task, s, n=2000 if s == "train" else None))
              for s in synthetic.SPLITS}
    queries = {s: {e["query"] for e in exs} for s, exs in splits.items()}
    assert not queries["train"] & queries["validation"]
    assert not queries["train"] & queries["test"]
    assert not queries["validation"] & queries["test"]
    for s in ("validation", "test"):  # full-size eval splits of distinct inputs
        assert len(queries[s]) == len(splits[s]) == synthetic.SPLIT_SIZES[s]
    answer_of = {}
    for s, exs in splits.items():
        for e in exs:
            assert synthetic.split_of(task, e["query"]) == s
            assert answer_of.setdefault(e["query"], e["answer"]) == e["answer"]
            # Quickstart lengths: inputs <= 64 bytes, targets <= 16 bytes, with EOS.
            assert len(f"{e['instruction']} {e['query']}".encode()) <= 63
            assert 1 <= len(e["answer"].encode()) <= 15
    if task.labels:
        counts = collections.Counter(e["answer"] for e in splits["train"])
        assert set(counts) == set(task.labels)
        assert min(counts.values()) > 0.35 * len(splits["train"]) / len(task.labels)


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_metric(task):
    seq_task = seqio.get_mixture_or_task(task.task_name)
    exs = list(synthetic.generate(task, "test", n=4))
    targets = [seq_task.postprocess_fn(e["answer"].encode(), example=e, is_target=True)
               for e in exs]
    predictions = [seq_task.postprocess_fn(e["answer"].encode()) for e in exs]
    predictions[0] = predictions[0] + "x"  # one wrong answer out of four
    (metric_fn,) = seq_task.metric_fns
    assert metric_fn(targets, predictions) == {task.metric: 75.0}


def test_synth_all_mixture():
    mix = seqio.get_mixture_or_task(synthetic.MIXTURE)
    assert sorted(t.name for t in mix.tasks) == sorted(t.task_name for t in TASKS)
    assert {mix.get_rate(t) for t in mix.tasks} == {1.0}
    ds = mix.get_dataset({"inputs": 64, "targets": 16}, split="train", shuffle=False, seed=0)
    exs = list(ds.take(64).as_numpy_iterator())
    assert len(exs) == 64
    assert set(exs[0]) == {"inputs", "targets"}
    assert max(len(e["inputs"]) for e in exs) <= 64


def test_sharding_gives_the_same_union():
    task = seqio.get_mixture_or_task("synth_sort_numbers")
    lengths = {"inputs": 64, "targets": 16}

    def texts(ds):
        return [e["inputs_pretokenized"] for e in ds.as_numpy_iterator()]

    whole = texts(task.get_dataset(lengths, split="validation", shuffle=False))
    halves = [texts(task.get_dataset(lengths, split="validation", shuffle=False,
                                     shard_info=seqio.ShardInfo(i, 2))) for i in range(2)]
    assert len(whole) == 200 and sorted(halves[0] + halves[1]) == sorted(whole)


def test_register_again_with_another_vocabulary():
    from t5mtl.data import registry

    vocab = seqio.ByteVocabulary(extra_ids=7)
    try:
        registry.register_all(vocabulary=vocab, overwrite=True)
        for name in ("synth_add", "glue_cola", "superglue_cb", "squad_v1_1", "dialogsum"):
            assert seqio.get_mixture_or_task(name).output_features["inputs"].vocabulary is vocab
        mix = seqio.get_mixture_or_task(synthetic.MIXTURE)
        assert all(t.output_features["targets"].vocabulary is vocab for t in mix.tasks)
    finally:
        registry.register_all(overwrite=True)
    assert seqio.get_mixture_or_task("synth_add").output_features["inputs"].vocabulary is not vocab
