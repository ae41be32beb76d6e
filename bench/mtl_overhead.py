"""Step overhead of gradient surgery and of the conflict probes, against the
number of tasks in a batch.

  python bench/mtl_overhead.py                 # t5_small_cpu, 64/16, batch 8, tasks 2,4,8
  python bench/mtl_overhead.py --quick         # a smoke run on t5_tiny

For each number of tasks T (--tasks), one batch of random tokens whose rows
belong to the T tasks in turn (decoder_task_ids), and, built as the trainer
builds them (make_train_step + jit_train_step, state donated, AdamW):

  plain     the step without surgery (train.gradient_surgery = None)
  sum, pcgrad, cagrad, gradvac
            the step with that surgery (t5mtl.mtl.surgery)
  probe     one call of the conflict probe (t5mtl.mtl.probes: per-task
            gradients, Gram matrices, T lookahead forward passes), which
            runs every K steps besides the step; its cost per step is 1/K of it

Times are alternated round by round (bench.common.Alternator); step time is
the median over rounds of a round's median step, and "ratio to plain" the
median of per-round ratios. Memory is XLA's own account of the compiled
program (temporary buffers, machine-independent for a given backend) and
the analytic size of the per-task gradients, T x trainable params x 4 bytes.

"Off is unchanged": the step built with gradient_surgery=None (and no probe)
lowers to the same StableHLO text and XLA cost analysis as the step built
without those arguments (checked, not timed).
"""
from __future__ import annotations

import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from bench import common  # noqa: E402

METHODS = ("sum", "pcgrad", "cagrad", "gradvac")
SYSTEMS = ("plain",) + METHODS + ("probe",)


def task_batch(cfg, batch: int, enc_len: int, dec_len: int, num_tasks: int, seed: int = 0):
    """bench.common.make_batch with rows assigned to the tasks in turn."""
    import numpy as np
    out = common.make_batch(cfg, batch, enc_len, dec_len, seed)
    rows = np.arange(batch) % num_tasks
    out["decoder_task_ids"] = np.broadcast_to(rows[:, None], (batch, dec_len)).astype(np.int32)
    return out


class Runner:
    """The compiled programs of one number of tasks."""

    def __init__(self, cfg, args, num_tasks: int, systems: list[str]):
        import jax
        from t5mtl.models.encoder_decoder import EncoderDecoderModel
        from t5mtl.mtl import probes, surgery
        from t5mtl.train import partitioning
        from t5mtl.train.optimizers import create_optimizer
        from t5mtl.train.train_step import create_train_state, jit_train_step, make_train_step
        self.jax, self.num_tasks = jax, num_tasks
        enc_len, dec_len = (int(x) for x in args.shape.split("/"))
        batch_size = max(args.batch, num_tasks)
        self.batches = [task_batch(cfg, batch_size, enc_len, dec_len, num_tasks, k)
                        for k in range(2)]
        model = EncoderDecoderModel(cfg)
        loss_fn = functools.partial(model.loss_fn, num_tasks=num_tasks)
        denominator = functools.partial(model.loss_denominator, num_tasks=num_tasks)
        mesh = partitioning.create_mesh((1, 1, 1), jax.devices()[:1])
        self.mesh, self.partitioning = mesh, partitioning
        self.compiled, self.states, self.info = {}, {}, {}
        batch = partitioning.host_batch_to_global(self.batches[0], mesh)
        for name in systems:
            t = time.perf_counter()
            if name == "probe":
                fn = jax.jit(probes.make_probe(loss_fn, num_tasks, 0.01))
                state, _ = create_train_state(model.init_boxed, create_optimizer("adamw"),
                                              jax.random.PRNGKey(0), rng=jax.random.PRNGKey(1),
                                              mesh=mesh)
                with partitioning.mesh_context(mesh, partitioning.logical_axis_rules()):
                    compiled = fn.lower(state.params, batch).compile()
            else:
                method = None if name == "plain" else surgery.resolve(name)
                tx = surgery.with_state(create_optimizer("adamw"), method, num_tasks)
                state, shardings = create_train_state(
                    model.init_boxed, tx, jax.random.PRNGKey(0), rng=jax.random.PRNGKey(1),
                    mesh=mesh)
                kwargs = {} if method is None else {"gradient_surgery": method,
                                                    "num_tasks": num_tasks}
                step = jit_train_step(make_train_step(loss_fn, tx,
                                                      loss_denominator_fn=denominator, **kwargs),
                                      shardings, partitioning.batch_sharding(mesh), mesh)
                compiled = step.lower(state, batch).compile()
            self.compiled[name], self.states[name] = compiled, state
            self.info[name] = {"compile_s": time.perf_counter() - t, **_memory(compiled),
                               "xla_flops": _flops(compiled)}
            self.run(name, 1)                                        # warm-up
        self.trainable_params = sum(x.size for x in jax.tree.leaves(state.params))

    def run(self, name: str, steps: int) -> float:
        t = time.perf_counter()
        for k in range(steps):
            batch = self.partitioning.host_batch_to_global(self.batches[k % 2], self.mesh)
            if name == "probe":
                out = self.compiled[name](self.states[name].params, batch)
            else:
                self.states[name], out = self.compiled[name](self.states[name], batch)
        self.jax.block_until_ready(out)
        return (time.perf_counter() - t) / steps


