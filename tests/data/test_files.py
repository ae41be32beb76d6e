"""Local file sources, templates and register_file_task; bad input errors."""
import json
import logging
import os

import pytest
import seqio

from t5mtl.data import data_dir as data_dir_lib
from t5mtl.data.files import Field, FileSource, Template, register_file_task
from t5mtl.data.readers import read_parallel
from t5mtl.errors import T5mtlError


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def nli_dir(tmp_path):
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": "yes" if i % 2 else "no"}
            for i in range(6)]
    _write(str(tmp_path / "nli/train.jsonl"), _jsonl(rows))
    _write(str(tmp_path / "nli/dev.tsv"), "premise\thypothesis\tlabel\np \"a\tq\tyes\n\nr\ts\tno\n")
    _write(str(tmp_path / "nli/dev.csv"), 'premise,hypothesis,label\n"p, a",q,yes\nr,s,no\n')
    return str(tmp_path)


FIELDS = {"premise": Field(), "hypothesis": Field(), "label": Field(values={"yes": "yes", "no": "no"})}


def _records(source, split):
    return list(source.iter_examples(split))


def test_reads_jsonl_tsv_csv(nli_dir):
    src = FileSource({"train": "nli/train.jsonl"}, "jsonl", FIELDS, data_dir=nli_dir)
    assert _records(src, "train")[1] == {"premise": "p1", "hypothesis": "h1", "label": "yes"}
    assert src.num_input_examples("train") == 6
    # TSV: quoting off (a lone quote stays), blank lines skipped.
    tsv = FileSource({"validation": "nli/dev.tsv"}, "tsv", FIELDS, data_dir=nli_dir)
    assert _records(tsv, "validation") == [
        {"premise": 'p "a', "hypothesis": "q", "label": "yes"},
        {"premise": "r", "hypothesis": "s", "label": "no"}]
    csv_src = FileSource({"validation": "nli/dev.csv"}, "csv", FIELDS, data_dir=nli_dir)
    assert _records(csv_src, "validation")[0]["premise"] == "p, a"


def test_register_file_task_end_to_end(nli_dir):
    name = "test_files_nli"
    task = register_file_task(
        name, {"train": "nli/train.jsonl", "validation": ["nli/dev.tsv"]}, "jsonl",
        Template("nli premise: {premise} hypothesis: {hypothesis}", "{label}"),
        data_dir=nli_dir, overwrite=True)
    try:
        ds = task.get_dataset({"inputs": 64, "targets": 8}, split="train", shuffle=False)
        exs = list(ds.as_numpy_iterator())
        assert len(exs) == 6
        assert exs[0]["inputs_pretokenized"] == b"nli premise: p0 hypothesis: h0"
        assert exs[0]["targets_pretokenized"] == b"no"
        assert exs[0]["targets"][-1] == 1  # EOS
        # Sharding by example index: 2 shards partition the same examples.
        union = []
        for i in range(2):
            shard = task.get_dataset({"inputs": 64, "targets": 8}, split="train", shuffle=False,
                                     shard_info=seqio.ShardInfo(i, 2))
            union += [e["inputs_pretokenized"] for e in shard.as_numpy_iterator()]
        assert sorted(union) == sorted(e["inputs_pretokenized"] for e in exs)
    finally:
        seqio.TaskRegistry.remove(name)


def test_template_render_and_missing_field():
    t = Template("q: {question} c: {context}", "{answer}")
    assert t.fields() == ("question", "context", "answer")
    assert t.render({"question": "why", "context": "because", "answer": "so"}) == \
        {"inputs": "q: why c: because", "targets": "so"}
    with pytest.raises(T5mtlError, match="template references missing field 'answer'"):
        t.check({"question": "string", "context": "string"}, task="t")
    with pytest.raises(T5mtlError, match="bad template"):
        Template("{x!r}", "{y}")


# ---------------------------------------------------------------- bad input

def test_non_json_line_names_file_and_line(tmp_path):
    _write(str(tmp_path / "d/train.jsonl"), _jsonl([{"premise": "a", "hypothesis": "b", "label": "yes"}])
           + "{not json\n")
    src = FileSource({"train": "d/train.jsonl"}, "jsonl", FIELDS, data_dir=str(tmp_path))
    path = os.path.join(str(tmp_path), "d/train.jsonl")
    with pytest.raises(T5mtlError, match=rf"^{path}:2: not valid JSON"):
        _records(src, "train")


def test_missing_field_names_file_line_and_field(tmp_path):
    _write(str(tmp_path / "d/train.jsonl"), _jsonl([
        {"premise": "a", "hypothesis": "b", "label": "yes"},
        {"premise": "a", "label": "no"}]))
    src = FileSource({"train": "d/train.jsonl"}, "jsonl", FIELDS, data_dir=str(tmp_path))
    with pytest.raises(T5mtlError, match=r"train.jsonl:2: field 'hypothesis' is missing"):
        _records(src, "train")


