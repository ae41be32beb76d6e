"""Train-step tokens/s and MFU: t5mtl's jitted step against HF PyTorch T5.

  python bench/train_throughput.py                      # the full run: both shapes and dtypes
  python bench/train_throughput.py --quick              # a smoke run on a tiny model
  python bench/train_throughput.py --memory --no-throughput   # peak RSS per system only

For each shape (inputs/targets) and activation dtype it starts, each in its
own process (bench.common.ChildSystem: nothing but the cores is shared, and
the torch process keeps glibc's stock malloc settings), one T5
(t5_1_1_small by default) with the same initial weights in

  t5mtl        t5mtl's train step (make_train_step + jit_train_step, as the
               trainer builds it; state donated), AdamW (or --optimizer)
  torch        HF transformers T5ForConditionalGeneration + torch AdamW, stock
  torch+flush  the same with torch.set_flush_denormal(True) while it runs
  torch+flush+1thread  and torch.set_num_threads(1): the strongest torch setting
               when other jobs share the cores (OpenMP threads then stall)

(t5mtl's random init, exported into the HF model with t5mtl.convert.hf; with
--init hf, HF's init imported into t5mtl; the first step's losses are
printed side by side as a check), feeds them the same sequence of fresh
random batches, and times them round by round, rotating the order (the
machine drifts). In each round every system first runs untimed steps until
it is back at its steady speed (at least --settle-steps, then until a step is
within --settle-tolerance of the fastest it has made, at most --settle-max;
bench.common.settle), then --steps timed ones. The first steps after a
system sat idle pay for page faults that a training run does not: on a KVM
guest with virtio-balloon free page reporting, memory a process freed and
left unused for a few seconds goes back to the host, and the steps after
the other system's turn fault it in again at several times the usual cost
(docs/performance.md, "Pitfalls").
Tokens per step = batch x (inputs + targets), no padding. bfloat16 means
bfloat16 activations with float32 parameters (t5mtl dtype="bfloat16"; torch
autocast). MFU = analytic model FLOPs (3 x forward matmul FLOPs, attention
included) / step time / the matmul peak measured at the start of the run;
the XLA-counted FLOPs of the compiled step are printed beside the analytic
count as a check of what the step really computes.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402
from t5mtl.models.flops import t5_forward_flops  # noqa: E402

SYSTEMS = ("t5mtl",) + common.TORCH_SYSTEMS


class TorchStep:
    """HF T5ForConditionalGeneration + torch.optim.AdamW, one train step."""

    def __init__(self, model, batches: common.Batches, dtype: str, learning_rate: float = 1e-4):
        import torch
        self.torch, self.batches = torch, batches
        self.model = model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=learning_rate, weight_decay=0.0)
        self.dtype = dtype
        self.flush, self.threads = False, None
        self.k = 0
        self.loss = None
        self.steps(1)                                   # warm-up (optimizer state)
        self.first_loss = self.loss

    def _one(self):
        torch = self.torch
        batch = self.batches(self.k)
        self.k += 1
        input_ids = torch.from_numpy(batch["encoder_input_tokens"]).long()
        kwargs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                      labels=torch.from_numpy(batch["decoder_target_tokens"]).long())
        if self.dtype == "bfloat16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = self.model(**kwargs).loss
        else:
            loss = self.model(**kwargs).loss
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss

    def steps(self, n: int) -> float:
        with common.torch_mode(self.flush, self.threads):
            t = time.perf_counter()
            for _ in range(n):
                loss = self._one()
            elapsed = time.perf_counter() - t
        self.loss = float(loss.detach())
        return elapsed


def parse_shapes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        a, _, b = item.partition("/")
        out.append((int(a), int(b)))
    return out


def start_system(system: str, cfg_name: str, batch_size: int, enc_len: int, dec_len: int,
                 dtype: str, optimizer: str, init: str, init_file: str | None = None
                 ) -> common.ChildSystem:
    """"t5mtl" or "torch" in its own process (bench.common.ChildSystem). t5mtl's
    gets the environment `t5mtl train` runs in (the malloc policy for XLA's buffers,
    t5mtl/host_memory.py); torch's keeps glibc's stock settings and runs no
    jax: with --init t5mtl it loads `init_file` (bench.common.save_t5mtl_init)."""
    argv = [sys.executable, os.path.abspath(__file__), "--serve", system, "--model", cfg_name,
            "--batch", str(batch_size), "--shapes", f"{enc_len}/{dec_len}", "--dtypes", dtype,
            "--optimizer", optimizer, "--init", init]
    if system == "torch" and init_file:
        argv += ["--init-file", init_file]
    return common.ChildSystem(argv, env=common.system_environment(system))


@contextlib.contextmanager
def init_file_for(cfg, init: str):
    """t5mtl's random init as an HF file for the torch process (--init t5mtl)."""
    with tempfile.TemporaryDirectory() as d:
        yield common.save_t5mtl_init(cfg, d) if init == "t5mtl" else None


