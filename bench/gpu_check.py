"""One-GPU check: t5mtl's train step and greedy decoding against HF PyTorch T5
on the same GPU, with identical initial weights.

  python bench/gpu_check.py [--model t5_1_1_small --batch 64 --inputs 512 --targets 114]

Train: t5mtl's jitted step (make_train_step, Adafactor, bfloat16 activations,
float32 params) vs HF T5ForConditionalGeneration with torch AdamW under
bfloat16 autocast. Decode: greedy, batch 8 x 512 inputs, 64 new tokens, KV
cache, vs HF generate. Prints one JSON object per measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _emit(**kw):
    print(json.dumps(kw), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="t5_1_1_small")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--inputs", type=int, default=512)
    p.add_argument("--targets", type=int, default=114)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--peak_tflops", type=float, default=989.0, help="bf16 dense peak")
    args = p.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers

    from t5mtl.convert.hf import export_hf
    from t5mtl.models import count_params, get_config, init_params
    from t5mtl.models.encoder_decoder import DecodeConfig, EncoderDecoderModel
    from t5mtl.train import optimizers, partitioning
    from t5mtl.train.train_step import TrainState, make_train_step

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    _emit(jax=jax.__version__, devices=str(jax.devices()), torch=torch.__version__,
          torch_device=torch.cuda.get_device_name(0) if dev == "cuda" else "cpu")
    cfg = get_config(args.model, dropout_rate=0.0)
    n_params = count_params(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    host_params = jax.device_get(params)       # the train step donates `params`
    hf_dir = os.path.join(tempfile.mkdtemp(), "hf")
    export_hf(cfg, host_params, hf_dir)

    rng = np.random.RandomState(0)
    b, le, lt = args.batch, args.inputs, args.targets
    enc = rng.randint(2, cfg.vocab_size, (b, le)).astype(np.int32)
    tgt = rng.randint(2, cfg.vocab_size, (b, lt)).astype(np.int32)
    dec_in = np.concatenate([np.zeros((b, 1), np.int32), tgt[:, :-1]], 1)
    batch = {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in,
             "decoder_target_tokens": tgt, "decoder_loss_weights": np.ones_like(tgt, np.float32)}
    tokens = b * (le + lt)
    flops = 6 * n_params * tokens  # matmul FLOPs of forward + backward, attention excluded

    # --- t5mtl train step --------------------------------------------------
    model = EncoderDecoderModel(cfg.replace(dtype="bfloat16"))
    tx = optimizers.create_optimizer("adafactor", learning_rate=1e-3)
    step = jax.jit(make_train_step(model.loss_fn, tx), donate_argnums=(0,))
    state = TrainState.create(params, tx, jax.random.PRNGKey(1))
    gbatch = {k: jnp.asarray(v) for k, v in batch.items()}
    state, m = step(state, gbatch)
    first_loss = float(m["loss"])
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        state, m = step(state, gbatch)
    jax.block_until_ready(state)
    dt = (time.perf_counter() - t0) / args.steps
    _emit(system="t5mtl", what="train_step_bf16", first_loss=first_loss, step_ms=dt * 1e3,
          tokens_per_s=tokens / dt, mfu=flops / dt / (args.peak_tflops * 1e12))
    del state

    # --- HF torch train step ---------------------------------------------------
    torch.manual_seed(0)
    hf = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir).to(dev).train()
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-3)
    t_enc, t_lab = torch.tensor(enc).long().to(dev), torch.tensor(tgt).long().to(dev)

    def torch_step():
        with torch.autocast(dev, dtype=torch.bfloat16):
            loss = hf(input_ids=t_enc, labels=t_lab).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    first = float(torch_step())
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        torch_step()
    sync()
    dt_t = (time.perf_counter() - t0) / args.steps
    _emit(system="hf_torch", what="train_step_bf16_autocast", first_loss=first,
          step_ms=dt_t * 1e3, tokens_per_s=tokens / dt_t,
          mfu=flops / dt_t / (args.peak_tflops * 1e12), t5mtl_speedup=dt_t / dt)
    del hf, opt
    if dev == "cuda":
        torch.cuda.empty_cache()

    # --- greedy decoding ------------------------------------------------------------
    denc = enc[:8]
    # eos_id -1: no early stop, 64 tokens.
    run = EncoderDecoderModel(cfg).decoder(DecodeConfig(max_decode_length=64, eos_id=-1))
    dparams = jax.device_put(host_params)
    ids = np.asarray(run(dparams, denc, jax.random.PRNGKey(0)))
    t0 = time.perf_counter()
    for _ in range(5):
        ids = np.asarray(run(dparams, denc, jax.random.PRNGKey(0)))
    dt = (time.perf_counter() - t0) / 5
    hf = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir).to(dev).eval()
    with torch.no_grad():
        ref = hf.generate(input_ids=torch.tensor(denc).long().to(dev), max_new_tokens=64,
                          min_new_tokens=64, do_sample=False, num_beams=1)
        sync()
        t0 = time.perf_counter()
        for _ in range(5):
            ref = hf.generate(input_ids=torch.tensor(denc).long().to(dev), max_new_tokens=64,
                              min_new_tokens=64, do_sample=False, num_beams=1)
        sync()
    dt_hf = (time.perf_counter() - t0) / 5
    ref = ref.cpu().numpy()[:, 1:]
    agree = float(np.mean(ids[:, :ref.shape[1]] == ref))
    _emit(what="greedy_decode_b8_512_64", t5mtl_tokens_per_s=8 * 64 / dt,
          hf_tokens_per_s=8 * 64 / dt_hf, t5mtl_speedup=dt_hf / dt,
          token_agreement_fp32=agree)


if __name__ == "__main__":
    main()
