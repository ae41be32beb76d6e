"""Analytic matmul FLOPs of T5 (multiply-add = 2), for MFU and for sizing a
step (`t5mtl compile`), where XLA's own cost analysis counts a scanned
layer stack's loop body once.

Embedding lookups are gathers (no FLOPs); norms, softmax and activations
are left out (they are not matmuls). A train step is 3x the forward pass
(backward = 2x forward), 4x with full rematerialization (the forward pass
runs again inside the backward pass). For an encoder-decoder this is not
"6 x params x tokens": the encoder's parameters see the input length, the
decoder's the target length, and attention adds length-squared terms.
"""
from __future__ import annotations


def t5_forward_flops(cfg, batch: int, enc_len: int, dec_len: int) -> float:
    """One forward pass of `batch` rows of `enc_len` inputs and `dec_len` targets."""
    d, ff, inner = cfg.d_model, cfg.d_ff, cfg.num_heads * cfg.d_kv
    n_mlp = 3 if cfg.gated else 2
    mlp = n_mlp * 2 * d * ff
    enc_layer = enc_len * (4 * 2 * d * inner + mlp) + 2 * 2 * enc_len * enc_len * inner
    dec_layer = (dec_len * (4 * 2 * d * inner + 2 * 2 * d * inner + mlp)
                 + enc_len * 2 * 2 * d * inner                     # cross-attention K, V
                 + 2 * 2 * dec_len * dec_len * inner + 2 * 2 * dec_len * enc_len * inner)
    logits = dec_len * 2 * d * cfg.vocab_size
    return batch * (cfg.num_layers * enc_layer + cfg.n_decoder_layers * dec_layer + logits)


def t5_train_flops(cfg, batch: int, enc_len: int, dec_len: int) -> float:
    """One train step: 3x forward, 4x under full remat (module docstring)."""
    passes = 4 if cfg.remat_policy == "full" else 3
    return passes * t5_forward_flops(cfg, batch, enc_len, dec_len)
