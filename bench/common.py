"""Shared pieces of the benchmarks: the machine, the matmul peak, HF models,
t5mtl's train step, alternating timers and child processes (analytic FLOPs:
t5mtl.models.flops).

Benchmarks compare systems *in one run*, alternating them round by round,
because a shared machine's speed drifts from minute to minute; quote the
per-round ratios, not absolute numbers from different runs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def machine_description() -> str:
    """CPU model, core count and memory, from /proc."""
    model, flags = platform.processor() or "unknown", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = line
    except OSError:
        pass
    isa = [x for x in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {x}" in flags]
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{model}, {os.cpu_count()} cores ({', '.join(isa) or 'no AVX info'}){mem}"


def versions() -> str:
    import jax
    out = [f"jax {jax.__version__}"]
    try:
        import flax
        out.append(f"flax {flax.__version__}")
    except ImportError:
        pass
    try:
        import torch
        import transformers
        out += [f"torch {torch.__version__}", f"transformers {transformers.__version__}"]
    except ImportError:
        pass
    return ", ".join(out)


def write_report(path: str | None, **results) -> None:
    """A benchmark's results as JSON at `path` (nothing when None), with the
    machine, the library versions and the command line."""
    if path:
        with open(path, "w") as f:
            json.dump({"machine": machine_description(), "versions": versions(),
                       "argv": sys.argv, **results}, f, indent=1)


def measure_matmul_peak(n: int = 2048, reps: int = 5) -> dict[str, float]:
    """Best-of-`reps` GFLOP/s of an n x n matmul, JAX (XLA) and torch, f32 and bf16.

    The machine's usable peak for MFU is the larger of the two systems'
    figures for each dtype: a plain matmul is the best case either reaches.
    """
    import jax
    import jax.numpy as jnp
    out = {}
    for name, dt in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
        a = jnp.asarray(jax.random.normal(jax.random.PRNGKey(0), (n, n)), dt)
        f = jax.jit(lambda x, y: x @ y)
        f(a, a).block_until_ready()
        best = min(timed(lambda: f(a, a).block_until_ready()) for _ in range(reps))
        out[f"jax_{name}"] = 2 * n ** 3 / best / 1e9
    try:
        import torch
    except ImportError:
        return out
    for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a = torch.randn(n, n).to(dt)
        a @ a
        best = min(timed(lambda: a @ a) for _ in range(reps))
        out[f"torch_{name}"] = 2 * n ** 3 / best / 1e9
    return out


def peak_for(peaks: dict[str, float], dtype: str) -> float:
    return max(v for k, v in peaks.items() if k.endswith(dtype))


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def build_hf_model(cfg, seed: int = 0):
    """A random-init HF T5ForConditionalGeneration with `cfg`'s architecture
    (lm_head untied when the config says so; see docs/performance.md,
    "Pitfalls")."""
    import torch
    import transformers
    torch.manual_seed(seed)
    hf = cfg.to_hf_dict()
    hf.pop("architectures", None)
    config = transformers.T5Config(**hf)
    config.tie_word_embeddings = cfg.tie_word_embeddings   # ignored by the constructor
    model = transformers.T5ForConditionalGeneration(config)
    # T5 shares one input embedding between encoder and decoder; with
    # tie_word_embeddings=False transformers 5.x unties those too.
    model.encoder.embed_tokens.weight = model.shared.weight
    model.decoder.embed_tokens.weight = model.shared.weight
    if not cfg.tie_word_embeddings and \
            model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr():
        with torch.no_grad():
            model.lm_head.weight = torch.nn.Parameter(
                torch.randn_like(model.shared.weight) * cfg.d_model ** -0.5)
    if not cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    n_params = sum(p.numel() for p in model.parameters())      # shared ones once
    model.t5mtl_num_params = n_params
    return model


def import_hf_model(model):
    """(T5Config, params) of an HF model, through save_pretrained + import_hf."""
    import tempfile
    from t5mtl.convert.hf import import_hf
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        return import_hf(d)


def save_t5mtl_init(cfg, directory: str, seed: int = 0) -> str:
    """Writes t5mtl's (T5X-style) random init as an HF model.safetensors, through
    t5mtl.convert.hf.export_hf; returns its path (for `load_hf_weights`). HF's
    own random init gives T5 1.1 logits in the hundreds (a first loss near 90
    instead of ln(vocab)); the saturated softmax then fills the backward pass
    with denormals."""
    import jax
    from flax import linen as nn
    from t5mtl.convert.hf import export_hf
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    params = jax.jit(lambda r: nn.unbox(EncoderDecoderModel(cfg).init_boxed(r)))(
        jax.random.PRNGKey(seed))
    export_hf(cfg.replace(dtype="float32"), jax.device_get(params), directory + "/init")
    return directory + "/init/model.safetensors"


def load_hf_weights(model, path: str) -> None:
    """Loads `save_t5mtl_init`'s file into the HF model (torch only, no jax)."""
    import torch
    from safetensors.torch import load_file
    tensors = load_file(path)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected or any("embed_tokens" not in k for k in missing):
        raise RuntimeError(f"{path} does not fit the HF model: missing {missing}, "
                           f"unexpected {unexpected}")
    with torch.no_grad():
        assert torch.equal(model.lm_head.weight, tensors["lm_head.weight"]) \
            if "lm_head.weight" in tensors else True


