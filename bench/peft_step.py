"""Step cost of parameter-efficient training: prompt tuning, LoRA and full
finetuning of one T5, side by side in one run.

  python bench/peft_step.py                  # t5_1_1_small, 512/114, batch 8, float32
  python bench/peft_step.py --quick          # a smoke run on t5_tiny

Every method is t5mtl's train step built as the trainer builds it
(bench.common.T5mtlStep: make_train_step + jit_train_step with the
trainable subset of `train.trainable_patterns`, AdamW state for that subset
alone, state donated), random init, float32 parameters and activations:

  prompt P=N  PromptTuning(N) at the encoder input; trains encoder_input/.*
              (--prompt-lengths, default 100 and 20: P=100 as in Lester et
              al., P=20 as in gin/runs/prompt_tuning.gin)
  lora        LoRA rank 8, alpha 16 on attention query and value
              (gin/runs/lora.gin); trains lora/.*
  full        the plain model; trains every parameter

for each kernel setting of --kernels (T5Config.kernels: "xla", the plain
functions left to autodiff; "auto", the default, which is "cpu" on a CPU
and "xla" elsewhere, so on an accelerator the two are one setting). Each
(method, kernels) runs in its own process (bench.common.ChildSystem), one
process at a time (a shared machine may not hold several t5_1_1_small
steps) and a fresh one each round, so its peak memory is its own: VmHWM on
a CPU, the device's peak_bytes_in_use on an accelerator (preallocation
off); the table has the largest over rounds. The methods of one kernel
setting are timed round by round in rotating order
(bench.common.Alternator): in each round a method's process compiles its
step, runs one warm-up step, --settle untimed steps, then --steps timed ones. Step time is the median over rounds
of a round's median step; "ratio to full" is the median of the per-round
ratios. Compiled FLOPs are XLA's cost analysis of the compiled step, which
does not depend on the machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from bench import common  # noqa: E402

METHODS = ("prompt", "lora", "full")
LORA_PATTERNS = [r".*attention/(query|value)/kernel"]        # as gin/runs/lora.gin
TRAINABLE = {"prompt": ["encoder_input/.*"], "lora": ["lora/.*"], "full": None}


def build_model(cfg, method: str, prompt_length: int = 100):
    """The model a method trains and its trainable patterns (None: all)."""
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.peft import LoRA, PromptTuning
    if method == "prompt":
        return EncoderDecoderModel(cfg, encoder_input=PromptTuning(prompt_length)), \
            TRAINABLE[method]
    if method == "lora":
        lora = LoRA(rank=8, alpha=16.0, patterns=LORA_PATTERNS)
        return EncoderDecoderModel(cfg, weight_adapter=lora), TRAINABLE[method]
    if method == "full":
        return EncoderDecoderModel(cfg), None
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def serve_main(args) -> int:
    """--serve METHOD: one method's train step in this process, stepped on
    command; each reply has the timed steps' seconds and the peak memory."""
    from t5mtl.models import kernels
    from t5mtl.models.configs import get_config
    enc_len, dec_len = (int(x) for x in args.shape.split("/"))
    cfg = get_config(args.model, dtype="float32", dropout_rate=0.0, kernels=args.kernels)
    model, patterns = build_model(cfg, args.serve, args.prompt_length)
    runner = common.T5mtlStep(cfg, common.Batches(cfg, args.batch, enc_len, dec_len),
                              "adamw", model=model, trainable_patterns=patterns)
    info = {"trainable_params": runner.trainable_params, "total_params": runner.total_params,
            "xla_flops": runner.xla_flops, "compile_s": runner.compile_s,
            "first_loss": runner.first_loss, "kernels": kernels.resolve(cfg.kernels)}

    def handle(command):
        for _ in range(command["settle"]):
            runner.steps(1)
        times = [runner.steps(1) for _ in range(command["steps"])]
        kind, mib = common.peak_memory_mib()
        return {"step_s": times, "loss": runner.loss, "memory_kind": kind, "peak_mib": mib}

    return common.serve(info, handle)


def systems(args) -> list[tuple[str, str, int | None]]:
    """(row name, method, prompt length) of every method of --systems."""
    out = []
    for method in args.systems.split(","):
        if method == "prompt":
            out += [(f"prompt P={n}", method, int(n)) for n in args.prompt_lengths.split(",")]
        else:
            out.append((method, method, None))
    return out


def kernel_settings(text: str) -> list[tuple[str, str]]:
    """(setting, what it resolves to here) per --kernels entry, one per
    resolved implementation ("auto" is "xla" on an accelerator)."""
    from t5mtl.models import kernels
    out, seen = [], set()
    for setting in text.split(","):
        resolved = kernels.resolve(setting)
        if resolved not in seen:
            seen.add(resolved)
            out.append((setting, resolved))
    return out


