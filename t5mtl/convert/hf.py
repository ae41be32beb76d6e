"""HF transformers T5ForConditionalGeneration <-> t5mtl params.

A torch Linear stores weight [out, in]; t5mtl kernels are [in, ...out]. The
name table below is the single place that knows both layouts; import and
export both read it, so they cannot drift apart.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Iterator

import numpy as np

from t5mtl import paths
from t5mtl.convert.atomic_dir import atomic_directory
from t5mtl.convert.hf_tensors import (DENSE as _DENSE, IDENTITY as _IDENTITY, Path,
                                      get_path as _get, linear_in as _linear_in,
                                      linear_out as _linear_out, read_hf_json,
                                      read_tensors as _read_tensors, set_path as _set)
from t5mtl.errors import T5mtlError
from t5mtl.models.config import T5Config

__all__ = ["name_table", "read_hf_config", "read_hf_json", "import_hf", "export_hf",
           "hf_vocabulary_spec"]


def name_table(cfg: T5Config) -> Iterator[tuple[str, Path, tuple[Callable, Callable]]]:
    """Yields (hf_name, t5mtl_path, (to_ours, to_hf)) for every parameter."""
    heads = lambda n: (cfg.num_heads, n // cfg.num_heads)
    qkv = _linear_in(heads)
    out = _linear_out(heads)
    yield "shared.weight", ("token_embedder", "embedding"), _IDENTITY

    def attention(hf, ours):
        for p, q in (("q", "query"), ("k", "key"), ("v", "value")):
            yield f"{hf}.{p}.weight", ours + (q, "kernel"), qkv
        yield f"{hf}.o.weight", ours + ("out", "kernel"), out

    def mlp(hf, ours):
        wis = ("wi_0", "wi_1") if cfg.gated else ("wi",)
        for wi in wis:
            yield f"{hf}.{wi}.weight", ours + (wi, "kernel"), _DENSE
        yield f"{hf}.wo.weight", ours + ("wo", "kernel"), _DENSE

    for stack, n_layers in (("encoder", cfg.num_layers), ("decoder", cfg.n_decoder_layers)):
        yield (f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
               (stack, "relpos_bias", "rel_embedding"), _IDENTITY)
        for i in range(n_layers):
            hf, ours = f"{stack}.block.{i}.layer", (stack, f"layers_{i}")
            if stack == "encoder":
                yield f"{hf}.0.layer_norm.weight", ours + ("pre_attention_layer_norm", "scale"), \
                    _IDENTITY
                yield from attention(f"{hf}.0.SelfAttention", ours + ("attention",))
                ff = 1
            else:
                yield (f"{hf}.0.layer_norm.weight",
                       ours + ("pre_self_attention_layer_norm", "scale"), _IDENTITY)
                yield from attention(f"{hf}.0.SelfAttention", ours + ("self_attention",))
                yield (f"{hf}.1.layer_norm.weight",
                       ours + ("pre_cross_attention_layer_norm", "scale"), _IDENTITY)
                yield from attention(f"{hf}.1.EncDecAttention",
                                     ours + ("encoder_decoder_attention",))
                ff = 2
            yield f"{hf}.{ff}.layer_norm.weight", ours + ("pre_mlp_layer_norm", "scale"), _IDENTITY
            yield from mlp(f"{hf}.{ff}.DenseReluDense", ours + ("mlp",))
        norm = "encoder_norm" if stack == "encoder" else "decoder_norm"
        yield f"{stack}.final_layer_norm.weight", (stack, norm, "scale"), _IDENTITY
    if not cfg.tie_word_embeddings:
        yield "lm_head.weight", ("decoder", "logits_dense", "kernel"), _DENSE


# -- reading -------------------------------------------------------------------

def read_hf_config(src: str) -> T5Config:
    return T5Config.from_hf_dict(read_hf_json(src), source=os.path.join(src, "config.json"))


def import_hf(src: str) -> tuple[T5Config, dict]:
    """Reads an HF T5 directory (a gs:// one is downloaded to a temporary
    directory first); returns (config, params) with numpy leaves."""
    if paths.is_cloud(src):
        with paths.local_copy(src, "HF model directory") as local:
            return import_hf(local)
    from t5mtl.models.init import param_shapes
    d = read_hf_json(src)
    cfg = T5Config.from_hf_dict(d, source=os.path.join(src, "config.json"))
    tensors = _read_tensors(src)
    cfg = _output_head(src, d, cfg, tensors)
    expected = param_shapes(cfg)
    for name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        if name in tensors and not np.array_equal(tensors[name], tensors.get("shared.weight")):
            raise T5mtlError(f"{src}: {name!r} differs from 'shared.weight'; t5mtl's T5 shares "
                             f"one input embedding")
    params: dict = {}
    for hf_name, path, (to_ours, _) in name_table(cfg):
        if hf_name not in tensors:
            raise T5mtlError(f"{src}: weights lack tensor {hf_name!r} that config.json implies")
        value = to_ours(tensors[hf_name])
        want = _get(expected, path).shape
        if value.shape != tuple(want):
            raise T5mtlError(f"{src}: tensor {hf_name!r} has shape {tensors[hf_name].shape}, "
                             f"which does not fit config.json (t5mtl {'/'.join(path)} wants "
                             f"{tuple(want)})")
        _set(params, path, value)
    return cfg, params


def _output_head(src: str, d: dict, cfg: T5Config, tensors: dict) -> T5Config:
    """Puts the output layer t5mtl computes into tensors["lm_head.weight"];
    returns cfg, untied where the checkpoint's head is its own.

    t5mtl has two heads: tied (the embedding, output scaled by
    d_model**-0.5) and untied (a dense kernel, unscaled). An HF head is the
    checkpoint's lm_head.weight when it is there and differs from the
    embedding, else the embedding; an HF scaling with an untied head is
    folded into the kernel, so every (tied, scaled) combination computes
    the same logits as transformers (which, like this, keeps an lm_head
    that differs from the embedding even where the config says tied).
    """
    from t5mtl.models.config import hf_output_layer
    tied, scaled = hf_output_layer(d)
    head = tensors.get("lm_head.weight")
    own_head = head is not None and not (
        "shared.weight" in tensors and np.array_equal(head, tensors["shared.weight"]))
    if not tied and not own_head:
        raise T5mtlError(f"{src}: config.json has tie_word_embeddings=false but the weights "
                         f"have no lm_head.weight of their own")
    if cfg.tie_word_embeddings and not own_head:
        tensors.pop("lm_head.weight", None)
        return cfg
    cfg = cfg.replace(tie_word_embeddings=False)
    if "shared.weight" not in tensors and not own_head:
        return cfg                              # the table reports the missing tensor
    weight = head if own_head else tensors["shared.weight"]
    tensors["lm_head.weight"] = weight * np.float32(cfg.d_model ** -0.5) if scaled else weight
    return cfg


# -- writing -------------------------------------------------------------------

def export_hf(cfg: T5Config, params: dict, dst: str) -> None:
    """Writes config.json + model.safetensors that transformers loads.

    The directory appears whole or not at all: files go to a temporary
    sibling directory that is renamed into place (a gs:// `dst`:
    model.safetensors is uploaded first, config.json last).
    """
    from safetensors.numpy import save_file
    if cfg.scan_layers:
        from t5mtl.models.layout import unstack_layers
        params = unstack_layers(params, cfg)
    tensors = {}
    for hf_name, path, (_, to_hf) in name_table(cfg):
        tensors[hf_name] = np.asarray(to_hf(np.asarray(_get(params, path), np.float32)))
    # transformers ties these to `shared`; write them so any loader finds them.
    tensors["encoder.embed_tokens.weight"] = tensors["shared.weight"]
    tensors["decoder.embed_tokens.weight"] = tensors["shared.weight"]
    with atomic_directory(dst, stage_locally=True) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                  os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(cfg.to_hf_dict(), f, indent=2)


def hf_vocabulary_spec(src: str) -> dict | None:
    """T5's SentencePiece model if the HF directory ships one (spiece.model)."""
    path = paths.join(src, "spiece.model")
    if paths.isfile(path):
        return {"kind": "sentencepiece", "path": paths.absolute(path), "extra_ids": 100}
    return None