TORCH_SYSTEMS = ("torch", "torch+flush", "torch+flush+1thread")


def torch_settings(system: str) -> tuple[bool, int | None]:
    """(flush denormals?, thread count or None for torch's default) of a
    torch system name: "torch", "torch+flush", "torch+flush+1thread"."""
    if system not in TORCH_SYSTEMS:
        raise ValueError(f"unknown torch system {system!r}; choose from {TORCH_SYSTEMS}")
    return "+flush" in system, (1 if system.endswith("+1thread") else None)


@contextlib.contextmanager
def torch_mode(flush: bool, threads: int | None):
    """torch.set_flush_denormal(flush) and set_num_threads(threads) inside
    the block; stock settings after it.

    One thread is the strongest torch setting on a machine other jobs keep
    busy: two OpenMP threads on two shared cores wait for each other at
    every operator (docs/performance.md, "Pitfalls").
    """
    import torch
    default_threads = torch.get_num_threads()
    torch.set_flush_denormal(flush)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(default_threads)


def settle(step: Callable[[], float], best: float, min_steps: int, max_steps: int,
           tolerance: float) -> tuple[list[float], float]:
    """Untimed steps until a benchmarked process is back at its steady speed.

    Runs `step` (one step, returns its seconds) at least `min_steps` times,
    then until a step is within `tolerance` (a fraction) of `best`, the
    fastest step the system has made so far, and at most
    max(min_steps, max_steps) times. Returns the step times and the updated
    best. Why a fixed count is not enough: on a KVM guest with free page
    reporting, memory a process freed before it sat idle (while the other
    system ran) goes back to the host, and its next steps fault it in again
    at several times the cost (docs/performance.md, "Pitfalls").
    """
    times: list[float] = []
    while len(times) < max(min_steps, max_steps):
        t = step()
        times.append(t)
        best = min(best, t)
        if len(times) >= min_steps and t <= best * (1.0 + tolerance):
            break
    return times, best


