"""CLIP (Radford et al. 2021) behind the model protocol: an image tower and a
text tower trained contrastively on (image, caption) pairs.

  image [b, H, W, C] -> ViT (t5mtl.models.vit) -> CLS token [b, hidden]
                     -> image_projection [hidden, D] -> l2-normalize -> u [b, D]
  text_tokens [b, L] -> T5's encoder (encoder backbone) -> mean pool [b, d_model]
                     -> text_projection [d_model, D] -> l2-normalize -> v [b, D]
  logits = exp(logit_scale) * u v^T     (the scale capped at 100)
  loss   = symmetric InfoNCE over the global batch (t5mtl.models.contrastive):
           image -> text and text -> image, each pair's own caption the positive

The text tower is T5's encoder as an encoder backbone
(t5mtl.models.encoder_backbone): through its seams, mean-pooled over real
tokens. Its parameters keep T5's names (`token_embedder/...`,
`encoder/...`) at the top of the tree, so a T5 checkpoint's encoder loads
into the text tower by name (CheckpointConfig.init_from).

Parameters:

  vision/...                     the ViT's (its own names)
  token_embedder/..., encoder/...  the text encoder's (T5's names)
  image_projection/kernel        [hidden, D]   logical axes (embed, mlp)
  text_projection/kernel         [d_model, D]  logical axes (embed, mlp)
  logit_scale                    []            log of the temperature's inverse,
                                               initialized to log(1 / 0.07)

Projections have no bias and are initialized N(0, in_dim ** -0.5) as
OpenAI's CLIP does.

Batches come from ImageTextFeatureConverter (t5mtl.data.vision_features):
"image" float32 [b, H, W, C] and "text_tokens" int32 [b, L], one pair per row
(DataConfig.pack = False). A row whose text is all padding is a padding row:
left out of the loss and of every other row's negatives.

Metrics: loss, accuracy = the share of images whose best caption in the
batch is their own (in-batch top-1), and logit_scale (the scale in use).
score_batch: each pair's logit ([b]); predict_batch: the index of each
image's best caption in the batch ([b, 1]). For evaluation (zero-shot
classifiers, retrieval, linear probes: t5mtl.infer.clip_eval) use
`image_embeddings`, `text_embeddings` and `image_features`.

Pitfall: the negatives are the batch's, so gradient accumulation
(num_microbatches > 1) trains with fewer negatives per step than the batch.

In gin:

    train.model = @CLIP()
    CLIP.vision = @get_vit_config()
    CLIP.text = @get_config()
    CLIP.embed_dim = 64
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from t5mtl.errors import T5mtlError
from t5mtl.models import contrastive, losses
from t5mtl.models.base import BaseModel, Batch
from t5mtl.models.config import T5Config
from t5mtl.models.encoder_backbone import backbone_from_spec, encoder_backbone
from t5mtl.models.vit import ViTConfig, VisionTransformer, check_pixels

OWN = ("vision", "image_projection", "text_projection", "logit_scale")
PROJECTION_AXES = ("embed", "mlp")


def _check_tokens(tokens) -> None:
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise T5mtlError(f"feature 'text_tokens': expected int token ids [batch, length], "
                         f"got {tokens.dtype} {list(tokens.shape)}")


def _valid(batch: Batch) -> jax.Array:
    return jnp.any(jnp.asarray(batch["text_tokens"]) > 0, axis=-1)


@gin.configurable
class CLIP(BaseModel):
    """An image-text dual encoder with a learned temperature (module docstring)."""

    def __init__(self, vision=gin.REQUIRED, text=gin.REQUIRED, embed_dim: int = 64,
                 init_temperature: float = 0.07,
                 max_logit_scale: float = contrastive.MAX_LOGIT_SCALE,
                 image_feature: str = "image", text_spec=None):
        if isinstance(vision, Mapping):
            vision = ViTConfig.from_dict(vision)
        if not isinstance(vision, ViTConfig):
            raise T5mtlError(f"CLIP.vision must be a ViTConfig (@get_vit_config()), got "
                             f"{vision!r}")
        if not (isinstance(embed_dim, int) and embed_dim > 0):
            raise T5mtlError(f"CLIP.embed_dim must be a positive integer, got {embed_dim!r}")
        if not 0 < init_temperature:
            raise T5mtlError(f"CLIP.init_temperature must be positive, got "
                             f"{init_temperature!r}")
        if not 1.0 / init_temperature <= max_logit_scale:
            raise T5mtlError(f"CLIP.init_temperature {init_temperature!r} gives a logit scale "
                             f"above max_logit_scale {max_logit_scale!r}")
        self.vision = vision
        self.vit = VisionTransformer(vision)
        if text_spec is None and not isinstance(text, T5Config):
            raise T5mtlError(f"CLIP.text must be a T5Config (@get_config()), got {text!r}")
        self.backbone = (backbone_from_spec(text_spec) if text_spec is not None
                         else encoder_backbone(text))
        if self.backbone.family != "t5":
            raise T5mtlError(f"CLIP's text tower is T5's encoder, got a "
                             f"{self.backbone.family!r} backbone")
        self.embed_dim = embed_dim
        self.init_temperature = float(init_temperature)
        self.max_logit_scale = float(max_logit_scale)
        self.image_feature = str(image_feature)

    # -- what it is ---------------------------------------------------------------
    def spec(self) -> dict:
        return {"vision": self.vision.to_dict(), "text_spec": self.backbone.spec(),
                "embed_dim": self.embed_dim, "init_temperature": self.init_temperature,
                "max_logit_scale": self.max_logit_scale, "image_feature": self.image_feature}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "CLIP":
        return cls(text=None, **spec)

    def architecture(self) -> dict:
        v = self.vision
        return {"family": "clip", "text": {"family": self.backbone.family,
                                           **self.backbone.architecture()},
                "vision": {k: getattr(v, k) for k in (
                    "image_size", "patch_size", "channels", "num_frames", "hidden_size",
                    "num_layers", "num_heads", "mlp_dim", "layer_norm_eps", "scan_layers")},
                "embed_dim": self.embed_dim, "max_logit_scale": self.max_logit_scale}

    # -- data ---------------------------------------------------------------------
    def feature_converter(self, pack: bool = True, task_ids=()):
        if pack:
            raise T5mtlError("CLIP reads one (image, caption) pair per row: set "
                             "DataConfig.pack = False")
        from t5mtl.data.vision_features import ImageTextFeatureConverter
        return ImageTextFeatureConverter(image_feature=self.image_feature,
                                         image_shape=self.vision.pixel_shape)

    # -- parameters ---------------------------------------------------------------
    def init_boxed(self, rng):
        text_rng, vision_rng, image_rng, text_proj_rng = jax.random.split(rng, 4)
        pixels = jnp.zeros((1, *self.vision.pixel_shape), jnp.float32)
        params = dict(self.backbone.init(text_rng))
        params["vision"] = self.vit.init(vision_rng, pixels, True)["params"]
        for name, key, width in (("image_projection", image_rng, self.vision.hidden_size),
                                 ("text_projection", text_proj_rng, self.backbone.d_model)):
            kernel = jax.random.normal(key, (width, self.embed_dim), jnp.float32) * width ** -0.5
            params[name] = {"kernel": nn.LogicallyPartitioned(kernel, PROJECTION_AXES)}
        params["logit_scale"] = jnp.asarray(math.log(1.0 / self.init_temperature), jnp.float32)
        return params

    def adapt_params(self, params):
        """The text tower's params in its layout; the image side as it is;
        anything else (a T5 source's decoder) dropped."""
        out = {k: v for k, v in params.items() if k in OWN}
        out.update(self.backbone.adapt_params(
            {k: v for k, v in params.items() if k in self.backbone.subtrees}))
        return out

    # -- forward ------------------------------------------------------------------
    def image_features(self, params, pixels, dropout_rng=None) -> jax.Array:
        """float32 [b, hidden]: the ViT's CLS output (before the projection)."""
        check_pixels(pixels, self.vision, self.image_feature)
        rngs = None if dropout_rng is None else {"dropout": dropout_rng}
        tokens = self.vit.apply({"params": params["vision"]}, pixels, dropout_rng is None,
                                rngs=rngs)
        return tokens[:, 0].astype(jnp.float32)

    def text_features(self, params, tokens, dropout_rng=None) -> jax.Array:
        """float32 [b, d_model]: the text encoder pooled (before the projection)."""
        tokens = jnp.asarray(tokens)
        _check_tokens(tokens)
        tower = {k: params[k] for k in self.backbone.subtrees}
        encoded = self.backbone.encode(tower, tokens, None, dropout_rng)
        return self.backbone.pooled(tower, encoded).astype(jnp.float32)

    def image_embeddings(self, params, pixels, dropout_rng=None) -> jax.Array:
        """float32 [b, D], unit length: the image side of the joint space."""
        kernel = params["image_projection"]["kernel"].astype(jnp.float32)
        return contrastive.l2_normalize(self.image_features(params, pixels, dropout_rng)
                                        @ kernel)

    def text_embeddings(self, params, tokens, dropout_rng=None) -> jax.Array:
        """float32 [b, D], unit length: the text side of the joint space."""
        kernel = params["text_projection"]["kernel"].astype(jnp.float32)
        return contrastive.l2_normalize(self.text_features(params, tokens, dropout_rng)
                                        @ kernel)

    def scale(self, params) -> jax.Array:
        """The logit scale in use: exp(logit_scale), at most max_logit_scale."""
        return contrastive.logit_scale(params["logit_scale"], self.max_logit_scale)

    def embeddings(self, params, batch: Batch, dropout_rng=None):
        rngs = (None, None) if dropout_rng is None else tuple(jax.random.split(dropout_rng))
        return (self.image_embeddings(params, batch[self.image_feature], rngs[0]),
                self.text_embeddings(params, batch["text_tokens"], rngs[1]))

    def _check_batch(self, batch: Batch) -> None:
        for name in (self.image_feature, "text_tokens"):
            if name not in batch:
                raise T5mtlError(f"CLIP batch has no feature {name!r} (features: "
                                 f"{sorted(batch)}); batches come from "
                                 f"ImageTextFeatureConverter")
        check_pixels(batch[self.image_feature], self.vision, self.image_feature)
        _check_tokens(jnp.asarray(batch["text_tokens"]))

    def loss_denominator(self, batch: Batch, num_tasks: int = 0) -> dict:
        return {"loss": jnp.maximum(jnp.sum(_valid(batch).astype(jnp.float32)), 1.0)}

    def loss_fn(self, params, batch: Batch, dropout_rng, num_tasks: int = 0):
        self._check_batch(batch)
        use_dropout = dropout_rng is not None and (
            self.vision.dropout_rate > 0 or self.backbone.dropout_rate > 0)
        u, v = self.embeddings(params, batch, dropout_rng if use_dropout else None)
        valid = _valid(batch)
        count = jnp.sum(valid.astype(jnp.float32))
        denominator = batch.get(losses.LOSS_DENOMINATOR_KEY) or self.loss_denominator(batch)
        share = count / denominator["loss"]        # 1 without microbatches: additive metrics
        scale = self.scale(params)
        mean = contrastive.info_nce(u, v, scale, symmetric=True, valid=valid)
        scores = jnp.where(valid[None, :], u @ v.T, -jnp.inf)
        right = (jnp.argmax(scores, axis=1) == jnp.arange(u.shape[0])) & valid
        metrics = {"loss": mean * share, "num_sequences": count, "target_tokens": count,
                   "correct_tokens": jnp.sum(right.astype(jnp.float32)),
                   "logit_scale": jax.lax.stop_gradient(scale) * share}
        return mean * share, losses.finalize_metrics(metrics)

    # -- scores and predictions -----------------------------------------------------
    def score_batch(self, params, batch: Batch):
        """[b]: each image's logit (scaled cosine) with its own caption."""
        self._check_batch(batch)
        u, v = self.embeddings(params, batch)
        return self.scale(params) * jnp.sum(u * v, axis=-1)

    def predict_batch(self, params, batch: Batch, decode=None, rng=None):
        """int32 [b, 1]: the index of each image's best caption in the batch."""
        self._check_batch(batch)
        u, v = self.embeddings(params, batch)
        scores = jnp.where(_valid(batch)[None, :], u @ v.T, -jnp.inf)
        return jnp.argmax(scores, axis=1).astype(jnp.int32)[:, None]
