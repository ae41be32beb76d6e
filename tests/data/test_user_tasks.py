"""A user's own tasks: the fixes of issue 15 (BOM, errors, --rank, chance,
binary F1, generic templates, truncation, std, separator, level split) and the
Python / spec / gin registration routes."""
import functools
import json
import os

import gin
import pytest
import seqio

import t5mtl.data.registry  # noqa: F401  (registers tasks)
from t5mtl import cli, gin_config
from t5mtl.data import data_dir as data_dir_lib
from t5mtl.data import metrics, task_info, template_tables, templates
from t5mtl.data.files import Field, FileSource
from t5mtl.data.truncation import count_truncated
from t5mtl.data.user_tasks import register_dataset_task, register_task_specs
from t5mtl.errors import T5mtlError
from t5mtl.infer import evaluation
from t5mtl.infer.eval_command import rank_options
from tests import user_task_fixtures as fx

LENGTHS = {"inputs": 512, "targets": 32}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("user_data"))
    rows = fx.write_files(directory)
    yield directory, rows
    for name in list(seqio.TaskRegistry.names()):
        if name.startswith(("ut_", "uspec_", "ugin_")):
            seqio.TaskRegistry.remove(name)
            task_info.remove_task_info(name)
    for name in ("uspec_mix",):
        seqio.MixtureRegistry.remove(name)


@pytest.fixture(scope="module")
def python_tasks(data):
    directory, rows = data
    # The documented module, with the files bound to this directory.
    text = fx.MODULE.format(p="ut").replace(
        "from t5mtl.data.user_tasks import register_dataset_task", "")
    exec(text, {"register_dataset_task": functools.partial(
        register_dataset_task, data_dir=directory, overwrite=True)})
    return directory, rows


def _raw(name, split="validation"):
    return list(seqio.get_mixture_or_task(name).source.iter_examples(split))


def _texts(name, split="validation", n=10, lengths=LENGTHS):
    ds = seqio.get_mixture_or_task(name).get_dataset(lengths, split=split, shuffle=False)
    return [(ex["inputs_pretokenized"].decode(), ex["targets_pretokenized"].decode())
            for ex in ds.take(n).as_numpy_iterator()]


# ---------------------------------------------------------------- item 2: BOM, missing fields

def test_mrpc_tsv_with_a_byte_order_mark_reads_its_first_column(data):
    directory, rows = data
    with open(os.path.join(directory, "mrpc/dev.tsv"), "rb") as f:
        assert f.read(3) == b"\xef\xbb\xbf"          # the file really starts with a BOM
    src = FileSource({"validation": "mrpc/dev.tsv"}, "tsv",
                     {"label": Field(column="Quality"), "s1": Field(column="#1 String")},
                     data_dir=directory)
    got = list(src.iter_examples("validation"))
    assert [r["label"] for r in got] == [str(q) for q, *_ in rows["mrpc"]["validation"]]
    assert got[0]["s1"] == rows["mrpc"]["validation"][0][3]


def test_a_missing_column_names_the_columns_there_are(data):
    directory, _ = data
    src = FileSource({"validation": "mrpc/dev.tsv"}, "tsv", {"label": Field(column="quality")},
                     data_dir=directory)
    with pytest.raises(T5mtlError, match=r"dev.tsv:2: field 'label' \(column 'quality'\) is "
                                         r"missing; the record has 'Quality', '#1 ID'"):
        list(src.iter_examples("validation"))


# ---------------------------------------------------------------- the Python route

def test_python_route_registers_tasks_cards_and_variants(python_tasks):
    directory, rows = python_tasks
    info = task_info.get_task_info("ut_mrpc")
    assert info.schema == "classification" and info.metrics == ("accuracy", "f1")
    assert info.label_names == ("not_equivalent", "equivalent") and info.suite == "user"
    first = rows["mrpc"]["validation"][0]
    assert _texts("ut_mrpc", n=1) == [(f"mrpc sentence1: {first[3]} sentence2: {first[4]}",
                                       "equivalent")]
    wic = [t for _, t in _texts("ut_wic")]
    assert wic == ["same" if r["label"] else "different" for r in rows["wic"]["validation"]]
    copa = [t for _, t in _texts("ut_copa")]
    assert copa == [f"choice{r['label'] + 1}" for r in rows["copa"]["validation"]]
    for v in ("zs", "fs", "opt"):
        assert f"ut_mrpc_{v}" in seqio.TaskRegistry.names()
    pp = seqio.get_mixture_or_task("ut_mrpc").postprocess_fn
    assert [pp("equivalent"), pp("not_equivalent"), pp("maybe")] == [1, 0, -1]


