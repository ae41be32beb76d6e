"""t5x checkpoints in and out, against a checkpoint written by t5x itself
(../shared/data/t5x_tiny_v1_1, see its PROVENANCE.md) and the logits t5x's
network computed from it. t5x is not needed: its formats are read and checked
here with msgpack, tensorstore and orbax alone."""
import json
import os
import shutil
import subprocess
import sys

import jax
import msgpack
import numpy as np
import pytest
import tensorstore as ts

from t5mtl.cli import main
from t5mtl.convert import t5x, t5x_config
from t5mtl.convert.command import t5x_to_model_dir
from t5mtl.convert.t5x_adafactor import read_adafactor_state
from t5mtl.errors import T5mtlError
from t5mtl.models import param_names
from t5mtl.models.configs import NAMED_CONFIGS
from t5mtl.train import model_dir as model_dir_lib
from t5mtl.train.optimizers import adafactor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURE = os.path.realpath(os.path.join(ROOT, "..", "shared", "data", "t5x_tiny_v1_1"))
if not os.path.isdir(FIXTURE):
    FIXTURE = "/work/shared/data/t5x_tiny_v1_1"
CKPT = os.path.join(FIXTURE, "checkpoint")
STEP_DIR = os.path.join(CKPT, "checkpoint_0")
CONFIG = os.path.join(FIXTURE, "config.json")

pytestmark = pytest.mark.skipif(not os.path.isdir(FIXTURE), reason="t5x fixture not present")


def _index(step_dir):
    """The msgpack index as plain msgpack decodes it (inline arrays stay ExtType)."""
    with open(os.path.join(step_dir, "checkpoint"), "rb") as f:
        return msgpack.unpackb(f.read())


def _stored_arrays(step_dir):
    """{dotted name: array} of every tensorstore array the index names, read
    with tensorstore alone (kvstore paths are relative to the step dir)."""
    out = {}

    def walk(tree):
        for v in tree.values():
            if isinstance(v, dict) and "driver" in v:
                spec = json.loads(json.dumps(v))
                rel = spec["kvstore"]["path"]
                spec["kvstore"]["path"] = os.path.join(step_dir, rel)
                out[rel.rstrip("/")] = ts.open(spec).result().read().result()
            elif isinstance(v, dict):
                walk(v)
    walk(_index(step_dir)["optimizer"])
    return out


