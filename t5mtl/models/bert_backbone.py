"""BERT as an encoder backbone (models.encoder_backbone): its encoder, its
pooler ([CLS] through dense + tanh) and its MLM head, with HF's parameter
meaning, so an imported HF BERT (convert.hf_bert) computes what it did there.

The parameters are the `Bert` module's own subtrees (`embeddings`,
`layers_i`, `pooler`, `mlm`); the attention mask is `tokens != 0` ([PAD] is
id 0 in BERT vocabularies), token types default to 0.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from t5mtl.errors import T5mtlError
from t5mtl.models.bert import Bert
from t5mtl.models.bert_config import BertConfig
from t5mtl.models.encoder_backbone import EncoderBackbone, _rngs
from t5mtl.models.t5 import EncoderOutput

BACKBONE_HEADS = ("mlm", "pooler")
# BertConfig fields that change how, not what, the parameters compute.
EXECUTION_FIELDS = ("dtype", "hidden_dropout", "attention_dropout", "classifier_dropout",
                    "initializer_range")


def _own(params: dict, heads=BACKBONE_HEADS) -> dict:
    """The encoder's subtrees and those of `heads` (a model's other
    subtrees, e.g. classification heads, stay out)."""
    return {k: v for k, v in params.items()
            if k == "embeddings" or k.startswith("layers_") or k in heads}


class BertBackbone(EncoderBackbone):
    family = "bert"

    def __init__(self, config: BertConfig):
        self.config = config
        self.module = Bert(config, heads=BACKBONE_HEADS)

    @property
    def d_model(self) -> int:
        return self.config.hidden_size

    @property
    def dropout_rate(self) -> float:
        return max(self.config.hidden_dropout, self.config.attention_dropout)

    def init(self, rng, heads: Sequence[str] = ()) -> dict:
        """The encoder plus the asked-for heads among "mlm" and "pooler"
        (HF's BertForMaskedLM has no pooler; a reader needs neither)."""
        unknown = sorted(set(heads) - set(BACKBONE_HEADS))
        if unknown:
            raise T5mtlError(f"BERT backbone heads {unknown}: choose from {BACKBONE_HEADS}")
        params = self.module.init(rng, jnp.ones((1, 4), jnp.int32))["params"]
        return _own(dict(params), tuple(heads))

    def encode(self, params, tokens, token_types=None, dropout_rng=None) -> EncoderOutput:
        tokens = jnp.asarray(tokens, jnp.int32)
        mask = (tokens != self.config.pad_token_id).astype(jnp.int32)
        hidden = self.module.apply({"params": _own(params, ())}, tokens, token_types, mask,
                                   dropout_rng is None, method=Bert.encode,
                                   rngs=_rngs(dropout_rng))
        return EncoderOutput(hidden, mask)

    def pooled(self, params, encoded: EncoderOutput) -> jax.Array:
        return self.module.apply({"params": _own(params, ("pooler",))}, encoded.hidden,
                                 method=Bert.pool).astype(jnp.float32)

    def mlm_logits(self, params, encoded: EncoderOutput) -> jax.Array:
        return self.module.apply({"params": _own(params, ("mlm",))}, encoded.hidden,
                                 method=Bert.mlm_logits).astype(jnp.float32)

    def adapt_params(self, params: dict, heads: Sequence[str] = ()) -> dict:
        return _own(params, tuple(heads))

    def architecture(self) -> dict:
        return {k: v for k, v in self.config.to_dict().items() if k not in EXECUTION_FIELDS}