# ---------------------------------------------------------------- item 5: generic templates

def test_generic_instruction_templates_for_a_user_task(python_tasks):
    table = template_tables.get("ut_copa")
    assert len(table.templates) == template_tables.GENERIC_TEMPLATE_COUNT
    assert table.label_field == "label"
    row = python_tasks[1]["copa"]["validation"][0]
    for inputs, target in _texts("ut_copa_zs", n=1):
        assert target == f"choice{row['label'] + 1}"
        for field in ("premise", "choice1", "choice2"):
            assert row[field] in inputs
    opt_inputs, _ = _texts("ut_copa_opt", n=1)[0]
    assert opt_inputs.endswith("\n\nAnswer with one of: choice1 | choice2")
    # A task whose fields do not say which one is the answer: a clear error.
    register_dataset_task("ut_free", {"train": "wic/train.jsonl"}, data_dir=python_tasks[0],
                          inputs="{word}", targets="{sentence1} {sentence2}", variants=(),
                          overwrite=True)
    with pytest.raises(T5mtlError, match="no instruction templates for task 'ut_free'"):
        template_tables.get("ut_free")


# ---------------------------------------------------------------- item 10: separator

def test_few_shot_exemplars_split_apart_on_an_unambiguous_separator(python_tasks):
    sep = templates.SHOT_SEPARATOR
    for table in template_tables.tables().values():
        for t in (*table.templates, *table.cot_templates, *table.inverse_templates):
            assert sep not in t.inputs and sep not in t.targets
    assert any("\n\n" in t.inputs for t in template_tables.tables()["glue_sst2"].templates)
    ds = seqio.get_mixture_or_task("ut_wic_fs").get_dataset(
        {"inputs": 2048, "targets": 32}, split="validation", shuffle=False)
    for ex in ds.take(5).as_numpy_iterator():
        blocks = ex["inputs_pretokenized"].decode().split(sep)
        assert len(blocks) == int(ex["_num_exemplars"]) + 1 == 4
        assert all(b.strip() for b in blocks)


# ---------------------------------------------------------------- item 6: truncation

def test_truncated_examples_are_counted(python_tasks, capsys):
    directory, rows = python_tasks
    lengths = {"inputs": 120, "targets": 12}   # "equivalent" + EOS fits, "not_equivalent" not
    want = sum(len(f"mrpc sentence1: {r[3]} sentence2: {r[4]}".encode()) + 1 > 120
               for r in rows["mrpc"]["train"])
    assert 0 < want < 24
    t = count_truncated(seqio.get_mixture_or_task("ut_mrpc"), "train", lengths)
    negatives = sum(not r[0] for r in rows["mrpc"]["train"])
    assert (t.checked, t.truncated["inputs"], t.truncated["targets"]) == (24, want, negatives)
    assert t.longest["targets"] == len("not_equivalent") + 1
    data_dir_lib.set_data_dir(directory)
    try:
        assert cli.main(["tasks", "show", "ut_mrpc", "--n", "1", "--inputs_length", "120"]) == 0
    finally:
        data_dir_lib.set_data_dir(None)
    out = capsys.readouterr().out
    assert f"{want} of 24 inputs longer than 120 tokens" in out and "warning: more than 1%" in out


# ---------------------------------------------------------------- item 4: chance, means, F1

def test_binary_f1_counts_the_positive_class_and_invalid_answers():
    # tp=2 (rows 0, 1), fp=1 (row 3), fn=1 (row 2) -> 2*2 / (4 + 1 + 1)
    assert metrics.binary_f1([1, 1, 1, 0, 0], [1, 1, 0, 1, 0])["f1"] == pytest.approx(200 / 3)
    # an unparseable answer (-1) is the wrong class: a miss for 1, a false alarm for 0
    assert metrics.binary_f1([1, 0, 1], [-1, -1, 1])["f1"] == pytest.approx(100 * 2 / 4)