def run_case(cfg_name: str, batch_size: int, enc_len: int, dec_len: int, dtype: str,
             systems: list[str], rounds: int, steps: int, optimizer: str, peaks: dict,
             init: str = "t5mtl", settle: tuple[int, int, float] = (2, 8, 0.10),
             log=print) -> dict:
    """One shape and dtype: the systems side by side, `rounds` rounds. `settle`
    is (min steps, max steps, tolerance) of each round's untimed steps
    (bench.common.settle)."""
    from t5mtl.models.configs import get_config
    cfg = get_config(cfg_name, dtype=dtype, dropout_rate=0.0)
    tokens = batch_size * (enc_len + dec_len)
    case = (cfg_name, batch_size, enc_len, dec_len, dtype, optimizer, init)
    children = {}
    try:
        if "t5mtl" in systems:
            children["t5mtl"] = start_system("t5mtl", *case)
            log(f"  t5mtl compiled in {children['t5mtl'].info['compile_s']:.1f}s")
        if any(s in common.TORCH_SYSTEMS for s in systems):
            with init_file_for(cfg, init) as init_file:
                children["torch"] = start_system("torch", *case, init_file)
        if len(children) == 2:
            log(f"  first-step loss (same weights, same batch): t5mtl "
                f"{children['t5mtl'].info['first_loss']:.6f}, torch "
                f"{children['torch'].info['first_loss']:.6f}")
        last, settled = {}, {}

        def measure(name):
            child = children["t5mtl" if name == "t5mtl" else "torch"]
            reply = child.request(system=name, steps=steps, settle_steps=settle[0],
                                  settle_max=settle[1], settle_tolerance=settle[2])
            last[name] = reply
            settled.setdefault(name, []).append(len(reply["settle_s"]))
            log(f"    {name} settled in {len(reply['settle_s'])} steps: "
                + " ".join(f"{t:.2f}" for t in reply["settle_s"]) + " s")
            return tokens * steps / reply["seconds"]

        alt = common.Alternator(systems)
        alt.run(rounds, measure, log=log)
    finally:
        for child in children.values():
            child.close()
    model_flops = 3 * t5_forward_flops(cfg, batch_size, enc_len, dec_len)
    peak = common.peak_for(peaks, dtype) * 1e9
    result = {"model": cfg_name, "batch": batch_size, "inputs": enc_len, "targets": dec_len,
              "dtype": dtype, "init": init, "optimizer_t5mtl": optimizer,
              "tokens_per_step": tokens, "steps": steps, "settle": list(settle),
              "settle_steps_taken": settled,
              "model_flops_per_step": model_flops, "rounds": alt.rounds, "tokens_per_s": {},
              "peak_rss_mib": {}}
    for s in alt.names:
        tps = alt.median(s)
        result["tokens_per_s"][s] = tps
        result.setdefault("mfu", {})[s] = model_flops * tps / tokens / peak
        result["peak_rss_mib"][s] = last[s]["peak_rss_mib"]
    for name, child in children.items():
        result[f"first_loss_{name}"] = child.info["first_loss"]
    for s in alt.names:
        result.setdefault("last_loss", {})[s] = last[s]["loss"]
    if "t5mtl" in children:
        result["xla_flops_per_step"] = children["t5mtl"].info["xla_flops"]
        result["t5mtl_compile_s"] = children["t5mtl"].info["compile_s"]
    for other in common.TORCH_SYSTEMS:
        if "t5mtl" in alt.names and other in alt.names:
            result.setdefault("ratio", {})[f"t5mtl/{other}"] = alt.ratio("t5mtl", other)
    return result