def _ours(t5x_name, array, cfg):
    """The hand-written layout map: t5x array -> t5mtl array of that name."""
    parts = t5x_name.split(".")
    if parts[-1] == "rel_embedding":
        return array.T
    kernel = "kernel" in parts[-2:]
    owner = parts[parts.index("kernel") - 1] if kernel else None
    if owner in ("query", "key", "value"):
        return array.reshape(array.shape[0], cfg.num_heads, cfg.d_kv)
    if owner == "out":
        return array.reshape(cfg.num_heads, cfg.d_kv, array.shape[-1])
    return array


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The fixture converted by the CLI: (model_dir, model, params)."""
    dst = str(tmp_path_factory.mktemp("t5x") / "model")
    assert main(["convert", "--from", "t5x", "--src", CKPT, "--dst", dst,
                 "--t5x_config", CONFIG]) == 0
    model, params = model_dir_lib.load_params(dst)
    return dst, model, params


def test_fixture_logits_equal_t5x_reference(imported):
    _, model, params = imported
    ref = np.load(os.path.join(FIXTURE, "reference_logits.npz"))
    batch = {k: ref[k] for k in ("encoder_input_tokens", "decoder_input_tokens",
                                 "decoder_target_tokens")}
    logits = np.asarray(model.logits(params, batch))
    real = ref["decoder_target_tokens"] > 0
    assert np.abs(ref["logits"][real]).max() > 1.0       # a real signal
    np.testing.assert_allclose(logits[real], ref["logits"][real], atol=1e-5, rtol=0)


def test_params_are_the_stored_arrays_in_t5mtl_layout(imported):
    _, model, params = imported
    stored = _stored_arrays(STEP_DIR)
    ours = param_names.flatten(params)
    targets = {k[len("target."):]: v for k, v in stored.items() if k.startswith("target.")}
    assert len(targets) == len(ours) == 66      # params.txt
    for dotted, array in targets.items():
        np.testing.assert_array_equal(ours[dotted.replace(".", "/")],
                                      _ours(dotted, array, model.config))


def test_export_then_reimport_is_bit_identical(imported, tmp_path):
    src, model, params = imported
    out = str(tmp_path / "t5x_out")
    assert main(["convert", "--to", "t5x", "--src", src, "--dst", out]) == 0
    step_dir = os.path.join(out, "checkpoint_0")
    # The index, read with msgpack alone, is the fixture's: same names, specs,
    # relative paths, inline Adafactor placeholders and step.
    assert _index(step_dir) == _index(STEP_DIR)
    assert sorted(os.listdir(step_dir)) == sorted(os.listdir(STEP_DIR))
    exported, original = _stored_arrays(step_dir), _stored_arrays(STEP_DIR)
    assert exported.keys() == original.keys()
    for name, array in original.items():
        assert exported[name].dtype == array.dtype
        np.testing.assert_array_equal(exported[name], array)
    with open(os.path.join(out, "t5x_config.json")) as f:
        assert {k: v for k, v in json.load(f).items()} == {
            k: v for k, v in json.load(open(CONFIG)).items()}
    assert t5x_config.read_t5x_config(os.path.join(out, "model.gin")) == model.config
    back = str(tmp_path / "back")
    assert main(["convert", "--from", "t5x", "--src", out, "--dst", back,
                 "--t5x_config", os.path.join(out, "model.gin")]) == 0
    _, again = model_dir_lib.load_params(back)
    for name, leaf in param_names.flatten(params).items():
        a = param_names.flatten(again)[name]
        assert a.dtype == leaf.dtype and a.tobytes() == leaf.tobytes(), name


def test_orbax_layout_reads_like_legacy(imported, tmp_path):
    """A t5x checkpoint in the orbax layout t5x's OrbaxCheckpointManagerInterface
    writes (checkpoint_<step>/state: PyTreeCheckpointHandler with OCDBT over
    the train state dict), made here from the fixture's arrays."""
    import orbax.checkpoint as ocp
    _, _, params = imported
    stored = _stored_arrays(STEP_DIR)
    state = {"target": {}, "state": {"step": np.int32(7), "param_states": {}}}
    for name, array in stored.items():
        parts = name.split(".")
        if parts[0] == "target":
            tree, keys = state["target"], parts[1:]
        else:
            tree, keys = state["state"]["param_states"], parts[2:]
        for k in keys[:-1]:
            tree = tree.setdefault(k, {})
        tree[keys[-1]] = array
    directory = str(tmp_path / "orbax_run")
    mngr = ocp.CheckpointManager(directory, item_handlers={
        "state": ocp.PyTreeCheckpointHandler(use_ocdbt=True)}, options=ocp.CheckpointManagerOptions(
        step_prefix="checkpoint", create=True, enable_async_checkpointing=False))
    mngr.save(7, args=ocp.args.Composite(state=ocp.args.PyTreeSave(state)))
    mngr.wait_until_finished()
    mngr.close()
    assert os.path.isdir(os.path.join(directory, "checkpoint_7", "state"))
    dst = str(tmp_path / "model")
    assert t5x_to_model_dir(directory, dst, CONFIG) == 7
    _, again = model_dir_lib.load_params(dst, 7)
    for name, leaf in param_names.flatten(params).items():
        assert param_names.flatten(again)[name].tobytes() == leaf.tobytes(), name
    tx = adafactor(learning_rate=0.01)
    from_orbax = read_adafactor_state(t5x.open_checkpoint(directory), tx, params)
    from_legacy = read_adafactor_state(t5x.open_checkpoint(CKPT), tx, params)
    assert int(from_orbax[0].count) == 7 and int(from_legacy[0].count) == 0
    for a, b in zip(jax.tree.leaves(from_orbax[0].v), jax.tree.leaves(from_legacy[0].v)):
        np.testing.assert_array_equal(a, b)


def test_scanned_import_exports_the_same_t5x_arrays(tmp_path):
    dst, out = str(tmp_path / "scanned"), str(tmp_path / "t5x_out")
    t5x_to_model_dir(CKPT, dst, CONFIG, scan_layers=True)
    model, params = model_dir_lib.load_params(dst)
    assert model.config.scan_layers and params["encoder"]["layers"]["mlp"]["wo"]["kernel"].shape \
        == (2, 48, 32)
    assert main(["convert", "--to", "t5x", "--src", dst, "--dst", out]) == 0
    exported, original = _stored_arrays(os.path.join(out, "checkpoint_0")), \
        _stored_arrays(STEP_DIR)
    assert exported.keys() == original.keys()
    for name, array in original.items():
        np.testing.assert_array_equal(exported[name], array)


