"""Encoder backbones: what an encoder-only model (masked LM, classifier, span
reader) needs from a bidirectional encoder, for T5's encoder and for BERT.

  backbone = encoder_backbone(config)          # a T5Config or a BertConfig
  params = backbone.init(rng, heads)           # boxed, the backbone's subtrees
  encoded = backbone.encode(params, tokens, token_types, dropout_rng)
  backbone.pooled(params, encoded)             # [b, d] float32
  backbone.mlm_logits(params, encoded)         # [b, L, vocab] float32

T5's encoder is reached through `Transformer`'s seams (`encoder_inputs`,
`encode_embedded`), never copied: its parameters keep T5's names
(`token_embedder/...`, `encoder/...`), so a T5 checkpoint's encoder loads by
name. Pooling is the mean over real tokens (Mueller et al. 2022's
classifier); its masked-LM logits are the tied input embedding scaled by
d_model**-0.5 (T5 1.0's output layer), so an encoder-only T5 adds no
parameters for MLM.

BERT's pooler is its own (dense + tanh on position 0, which holds [CLS]) and
its MLM head is HF's (transform, layer norm, tied decoder plus a bias).

Rows are unpacked: id 0 is padding and masked out (both vocabularies keep
0 for padding).
"""
from __future__ import annotations

import abc
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from t5mtl.errors import T5mtlError
from t5mtl.models.config import T5Config
from t5mtl.models.layout import to_layout
from t5mtl.models.t5 import EncoderOutput, Transformer

FAMILIES = ("t5", "bert")


def _rngs(dropout_rng):
    return None if dropout_rng is None else {"dropout": dropout_rng}


class EncoderBackbone(abc.ABC):
    """A bidirectional encoder as encoder-only models use it."""
    family: str
    config: Any
    subtrees: tuple[str, ...]

    @property
    @abc.abstractmethod
    def d_model(self) -> int:
        """Width of the hidden states."""

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def dropout_rate(self) -> float:
        return 0.0

    @abc.abstractmethod
    def init(self, rng, heads: Sequence[str] = ()) -> dict:
        """Boxed params of the backbone's subtrees (plus the `heads` it owns:
        "mlm", "pooler")."""

    @abc.abstractmethod
    def encode(self, params, tokens, token_types=None, dropout_rng=None) -> EncoderOutput:
        """Hidden states [b, L, d] of unpacked rows and their segment ids
        (1 at real tokens, 0 at padding)."""

    @abc.abstractmethod
    def pooled(self, params, encoded: EncoderOutput) -> jax.Array:
        """float32 [b, d]: one vector per row."""

    @abc.abstractmethod
    def mlm_logits(self, params, encoded: EncoderOutput) -> jax.Array:
        """float32 [b, L, vocab]: the masked-LM output layer."""

    @abc.abstractmethod
    def architecture(self) -> dict:
        """The fields that decide what the parameters compute."""

    def adapt_params(self, params: dict, heads: Sequence[str] = ()) -> dict:
        """Params from a checkpoint (or another model's), in this backbone's
        layout, with the heads named (others, e.g. a source's decoder or
        MLM head, dropped)."""
        return params

    def spec(self) -> dict:
        return {"family": self.family, "config": self.config.to_dict()}


def mean_pool(encoded: EncoderOutput) -> jax.Array:
    """float32 [b, d]: the mean of the hidden states at non-padding positions."""
    mask = (encoded.segment_ids > 0).astype(jnp.float32)[..., None]
    total = jnp.sum(encoded.hidden.astype(jnp.float32) * mask, axis=1)
    return total / jnp.maximum(jnp.sum(mask, axis=1), 1.0)


def _t5_encode(module: Transformer, tokens, deterministic: bool) -> EncoderOutput:
    """T5's encoder through its seams (unpacked rows: pad id 0 masked)."""
    inputs = module.encoder_inputs(tokens, deterministic=deterministic)
    return module.encode_embedded(inputs, deterministic)


class T5EncoderBackbone(EncoderBackbone):
    """T5's encoder and its token embedding (`token_embedder`, `encoder`)."""
    family = "t5"
    subtrees = ("token_embedder", "encoder")

    def __init__(self, config: T5Config):
        self.config = config
        self.module = Transformer(config)

    @property
    def d_model(self) -> int:
        return self.config.d_model

    @property
    def dropout_rate(self) -> float:
        return self.config.dropout_rate

    def init(self, rng, heads: Sequence[str] = ()) -> dict:
        return dict(self.module.init(rng, jnp.ones((1, 4), jnp.int32), True,
                                     method=_t5_encode)["params"])

    def encode(self, params, tokens, token_types=None, dropout_rng=None) -> EncoderOutput:
        del token_types     # T5 has no token types
        return self.module.apply({"params": {k: params[k] for k in self.subtrees}}, tokens,
                                 dropout_rng is None, method=_t5_encode,
                                 rngs=_rngs(dropout_rng))

    def pooled(self, params, encoded: EncoderOutput) -> jax.Array:
        return mean_pool(encoded)

    def mlm_logits(self, params, encoded: EncoderOutput) -> jax.Array:
        embedding = params["token_embedder"]["embedding"].astype(jnp.float32)
        hidden = encoded.hidden.astype(jnp.float32) * self.config.d_model ** -0.5
        return jnp.einsum("bld,vd->blv", hidden, embedding)

    def architecture(self) -> dict:
        from t5mtl.models.encoder_decoder import ARCHITECTURE_FIELDS
        return {f: getattr(self.config, f) for f in ARCHITECTURE_FIELDS
                if f != "num_decoder_layers"}

    def adapt_params(self, params: dict, heads: Sequence[str] = ()) -> dict:
        """Per-layer or scanned as `scan_layers` asks; only the embedder and
        encoder are kept (a T5 source's decoder is dropped)."""
        params = {k: v for k, v in params.items() if k in self.subtrees}
        return to_layout(params, self.config)


def encoder_backbone(config, **kwargs) -> EncoderBackbone:
    """The backbone for a T5Config (T5's encoder) or a BertConfig (BERT)."""
    if isinstance(config, T5Config):
        return T5EncoderBackbone(config, **kwargs)
    from t5mtl.models.bert_config import BertConfig
    if isinstance(config, BertConfig):
        from t5mtl.models.bert_backbone import BertBackbone
        return BertBackbone(config, **kwargs)
    raise T5mtlError(f"an encoder config must be a T5Config (@get_config()) or a BertConfig "
                     f"(@get_bert_config()), got {config!r}")


def backbone_from_spec(spec: dict, **kwargs) -> EncoderBackbone:
    """The backbone `EncoderBackbone.spec()` wrote."""
    family = spec.get("family")
    if family == "t5":
        return T5EncoderBackbone(T5Config.from_dict(spec["config"]), **kwargs)
    if family == "bert":
        from t5mtl.models.bert_config import BertConfig
        from t5mtl.models.bert_backbone import BertBackbone
        return BertBackbone(BertConfig.from_dict(spec["config"]), **kwargs)
    raise T5mtlError(f"unknown encoder family {family!r}; expected one of {FAMILIES}")
