"""Sources: plain-text files, TFDS by name, HF datasets; lazy, and loud on bad input."""
import os
import re
import sys
import types

import pytest
import seqio

from t5mtl.data import data_dir as data_dir_lib
from t5mtl.data import pretraining_tasks as pt
from t5mtl.data.sources import TextFilesSource, hf_source, tfds_source
from t5mtl.errors import T5mtlError


def texts(source, split="train", **kwargs):
    return [(ex["text"].decode(), os.path.basename(ex["id"].decode()))
            for ex in source.get_dataset(split, shuffle=False, **kwargs).as_numpy_iterator()]


@pytest.fixture
def text_dir(tmp_path, monkeypatch):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_bytes(
        b"\xef\xbb\xbfFirst line.\nStill first.\n\n  \nSecond para.\r\n\r\nThird.\n")
    (tmp_path / "corpus" / "b.txt").write_text("Only one.")
    monkeypatch.setenv("T5MTL_DATA_DIR", str(tmp_path))
    return tmp_path


def test_text_units(text_dir):
    split = {"train": "corpus/*.txt"}
    assert texts(TextFilesSource(split, unit="file")) == [
        ("First line.\nStill first.\n\n  \nSecond para.\r\n\r\nThird.\n", "a.txt"),
        ("Only one.", "b.txt")]
    assert texts(TextFilesSource(split, unit="paragraph", cycle_length=1)) == [
        ("First line.\nStill first.", "a.txt"), ("Second para.", "a.txt"),
        ("Third.", "a.txt"), ("Only one.", "b.txt")]
    assert texts(TextFilesSource(split, unit="line", cycle_length=1)) == [
        ("First line.", "a.txt"), ("Still first.", "a.txt"), ("Second para.", "a.txt"),
        ("Third.", "a.txt"), ("Only one.", "b.txt")]


def test_files_are_shards(text_dir):
    source = TextFilesSource({"train": "corpus/*.txt"})
    assert [os.path.basename(f) for f in source.list_shards("train")] == ["a.txt", "b.txt"]
    assert [t for _, t in texts(source, shard_info=seqio.ShardInfo(1, 2))] == ["b.txt"]


def test_missing_and_empty_files_name_the_path(text_dir):
    missing = TextFilesSource({"train": "corpus/nope.txt"})
    with pytest.raises(T5mtlError, match=re.escape(str(text_dir / "corpus" / "nope.txt"))):
        missing.get_dataset("train")
    (text_dir / "corpus" / "empty.txt").write_text("")
    with pytest.raises(T5mtlError, match="empty.txt' is empty"):
        TextFilesSource({"train": "corpus/*.txt"}).get_dataset("train")
    (text_dir / "corpus" / "empty.txt").write_bytes(b"\xef\xbb\xbf \n\n\t\n")
    with pytest.raises(T5mtlError, match="empty.txt' is empty"):
        TextFilesSource({"train": "corpus/empty.txt"}, unit="paragraph").get_dataset("train")
    with pytest.raises(T5mtlError, match="split 'test'"):
        TextFilesSource({"train": "corpus/*.txt"}).get_dataset("test")
    with pytest.raises(T5mtlError, match="'sentence'"):
        TextFilesSource({"train": "corpus/*.txt"}, unit="sentence")


def test_task_over_a_bad_file_fails_naming_it(text_dir):
    (text_dir / "corpus" / "empty.txt").write_text("")
    source = TextFilesSource({"train": "corpus/empty.txt"})
    pt.register_pretraining_task("test_empty_text", source, concat_batch_size=1)
    try:
        with pytest.raises(T5mtlError, match="empty.txt"):
            seqio.get_mixture_or_task("test_empty_text").get_dataset(
                {"inputs": 128, "targets": 29}, split="train")
    finally:
        seqio.TaskRegistry.remove("test_empty_text")


def test_sources_are_lazy_and_a_wrong_data_dir_is_named(monkeypatch, tmp_path):
    wrong = str(tmp_path / "no_such_dir")
    monkeypatch.setenv("T5MTL_DATA_DIR", wrong)
    source = pt.raw_text_en_source()  # builds without touching the disk
    with pytest.raises(T5mtlError, match=re.escape(wrong)):
        source.get_dataset("train")
    monkeypatch.delenv("T5MTL_DATA_DIR")
    with pytest.raises(T5mtlError, match="no data_dir given"):
        source.list_shards("train")
    # explicit data_dir beats the environment
    monkeypatch.setenv("T5MTL_DATA_DIR", wrong)
    assert len(pt.raw_text_en_source(data_dir=os.path.dirname(
        data_dir_lib.__file__)).resolve_patterns("validation")) == 2