def format_result(r: dict) -> str:
    lines = [f"{r['model']} batch {r['batch']} inputs {r['inputs']} targets {r['targets']} "
             f"{r['dtype']}: {r['tokens_per_step']} tokens/step, model FLOPs/step "
             f"{r['model_flops_per_step'] / 1e9:.0f} G"
             + (f", XLA-counted {r['xla_flops_per_step'] / 1e9:.0f} G"
                if "xla_flops_per_step" in r else "")]
    for s, tps in r["tokens_per_s"].items():
        lo, hi = min(x[s] for x in r["rounds"]), max(x[s] for x in r["rounds"])
        lines.append(f"  {s:<20} {tps:9.1f} tokens/s  (rounds {lo:.0f}..{hi:.0f})  "
                     f"MFU {100 * r['mfu'][s]:5.1f}%")
    for k, v in r.get("ratio", {}).items():
        lines.append(f"  ratio {k:<26} {v:5.2f}x")
    return "\n".join(lines)


def serve_main(args) -> int:
    """--serve t5mtl|torch: one system in this process, stepped on command
    (bench.common.serve); each reply has the step time, the loss and VmHWM."""
    from t5mtl.models.configs import get_config
    (enc_len, dec_len), = parse_shapes(args.shapes)
    dtype = args.dtypes.split(",")[0]
    cfg = get_config(args.model, dtype=dtype, dropout_rate=0.0)
    batches = common.Batches(cfg, args.batch, enc_len, dec_len)
    if args.serve == "t5mtl":
        params = None       # t5mtl's own init (seed 0): what save_t5mtl_init gives torch
        if args.init == "hf":
            params = common.import_hf_model(common.build_hf_model(cfg))[1]
        runner = common.T5mtlStep(cfg, batches, args.optimizer, params=params)
        info = {"compile_s": runner.compile_s, "xla_flops": runner.xla_flops}
    elif args.serve == "torch":
        model = common.build_hf_model(cfg)
        if args.init_file:
            common.load_hf_weights(model, args.init_file)
        runner = TorchStep(model, batches, dtype)
        info = {}
    else:
        raise SystemExit(f"--serve {args.serve!r}: expected t5mtl or torch")
    info["first_loss"] = runner.first_loss

    fastest = {}      # each system's fastest step so far (the torch systems share a process)

    def handle(command):
        if args.serve == "torch":
            runner.flush, runner.threads = common.torch_settings(command["system"])
        system = command["system"]
        settled, fastest[system] = common.settle(
            lambda: runner.steps(1), fastest.get(system, float("inf")),
            command.get("settle_steps", 0), command.get("settle_max", 0),
            command.get("settle_tolerance", 0.0))
        seconds = runner.steps(command["steps"])
        fastest[system] = min(fastest[system], seconds / command["steps"])
        return {"seconds": seconds, "loss": runner.loss, "peak_rss_mib": common.peak_rss_mib(),
                "settle_s": settled}

    return common.serve(info, handle)


def memory_main(args, log=print) -> list[dict]:
    """Peak RSS (VmHWM) of each system run alone in a child process: setup,
    one warm-up step and --steps timed steps, imports included."""
    results = []
    for enc_len, dec_len in parse_shapes(args.shapes):
        for dtype in args.dtypes.split(","):
            row = {"inputs": enc_len, "targets": dec_len, "dtype": dtype, "peak_rss_mib": {}}
            for system in ("t5mtl", "torch"):
                # HF's init for torch: the same memory, and no jax in its process.
                child = start_system(system, args.model, args.batch, enc_len, dec_len, dtype,
                                     args.optimizer, "t5mtl" if system == "t5mtl" else "hf")
                try:
                    rss = child.request(system=system, steps=args.steps)["peak_rss_mib"]
                finally:
                    child.close()
                row["peak_rss_mib"][system] = rss
                log(f"  peak RSS {system:<6} {enc_len}/{dec_len} {dtype}: {rss:7.0f} MiB")
            results.append(row)
    return results


