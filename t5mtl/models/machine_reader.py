"""PMR's machine reader behind the model protocol: an encoder backbone (BERT,
or T5's encoder) and PMR's span extractor over "[CLS] query [SEP] context
[SEP]" (Xu et al. 2023; models.span_extractor says what is scored and how).

  encoder_input_tokens, encoder_token_types -> backbone.encode -> hidden
  -> SpanExtractor -> span logits [b, L, L] -> BCE over the valid spans

Batches (data.mrc_features.MrcFeatureConverter, one window per row):
  encoder_input_tokens, encoder_token_types [b, L]
  context_mask [b, L]           1 on context tokens
  span_starts, span_ends [b, L]  gold spans as token index + 1, 0 = none
  cls_span [b]                  1: the [CLS] span (0, 0) is in the loss
  cls_label [b]                 its label (the query is relevant)

One model does extractive QA (the best context span, [CLS] left out),
Wiki-Anchor-Extraction-style pretraining (the anchor's spans plus the
[CLS] relevance) and classification as extraction (each label's description
as the query: the label whose [CLS] logit is highest, its best span the
rationale; data.pmr_data.classify_with_rationale).

In gin:

    train.model = @MachineReader()
    MachineReader.config = @get_bert_config()
    MachineReader.max_span_length = 30
"""
from __future__ import annotations

from typing import Any, Mapping

import gin
import jax
import jax.numpy as jnp

from t5mtl.models import losses
from t5mtl.models.base import BaseModel, Batch
from t5mtl.models.encoder_backbone import backbone_from_spec, encoder_backbone
from t5mtl.models.span_extractor import SpanExtractor, best_spans, span_loss, valid_span_mask

SUBTREE = "span_extractor"


def span_labels(batch: Batch, length: int) -> jax.Array:
    """[b, L, L] 0/1: the gold spans (span_starts/span_ends, index + 1) and
    the [CLS] label at (0, 0)."""
    starts = jnp.asarray(batch["span_starts"], jnp.int32) - 1        # [b, K], -1 = none
    ends = jnp.asarray(batch["span_ends"], jnp.int32) - 1
    pos = jnp.arange(length)
    hit = ((starts[..., None, None] == pos[:, None]) & (ends[..., None, None] == pos[None, :])
           & (starts >= 0)[..., None, None])                          # [b, K, L, L]
    labels = jnp.any(hit, axis=1)
    corner = (pos[:, None] == 0) & (pos[None, :] == 0)
    cls = jnp.asarray(batch["cls_label"], bool)[:, None, None] & corner[None]
    return (labels & ~corner[None]) | cls