def test_empty_text_names_file_line_and_field(tmp_path):
    _write(str(tmp_path / "d/dev.tsv"), "sentence\tlabel\ngood\t1\n  \t0\n")
    src = FileSource({"validation": "d/dev.tsv"}, "tsv",
                     {"sentence": Field(), "label": Field(values={"0": "neg", "1": "pos"})},
                     data_dir=str(tmp_path))
    with pytest.raises(T5mtlError, match=r"dev.tsv:3: field 'sentence' is empty"):
        _records(src, "validation")


def test_bad_label_and_column_count(tmp_path):
    _write(str(tmp_path / "d/a.tsv"), "sentence\tlabel\ngood\t7\n")
    _write(str(tmp_path / "d/b.tsv"), "sentence\tlabel\ngood\t1\textra\n")
    fields = {"sentence": Field(), "label": Field(values={"0": "neg", "1": "pos"})}
    with pytest.raises(T5mtlError, match=r"a.tsv:2: field 'label' has value '7'; expected one of '0', '1'"):
        _records(FileSource({"train": "d/a.tsv"}, "tsv", fields, data_dir=str(tmp_path)), "train")
    with pytest.raises(T5mtlError, match=r"b.tsv:2: expected 2 tab-separated columns, found 3"):
        _records(FileSource({"train": "d/b.tsv"}, "tsv", fields, data_dir=str(tmp_path)), "train")


def test_wrong_data_dir_and_missing_file(tmp_path, monkeypatch):
    monkeypatch.delenv(data_dir_lib.ENV_VAR, raising=False)
    bad = str(tmp_path / "no_such_dir")
    src = FileSource({"train": "d/train.jsonl"}, "jsonl", FIELDS, data_dir=bad)
    with pytest.raises(T5mtlError, match=rf"data_dir '{bad}' is not a directory"):
        _records(src, "train")
    src = FileSource({"train": "d/missing.jsonl"}, "jsonl", FIELDS, data_dir=str(tmp_path))
    with pytest.raises(T5mtlError, match=r"missing data file '.*d/missing.jsonl'"):
        _records(src, "train")
    # No data_dir at all: the error says how to give one.
    monkeypatch.setattr(data_dir_lib, "_data_dir", None)
    src = FileSource({"train": "d/train.jsonl"}, "jsonl", FIELDS)
    with pytest.raises(T5mtlError, match="no data_dir given"):
        _records(src, "train")


def test_errors_surface_through_tf_data(tmp_path):
    _write(str(tmp_path / "d/train.jsonl"), '{"premise": "a"}\n')
    src = FileSource({"train": "d/train.jsonl"}, "jsonl", FIELDS, data_dir=str(tmp_path))
    with pytest.raises(Exception, match=r"train.jsonl:1: field 'hypothesis' is missing"):
        list(src.get_dataset("train").as_numpy_iterator())


def test_skip_policy_is_explicit_and_logged(tmp_path, caplog):
    good = {"premise": "a", "hypothesis": "b", "label": "yes"}
    _write(str(tmp_path / "d/train.jsonl"), _jsonl([good, {"premise": "x"}, good]) + "oops\n")
    strict = FileSource({"train": "d/train.jsonl"}, "jsonl", FIELDS, data_dir=str(tmp_path))
    with pytest.raises(T5mtlError):  # off by default
        _records(strict, "train")
    lenient = FileSource({"train": "d/train.jsonl"}, "jsonl", FIELDS, data_dir=str(tmp_path),
                         on_error="skip")
    with caplog.at_level(logging.WARNING):
        assert len(_records(lenient, "train")) == 2
    assert "train.jsonl:2: field 'hypothesis' is missing" in caplog.text
    assert "train.jsonl:4: not valid JSON" in caplog.text
    assert "skipped 2 bad records, kept 2" in caplog.text


def test_never_silently_empty(tmp_path):
    _write(str(tmp_path / "d/empty.jsonl"), "\n")
    _write(str(tmp_path / "d/bad.jsonl"), _jsonl([{"premise": "x"}]))
    with pytest.raises(T5mtlError, match="no records; refusing an empty dataset"):
        _records(FileSource({"train": "d/empty.jsonl"}, "jsonl", FIELDS, data_dir=str(tmp_path)),
                 "train")
    src = FileSource({"train": "d/bad.jsonl"}, "jsonl", FIELDS, data_dir=str(tmp_path),
                     on_error="skip")
    with pytest.raises(T5mtlError, match="all 1 records were bad"):
        _records(src, "train")


def test_parallel_files_must_align(tmp_path):
    _write(str(tmp_path / "a.en"), "one\ntwo\n")
    _write(str(tmp_path / "a.de"), "eins\n")
    with pytest.raises(T5mtlError, match=r"a.de has 1 lines but .*a.en has more"):
        list(read_parallel({"en": str(tmp_path / "a.en"), "de": str(tmp_path / "a.de")}))
