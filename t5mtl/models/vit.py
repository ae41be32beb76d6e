"""Vision Transformer (Dosovitskiy et al. 2021) in Flax Linen, for images and videos.

The arithmetic of an image model is HF transformers' `ViTModel` (without its
pooler), so its weights map one to one (tests/models/test_vit.py converts a
state dict):

    patches:   non-overlapping p x p patches, row-major over the grid, each
               flattened (p, p, C) and projected (a conv with stride p)
    tokens:    [CLS] + patches, plus learned position embeddings
    layer:     x = x + out(attn(LN(x)));  x = x + wo(gelu(wi(LN(x))))   (pre-LN)
    output:    LN(x): [batch, num_tokens, hidden], [CLS] at index 0

Attention scales scores by head_dim**-0.5; GELU is the exact (erf) one, HF's
"gelu"; layer norms subtract the mean with torch's biased variance and run in
float32; every dense layer has a bias.

Video (`num_frames` T > 1): pixels [b, T, H, W, C]. Every frame is cut into
patches as an image is; frame t's patches get the spatial position embedding
(shared by all frames) plus a learned temporal embedding of frame t. The
tokens are one [CLS] followed by frame 0's patches, frame 1's, ... .

Parameter tree (unscanned; with `scan_layers` the `layers_i` become one
`layers` subtree whose leaves gain a leading axis named `layers`):

  patch_embedding/kernel     [p, p, C, embed]     (conv HWIO layout)
  patch_embedding/bias       [embed]
  cls_token                  [embed]
  position_embedding         [1 + (H/p)*(W/p), embed]   (row 0: [CLS])
  temporal_embedding         [T, embed]           (video models only)
  layers_i/pre_attention_layer_norm/{scale, bias}          [embed]
  layers_i/attention/{query, key, value}/kernel  [embed, heads, kv], bias [heads, kv]
  layers_i/attention/out/kernel                  [heads, kv, embed], bias [embed]
  layers_i/pre_mlp_layer_norm/{scale, bias}
  layers_i/mlp/wi/kernel [embed, mlp], bias [mlp];  mlp/wo/kernel [mlp, embed], bias [embed]
  encoder_norm/{scale, bias}

Logical axis names are T5's (embed, heads, kv, mlp; abspos_buckets for the
position tables), so t5mtl.train.partitioning's rules shard them.
Activations run in config.dtype; layer norms and the returned tokens are
float32.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np

from t5mtl.errors import T5mtlError
from t5mtl.models.bert import NamedDense, TorchLayerNorm
from t5mtl.models.t5 import layer_stack

__all__ = ["ViTConfig", "VIT_CONFIGS", "get_vit_config", "check_pixels", "VisionTransformer"]

REMAT_CHOICES = ("none", "full", "dots_saveable")


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Architecture of a ViT (image when num_frames == 1, video otherwise).

    `scan_layers` and `remat` are execution choices, as T5Config's
    `scan_layers` and `remat_policy` (none | full | dots_saveable).
    """
    image_size: int = 16
    patch_size: int = 4
    channels: int = 3
    num_frames: int = 1
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    mlp_dim: int = 128
    layer_norm_eps: float = 1e-12
    dropout_rate: float = 0.0
    initializer_range: float = 0.02
    dtype: str = "float32"
    scan_layers: bool = False
    remat: str = "none"

    def __post_init__(self):
        positive = ("image_size", "patch_size", "channels", "num_frames", "hidden_size",
                    "num_layers", "num_heads", "mlp_dim")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise T5mtlError(f"ViTConfig.{name}={value!r}; expected a positive integer")
        if self.image_size % self.patch_size:
            raise T5mtlError(f"ViTConfig.image_size={self.image_size} is not a multiple of "
                             f"patch_size={self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise T5mtlError(f"ViTConfig.hidden_size={self.hidden_size} is not a multiple of "
                             f"num_heads={self.num_heads}")
        if self.dtype not in ("float32", "bfloat16"):
            raise T5mtlError(f"ViTConfig.dtype={self.dtype!r}; expected float32 or bfloat16")
        if self.remat not in REMAT_CHOICES:
            raise T5mtlError(f"ViTConfig.remat={self.remat!r}; expected one of {REMAT_CHOICES}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise T5mtlError(f"ViTConfig.dropout_rate={self.dropout_rate!r}; expected [0, 1)")

    @property
    def remat_policy(self) -> str:
        """`remat` under T5Config's name (t5.py's layer stack reads it)."""
        return self.remat

    @property
    def is_video(self) -> bool:
        return self.num_frames > 1

    @property
    def pixel_shape(self) -> tuple[int, ...]:
        """One example's pixels: (H, W, C), or (T, H, W, C) for a video."""
        image = (self.image_size, self.image_size, self.channels)
        return (self.num_frames,) + image if self.is_video else image

    @property
    def patches_per_frame(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """[CLS] + every frame's patches."""
        return 1 + self.num_frames * self.patches_per_frame

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def replace(self, **changes) -> "ViTConfig":
        return _replace(self, changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ViTConfig":
        return _replace(cls(), dict(d))


def _replace(config: ViTConfig, changes: dict[str, Any]) -> ViTConfig:
    names = {f.name for f in dataclasses.fields(ViTConfig)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise T5mtlError(f"unknown ViTConfig fields {unknown}; known: {sorted(names)}")
    return dataclasses.replace(config, **changes)


VIT_CONFIGS: dict[str, ViTConfig] = {
    "vit_tiny": ViTConfig(),
    "vit_tiny_video": ViTConfig(num_frames=4),
}


@gin.configurable
def get_vit_config(name: str = "vit_tiny", **overrides) -> ViTConfig:
    """A named ViTConfig (VIT_CONFIGS) with fields replaced by `overrides`."""
    if name not in VIT_CONFIGS:
        raise T5mtlError(f"unknown ViT config {name!r}; known: {', '.join(sorted(VIT_CONFIGS))}")
    return _replace(VIT_CONFIGS[name], overrides)


def check_pixels(pixels, config: ViTConfig, feature: str) -> None:
    """Raises T5mtlError (one line naming `feature`) unless `pixels` is a
    floating array [batch, *config.pixel_shape]. Works on numpy and jax
    arrays and on tracers (it reads only shape and dtype)."""
    shape = tuple(getattr(pixels, "shape", ()))
    dtype = getattr(pixels, "dtype", None)
    expected = config.pixel_shape
    floating = dtype is not None and jnp.issubdtype(dtype, jnp.floating)
    if floating and len(shape) == len(expected) + 1 and shape[1:] == expected:
        return
    want = ", ".join(["batch"] + [str(s) for s in expected])
    got = ", ".join(str(s) for s in shape)
    name = dtype.name if dtype is not None else type(pixels).__name__
    raise T5mtlError(f"feature {feature!r}: expected float pixels [{want}], got {name} [{got}]")


def _param(module: nn.Module, name: str, shape: tuple[int, ...], axes: tuple, stddev: float):
    init = nn.with_logical_partitioning(nn.initializers.normal(stddev), axes)
    return module.param(name, init, shape, jnp.float32)


class _Attention(nn.Module):
    """Multi-head self-attention with biased projections, scores * head_dim**-0.5."""
    config: ViTConfig
    deterministic: bool

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        dtype, std = jnp.dtype(cfg.dtype), cfg.initializer_range
        heads = (cfg.num_heads, cfg.head_dim)
        proj = lambda name: NamedDense(heads, ("embed", "heads", "kv"), std, 1, dtype, name=name)(x)
        q, k, v = proj("query"), proj("key"), proj("value")
        q = nn.with_logical_constraint(q, ("batch", "length", "heads", "kv"))
        k = nn.with_logical_constraint(k, ("batch", "length", "heads", "kv"))
        v = nn.with_logical_constraint(v, ("batch", "length", "heads", "kv"))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        probs = jax.nn.softmax(scores * np.float32(cfg.head_dim ** -0.5), axis=-1)
        probs = nn.Dropout(cfg.dropout_rate)(probs, deterministic=self.deterministic)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(dtype), v)
        return NamedDense((cfg.hidden_size,), ("heads", "kv", "embed"), std, 2, dtype,
                      name="out")(ctx)


class _Layer(nn.Module):
    """One pre-LN block. Called as `(x) -> (x, None)`, the form t5.py's
    `layer_stack` loops or scans."""
    config: ViTConfig
    deterministic: bool

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        drop = lambda h: nn.Dropout(cfg.dropout_rate)(h, deterministic=self.deterministic)
        h = TorchLayerNorm(cfg.layer_norm_eps, dtype, name="pre_attention_layer_norm")(x)
        h = _Attention(cfg, self.deterministic, name="attention")(h)
        x = x + drop(h).astype(jnp.float32)
        h = TorchLayerNorm(cfg.layer_norm_eps, dtype, name="pre_mlp_layer_norm")(x)
        h = _MLP(cfg, name="mlp")(h)
        x = x + drop(h).astype(jnp.float32)
        return nn.with_logical_constraint(x, ("batch", "length", "embed")), None


class _MLP(nn.Module):
    """wo(gelu(wi(x))), exact GELU, both dense layers biased."""
    config: ViTConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        dtype, std = jnp.dtype(cfg.dtype), cfg.initializer_range
        h = NamedDense((cfg.mlp_dim,), ("embed", "mlp"), std, 1, dtype, name="wi")(x)
        h = nn.with_logical_constraint(jax.nn.gelu(h, approximate=False),
                                       ("batch", "length", "mlp"))
        return NamedDense((cfg.hidden_size,), ("mlp", "embed"), std, 1, dtype, name="wo")(h)


def patchify(pixels, patch_size: int):
    """[..., H, W, C] -> [..., (H/p)*(W/p), p, p, C]: patches row-major over the
    grid (the order of HF's conv output flattened)."""
    *lead, h, w, c = pixels.shape
    p = patch_size
    x = pixels.reshape(*lead, h // p, p, w // p, p, c)
    x = jnp.moveaxis(x, -4, -3)               # [..., H/p, W/p, p, p, C]
    return x.reshape(*lead, (h // p) * (w // p), p, p, c)


class VisionTransformer(nn.Module):
    """pixels [b, H, W, C] (or [b, T, H, W, C] for a video), float in any
    range -> float32 tokens [b, num_tokens, hidden]: [CLS] at index 0, after
    the final LayerNorm."""
    config: ViTConfig

    @nn.compact
    def __call__(self, pixels, deterministic: bool = True):
        cfg = self.config
        check_pixels(pixels, cfg, "pixels")
        dtype, std = jnp.dtype(cfg.dtype), cfg.initializer_range
        b, p, d = pixels.shape[0], cfg.patch_size, cfg.hidden_size
        frames = pixels.reshape((b, cfg.num_frames) + pixels.shape[-3:])
        patches = patchify(frames.astype(dtype), p)          # [b, T, P, p, p, C]
        x = NamedDense((d,), (None, None, None, "embed"), std, 3, dtype,
                   name="patch_embedding")(patches).astype(jnp.float32)     # [b, T, P, d]

        positions = _param(self, "position_embedding", (1 + cfg.patches_per_frame, d),
                           ("abspos_buckets", "embed"), std)
        x = x + positions[1:]
        if cfg.is_video:
            temporal = _param(self, "temporal_embedding", (cfg.num_frames, d),
                              ("abspos_buckets", "embed"), std)
            x = x + temporal[:, None, :]
        cls = _param(self, "cls_token", (d,), ("embed",), std) + positions[0]
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)),
                             x.reshape(b, cfg.num_frames * cfg.patches_per_frame, d)], axis=1)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        x = layer_stack(_Layer, cfg, cfg.num_layers, 0, deterministic=deterministic)(x)
        return TorchLayerNorm(cfg.layer_norm_eps, jnp.float32, name="encoder_norm")(x)