def test_score_table_majority_chance_and_per_metric_means(python_tasks):
    assert evaluation.majority_share(fx.MRPC_DEV_LABELS) == pytest.approx(70.0)
    results = {"ut_mrpc": {"accuracy": 60.0, "f1": 80.0},
               "ut_wic": {"accuracy": 40.0}}
    table = evaluation.score_table(results, chance={"ut_mrpc": 70.0}).splitlines()
    row = next(r.split() for r in table if r.startswith("ut_mrpc") and "accuracy" in r)
    assert row[-2:] == ["60.0", "70.0"]
    f1_row = next(r.split() for r in table if r.startswith("ut_mrpc") and " f1 " in r)
    assert f1_row[-2:] == ["80.0", "-"]
    means = {r.split()[-2]: r.split()[-1] for r in table if r.startswith("mean")}
    assert means == {"accuracy": "50.0", "f1": "80.0"}


# ---------------------------------------------------------------- item 3: --rank refuses

def test_rank_refuses_a_task_without_label_names(python_tasks):
    assert rank_options(["ut_mrpc"]) == {"ut_mrpc": ("not_equivalent", "equivalent")}
    with pytest.raises(T5mtlError, match="--rank: task 'ut_free' has no label_names"):
        rank_options(["ut_mrpc", "ut_free"])


# ---------------------------------------------------------------- item 7: the run's split

def test_level_mixtures_follow_the_bound_split():
    from t5mtl.mtl.generalization import synthetic_level_mixtures
    gin_config.parse([], ["synthetic_generalization.held_out_categories = "
                          "['counting', 'sequence']"])
    levels = synthetic_level_mixtures()
    held = {task_info.get_task_info(t.name).category
            for t in seqio.get_mixture_or_task(levels["heldout_categories"]).tasks}
    assert held == {"counting", "sequence"}
    seen = {task_info.get_task_info(t.name).category
            for t in seqio.get_mixture_or_task(levels["heldout_instances"]).tasks}
    assert not seen & {"counting", "sequence"} and "classification" in seen
    gin.clear_config()
    synthetic_level_mixtures()          # back to the default split for other tests


# ---------------------------------------------------------------- the spec / gin routes

def test_spec_file_and_gin_inline_routes(python_tasks, tmp_path, capsys):
    directory, rows = python_tasks
    path = fx.write_spec(str(tmp_path / "tasks.json"), prefix="uspec")
    data_dir_lib.set_data_dir(directory)
    try:
        assert cli.main(["tasks", "list", f"--gin.register_task_specs.paths=[{path!r}]"]) == 0
        out = capsys.readouterr().out
        for name in ("uspec_wic", "uspec_copa", "uspec_mrpc"):
            assert name in out
        assert "uspec_mix" in out
        mix = seqio.get_mixture_or_task("uspec_mix")
        assert sorted(t.name for t in mix.tasks) == ["synth_parity", "uspec_copa", "uspec_mrpc",
                                                     "uspec_wic"]
        assert _texts("uspec_mrpc") == _texts("ut_mrpc")
        assert "uspec_copa_zs" in seqio.TaskRegistry.names()
        inline = dict(fx.spec("ugin")["tasks"][0])
        gin.clear_config()
        gin_config.parse([], [f"register_task_specs.tasks = [{json.dumps(inline)}]"
                              .replace("false", "False").replace("true", "True")])
        assert [t for _, t in _texts("ugin_wic")] == [
            "same" if r["label"] else "different" for r in rows["wic"]["validation"]]
    finally:
        data_dir_lib.set_data_dir(None)
    with pytest.raises(T5mtlError, match=r"task 'bad': unknown keys \['input'\]"):
        register_task_specs(tasks=[{"name": "bad", "files": {}, "input": "", "targets": ""}])


def test_module_import_errors_are_one_line(capsys):
    assert cli.main(["tasks", "list", "--module_import", "no_such_module_xyz"]) == 2
    err = capsys.readouterr().err
    assert "--module_import 'no_such_module_xyz': No module named 'no_such_module_xyz'" in err
    assert len(err.strip().splitlines()) == 1


def test_fewshot_reads_the_run_config_or_asks_for_a_gin_file(tmp_path, capsys):
    assert cli.main(["fewshot", f"--model_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "pass --gin_file" in err and "has no config.gin of an earlier run" in err
    (tmp_path / "config.gin").write_text("FewShotConfig.ks = [4]\n")
    assert gin_config.run_config(str(tmp_path)) == [str(tmp_path / "config.gin")]
    assert gin_config.run_config(str(tmp_path / "elsewhere")) == []
