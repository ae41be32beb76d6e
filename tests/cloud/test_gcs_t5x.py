"""A t5x checkpoint in a bucket (t5x's own tiny fixture, uploaded): read in
place (tensorstore's gcs driver), converted to a gs:// model_dir and back to
a gs:// t5x directory, with the same arrays as from local disk."""
import os

import gin
import jax
import numpy as np
import pytest

from t5mtl import cli, paths
from t5mtl.convert import t5x
from t5mtl.train import model_dir as model_dir_lib
from tests.convert.test_t5x import CKPT, CONFIG, FIXTURE

pytestmark = pytest.mark.skipif(not os.path.isdir(FIXTURE), reason="t5x fixture not present")


def _cli(*args) -> int:
    gin.clear_config()
    return cli.main(list(args))


def _same(a, b):
    a, b = ({jax.tree_util.keystr(p): np.asarray(v)
             for p, v in jax.tree_util.tree_flatten_with_path(t)[0]} for t in (a, b))
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_t5x_checkpoint_on_gs_reads_and_converts_both_ways(gcs_bucket, tmp_path):
    src = f"{gcs_bucket}/t5x/checkpoint"
    paths.upload_tree(CKPT, src)
    local, remote = t5x.open_checkpoint(CKPT), t5x.open_checkpoint(src)
    assert remote.step == local.step and remote.leaves.keys() == local.leaves.keys()
    for name in local.target_names():
        assert np.array_equal(remote.leaves[f"target/{name}"].read(),
                              local.leaves[f"target/{name}"].read()), name

    dst, mine = f"{gcs_bucket}/t5x/model", str(tmp_path / "model")
    assert _cli("convert", "--from", "t5x", "--src", src, "--dst", dst,
                "--t5x_config", CONFIG) == 0
    assert _cli("convert", "--from", "t5x", "--src", CKPT, "--dst", mine,
                "--t5x_config", CONFIG) == 0
    _same(model_dir_lib.load_params(dst)[1], model_dir_lib.load_params(mine)[1])

    out = f"{gcs_bucket}/t5x/out"
    assert _cli("convert", "--to", "t5x", "--src", dst, "--dst", out) == 0
    assert paths.listdir(out) == [f"checkpoint_{local.step}", "model.gin", "t5x_config.json"]
    back = t5x.open_checkpoint(out)
    for name in local.target_names():
        assert np.array_equal(back.leaves[f"target/{name}"].read(),
                              local.leaves[f"target/{name}"].read()), name
