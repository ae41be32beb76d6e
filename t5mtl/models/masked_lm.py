"""An encoder-only masked language model behind the model protocol: BERT, or
T5's encoder (an encoder-only T5 that loads a T5 checkpoint's encoder).

  encoder_input_tokens (masked) -> backbone.encode -> backbone.mlm_logits
  loss: cross-entropy at the selected positions (encoder_loss_weights), over
  their number, as BERT's

Batches come from `MaskedLMFeatureConverter` (t5mtl.data.encoder_features):
encoder_input_tokens, encoder_target_tokens (the original ids at the
positions the objective selected, 0 elsewhere), encoder_loss_weights
(1 at every selected position: the [MASK]ed, the randomly replaced and the
kept alike; seqio's EncoderFeatureConverter weights only [MASK] positions) and
optionally encoder_token_types. Rows are unpacked.

In gin:

    train.model = @MaskedLanguageModel()
    MaskedLanguageModel.config = @get_bert_config()     # or @get_config() for T5's encoder
    get_bert_config.name = 'bert_tiny'

score_batch is the log-likelihood of the target ids at the weighted
positions; predict_batch fills every weighted position with its argmax id and
keeps the other input ids.
"""
from __future__ import annotations

from typing import Any, Mapping

import gin
import jax.numpy as jnp

from t5mtl.models import losses
from t5mtl.models.base import BaseModel, Batch
from t5mtl.models.encoder_backbone import backbone_from_spec, encoder_backbone


def loss_weights(batch: Batch):
    """float32 [b, L]: 1 at the positions the loss reads (the selected ones)."""
    if "encoder_loss_weights" in batch:
        return jnp.asarray(batch["encoder_loss_weights"], jnp.float32)
    return (jnp.asarray(batch["encoder_target_tokens"]) > 0).astype(jnp.float32)


@gin.configurable
class MaskedLanguageModel(BaseModel):
    """A bidirectional encoder trained to restore the selected tokens."""

    def __init__(self, config=gin.REQUIRED, z_loss: float = 0.0, backbone_spec=None):
        self.backbone = (backbone_from_spec(backbone_spec) if backbone_spec is not None
                         else encoder_backbone(config))
        self.z_loss = float(z_loss)

    # -- what it is ---------------------------------------------------------------
    def spec(self) -> dict:
        return {"backbone_spec": self.backbone.spec(), "z_loss": self.z_loss}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "MaskedLanguageModel":
        return cls(config=None, **spec)

    def architecture(self) -> dict:
        return {"family": self.backbone.family, **self.backbone.architecture()}

    # -- data ---------------------------------------------------------------------
    def feature_converter(self, pack: bool = True, task_ids=()):
        """Unpacked encoder features (`task_ids` are not supported: MLM
        metrics are over all tasks together)."""
        from t5mtl.data.encoder_features import MaskedLMFeatureConverter
        return MaskedLMFeatureConverter(pack=pack)

    # -- parameters ---------------------------------------------------------------
    def init_boxed(self, rng):
        return self.backbone.init(rng, heads=("mlm",))

    def adapt_params(self, params):
        return self.backbone.adapt_params(params, heads=("mlm",))

    # -- forward ------------------------------------------------------------------
    def logits(self, params, batch: Batch, dropout_rng=None):
        """float32 [b, L, vocab]."""
        encoded = self.backbone.encode(params, batch["encoder_input_tokens"],
                                       batch.get("encoder_token_types"), dropout_rng)
        return self.backbone.mlm_logits(params, encoded)

    def loss_denominator(self, batch: Batch, num_tasks: int = 0) -> dict:
        return {"loss": jnp.maximum(jnp.sum(loss_weights(batch)), 1.0)}

    def has_dropout(self) -> bool:
        """Whether training applies dropout anywhere (the rng is passed on)."""
        return self.backbone.dropout_rate > 0

    def loss_fn(self, params, batch: Batch, dropout_rng, num_tasks: int = 0):
        use_dropout = self.has_dropout() and dropout_rng is not None
        logits = self.logits(params, batch, dropout_rng if use_dropout else None)
        denominator = batch.get(losses.LOSS_DENOMINATOR_KEY) or self.loss_denominator(batch)
        return losses.cross_entropy_with_z_loss(
            logits, jnp.asarray(batch["encoder_target_tokens"], jnp.int32), loss_weights(batch),
            z_loss=self.z_loss, loss_denominator=denominator["loss"])

    # -- scores and predictions -----------------------------------------------------
    def score_batch(self, params, batch: Batch):
        """[b]: sum of log p(target id) over each row's weighted positions."""
        picked = losses.token_log_probs(self.logits(params, batch),
                                        batch["encoder_target_tokens"])
        return jnp.sum(picked * loss_weights(batch), axis=-1)

    def predict_batch(self, params, batch: Batch, decode=None, rng=None):
        """The input ids with each weighted position replaced by its argmax id."""
        tokens = jnp.asarray(batch["encoder_input_tokens"], jnp.int32)
        best = jnp.argmax(self.logits(params, batch), axis=-1).astype(jnp.int32)
        return jnp.where(loss_weights(batch) > 0, best, tokens)
