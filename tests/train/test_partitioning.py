"""Mesh construction, logical axis rules, derived optimizer-state shardings,
born-sharded init and global batches (on this process's CPU device; the
8-device layouts run in test_train_step's subprocess)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from t5mtl.errors import T5mtlError
from t5mtl.train import optimizers, partitioning, train_step

from tests.train import toy_sharded_lm as toy


def test_mesh_fills_the_minus_one_axis():
    mesh = partitioning.create_mesh((-1, 1, 1))
    assert mesh.axis_names == ("data", "fsdp", "model")
    assert dict(mesh.shape) == {"data": len(jax.devices()), "fsdp": 1, "model": 1}


@pytest.mark.parametrize("shape, msg", [
    ((2, 1, 4), r"\(2, 1, 4\) needs 8 devices"),
    ((-1, 3, 1), r"\(-1, 3, 1\) does not divide"),
    ((-1, -1, 1), r"\(-1, -1, 1\)"),
    ((1, 0, 1), r"\(1, 0, 1\)"),
    ((1, 1), r"\(1, 1\)"),
])
def test_mesh_shape_errors_name_the_shape(shape, msg):
    with pytest.raises(T5mtlError, match=msg):
        partitioning.create_mesh(shape, devices=jax.devices()[:1])


def test_default_rules():
    rules = partitioning.logical_axis_rules()
    spec = lambda *names: nn.logical_to_mesh_axes(names, rules)
    assert spec("batch", "length", "embed") == P(("data", "fsdp"), None, None)
    assert spec("embed", "mlp") == P("fsdp", "model")
    assert spec("mlp", "embed") == P("model", "fsdp")
    assert spec("vocab", "embed") == P("model", "fsdp")
    assert spec("embed", "heads", "kv") == P("fsdp", "model", None)
    assert spec("relpos_buckets", "heads") == P(None, "model")
    assert spec("layers", "embed", "mlp") == P(None, "fsdp", "model")
    assert spec("batch", "length", "mlp") == P(("data", "fsdp"), None, "model")


def test_rule_overrides_win_and_bad_axes_fail():
    rules = partitioning.logical_axis_rules(overrides=[("embed", "model")])
    assert nn.logical_to_mesh_axes(("embed", "mlp"), rules) == P("model", None)
    with pytest.raises(T5mtlError, match="'tensor'"):
        partitioning.logical_axis_rules(overrides=[("mlp", "tensor")])


def test_opt_state_shardings_follow_params():
    mesh = partitioning.create_mesh((1, 1, 1), jax.devices()[:1])
    params = {"dense": {"kernel": jax.ShapeDtypeStruct((16, 64), jnp.float32)},
              "frozen": {"kernel": jax.ShapeDtypeStruct((16, 64), jnp.float32)},
              "scale": jax.ShapeDtypeStruct((16,), jnp.float32)}
    shardings = {"dense": {"kernel": NamedSharding(mesh, P("fsdp", "model"))},
                 "frozen": {"kernel": NamedSharding(mesh, P("fsdp", "model"))},
                 "scale": NamedSharding(mesh, P("fsdp"))}
    tx = optax.chain(optimizers.adafactor(0.1, min_dim_size_to_factor=8),
                     optax.scale_by_adam())
    # The optimizer state covers the trainable subtree; shardings come from
    # the full param tree's.
    trainable = train_step.trainable_part(params, ["dense/kernel", "scale"])
    abstract = jax.eval_shape(tx.init, trainable)
    out = partitioning.opt_state_shardings(abstract, params, shardings, mesh)
    got = {jax.tree_util.keystr(p): (x.shape, s.spec) for (p, x), s in zip(
        jax.tree_util.tree_leaves_with_path(abstract), jax.tree.leaves(out))}
    by_name = lambda part: [v for k, v in got.items() if part in k]
    assert by_name(".v_row['dense']['kernel']") == [((16,), P("fsdp"))]
    assert by_name(".v_col['dense']['kernel']") == [((64,), P("model"))]
    assert by_name(".v['scale']") == [((16,), P("fsdp"))]
    assert by_name(".mu['dense']['kernel']") == [((16, 64), P("fsdp", "model"))]
    assert by_name(".count") == [((), P()), ((), P())]
    assert not by_name("frozen")  # frozen params carry no state at all


def test_sharded_init_gives_plain_sharded_params():
    mesh = partitioning.create_mesh((1, 1, 1), jax.devices()[:1])
    params, shardings = partitioning.sharded_init(toy.init_params, jax.random.PRNGKey(0),
                                                  mesh=mesh)
    assert set(params) == {"embedding", "scale", "wi", "wo"}
    assert isinstance(params["wi"]["kernel"], jax.Array)  # unboxed
    assert shardings["wi"]["kernel"].spec == P("fsdp", "model")
    assert params["wi"]["kernel"].sharding == shardings["wi"]["kernel"]
    ref = nn.unbox(toy.init_params(jax.random.PRNGKey(0)))
    np.testing.assert_array_equal(params["wo"]["kernel"], ref["wo"]["kernel"])


def test_host_batch_to_global_on_one_process():
    mesh = partitioning.create_mesh((-1, 1, 1))
    batch = toy.make_batch(0)
    out = partitioning.host_batch_to_global(batch, mesh)
    assert out["inputs"].sharding.spec == P(("data", "fsdp"))
    np.testing.assert_array_equal(out["targets"], batch["targets"])
    assert partitioning.process_batch_shard(mesh, 16) == (0, 1)
    with pytest.raises(T5mtlError, match="leading sizes"):
        partitioning.host_batch_to_global({"a": np.zeros((4, 2)), "b": np.zeros((3, 2))}, mesh)
