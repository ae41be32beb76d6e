"""A tiny Flax LM with logical axis names, and a 5-step training run on a
given mesh layout. Run as a script it prints the losses of each layout as
JSON; the mesh-parity tests run it with 8 fake CPU devices, and as two
processes (gloo collectives) with 2 fake devices each:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python tests/train/toy_sharded_lm.py 8,1,1 2,1,4 1,4,2
    XLA_FLAGS=--xla_force_host_platform_device_count=2 \
        python tests/train/toy_sharded_lm.py --distributed=PORT,2,ID 4,1,1 1,2,2
"""
import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from t5mtl.models import losses
from t5mtl.train import optimizers, partitioning, train_step

VOCAB, EMBED, MLP = 32, 16, 64
BATCH, LENGTH = 16, 8


def _init(axes, scale=1.0):
    return nn.with_logical_partitioning(nn.initializers.normal(scale), axes)


class ToyLM(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        embedding = self.param("embedding", _init(("vocab", "embed")), (VOCAB, EMBED))
        x = jnp.take(embedding, tokens, axis=0)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (EMBED,))
        x = x * scale
        h = nn.Dense(MLP, use_bias=False, kernel_init=_init(("embed", "mlp"), 0.25),
                     name="wi")(x)
        h = nn.with_logical_constraint(nn.relu(h), ("batch", "length", "mlp"))
        logits = nn.Dense(VOCAB, use_bias=False, kernel_init=_init(("mlp", "vocab"), 0.125),
                          name="wo")(h)
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))


def loss_fn(params, batch, dropout_rng):
    del dropout_rng
    logits = ToyLM().apply({"params": params}, batch["inputs"])
    return losses.cross_entropy_with_z_loss(
        logits, batch["targets"], batch["weights"], label_smoothing=0.1,
        loss_denominator=batch.get(train_step.LOSS_DENOMINATOR_KEY))


def init_params(rng):
    return ToyLM().init(rng, jnp.zeros((1, LENGTH), jnp.int32))["params"]


def make_batch(step):
    rng = np.random.default_rng(step)
    inputs = rng.integers(1, VOCAB, size=(BATCH, LENGTH)).astype(np.int32)
    targets = (inputs * 3 + 1) % VOCAB  # a learnable map; 0 only where padded below
    lengths = rng.integers(2, LENGTH + 1, size=(BATCH, 1))
    weights = (np.arange(LENGTH)[None, :] < lengths).astype(np.float32)
    return {"inputs": inputs, "targets": np.where(weights > 0, targets, 0).astype(np.int32),
            "weights": weights}


def make_optimizer():
    # min_dim_size_to_factor=8 factors every matrix here, so the row/column
    # statistics' derived shardings are exercised too.
    return optax.chain(optax.clip_by_global_norm(1.0),
                       optimizers.adafactor(0.1, min_dim_size_to_factor=8))


def run_losses(mesh_shape, devices=None, steps=5, num_microbatches=1):
    mesh = partitioning.create_mesh(mesh_shape, devices)
    tx = make_optimizer()
    state, shardings = train_step.create_train_state(
        init_params, tx, jax.random.PRNGKey(0), rng=jax.random.PRNGKey(1), mesh=mesh)
    step_fn = train_step.make_train_step(
        loss_fn, tx, num_microbatches=num_microbatches,
        loss_denominator_fn=losses.loss_denominator_fn("weights"))
    jitted = train_step.jit_train_step(step_fn, shardings, partitioning.batch_sharding(mesh), mesh)
    out = []
    for step in range(steps):
        index, count = partitioning.process_batch_shard(mesh, BATCH)
        rows = slice(index * BATCH // count, (index + 1) * BATCH // count)
        local = {k: v[rows] for k, v in make_batch(step).items()}  # this process's share
        batch = partitioning.host_batch_to_global(local, mesh)
        state, metrics = jitted(state, batch)
        out.append(float(metrics["loss"]))
    return out, state


def main(argv):
    if argv and argv[0].startswith("--distributed="):
        port, num, pid = argv.pop(0).split("=", 1)[1].split(",")
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{port}", int(num), int(pid))
    results = {}
    for layout in argv:
        shape = tuple(int(s) for s in layout.split(","))
        losses_, state = run_losses(shape)
        kernel = state.params["wi"]["kernel"]
        results[layout] = {"losses": losses_, "wi_kernel_spec": str(kernel.sharding.spec),
                           "num_devices": len(kernel.sharding.device_set),
                           "batch_shard": partitioning.process_batch_shard(
                               partitioning.create_mesh(shape), BATCH)}
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