def main(argv=None) -> int:
    p = common.argument_parser(__doc__, SYSTEMS)
    p.add_argument("--shapes", default="512/114,128/32", help="inputs/targets, comma separated")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--steps", type=int, default=2, help="timed steps per system per round")
    p.add_argument("--settle-steps", type=int, default=2,
                   help="untimed steps before them in each round, at least (see above)")
    p.add_argument("--settle-max", type=int, default=8,
                   help="untimed steps at most: after --settle-steps, a system keeps "
                        "stepping until a step is within --settle-tolerance of its fastest "
                        "so far (--settle-max equal to --settle-steps: a fixed count)")
    p.add_argument("--settle-tolerance", type=float, default=0.10,
                   help="how close to its fastest step a settled step is (a fraction)")
    p.add_argument("--optimizer", default="adamw", help="t5mtl's optimizer: adamw or adafactor")
    p.add_argument("--init", default="t5mtl", choices=("t5mtl", "hf"),
                   help="the shared initial weights: t5mtl's T5X-style random init "
                        "(default) or HF's own random init")
    p.add_argument("--peak-gflops", type=float, nargs="+", default=None,
                   metavar=("FLOAT32", "BFLOAT16"),
                   help="MFU against these peaks instead of the matmul measured at the start "
                        "(which a busy machine lowers)")
    p.add_argument("--memory", action="store_true",
                   help="also run each system alone in a child process for its peak RSS")
    p.add_argument("--no-throughput", dest="throughput", action="store_false",
                   help="skip the timed comparison (e.g. with --memory alone)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: t5_small_cpu, 64/16, float32, 2 rounds of 5 steps")
    p.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    p.add_argument("--init-file", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.shapes, args.dtypes, args.rounds, args.steps = \
            "t5_small_cpu", "64/16", "float32", 2, 5
    if args.serve:
        return serve_main(args)
    systems = common.selected_systems(p, args.systems, SYSTEMS)

    print(f"machine: {common.machine_description()}")
    print(f"versions: {common.versions()}")
    peaks = {}
    if args.throughput:
        peaks = common.measure_matmul_peak(1024 if args.quick else 2048)
        print("matmul peak (best of 5, GFLOP/s): "
              + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
        if args.peak_gflops:
            peaks = {"stated_float32": args.peak_gflops[0],
                     "stated_bfloat16": args.peak_gflops[-1]}
            print(f"MFU against the stated peak: {args.peak_gflops} GFLOP/s")
    results = []
    start = time.time()
    for enc_len, dec_len in parse_shapes(args.shapes) if args.throughput else []:
        for dtype in args.dtypes.split(","):
            print(f"== {args.model} batch {args.batch} {enc_len}/{dec_len} {dtype}")
            r = run_case(args.model, args.batch, enc_len, dec_len, dtype, systems, args.rounds,
                         args.steps, args.optimizer, peaks, args.init,
                         (args.settle_steps, args.settle_max, args.settle_tolerance))
            print(format_result(r), flush=True)
            results.append(r)
            common.write_report(args.json, matmul_peak_gflops=peaks, results=results, memory=[])
    memory = memory_main(args) if args.memory else []
    print(f"\nsummary ({time.time() - start:.0f}s; ratios are medians of per-round ratios)")
    for r in results:
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in r.get("ratio", {}).items())
        tps = ", ".join(f"{k} {v:.0f}" for k, v in r["tokens_per_s"].items())
        print(f"  {r['inputs']}/{r['targets']} {r['dtype']:<8}  tokens/s: {tps};  {ratios}")
    for m in memory:
        rss = m["peak_rss_mib"]
        print(f"  peak RSS {m['inputs']}/{m['targets']} {m['dtype']}: t5mtl {rss['t5mtl']:.0f} "
              f"MiB, torch {rss['torch']:.0f} MiB")
    common.write_report(args.json, matmul_peak_gflops=peaks, results=results, memory=memory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
