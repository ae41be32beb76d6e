"""`t5mtl tasks list|show`, run in-process through t5mtl.cli.main."""
import pytest
import seqio

import t5mtl.data.registry  # noqa: F401  (registers tasks)
from t5mtl import cli
from t5mtl.data import data_dir as data_dir_lib
from t5mtl.data import synthetic, task_info

ALL_TASKS = sorted(seqio.TaskRegistry.names())


def _variant_of(name):
    return task_info.get_task_info(name).base_task if task_info.has_task_info(name) else ""


# Every base task, every instruction variant of the real tasks (each has its
# own table), and one synthetic task per variant kind (they share tables; the
# registration itself checks every template against the task's fields).
SHOWN_TASKS = [n for n in ALL_TASKS
               if not _variant_of(n) or not n.startswith("synth_")
               or n in ("synth_add_zs", "synth_add_fs", "synth_parity_opt", "synth_add_cot",
                        "synth_uppercase_inv")]


@pytest.fixture(autouse=True)
def _reset_data_dir():
    yield
    data_dir_lib.set_data_dir(None)


def _needs_tfds(name):
    return isinstance(seqio.get_mixture_or_task(name).source, seqio.TfdsDataSource)


@pytest.mark.parametrize("name", SHOWN_TASKS)
def test_show_registered_tasks(name, shared_data_dir, capsys):
    if _needs_tfds(name):
        pytest.skip("TFDS-backed task (e.g. C4): needs a prepared TFDS copy, not offline")
    rc = cli.main(["tasks", "show", name, "--n", "1", "--data_dir", shared_data_dir,
                   "--max_ids", "8", "--check_examples", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"task {name}" in out
    assert "raw examples" in out and "  [1]" in out
    assert "preprocessed examples" in out
    assert "targets ids (" in out


def test_show_prints_text_ids_and_lengths(capsys):
    rc = cli.main(["tasks", "show", "synth_reverse_letters", "--split", "validation", "--n", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "category: string_edit" in out and "instruction: Reverse the letters:" in out
    assert "query: 'bajaboii'" in out and "answer: 'iiobajab'" in out
    assert "inputs: 'Reverse the letters: bajaboii'" in out
    ids = ", ".join(str(b + 3) for b in b"iiobajab") + ", 1"
    assert f"targets ids (9 tokens): [{ids}]" in out
    assert out.count("  [2]") == 2  # raw and preprocessed


def test_list_and_category_filter(capsys):
    assert cli.main(["tasks", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("glue_cola", "superglue_cb", "squad_v1_1", "synth_add", "dialogsum"):
        assert name in out
    assert "mixtures: " in out and synthetic.MIXTURE in out
    assert cli.main(["tasks", "list", "--category", "arithmetic"]) == 0
    out = capsys.readouterr().out
    assert "synth_add " in out and "glue_cola" not in out
    assert f"{len(synthetic.task_names('arithmetic'))} tasks in 1 categories" in out


def test_show_mixture(capsys):
    assert cli.main(["tasks", "show", "synth_all"]) == 0
    out = capsys.readouterr().out
    assert f"mixture synth_all: {len(synthetic.TASKS)} tasks" in out


def test_bad_input_is_one_line_error(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv(data_dir_lib.ENV_VAR, raising=False)
    assert cli.main(["tasks", "show", "synth_ad"]) == 2
    assert "unknown task 'synth_ad'; did you mean synth_add" in capsys.readouterr().err
    assert cli.main(["tasks", "show", "glue_qnli", "--split", "train"]) == 2
    assert "has no split 'train'; it has validation" in capsys.readouterr().err
    assert cli.main(["tasks", "list", "--category", "nope"]) == 2
    assert "unknown category 'nope'" in capsys.readouterr().err
    bad = str(tmp_path / "nowhere")
    assert cli.main(["tasks", "show", "glue_cola", "--data_dir", bad]) == 2
    assert f"data_dir '{bad}' is not a directory" in capsys.readouterr().err
