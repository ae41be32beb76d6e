"""LAVENDER (Li et al. 2023): video-language tasks as one masked-LM task.

  video [b, T, H, W, C] -> video ViT (t5mtl.models.vit) -> [b, n, h]
        -> linear projection -> [b, n, d_model]          (the visual tokens)
  [visual tokens ; text embeddings] -> T5's encoder -> one MLM head

T5's encoder is reached through `Transformer`'s seams (`encoder_inputs`,
`encode_embedded`), as t5mtl.models.encoder_backbone does: the visual tokens
are prepended to the embedded text (segment id 1: every text token attends to
them and they to the text) and the stack runs over the longer sequence. The
MLM head is the encoder backbone's (`T5EncoderBackbone.mlm_logits`: the tied
token embedding), read at the text positions only. Parameters:

  token_embedder/..., encoder/...     T5's names (a T5 checkpoint's encoder loads)
  video_encoder/...                   the ViT's
  video_projection/kernel             [vit hidden, d_model]

Every task is a masked-LM row (t5mtl.data.lavender_features):

  QA          [CLS] question [SEP] [MASK]        target: the answer token
  retrieval   [CLS] caption [SEP] [MASK]         target: "true" / "false"
  captioning  [CLS] c_1 .. c_{t-1} [MASK]        target: c_t ([SEP] after the last)

A MaskedLanguageModel whose logits read the video too: its loss (the
cross-entropy at every [MASK] the row builder placed, over their number),
scores and predictions are the masked LM's. Captions are
decoded by iterative masked decoding (`decode_captions`): append [MASK],
predict it, write the prediction, append the next [MASK], left to right,
until [SEP].

In gin:

    train.model = @Lavender()
    Lavender.config = @get_config()          # T5's encoder (vocab_size = 8000: wordpiece_en)
    Lavender.vit_config = @get_vit_config()
    get_vit_config.name = 'vit_tiny_video'

Batches: "video" float32 [b, T, H, W, C], "encoder_input_tokens",
"encoder_target_tokens", "encoder_loss_weights" (int32 [b, L], unpacked).
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from t5mtl.errors import T5mtlError
from t5mtl.models.base import Batch
from t5mtl.models.encoder_backbone import T5EncoderBackbone
from t5mtl.models.layers import DenseGeneral
from t5mtl.models.masked_lm import MaskedLanguageModel, loss_weights
from t5mtl.models.t5 import EncoderInputs, EncoderOutput, Transformer

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4       # wordpiece_en's special ids
NOT_GENERATED = (PAD, UNK, CLS, MASK)           # ids iterative decoding never writes


def _encode_with_visual(module: Transformer, tokens, visual, deterministic: bool
                        ) -> EncoderOutput:
    """T5's encoder over [visual ; embedded tokens] (unpacked rows, pad id 0 masked)."""
    text = module.encoder_inputs(tokens, deterministic=deterministic)
    b, n, _ = visual.shape
    inputs = EncoderInputs(
        jnp.concatenate([visual.astype(text.embedded.dtype), text.embedded], axis=1),
        jnp.concatenate([jnp.ones((b, n), text.segment_ids.dtype), text.segment_ids], axis=1))
    return module.encode_embedded(inputs, deterministic)


def _vit_config(vit_config):
    from t5mtl.models.vit import ViTConfig
    if isinstance(vit_config, Mapping):
        return ViTConfig.from_dict(dict(vit_config))
    if not isinstance(vit_config, ViTConfig):
        raise T5mtlError(f"Lavender.vit_config must be a ViTConfig (@get_vit_config()), got "
                         f"{vit_config!r}")
    return vit_config