class Alternator:
    """Runs each system's timed block once per round, rotating the order, and
    keeps the per-round figures (so ratios compare neighbours in time)."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.rounds: list[dict[str, float]] = []

    def run(self, rounds: int, measure: Callable[[str], float], log=print) -> None:
        for r in range(rounds):
            k = r % len(self.names)
            order = self.names[k:] + self.names[:k]
            row = {}
            for name in order:
                row[name] = measure(name)
                log(f"    round {r + 1}/{rounds} {name:<22} {row[name]:10.1f}")
            self.rounds.append(row)

    def median(self, name: str) -> float:
        return statistics.median(r[name] for r in self.rounds)

    def ratio(self, a: str, b: str) -> float:
        """Median over rounds of a/b (both in the same round)."""
        return statistics.median(r[a] / r[b] for r in self.rounds)

    def spread(self, name: str) -> tuple[float, float]:
        values = [r[name] for r in self.rounds]
        return min(values), max(values)


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM), in MiB.

    Read from /proc/self/status rather than getrusage: ru_maxrss survives
    fork and exec, so a child of a big parent would report the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def argument_parser(doc: str, systems: tuple[str, ...]) -> argparse.ArgumentParser:
    """A benchmark's parser (help from its docstring) with the shared flags."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(doc.splitlines()[1:]))
    p.add_argument("--model", default="t5_1_1_small", help="a t5mtl named config")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--systems", default=",".join(systems))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None, help="write the results here")
    return p


def selected_systems(parser: argparse.ArgumentParser, text: str,
                     systems: tuple[str, ...]) -> list[str]:
    """--systems as a list; an unknown name is a usage error."""
    chosen = [s for s in text.split(",") if s]
    unknown = set(chosen) - set(systems)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {systems}")
    return chosen


# -- t5mtl's train step ---------------------------------------------------------