def run_group(args, setting: str, log=print) -> list[dict]:
    """One kernel setting: every method in its own process, one process at a
    time, a fresh one per round; timed round by round in rotating order."""
    env = common.system_environment("t5mtl")
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    rows = systems(args)
    spec = {name: (method, length) for name, method, length in rows}
    info, last, peaks = {}, {}, {}

    def measure(name):
        method, length = spec[name]
        argv = [sys.executable, os.path.abspath(__file__), "--serve", method,
                "--kernels", setting, "--model", args.model, "--batch", str(args.batch),
                "--shape", args.shape, "--prompt-length", str(length or 0)]
        child = common.ChildSystem(argv, env=env)
        try:
            reply = child.request(settle=args.settle, steps=args.steps)
        finally:
            child.close()
        i = info.setdefault(name, child.info)
        last[name] = reply
        peaks.setdefault(name, []).append(reply["peak_mib"])
        log(f"  {name:<14} compiled in {child.info['compile_s']:.1f}s, first loss "
            f"{i['first_loss']:.4f}, {i['xla_flops'] / 1e9:.4g} GFLOP; steps "
            + " ".join(f"{s:.3f}" for s in reply["step_s"]) + " s, peak "
            f"{reply['peak_mib']:.0f} MiB")
        return statistics.median(reply["step_s"])

    alt = common.Alternator([name for name, _, _ in rows])
    alt.run(args.rounds, measure, log=lambda line: None)
    full = "full" if "full" in alt.names else None
    out = []
    for name, method, length in rows:
        i = info[name]
        out.append({
            "kernels": i["kernels"], "setting": setting, "method": name,
            "trainable_params": i["trainable_params"], "total_params": i["total_params"],
            "step_s": alt.median(name), "step_s_rounds": [r[name] for r in alt.rounds],
            "ratio_to_full": alt.ratio(name, full) if full else None,
            "xla_flops": i["xla_flops"],
            "flops_ratio_to_full": i["xla_flops"] / info[full]["xla_flops"] if full else None,
            "peak_mib": max(peaks[name]), "memory_kind": last[name]["memory_kind"],
            "compile_s": i["compile_s"], "first_loss": i["first_loss"],
            "last_loss": last[name]["loss"]})
    return out


def format_table(rows: list[dict]) -> str:
    """The run's one table (markdown)."""
    kind = rows[0]["memory_kind"] if rows else "RSS"
    lines = ["| kernels | method | trainable params | step (s) | ratio to full | "
             f"compiled GFLOP | FLOP ratio to full | peak memory ({kind}, MiB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = 100 * r["trainable_params"] / r["total_params"]
        ratio = "-" if r["ratio_to_full"] is None else f"{r['ratio_to_full']:.2f}x"
        fratio = "-" if r["flops_ratio_to_full"] is None else f"{r['flops_ratio_to_full']:.2f}x"
        lines.append(f"| {r['kernels']} | {r['method']} | {r['trainable_params']:,} "
                     f"({share:.3g}%) | {r['step_s']:.3g} | {ratio} | "
                     f"{r['xla_flops'] / 1e9:.4g} | {fratio} | {r['peak_mib']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = common.argument_parser(__doc__, METHODS)
    p.set_defaults(rounds=2)
    p.add_argument("--prompt-lengths", default="100,20", help="P of each prompt row")
    p.add_argument("--shape", default="512/114", help="inputs/targets")
    p.add_argument("--kernels", default="xla,auto", help="T5Config.kernels settings")
    p.add_argument("--settle", type=int, default=2, help="untimed steps per method per round")
    p.add_argument("--steps", type=int, default=3, help="timed steps per method per round")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: t5_tiny, 32/8, batch 2, P=4, 1 round of 2 steps")
    p.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    p.add_argument("--prompt-length", type=int, default=100, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    common.selected_systems(p, args.systems, METHODS)
    if args.quick:
        args.model, args.shape, args.batch, args.prompt_lengths = "t5_tiny", "32/8", 2, "4"
        args.rounds, args.settle, args.steps = 1, 1, 2
    if args.serve:
        return serve_main(args)
    print(f"machine: {common.machine_description()}")
    print(f"versions: {common.versions()}")
    import jax
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
    print(f"{args.model}, {args.shape}, batch {args.batch}, float32, AdamW; rounds "
          f"{args.rounds}, {args.settle} untimed + {args.steps} timed steps per round")
    start, rows = time.time(), []
    for setting, resolved in kernel_settings(args.kernels):
        print(f"== kernels={setting} ({resolved})", flush=True)
        rows += run_group(args, setting)
    print(f"\n({time.time() - start:.0f}s)\n" + format_table(rows))
    common.write_report(args.json, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