@gin.configurable
class Lavender(MaskedLanguageModel):
    """A video ViT and T5's encoder with one masked-LM head (module docstring).

    `video_encoder`: a Flax module called as `module(pixels, deterministic)`
    -> [b, n, hidden] that replaces the ViT (not recorded in the spec; for
    tests and experiments)."""

    def __init__(self, config=gin.REQUIRED, vit_config=gin.REQUIRED,
                 video_feature: str = "video", z_loss: float = 0.0, backbone_spec=None,
                 video_encoder: nn.Module | None = None, video_hidden: int | None = None):
        super().__init__(config, z_loss=z_loss, backbone_spec=backbone_spec)
        if not isinstance(self.backbone, T5EncoderBackbone):
            raise T5mtlError(f"Lavender's text encoder is T5's (@get_config()), got "
                             f"{self.backbone.family!r}")
        self.video_feature = str(video_feature)
        if video_encoder is None:
            from t5mtl.models.vit import VisionTransformer
            self.vit_config = _vit_config(vit_config)
            self.video_encoder = VisionTransformer(self.vit_config)
            video_hidden = self.vit_config.hidden_size
        else:
            self.vit_config, self.video_encoder = vit_config, video_encoder
        if not video_hidden:
            raise T5mtlError("Lavender: a custom video_encoder needs video_hidden (its width)")
        self.video_hidden = int(video_hidden)
        self.projection = DenseGeneral((self.backbone.d_model,), ("mlp", "embed"),
                                       self.video_hidden ** -0.5)

    # -- what it is ---------------------------------------------------------------
    def spec(self) -> dict:
        if not hasattr(self.vit_config, "to_dict"):
            raise T5mtlError("a Lavender with a custom video_encoder has no spec")
        return {"backbone_spec": self.backbone.spec(), "vit_config": self.vit_config.to_dict(),
                "video_feature": self.video_feature, "z_loss": self.z_loss}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "Lavender":
        return cls(config=None, **spec)

    def architecture(self) -> dict:
        """T5's encoder fields and the ViT's config less its execution
        choices (dropout, dtype, remat); `scan_layers` stays: the ViT's
        params are not converted between the two layouts."""
        vit = self.vit_config.to_dict() if hasattr(self.vit_config, "to_dict") else {}
        vit = {k: v for k, v in vit.items() if k not in ("dropout_rate", "dtype", "remat")}
        return {"family": "lavender", **self.backbone.architecture(), "vit": vit}

    @property
    def config(self):
        return self.backbone.config

    # -- data ---------------------------------------------------------------------
    def feature_converter(self, pack: bool = True, task_ids=()):
        """Unpacked MLM rows with the video (`task_ids` are not supported)."""
        from t5mtl.data.lavender_features import LavenderFeatureConverter
        return LavenderFeatureConverter(pack=pack, video_feature=self.video_feature)

    # -- parameters ---------------------------------------------------------------
    def _pixel_shape(self):
        if hasattr(self.vit_config, "pixel_shape"):
            return tuple(self.vit_config.pixel_shape)
        return tuple(self.vit_config["pixel_shape"])

    def init_boxed(self, rng):
        r_text, r_video, r_proj = jax.random.split(rng, 3)
        params = dict(self.backbone.init(r_text, heads=("mlm",)))
        pixels = jnp.zeros((1,) + self._pixel_shape(), jnp.float32)
        params["video_encoder"] = self.video_encoder.init(r_video, pixels, True)["params"]
        params["video_projection"] = self.projection.init(
            r_proj, jnp.zeros((1, 1, self.video_hidden), jnp.float32))["params"]
        return params

    def adapt_params(self, params):
        """T5's subtrees in this config's layout (a T5 source's decoder is
        dropped); the video subtrees as they are."""
        out = self.backbone.adapt_params(params, heads=("mlm",))
        for k in ("video_encoder", "video_projection"):
            if k in params:
                out[k] = params[k]
        return out

    # -- forward ------------------------------------------------------------------
    def check_video(self, video) -> None:
        """T5mtlError naming the video feature when its shape or dtype is wrong."""
        want = self._pixel_shape()
        if (not jnp.issubdtype(video.dtype, jnp.floating) or video.ndim != len(want) + 1
                or tuple(video.shape[1:]) != want):
            raise T5mtlError(f"feature {self.video_feature!r}: expected float pixels "
                             f"[batch, {', '.join(map(str, want))}], got {video.dtype} "
                             f"{list(video.shape)}")

    def visual_tokens(self, params, video, dropout_rng=None) -> jax.Array:
        """[b, n, d_model]: the video encoder's tokens, projected."""
        video = jnp.asarray(video)
        self.check_video(video)
        rngs = None if dropout_rng is None else {"dropout": dropout_rng}
        hidden = self.video_encoder.apply({"params": params["video_encoder"]},
                                          video.astype(jnp.float32), dropout_rng is None,
                                          rngs=rngs)
        return self.projection.apply({"params": params["video_projection"]}, hidden)

    def encode(self, params, tokens, visual, dropout_rng=None) -> EncoderOutput:
        """T5's encoder over [visual ; tokens]: [b, n + L, d]."""
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise T5mtlError(f"feature 'encoder_input_tokens': expected int ids [batch, length], "
                             f"got {tokens.dtype} {list(tokens.shape)}")
        rngs = None if dropout_rng is None else {"dropout": dropout_rng}
        sub = {k: params[k] for k in self.backbone.subtrees}
        return self.backbone.module.apply({"params": sub}, tokens, visual,
                                          dropout_rng is None, method=_encode_with_visual,
                                          rngs=rngs)

    def text_logits(self, params, tokens, visual, dropout_rng=None) -> jax.Array:
        """float32 [b, L, vocab]: the MLM head at the text positions."""
        encoded = self.encode(params, tokens, visual, dropout_rng)
        n = visual.shape[1]
        text = EncoderOutput(encoded.hidden[:, n:], encoded.segment_ids[:, n:])
        return self.backbone.mlm_logits(params, text)

    def logits(self, params, batch: Batch, dropout_rng=None) -> jax.Array:
        """float32 [b, L, vocab] at the text positions of the batch's rows."""
        rngs = (None, None) if dropout_rng is None else tuple(jax.random.split(dropout_rng))
        visual = self.visual_tokens(params, batch[self.video_feature], rngs[0])
        return self.text_logits(params, batch["encoder_input_tokens"], visual, rngs[1])

    def has_dropout(self) -> bool:
        return self.backbone.dropout_rate > 0 or getattr(self.vit_config, "dropout_rate", 0) > 0

    # -- scores and predictions -----------------------------------------------------
    def mask_log_probs(self, params, batch: Batch) -> jax.Array:
        """float32 [b, vocab]: log-probabilities at each row's first weighted
        position (the answer [MASK] of a QA or retrieval row); the head runs
        at that position only."""
        visual = self.visual_tokens(params, batch[self.video_feature])
        encoded = self.encode(params, batch["encoder_input_tokens"], visual)
        first = visual.shape[1] + jnp.argmax(loss_weights(batch) > 0, axis=-1)
        hidden = jnp.take_along_axis(encoded.hidden, first[:, None, None], axis=1)
        at = EncoderOutput(hidden, jnp.ones(hidden.shape[:2], jnp.int32))
        return jax.nn.log_softmax(self.backbone.mlm_logits(params, at)[:, 0], axis=-1)

    def decode_captions(self, params, video, length: int) -> jax.Array:
        """int32 [b, length - 1]: captions by iterative masked decoding.

        Rows start as "[CLS] [MASK]"; step t (1 .. length-1) predicts the
        [MASK] at position t (never pad, [UNK], [CLS] or [MASK]), writes it
        and puts a [MASK] at t + 1, until the row predicts [SEP]. Returns
        positions 1.. with [SEP] and everything after it 0. The video is
        encoded once."""
        if length < 2:
            raise T5mtlError(f"decode_captions: length must be >= 2, got {length}")
        visual = self.visual_tokens(params, video)
        b = visual.shape[0]
        banned = jnp.zeros((self.backbone.vocab_size,), bool).at[
            jnp.asarray(NOT_GENERATED)].set(True)
        tokens = jnp.zeros((b, length), jnp.int32).at[:, 0].set(CLS).at[:, 1].set(MASK)
        rows = jnp.arange(b)

        def step(t, carry):
            tokens, done = carry
            logits = self.text_logits(params, tokens, visual)[rows, t]
            pred = jnp.argmax(jnp.where(banned, -jnp.inf, logits), axis=-1).astype(jnp.int32)
            pred = jnp.where(done, PAD, pred)
            done = done | (pred == SEP)
            tokens = tokens.at[:, t].set(pred)
            tokens = tokens.at[:, t + 1].set(jnp.where(done, PAD, MASK), mode="drop")
            return tokens, done

        tokens, _ = jax.lax.fori_loop(1, length, step, (tokens, jnp.zeros((b,), bool)))
        out = tokens[:, 1:]
        ended = jnp.cumsum(out == SEP, axis=-1) > 0
        return jnp.where(ended, PAD, out)
