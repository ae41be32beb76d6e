"""Greedy-decoding tokens/s with the KV cache: t5mtl against HF generate.

  python bench/decode_throughput.py             # the full run: t5_1_1_small, batch 8,
                                                # inputs 512, 64 new tokens
  python bench/decode_throughput.py --quick     # a smoke run on a tiny model

One random-init HF T5ForConditionalGeneration (t5_1_1_small-shaped) is saved
and imported into t5mtl with t5mtl.convert.hf.import_hf, so both systems hold
identical weights. Systems:

  t5mtl        EncoderDecoderModel.decoder (what t5mtl.load(...).generate
               and predict_batch run): prefill, then a jitted while_loop over
               one-token steps with the KV cache
  torch        model.generate(do_sample=False, num_beams=1, use_cache=True)
  torch+flush  the same with torch.set_flush_denormal(True)
  torch+flush+1thread  and torch.set_num_threads(1) (see bench/common.torch_mode)

Neither stops at EOS (t5mtl eos_id=-1, HF eos_token_id=None), so every call
makes exactly batch x new_tokens tokens; tokens/s counts those and the time
includes encoding the inputs. The greedy tokens of the two systems are
compared as a check that they decode the same model.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

SYSTEMS = ("t5mtl",) + common.TORCH_SYSTEMS


class T5mtlDecoder:
    def __init__(self, cfg, params, enc, new_tokens: int):
        import jax
        import jax.numpy as jnp
        from t5mtl.models.encoder_decoder import DecodeConfig, EncoderDecoderModel
        self.jax = jax
        self.params = jax.device_put(jax.tree.map(jnp.asarray, params))
        self.enc = jnp.asarray(enc)
        self.rng = jax.random.PRNGKey(0)
        # eos_id -1: never stops early, every call decodes `new_tokens` tokens.
        self.run = EncoderDecoderModel(cfg).decoder(
            DecodeConfig(max_decode_length=new_tokens, eos_id=-1))
        t = time.perf_counter()
        self.ids = self._call()                          # compile + warm-up
        self.compile_s = time.perf_counter() - t

    def _call(self):
        import numpy as np
        return np.asarray(self.run(self.params, self.enc, self.rng))

    def time(self, calls: int) -> float:
        t = time.perf_counter()
        for _ in range(calls):
            self.ids = self._call()
        return time.perf_counter() - t


class TorchDecoder:
    def __init__(self, model, enc, new_tokens: int):
        import torch
        self.torch = torch
        self.model = model.eval()
        self.model.generation_config.eos_token_id = None   # always make new_tokens tokens
        self.input_ids = torch.from_numpy(enc).long()
        self.attention_mask = torch.ones_like(self.input_ids)
        self.new_tokens = new_tokens
        self.flush, self.threads = False, None
        self.time(1)                                      # warm-up

    def time(self, calls: int) -> float:
        torch = self.torch
        with common.torch_mode(self.flush, self.threads):
            t = time.perf_counter()
            with torch.no_grad():
                for _ in range(calls):
                    out = self.model.generate(
                        input_ids=self.input_ids, attention_mask=self.attention_mask,
                        max_new_tokens=self.new_tokens, do_sample=False, num_beams=1,
                        use_cache=True)
            elapsed = time.perf_counter() - t
        self.ids = out[:, 1:].numpy()                     # drop the decoder start token
        return elapsed


def main(argv=None) -> int:
    p = common.argument_parser(__doc__, SYSTEMS)
    p.add_argument("--inputs", type=int, default=512)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--calls", type=int, default=2, help="timed generate calls per system per round")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: t5_small_cpu, inputs 64, 16 new tokens, 2 rounds")
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.inputs, args.new_tokens, args.rounds = "t5_small_cpu", 64, 16, 2
    systems = common.selected_systems(p, args.systems, SYSTEMS)

    import numpy as np
    from t5mtl.models.configs import get_config
    print(f"machine: {common.machine_description()}")
    print(f"versions: {common.versions()}")
    cfg = get_config(args.model, dropout_rate=0.0)
    hf_model = common.build_hf_model(cfg)
    cfg_imported, params = common.import_hf_model(hf_model)
    enc = np.random.RandomState(0).randint(2, cfg.vocab_size, size=(args.batch, args.inputs))
    enc = enc.astype(np.int32)

    runners = {}
    if "t5mtl" in systems:
        runners["t5mtl"] = T5mtlDecoder(cfg_imported, params, enc, args.new_tokens)
        print(f"  t5mtl compiled in {runners['t5mtl'].compile_s:.1f}s")
    torch_dec = None
    if any(s.startswith("torch") for s in systems):
        torch_dec = TorchDecoder(hf_model, enc, args.new_tokens)
        runners.update({s: torch_dec for s in systems if s.startswith("torch")})
    tokens = args.batch * args.new_tokens

    def measure(name):
        if runners[name] is torch_dec:
            torch_dec.flush, torch_dec.threads = common.torch_settings(name)
        return tokens * args.calls / runners[name].time(args.calls)

    print(f"== {args.model} greedy, batch {args.batch}, inputs {args.inputs}, "
          f"{args.new_tokens} new tokens")
    alt = common.Alternator([s for s in systems if s in runners])
    alt.run(args.rounds, measure)
    result = {"model": args.model, "batch": args.batch, "inputs": args.inputs,
              "new_tokens": args.new_tokens, "rounds": alt.rounds,
              "tokens_per_s": {s: alt.median(s) for s in alt.names}, "ratio": {}}
    for s in alt.names:
        lo, hi = alt.spread(s)
        print(f"  {s:<20} {result['tokens_per_s'][s]:9.1f} tokens/s  (rounds {lo:.0f}..{hi:.0f})")
    for other in common.TORCH_SYSTEMS:
        if "t5mtl" in alt.names and other in alt.names:
            result["ratio"][f"t5mtl/{other}"] = alt.ratio("t5mtl", other)
            print(f"  ratio t5mtl/{other:<20} {result['ratio'][f't5mtl/{other}']:5.2f}x")
    if "t5mtl" in runners and torch_dec is not None:
        a, b = runners["t5mtl"].ids, torch_dec.ids
        same = float(np.mean(a == b)) if a.shape == b.shape else 0.0
        rows = int(np.sum(np.all(a == b, axis=1))) if a.shape == b.shape else 0
        result["same_tokens"], result["same_rows"] = same, rows
        print(f"  greedy agreement: {100 * same:.1f}% of tokens, {rows}/{args.batch} rows "
              f"identical (shapes {a.shape} vs {b.shape})")
    common.write_report(args.json, result=result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