@gin.configurable
class MachineReader(BaseModel):
    """An encoder and PMR's extractor: every (start, end) span scored."""

    def __init__(self, config=gin.REQUIRED, max_span_length: int | None = 30,
                 intermediate_dim: int | None = None, backbone_spec=None):
        self.backbone = (backbone_from_spec(backbone_spec) if backbone_spec is not None
                         else encoder_backbone(config))
        self.max_span_length = None if max_span_length is None else int(max_span_length)
        self.intermediate_dim = None if intermediate_dim is None else int(intermediate_dim)
        self.extractor = SpanExtractor(self.backbone.d_model, self.intermediate_dim,
                                       dropout_rate=self.backbone.dropout_rate)

    # -- what it is ---------------------------------------------------------------
    def spec(self) -> dict:
        return {"backbone_spec": self.backbone.spec(), "max_span_length": self.max_span_length,
                "intermediate_dim": self.intermediate_dim}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "MachineReader":
        return cls(config=None, **spec)

    def architecture(self) -> dict:
        return {"family": self.backbone.family, **self.backbone.architecture(),
                "intermediate_dim": self.intermediate_dim}

    # -- data ---------------------------------------------------------------------
    def feature_converter(self, pack: bool = True, task_ids=()):
        from t5mtl.data.mrc_features import MrcFeatureConverter
        return MrcFeatureConverter(pack=pack)

    # -- parameters ---------------------------------------------------------------
    def init_boxed(self, rng):
        enc_rng, span_rng = jax.random.split(rng)
        params = self.backbone.init(enc_rng)
        hidden = jnp.zeros((1, 2, self.backbone.d_model), jnp.float32)
        return {**params, SUBTREE: self.extractor.init(span_rng, hidden)["params"]}

    def adapt_params(self, params):
        """The backbone's layout; a source's heads (BERT's `mlm`, `pooler`,
        T5's decoder) are dropped: the extractor replaces them."""
        own = {SUBTREE: params[SUBTREE]} if SUBTREE in params else {}
        return {**self.backbone.adapt_params(params), **own}

    # -- forward ------------------------------------------------------------------
    def span_logits(self, params, batch: Batch, dropout_rng=None):
        """float32 [b, L, L]: logit of each (start, end) span."""
        enc_rng = span_rng = None
        if dropout_rng is not None:
            enc_rng, span_rng = jax.random.split(dropout_rng)
        encoded = self.backbone.encode(params, batch["encoder_input_tokens"],
                                       batch.get("encoder_token_types"), enc_rng)
        rngs = None if span_rng is None else {"dropout": span_rng}
        return self.extractor.apply({"params": params[SUBTREE]}, encoded.hidden,
                                    span_rng is None, rngs=rngs)

    def valid(self, batch: Batch, cls_span=None):
        """[b, L, L] bool: the spans scored in the loss (or decoding)."""
        cls = batch["cls_span"] if cls_span is None else cls_span
        return valid_span_mask(jnp.asarray(batch["context_mask"]) > 0, self.max_span_length,
                               jnp.asarray(cls) > 0)

    def loss_denominator(self, batch: Batch, num_tasks: int = 0) -> dict:
        return {"loss": jnp.maximum(jnp.sum(self.valid(batch).astype(jnp.float32)), 1.0)}

    def loss_fn(self, params, batch: Batch, dropout_rng, num_tasks: int = 0):
        use_dropout = self.backbone.dropout_rate > 0 and dropout_rng is not None
        logits = self.span_logits(params, batch, dropout_rng if use_dropout else None)
        valid = self.valid(batch)
        labels = span_labels(batch, logits.shape[-1])
        denominator = batch.get(losses.LOSS_DENOMINATOR_KEY) or self.loss_denominator(batch)
        loss = span_loss(logits, labels, valid, denominator["loss"])
        # A row is right when its best valid span (the [CLS] span included
        # where scored) is a gold one with a positive logit, or, in a row
        # without gold spans, when no span's logit is positive.
        starts, ends, best = best_spans(logits, valid, 1)
        flat = labels.reshape(labels.shape[0], -1)
        picked = jnp.take_along_axis(flat, starts * logits.shape[-1] + ends, axis=1)[:, 0]
        right = jnp.where(jnp.any(flat, axis=1), picked & (best[:, 0] > 0), best[:, 0] <= 0)
        rows = jnp.any(valid, axis=(1, 2)).astype(jnp.float32)
        metrics = {"loss": loss, "num_sequences": jnp.sum(rows),
                   "target_tokens": jnp.sum(rows), "correct_tokens": jnp.sum(right * rows)}
        return loss, losses.finalize_metrics(metrics)

    # -- scores and predictions -----------------------------------------------------
    def best_spans(self, params, batch: Batch, k: int = 1, with_cls: bool = False):
        """(starts [b, k], ends [b, k], scores [b, k]): the best context spans
        (the [CLS] span only `with_cls`)."""
        logits = self.span_logits(params, batch)
        cls = jnp.full(logits.shape[:1], with_cls)
        return best_spans(logits, self.valid(batch, cls), k)

    def cls_logits(self, params, batch: Batch):
        """[b]: the [CLS] span's logit (the query is relevant to the context)."""
        return self.span_logits(params, batch)[:, 0, 0]

    def score_batch(self, params, batch: Batch):
        """[b]: the [CLS] span's log-sigmoid (log p(relevant))."""
        return jax.nn.log_sigmoid(self.cls_logits(params, batch))

    def predict_batch(self, params, batch: Batch, decode=None, rng=None):
        """int32 [b, 2]: the best context span's (start, end) token index."""
        starts, ends, _ = self.best_spans(params, batch)
        return jnp.concatenate([starts, ends], axis=1).astype(jnp.int32)