def make_batch(cfg, batch: int, enc_len: int, dec_len: int, seed: int = 0) -> dict:
    """Random tokens (no padding) in seqio EncDecFeatureConverter's layout."""
    import numpy as np
    rng = np.random.RandomState(seed)
    enc = rng.randint(2, cfg.vocab_size, size=(batch, enc_len)).astype(np.int32)
    targets = rng.randint(2, cfg.vocab_size, size=(batch, dec_len)).astype(np.int32)
    dec_in = np.concatenate([np.zeros((batch, 1), np.int32), targets[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in,
            "decoder_target_tokens": targets,
            "decoder_loss_weights": np.ones_like(targets, dtype=np.float32)}


class Batches:
    """Step k's batch: fresh random tokens (seed k), the same sequence for
    every system. (Repeating one batch lets the model memorize it; its
    vanishing probabilities then fill stock torch with denormals.)"""

    def __init__(self, cfg, batch: int, enc_len: int, dec_len: int):
        self.args = (cfg, batch, enc_len, dec_len)
        self.tokens_per_step = batch * (enc_len + dec_len)

    def __call__(self, k: int) -> dict:
        return make_batch(*self.args, seed=k)


class T5mtlStep:
    """t5mtl's train step on one device, built the way the trainer builds it
    (`t5mtl.train.trainer.train`): `model` (default: the plain T5 of `cfg`)
    trained in the parameters `trainable_patterns` select (None: all), the
    optimizer's state for those alone; `params` (e.g. the HF model's
    weights) replace the random init. `trainable_params` / `total_params`
    count them; `xla_flops` is XLA's cost analysis of the compiled step."""

    def __init__(self, cfg, batches: Batches, optimizer: str = "adamw",
                 learning_rate: float = 1e-4, params: dict | None = None, model=None,
                 trainable_patterns: list[str] | None = None):
        import jax
        import numpy as np
        from t5mtl.models import param_names
        from t5mtl.models.encoder_decoder import EncoderDecoderModel
        from t5mtl.train import partitioning
        from t5mtl.train.optimizers import create_optimizer
        from t5mtl.train.dispatch import dispatch_gate, temp_bytes
        from t5mtl.train.train_step import (TrainState, create_train_state, jit_train_step,
                                            make_train_step)
        self.jax, self.partitioning, self.batches = jax, partitioning, batches
        model = EncoderDecoderModel(cfg) if model is None else model
        sizes = {k: int(np.prod(v.shape))
                 for k, v in param_names.flatten(model.abstract_params()).items()}
        trainable = param_names.select(list(sizes), trainable_patterns)
        self.total_params = sum(sizes.values())
        self.trainable_params = sum(sizes[k] for k in (sizes if trainable is None else trainable))
        tx = create_optimizer(optimizer, learning_rate=learning_rate)
        self.mesh = partitioning.create_mesh((1, 1, 1), jax.devices()[:1])
        self.state, shardings = create_train_state(
            model.init_boxed, tx, jax.random.PRNGKey(0), rng=jax.random.PRNGKey(1),
            mesh=self.mesh, trainable_names=trainable)
        if params is not None:
            params = jax.device_put(params, shardings.params)
            self.state = TrainState.create(params, tx, self.state.rng, trainable)
        step = jit_train_step(
            make_train_step(model.loss_fn, tx, loss_denominator_fn=model.loss_denominator,
                            trainable_names=trainable),
            shardings, partitioning.batch_sharding(self.mesh), self.mesh)
        t = time.perf_counter()
        self.compiled = step.lower(self.state, self._batch(0)).compile()
        self.compile_s = time.perf_counter() - t
        cost = self.compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        self.xla_flops = float(cost.get("flops", float("nan")))
        # As the trainer runs them: under the keep malloc policy, steps with a large
        # temporary buffer one at a time.
        self.before_dispatch = dispatch_gate(self.mesh, temp_bytes(self.compiled))
        self.k = 0
        self.loss = None
        self.steps(1)                                   # warm-up
        self.first_loss = self.loss

    def _batch(self, k):
        return self.partitioning.host_batch_to_global(self.batches(k), self.mesh)

    def steps(self, n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            batch = self._batch(self.k)
            self.before_dispatch(self.state)
            self.state, metrics = self.compiled(self.state, batch)
            self.k += 1
        self.jax.block_until_ready((self.state, metrics))
        elapsed = time.perf_counter() - t
        self.loss = float(metrics["cross_entropy"])     # the loss without z-loss, as HF's
        return elapsed


def peak_memory_mib() -> tuple[str, float]:
    """This process's peak memory: ("device", the accelerator's peak bytes in
    use) where JAX runs on one that reports it, else ("RSS", `peak_rss_mib`)."""
    import jax
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return "device", stats["peak_bytes_in_use"] / 2**20
    return "RSS", peak_rss_mib()


# -- each system in its own process -------------------------------------------

REPLY = "@bench "   # marks the protocol's lines on a child's stdout


class ChildSystem:
    """A benchmarked system in its own Python process, driven over pipes.

    Systems in separate processes share nothing but the cores: neither
    allocator settings (`system_environment`) nor heap state nor thread pools
    leak from one into the other, and each child's VmHWM is its own peak
    memory. `argv` starts a benchmark in its `--serve` mode (`serve` below);
    `request` sends one JSON command and returns the JSON reply.
    """

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        self.argv = argv
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr, text=True, cwd=ROOT,
                                      env=env if env is not None else dict(os.environ))
        self.info = self._reply()

    def _reply(self) -> dict:
        for line in self._proc.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY):])
        self._proc.wait()
        self._stderr.seek(0)
        raise RuntimeError(f"benchmark child {' '.join(self.argv[-8:])} exited with "
                           f"{self._proc.returncode}:\n{self._stderr.read()[-3000:]}")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def request(self, **command) -> dict:
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait()
        self._stderr.close()


def system_environment(system: str) -> dict[str, str]:
    """The environment a benchmarked system runs in: t5mtl's is the one the
    `t5mtl` command gives itself (glibc's malloc policy for XLA's buffers,
    t5mtl/host_memory.py); every other system gets this process's, stock."""
    if system == "t5mtl":
        from t5mtl.host_memory import malloc_environment
        return malloc_environment() or dict(os.environ)
    return dict(os.environ)


def serve(info: dict, handle: Callable[[dict], dict]) -> int:
    """A child's side of ChildSystem: reports `info`, then answers each JSON
    command on stdin with `handle(command)` until stdin closes."""
    print(REPLY + json.dumps(info), flush=True)
    for line in sys.stdin:
        print(REPLY + json.dumps(handle(json.loads(line))), flush=True)
    return 0
