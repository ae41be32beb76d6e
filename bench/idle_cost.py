"""What a pause costs the next train steps: t5mtl alone, stepped after idle pauses.

    python bench/idle_cost.py                        # t5_1_1_small, 512/114, batch 8
    python bench/idle_cost.py --pauses 0,10,25 --steps-after 4

Starts t5mtl's train step in a child process exactly as
bench/train_throughput.py does (no other system runs), then for each pause:
sleeps, and runs single steps, printing each step's wall time and the
child's kernel (system) CPU time from /proc. On a KVM guest with
virtio-balloon free page reporting, memory the process freed and left
unused for a few seconds is handed back to the host, and the first step
after the pause faults it in again at several times the usual cost. This is
why bench/train_throughput.py lets each system settle before timing it
(docs/performance.md, "Pitfalls").
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import train_throughput  # noqa: E402


def kernel_seconds(pid: int) -> float:
    """A process's system CPU time so far (/proc/PID/stat field 15, clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


def balloon_reports_free_pages() -> bool | None:
    """Whether a virtio balloon here has VIRTIO_BALLOON_F_REPORTING (bit 5); None: no balloon."""
    root = "/sys/bus/virtio/devices"
    for dev in os.listdir(root) if os.path.isdir(root) else []:
        with open(os.path.join(root, dev, "device")) as f:
            if int(f.read(), 16) != 5:                  # 5: the balloon device
                continue
        with open(os.path.join(root, dev, "features")) as f:
            return f.read().strip()[5:6] == "1"
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="t5_1_1_small")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--shape", default="512/114", help="inputs/targets")
    p.add_argument("--pauses", default="0,1,3,10,25", help="seconds idle, comma separated")
    p.add_argument("--steps-after", type=int, default=4, help="single steps after each pause")
    args = p.parse_args(argv)
    (enc_len, dec_len), = train_throughput.parse_shapes(args.shape)
    print(f"virtio balloon with free page reporting: {balloon_reports_free_pages()}")
    child = train_throughput.start_system("t5mtl", args.model, args.batch, enc_len, dec_len,
                                          "float32", "adamw", "t5mtl")
    try:
        child.request(system="t5mtl", steps=3)          # past the first steps' page faults
        print("wall / kernel seconds of each step after the pause")
        for pause in (float(x) for x in args.pauses.split(",")):
            time.sleep(pause)
            cells = []
            for _ in range(args.steps_after):
                k0 = kernel_seconds(child.pid)
                wall = child.request(system="t5mtl", steps=1)["seconds"]
                cells.append(f"{wall:5.2f} / {kernel_seconds(child.pid) - k0:4.2f}")
            print(f"  after {pause:4.0f} s idle:  " + "   ".join(cells), flush=True)
    finally:
        child.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
