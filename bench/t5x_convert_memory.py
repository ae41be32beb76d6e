"""Host memory of `t5mtl convert --from t5x`: peak resident set over the
process's baseline, against the checkpoint's size.

    python bench/t5x_convert_memory.py                      # t5_1_1_small
    python bench/t5x_convert_memory.py --model t5_1_1_small --vocab_size 1024

Writes a random checkpoint of the named config in t5x's legacy layout (in a
child process, so its memory is not counted), then in this process: opens
it, reads every parameter into its sharding over this host's devices and
saves the model_dir with orbax (1 GB in flight), as `convert` does,
printing the peak resident set (VmHWM) after each phase.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_WRITE = """
import json, sys, jax, numpy as np
from t5mtl.convert import t5x
from t5mtl.convert.t5x_config import config_to_t5x_fields
from t5mtl.models.configs import NAMED_CONFIGS
from t5mtl.models.init import init_params
cfg = NAMED_CONFIGS[sys.argv[1]].replace(**json.loads(sys.argv[2]))
t5x.write_legacy(sys.argv[3] + "/checkpoint_1", jax.tree.map(np.asarray, init_params(cfg)), 1)
json.dump(config_to_t5x_fields(cfg), open(sys.argv[3] + ".json", "w"))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="t5_1_1_small")
    p.add_argument("--vocab_size", type=int, default=None)
    args = p.parse_args()
    overrides = {"vocab_size": args.vocab_size} if args.vocab_size else {}
    work = tempfile.mkdtemp(prefix="t5x_mem.")
    src = os.path.join(work, "t5x")
    subprocess.run([sys.executable, "-c", _WRITE, args.model, json.dumps(overrides), src],
                   check=True)

    import jax
    from bench.common import peak_rss_mib
    from t5mtl.convert import t5x
    from t5mtl.convert.command import host_param_shardings
    from t5mtl.convert.t5x_config import read_t5x_config
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.models.init import count_params
    from t5mtl.train.model_dir import save_params
    config = read_t5x_config(src + ".json")
    model = EncoderDecoderModel(config)
    _, shardings = host_param_shardings(model)
    jax.block_until_ready(jax.numpy.zeros(1))
    base = peak_rss_mib()
    size = count_params(config) * 4 / 2**20
    params = t5x.read_params(t5x.open_checkpoint(src), model.abstract_params(), shardings.params)
    jax.block_until_ready(params)
    read = peak_rss_mib() - base
    save_params(os.path.join(work, "model"), params, step=1, save_concurrent_gb=1)
    saved = peak_rss_mib() - base
    print(f"{args.model} {overrides or ''}: params {size:.0f} MiB (float32); peak RSS over "
          f"baseline {base:.0f} MiB: read {read:.0f} MiB ({read / size:.2f}x), "
          f"read+save {saved:.0f} MiB ({saved / size:.2f}x); devices {jax.device_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