_BASE_GIN = """\
from __gin__ import dynamic_registration
from t5x import adafactor
from t5x.examples.t5 import network

DROPOUT_RATE = %gin.REQUIRED
ACTIVATION_DTYPE = 'float32'
OPTIMIZER = @adafactor.Adafactor()
adafactor.Adafactor:
  decay_rate = 0.8
network.Transformer.config = @network.T5Config()
network.T5Config:
  vocab_size = 100
  dtype = %ACTIVATION_DTYPE
  emb_dim = 768
  num_heads = 12
  mlp_activations = ('gelu', 'linear')
  dropout_rate = %DROPOUT_RATE
  logits_via_embedding = False
"""
_MODEL_GIN = """\
include 'examples/t5/tiny/base.gin'  # resolved from a parent directory
include 'some/other/file_not_here.gin'

network.Transformer.config = @network.T5Config()
network.T5Config:
  emb_dim = 32
  num_heads = 4
  num_encoder_layers = 2
  num_decoder_layers = 3
  head_dim = 8
network.T5Config.mlp_dim = 48
DROPOUT_RATE = 0.0
"""


def test_gin_model_file_and_json_give_the_same_config(tmp_path):
    base = tmp_path / "examples" / "t5" / "tiny"
    base.mkdir(parents=True)
    (base / "base.gin").write_text(_BASE_GIN)
    (base / "model.gin").write_text(_MODEL_GIN)
    from_gin = t5x_config.read_t5x_config(str(base / "model.gin"))
    from_json = t5x_config.read_t5x_config(CONFIG)
    assert from_gin == from_json
    assert (from_json.d_model, from_json.num_heads, from_json.d_kv, from_json.d_ff,
            from_json.feed_forward_proj, from_json.tie_word_embeddings) == \
        (32, 4, 8, 48, "gated-gelu", False)
    # t5x's T5.1.1 small as its example gin files bind it: t5mtl's t5_1_1_small.
    (tmp_path / "small.gin").write_text(
        "network.T5Config:\n  vocab_size = 32128\n  dtype = 'bfloat16'\n  emb_dim = 512\n"
        "  num_heads = 6\n  num_encoder_layers = 8\n  num_decoder_layers = 8\n"
        "  head_dim = 64\n  mlp_dim = 1024\n  mlp_activations = ('gelu', 'linear')\n"
        "  dropout_rate = 0.0\n  logits_via_embedding = False\n")
    small = t5x_config.read_t5x_config(str(tmp_path / "small.gin"))
    assert small == NAMED_CONFIGS["t5_1_1_small"].replace(dtype="bfloat16", num_decoder_layers=8)
    # The include that is not there is named when a field is then missing.
    (tmp_path / "partial.gin").write_text("include 'missing/base.gin'\n"
                                          "network.T5Config.emb_dim = 32\n")
    with pytest.raises(T5mtlError, match=r"vocab_size is not set.*missing/base.gin"):
        t5x_config.read_t5x_config(str(tmp_path / "partial.gin"))


