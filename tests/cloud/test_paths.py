"""t5mtl.paths on gs:// (the emulator) and on local disk: the same answers."""
import os

import pytest

from t5mtl import paths
from t5mtl.errors import T5mtlError


@pytest.fixture(params=["local", "gs"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path)
    bucket = request.getfixturevalue("gcs_bucket")
    return f"{bucket}/paths-{request.node.name.split('[')[0]}-{id(tmp_path)}"


def test_write_read_list_move_remove(root):
    a = paths.join(root, "d", "a.json")
    paths.makedirs(paths.dirname(a))
    paths.write_text(a, '{"x": 1}')
    paths.write_text(a, '{"x": 2}')             # replaced whole
    assert paths.read_text(a) == '{"x": 2}'
    paths.write_bytes(paths.join(root, "d", "sub", "b.bin"), b"\0\1")
    assert paths.listdir(paths.join(root, "d")) == ["a.json", "sub"]
    assert paths.isfile(a) and paths.isdir(paths.join(root, "d", "sub"))
    assert not paths.exists(paths.join(root, "nothing")) and paths.listdir(
        paths.join(root, "nothing")) == []
    paths.move_dir(paths.join(root, "d"), paths.join(root, "e"))
    assert not paths.exists(a)
    with paths.open_file(paths.join(root, "e", "sub", "b.bin"), "rb") as f:
        assert f.read() == b"\0\1"
    paths.rmtree(paths.join(root, "e"))
    assert paths.listdir(root) == []


def test_upload_and_download_tree(gcs_bucket, tmp_path):
    src = tmp_path / "src"
    (src / "checkpoints" / "0").mkdir(parents=True)
    (src / "checkpoints" / "0" / "x").write_bytes(b"123")
    (src / "model.json").write_text("{}")
    dst = f"{gcs_bucket}/tree"
    paths.upload_tree(str(src), dst)
    assert paths.listdir(dst) == ["checkpoints", "model.json"]
    with paths.local_copy(dst, "directory") as local:
        assert (tmp_path.joinpath(local) / "checkpoints" / "0" / "x").read_bytes() == b"123"
    assert not os.path.exists(local)                    # the download is removed


def test_a_missing_bucket_is_one_line_naming_the_path(gcs_bucket):
    with pytest.raises(T5mtlError) as e:
        paths.makedirs("gs://no-such-bucket-t5mtl/run")
    assert str(e.value).startswith("gs://no-such-bucket-t5mtl/run: bucket gs://no-such-bucket")
    assert "\n" not in str(e.value)
    paths.check_bucket(f"{gcs_bucket}/anything")       # exists: no error


def test_a_gs_data_dir_resolves_and_reads(gcs_bucket):
    from t5mtl.data.data_dir import data_path, resolve_data_dir
    from t5mtl.data.readers import read_delimited, read_jsonl
    data = f"{gcs_bucket}/data"
    paths.write_text(f"{data}/copa/train.jsonl", '{"premise": "p", "label": 1}\n')
    paths.write_bytes(f"{data}/mrpc/train.tsv", "\ufeffQuality\t#1 String\n1\ta\n".encode())
    assert resolve_data_dir(data) == data
    path = data_path("copa", "train.jsonl", data_dir=data)
    assert path == f"{data}/copa/train.jsonl"
    assert [r for _, r in read_jsonl(path)] == [{"premise": "p", "label": 1}]
    rows = [r for _, r in read_delimited(data_path("mrpc/train.tsv", data_dir=data))]
    assert rows == [{"Quality": "1", "#1 String": "a"}]
    with pytest.raises(T5mtlError, match="missing data file"):
        data_path("copa", "test.jsonl", data_dir=data)
    with pytest.raises(T5mtlError) as e:
        resolve_data_dir("gs://no-such-bucket-t5mtl/data")
    assert "gs://no-such-bucket-t5mtl/data" in str(e.value) and "\n" not in str(e.value)