def _memory(compiled) -> dict:
    m = compiled.memory_analysis()
    if m is None:
        return {"temp_mib": float("nan")}
    return {"temp_mib": m.temp_size_in_bytes / 2**20}


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def off_is_unchanged(cfg, args) -> dict:
    """The step without surgery arguments and with gradient_surgery=None:
    the same lowered program (text) and the same cost analysis."""
    import jax
    import optax
    from flax import linen as nn
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.train.train_step import TrainState, make_train_step
    enc_len, dec_len = (int(x) for x in args.shape.split("/"))
    model = EncoderDecoderModel(cfg)
    params = nn.unbox(model.init_boxed(jax.random.PRNGKey(0)))
    tx = optax.adamw(1e-4)
    state = TrainState.create(params, tx, jax.random.PRNGKey(1))
    batch = task_batch(cfg, args.batch, enc_len, dec_len, 2)
    loss_fn = functools.partial(model.loss_fn, num_tasks=2)
    denominator = functools.partial(model.loss_denominator, num_tasks=2)
    before = jax.jit(make_train_step(loss_fn, tx, loss_denominator_fn=denominator))
    off = jax.jit(make_train_step(loss_fn, tx, loss_denominator_fn=denominator,
                                  gradient_surgery=None, num_tasks=2))
    a, b = before.lower(state, batch), off.lower(state, batch)
    fa, fb = _flops(a.compile()), _flops(b.compile())
    return {"same_hlo": a.as_text() == b.as_text(), "same_flops": fa == fb, "xla_flops": fa}


def format_table(rows: list[dict]) -> str:
    lines = ["| tasks | system | step (s) | ratio to plain | compiled GFLOP | "
             "XLA temp (MiB) | task gradients (MiB) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "-" if r["ratio_to_plain"] is None else f"{r['ratio_to_plain']:.2f}x"
        grads = "-" if r["system"] == "plain" else f"{r['task_grad_mib']:.1f}"
        lines.append(f"| {r['tasks']} | {r['system']} | {r['step_s']:.3g} | {ratio} | "
                     f"{r['xla_flops'] / 1e9:.4g} | {r['temp_mib']:.1f} | {grads} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = common.argument_parser(__doc__, SYSTEMS)
    p.set_defaults(model="t5_small_cpu", rounds=3)
    p.add_argument("--shape", default="64/16", help="inputs/targets")
    p.add_argument("--tasks", default="2,4,8", help="numbers of tasks in a batch")
    p.add_argument("--steps", type=int, default=3, help="timed steps per system per round")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: t5_tiny, 16/4, batch 4, 2 tasks, 1 round of 1 step")
    args = p.parse_args(argv)
    systems = common.selected_systems(p, args.systems, SYSTEMS)
    if "plain" not in systems:
        systems = ["plain"] + systems
    if args.quick:
        args.model, args.shape, args.batch, args.tasks = "t5_tiny", "16/4", 4, "2"
        args.rounds, args.steps = 1, 1
    from t5mtl.models.configs import get_config
    cfg = get_config(args.model, dtype="float32", dropout_rate=0.0)
    print(f"machine: {common.machine_description()}")
    print(f"versions: {common.versions()}")
    off = off_is_unchanged(cfg, args)
    print(f"surgery off: same program {off['same_hlo']}, same FLOPs {off['same_flops']}")
    rows = []
    for num_tasks in (int(t) for t in args.tasks.split(",")):
        runner = Runner(cfg, args, num_tasks, systems)
        alt = common.Alternator(systems)
        alt.run(args.rounds, lambda name: runner.run(name, args.steps), log=lambda line: None)
        for name in systems:
            rows.append({"tasks": num_tasks, "system": name, "step_s": alt.median(name),
                         "step_s_rounds": [r[name] for r in alt.rounds],
                         "ratio_to_plain": None if name == "plain" else alt.ratio(name, "plain"),
                         "task_grad_mib": num_tasks * runner.trainable_params * 4 / 2**20,
                         "trainable_params": runner.trainable_params, **runner.info[name]})
        print(f"  {num_tasks} tasks: " + ", ".join(
            f"{n} {statistics.median(r[n] for r in alt.rounds):.3g}s" for n in systems))
    print(format_table(rows))
    common.write_report(args.json, model=args.model, shape=args.shape, batch=args.batch,
                        off=off, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
