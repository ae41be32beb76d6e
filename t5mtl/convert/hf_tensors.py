"""The HF checkpoint side shared by the T5 and BERT converters.

Reading an HF model directory (config.json; model.safetensors, its sharded
index or pytorch_model.bin) into numpy, torch Linear <-> t5mtl kernel
layouts, and nested-dict access by parameter path. A torch Linear stores
weight [out, in]; t5mtl kernels are [in, ...out].
"""
from __future__ import annotations

import json
import os
from typing import Callable

import numpy as np

from t5mtl import paths
from t5mtl.errors import T5mtlError

Path = tuple[str, ...]
Layout = tuple[Callable, Callable]          # (to_ours, to_hf)


def linear_in(shape_out: Callable[[int], tuple]) -> Layout:
    """(to_ours, to_hf) for a torch Linear weight [out, in] -> kernel [in, *out]."""
    def to_ours(w):
        return np.ascontiguousarray(w.T).reshape((w.shape[1],) + shape_out(w.shape[0]))

    def to_hf(k):
        return np.ascontiguousarray(k.reshape(k.shape[0], -1).T)
    return to_ours, to_hf


def linear_out(shape_in: Callable[[int], tuple]) -> Layout:
    """Attention output: torch [d_model, heads*kv] -> kernel [heads, kv, d_model]."""
    def to_ours(w):
        return np.ascontiguousarray(w.T).reshape(shape_in(w.shape[1]) + (w.shape[0],))

    def to_hf(k):
        return np.ascontiguousarray(k.reshape(-1, k.shape[-1]).T)
    return to_ours, to_hf


def reshaped(shape: Callable[[int], tuple]) -> Layout:
    """A flat torch vector [n] <-> t5mtl's shape(n) (a bias [heads*kv] -> [heads, kv])."""
    return (lambda b: np.ascontiguousarray(b).reshape(shape(b.shape[0])),
            lambda b: np.ascontiguousarray(b).reshape(-1))


IDENTITY: Layout = (lambda x: x, lambda x: x)
DENSE: Layout = linear_in(lambda out: (out,))


def read_tensors(src: str) -> dict[str, np.ndarray]:
    """Every tensor of an HF directory's weights as float32 numpy arrays."""
    single = os.path.join(src, "model.safetensors")
    index = os.path.join(src, "model.safetensors.index.json")
    torch_bin = os.path.join(src, "pytorch_model.bin")
    if os.path.exists(single):
        from safetensors.numpy import load_file
        return _load_safetensors(single, load_file)
    if os.path.exists(index):
        from safetensors.numpy import load_file
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        tensors = {}
        for shard in shards:
            tensors.update(_load_safetensors(os.path.join(src, shard), load_file))
        return tensors
    if os.path.exists(torch_bin):
        try:
            import torch
        except ImportError as e:
            raise T5mtlError(f"{torch_bin}: reading pytorch_model.bin needs torch "
                             f"(pip install torch==2.13.0)") from e
        state = torch.load(torch_bin, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}
    raise T5mtlError(f"{src}: no weights found (expected model.safetensors, "
                     f"model.safetensors.index.json or pytorch_model.bin)")


def _load_safetensors(path, load_file):
    try:
        tensors = load_file(path)
    except Exception as e:  # safetensors raises its own error types
        raise T5mtlError(f"{path}: not a readable safetensors file ({e})") from e
    return {k: np.asarray(v, np.float32) if v.dtype != np.float32 else v
            for k, v in tensors.items()}


def read_hf_json(src: str) -> dict:
    """An HF directory's config.json as a dict; one T5mtlError line if it is
    not a directory, has none, or it is not JSON."""
    path = paths.join(src, "config.json")
    if not paths.isdir(src):
        paths.check_bucket(src)
        raise T5mtlError(f"{src}: not a directory")
    if not paths.exists(path):
        raise T5mtlError(f"{src}: no config.json (not an HF model directory)")
    try:
        d = json.loads(paths.read_text(path))
    except json.JSONDecodeError as e:
        raise T5mtlError(f"{path}: not valid JSON ({e})") from e
    return d


def get_path(tree, path: Path):
    for p in path:
        tree = tree[p]
    return tree


def set_path(tree, path: Path, value) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value
