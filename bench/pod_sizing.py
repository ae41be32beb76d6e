"""Will it fit? `t5mtl compile` for T5 1.1 base to xxl on TPU slices, one
table (docs/performance.md, "Will it fit on the pod").

  python bench/pod_sizing.py [--models t5_1_1_base,...] [--topologies v4-8,...]

Each cell compiles gin/sizing/pod_sizing.gin's train step (inputs 512,
targets 114, packed, batch 256, bfloat16 activations, scanned layers with
full remat, Adafactor, FSDP over every device) for the slice with libtpu on
this CPU host, in its own process, and reads the report (t5mtl/train/aot.py).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("t5_1_1_base", "t5_1_1_large", "t5_1_1_xl", "t5_1_1_xxl")
TOPOLOGIES = ("v4-8", "v5e-16", "v4-128")
GIB = 1 << 30


def compile_one(model: str, topology: str, extra=()) -> dict:
    cmd = [sys.executable, "-m", "t5mtl.cli", "compile", f"--gin_file=gin/models/{model}.gin",
           "--gin_file=gin/sizing/pod_sizing.gin", f"--topology={topology}", "--json", *extra]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode not in (0, 3):
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def row(model: str, topology: str, rep: dict) -> str:
    if "error" in rep:
        return f"| {model} | {topology} | - | {rep['error']} | | | | | |"
    if "compiler" in rep:
        return (f"| {model} | {topology} ({rep['devices']} devices) | "
                f"{' x '.join(map(str, rep['mesh']))} | | | {rep['compiler']} | **no** | | |")
    fits = "yes" if rep["total_bytes"] <= rep["hbm_bytes"] else "**no**"
    coll = sum(rep["collective_bytes"].values())
    return (f"| {model} | {topology} ({rep['devices']} devices) | "
            f"{' x '.join(map(str, rep['mesh']))} | {rep['argument_bytes'] / GIB:.2f} | "
            f"{rep['temp_bytes'] / GIB:.2f} | {rep['total_bytes'] / GIB:.2f} / "
            f"{rep['hbm_bytes'] / GIB:.0f} | {fits} | {rep['flops'] / 1e12:.1f} | "
            f"{coll / GIB:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--topologies", default=",".join(TOPOLOGIES))
    args = parser.parse_args()
    print("| model | slice | mesh (data x fsdp x model) | arguments GiB | temporaries GiB | "
          "total / HBM GiB | fits | TFLOP per device | collectives GiB per device |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for topology in args.topologies.split(","):
            print(row(model, topology, compile_one(model, topology)), flush=True)


if __name__ == "__main__":
    main()