def test_raw_text_en_splits_cover_provenance_files(shared_data_dir, monkeypatch):
    monkeypatch.setenv("T5MTL_DATA_DIR", shared_data_dir)
    with open(os.path.join(shared_data_dir, "raw_text_en", "PROVENANCE.md")) as f:
        listed = set(re.findall(r"^\| `([^`]+\.txt)` \|", f.read(), re.M))
    source = pt.raw_text_en_source()
    root = os.path.join(shared_data_dir, "raw_text_en") + os.sep
    train = [f.replace(root, "") for f in source.list_shards("train")]
    validation = [f.replace(root, "") for f in source.list_shards("validation")]
    assert len(listed) == 13 and sorted(train + validation) == sorted(listed)
    assert len(train) == 11 and len(validation) == 2
    docs = texts(source, "validation")
    assert [name for _, name in docs] == ["pg35.txt", "pg46.txt"]
    assert docs[0][0].startswith("Project Gutenberg's The Time Machine")  # BOM dropped


def test_registered_tasks():
    names = set(seqio.TaskRegistry.names())
    assert {"raw_text_en_span_corruption", "raw_text_en_iid_denoising",
            "raw_text_en_prefix_lm", "c4_span_corruption"} <= names
    c4 = seqio.get_mixture_or_task("c4_span_corruption")
    assert c4.source.tfds_dataset.name == "c4/en:3.*.*"
    from t5mtl.data import task_info
    info = task_info.get_task_info("raw_text_en_span_corruption")
    assert (info.category, info.schema) == ("pretraining", "text_to_text")
    assert info.suite == "pretraining"
    pt.register()  # registering again is a no-op
    with pytest.raises(T5mtlError, match="already registered"):
        pt.register_pretraining_task("raw_text_en_prefix_lm", pt.raw_text_en_source(),
                                     objective="prefix_lm", overwrite=False)


def test_tfds_source_resolves_data_dir_when_read(monkeypatch, tmp_path):
    monkeypatch.delenv("T5MTL_DATA_DIR", raising=False)
    source = tfds_source("c4/en:3.*.*")
    monkeypatch.setenv("T5MTL_DATA_DIR", str(tmp_path))  # set after registration
    source._resolve_data_dir()
    assert source.tfds_dataset.data_dir == str(tmp_path)
    explicit = tfds_source("glue/sst2:2.*.*", data_dir="/somewhere/tfds")
    explicit._resolve_data_dir()
    assert explicit.tfds_dataset.data_dir == "/somewhere/tfds"
    with pytest.raises(T5mtlError, match="needs a version"):
        tfds_source("c4/en")


def test_hf_source_without_datasets_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    source = hf_source("glue", "sst2")  # lazy: fine without the package
    with pytest.raises(T5mtlError, match="pip install datasets"):
        source.get_dataset("train", shuffle=False)


def test_hf_source_reads_rows(monkeypatch, tmp_path):
    rows = {"train": [{"sentence": "a good film", "label": 1, "score": 0.5, "tags": [1, 2]},
                      {"sentence": "dull", "label": 0, "score": 0.25, "tags": [3]}],
            "validation": []}
    calls = []

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return rows[split]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    (tmp_path / "local_copy").mkdir()
    monkeypatch.setenv("T5MTL_DATA_DIR", str(tmp_path))
    source = hf_source("local_copy", splits=("train", "validation"))
    got = list(source.get_dataset("train", shuffle=False).as_numpy_iterator())
    assert calls[-1] == (str(tmp_path / "local_copy"), None, "train")  # found under data_dir
    assert [(g["sentence"], g["label"], g["tags"].tolist()) for g in got] == [
        (b"a good film", 1, [1, 2]), (b"dull", 0, [3])]
    assert abs(got[1]["score"] - 0.25) < 1e-6
    with pytest.raises(T5mtlError, match="'validation' is empty"):
        source.get_dataset("validation", shuffle=False)
    with pytest.raises(T5mtlError, match=r"no field\(s\) \['text'\]"):
        hf_source("local_copy", fields=["text"]).get_dataset("train", shuffle=False)