def test_wrong_or_missing_config_is_one_clear_error(tmp_path, capsys):
    wrong = dict(json.load(open(CONFIG)), num_heads=2, head_dim=16)   # same q/k/v sizes
    path = tmp_path / "wrong.json"
    path.write_text(json.dumps(wrong))
    dst = str(tmp_path / "model")
    assert main(["convert", "--from", "t5x", "--src", CKPT, "--dst", dst,
                 "--t5x_config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'target/decoder/relpos_bias/rel_embedding' has shape (4, 32)" in err
    assert "implies (2, 32)" in err
    assert not os.path.exists(dst)
    path.write_text(json.dumps(dict(json.load(open(CONFIG)), mlp_dim=64)))
    with pytest.raises(T5mtlError, match=r"'target/decoder/layers_0/mlp/wi_0/kernel' has shape "
                                         r"\(32, 48\) in the checkpoint but the config implies "
                                         r"\(32, 64\)"):
        t5x_to_model_dir(CKPT, dst, str(path))
    path.write_text(json.dumps(dict(json.load(open(CONFIG)), num_decoder_layers=2)))
    with pytest.raises(T5mtlError, match=r"'target/decoder/layers_2/.*' \(32, 32\) is in the "
                                         r"checkpoint but not in the model"):
        t5x_to_model_dir(CKPT, dst, str(path))
    assert main(["convert", "--from", "t5x", "--src", CKPT, "--dst", dst]) == 2
    assert "--t5x_config" in capsys.readouterr().err
    assert not os.path.exists(dst)


def _with_moments(tmp_path, step):
    """The fixture with random second moments and step `step` (t5x wrote zeros at step 0)."""
    from flax import serialization
    copy = str(tmp_path / "ckpt")
    shutil.copytree(CKPT, copy)
    step_dir = os.path.join(copy, "checkpoint_0")
    for root, dirs, files in os.walk(copy):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    rng = np.random.RandomState(0)
    moments = {}
    for name in os.listdir(step_dir):
        if name.startswith("state.param_states.") and name.endswith(".v"):
            store = ts.open({"driver": "zarr", "kvstore": {
                "driver": "file", "path": os.path.join(step_dir, name)}}).result()
            value = rng.uniform(1e-4, 1e-2, store.shape).astype(np.float32)
            store.write(value).result()
            moments[name[len("state.param_states."):-len(".v")]] = value
    with open(os.path.join(step_dir, "checkpoint"), "rb") as f:
        index = serialization.msgpack_restore(f.read())
    index["optimizer"]["state"]["step"] = np.asarray(step, np.int32)
    with open(os.path.join(step_dir, "checkpoint"), "wb") as f:
        f.write(serialization.msgpack_serialize(index))
    return copy, moments


def test_adafactor_state_resumes_one_step_exactly(imported, tmp_path):
    _, model, params = imported
    copy, moments = _with_moments(tmp_path, step=5)
    ckpt = t5x.open_checkpoint(copy)
    assert ckpt.step == 5
    tx = adafactor(learning_rate=0.01)
    opt_state = read_adafactor_state(ckpt, tx, params)
    # The same moments, mapped by hand: every t5x v reshaped/transposed to its
    # parameter, optax's counts at t5x's step.
    expected = tx.init(params)
    flat_v = {name.replace(".", "/"): _ours(name, v, model.config)
              for name, v in moments.items()}
    fstate = expected[0]
    expected = (fstate._replace(
        count=np.asarray(5, np.int32),
        v=param_names.unflatten({n: flat_v[n] for n in param_names.flatten(fstate.v)})),
        ) + tuple(expected[1:])
    grads = jax.tree.map(lambda p: np.random.RandomState(p.size).normal(size=p.shape)
                         .astype(np.float32), params)
    update = jax.jit(tx.update)
    got, got_state = update(grads, opt_state, params)
    want, want_state = update(grads, expected, params)
    for a, b in zip(jax.tree.leaves((got, got_state)), jax.tree.leaves((want, want_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The moments matter: from zeros at step 0 the step differs.
    fresh, _ = update(grads, tx.init(params), params)
    assert max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
               for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(fresh))) > 1e-4


def test_optimizer_state_import_is_a_resumable_checkpoint(tmp_path):
    copy, _ = _with_moments(tmp_path, step=3)
    dst = str(tmp_path / "model")
    assert main(["convert", "--from", "t5x", "--src", copy, "--dst", dst, "--t5x_config",
                 CONFIG, "--optimizer_state"]) == 0
    with model_dir_lib.checkpoint_manager(dst, read_only=True) as mngr:
        assert mngr.all_steps() == [3]
        restored = mngr.restore(3)
    assert restored["progress"]["step"] == 3 and restored["progress"]["data_position"] == 0
    counts = [v for k, v in param_names.named_leaves(restored["opt_state"]).items()
              if k.endswith("count")]
    assert counts and all(int(c) == 3 for c in counts)


SHARDED_SCRIPT = r"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import jax, numpy as np
from t5mtl.convert import t5x, t5x_config
from t5mtl.models import param_names
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.train import partitioning
ckpt_path, config = sys.argv[1:3]
reads = []
orig = t5x.StoredLeaf.read
def read(self, index=None):
    out = orig(self, index)
    reads.append((out.size, int(np.prod(self.shape))))
    return out
t5x.StoredLeaf.read = read
cfg = t5x_config.read_t5x_config(config)
for scan in (False, True):
    model = EncoderDecoderModel(cfg.replace(scan_layers=scan))
    mesh = partitioning.create_mesh((1, 2, 4))
    rules = partitioning.logical_axis_rules()
    with partitioning.mesh_context(mesh, rules):
        boxed = jax.eval_shape(model.init_boxed, jax.random.PRNGKey(0))
        shardings = partitioning.logical_to_shardings(
            partitioning.logical_partition_specs(boxed), mesh, rules)
    ckpt = t5x.open_checkpoint(ckpt_path)
    reads.clear()
    sharded = t5x.read_params(ckpt, model.abstract_params(), shardings)
    sharded_reads = list(reads)
    whole = t5x.read_params(t5x.open_checkpoint(ckpt_path), model.abstract_params())
    flat_s, flat_w = param_names.flatten(sharded), param_names.flatten(whole)
    flat_sh = param_names.flatten(shardings)
    n_split = 0
    for name, arr in flat_s.items():
        assert arr.sharding == flat_sh[name], name
        np.testing.assert_array_equal(np.asarray(arr), flat_w[name])
        n_split += len({repr(s.index) for s in arr.addressable_shards}) > 1
    # Every leaf is split over the mesh, and no read took a whole stored array.
    print("scan", scan, "leaves", len(flat_s), "split", n_split, "reads", len(sharded_reads))
    assert n_split == len(flat_s) and len(sharded_reads) >= 8 * 66
    assert all(got < full for got, full in sharded_reads)
"""


def test_sharded_read_on_8_devices_reads_only_each_shard(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT, CKPT, CONFIG], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scan False" in result.stdout and "scan True" in result.stdout


def test_init_from_takes_t5x_leaves_already_in_the_runs_shards(imported):
    from t5mtl.train.init_from import load_source_params, merge_params
    _, model, params = imported
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, params)
    source = load_source_params(STEP_DIR, model, None, shardings)
    fresh = jax.tree.map(lambda p: jax.device_put(np.zeros_like(p), device), params)
    merged, kept_fresh = merge_params(fresh, source, shardings=shardings)
    assert kept_fresh == []
    for name, leaf in param_names.flatten(merged).items():
        assert leaf is param_names.flatten(source)[name]          # no host round trip
        np.testing.assert_array_equal(np.asarray(leaf), param_names.flatten(params)[name])


def test_factored_t5x_moments_of_an_attention_kernel():
    """t5x factors the 2-D [embed, heads*kv] moment; optax factors the 3-D
    [embed, heads, kv] one over (embed, kv). Averaging t5x's estimate
    row (x) col / mean(row) over embed gives t5x's column statistic back."""
    import optax
    embed, heads, kv = 256, 2, 128
    rng = np.random.RandomState(0)
    row = rng.uniform(0.1, 1.0, embed).astype(np.float32)          # t5x v_row [embed]
    col = rng.uniform(0.1, 1.0, heads * kv).astype(np.float32)     # t5x v_col [heads*kv]
    base = "state/param_states/enc/attention/query/kernel"
    one = np.zeros((1,), np.float32)
    leaves = {"target/enc/attention/query/kernel": t5x._inline(np.zeros((embed, heads * kv),
                                                                      np.float32)),
              base + "/v": t5x._inline(one), base + "/m": t5x._inline(one),
              base + "/v_row": t5x._inline(row), base + "/v_col": t5x._inline(col)}
    ckpt = t5x.T5xCheckpoint("synthetic", 9, "legacy", leaves)
    params = {"enc": {"attention": {"query": {"kernel": np.zeros((embed, heads, kv),
                                                                 np.float32)}}}}
    state = read_adafactor_state(ckpt, optax.adafactor(0.01), params)[0]
    v_row = state.v_row["enc"]["attention"]["query"]["kernel"]
    v_col = state.v_col["enc"]["attention"]["query"]["kernel"]
    assert int(state.count) == 9 and state.v["enc"]["attention"]["query"]["kernel"].shape == (1,)
    np.testing.assert_allclose(v_row, col.reshape(heads, kv), rtol=1e-6)
    np.testing.assert_allclose(v_col, (row / row.mean())[:, None]
                               * col.reshape(heads, kv).mean(axis=1)[None, :], rtol=1e-6)
