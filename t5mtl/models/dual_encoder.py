"""A dual encoder behind the model protocol: the retriever of DPR, Contriever
and Atlas (and, with an image tower later, CLIP's text side).

  query_tokens   -> encoder -> mean pool -> q [b, d]
  passage_tokens -> encoder -> mean pool -> p [b, d]
  loss: InfoNCE of q against every p of the global batch, the pair's own
        passage the positive (t5mtl.models.contrastive, one-directional)

The encoders are an encoder backbone (T5's encoder or BERT,
t5mtl.models.encoder_backbone), one shared by both sides (`shared=True`,
Contriever's and Atlas's default: params as the backbone's) or one per side
(params {"query": ..., "passage": ...}; a checkpoint of one encoder, e.g. a
T5 model_dir, fills both). `similarity`: "dot" (Contriever) or "cosine"
(embeddings l2-normalized); logits are similarity / `temperature`.

Batches come from DualEncoderFeatureConverter (t5mtl.data.dual_encoder_features):
any text-to-text task, its "inputs" the query, its "targets" the passage.
Rows are unpacked; a row whose query is all padding is left out of the loss
and of every other row's negatives.

Metrics: loss, and accuracy = the share of queries whose best-scoring
passage in the batch is their own (in-batch top-1).
score_batch: each query's similarity to its own passage ([b]);
predict_batch: the index of each query's best passage in the batch ([b, 1]).

In gin:

    train.model = @DualEncoder()
    DualEncoder.config = @get_config()      # or @get_bert_config()
    DualEncoder.temperature = 0.05
"""
from __future__ import annotations

from typing import Any, Mapping

import gin
import jax
import jax.numpy as jnp

from t5mtl.errors import T5mtlError
from t5mtl.models import contrastive, losses
from t5mtl.models.base import BaseModel, Batch
from t5mtl.models.encoder_backbone import backbone_from_spec, encoder_backbone

SIDES = ("query", "passage")
SIMILARITIES = ("dot", "cosine")


def _valid(batch: Batch) -> jax.Array:
    return jnp.any(jnp.asarray(batch["query_tokens"]) > 0, axis=-1)


@gin.configurable
class DualEncoder(BaseModel):
    """Query and passage encoders trained with in-batch negatives (module docstring)."""

    def __init__(self, config=gin.REQUIRED, shared: bool = True, similarity: str = "dot",
                 temperature: float = 0.05, backbone_spec=None):
        if similarity not in SIMILARITIES:
            raise T5mtlError(f"DualEncoder.similarity must be one of {SIMILARITIES}, got "
                             f"{similarity!r}")
        if not temperature > 0:
            raise T5mtlError(f"DualEncoder.temperature must be positive, got {temperature!r}")
        self.backbone = (backbone_from_spec(backbone_spec) if backbone_spec is not None
                         else encoder_backbone(config))
        self.shared = bool(shared)
        self.similarity = similarity
        self.temperature = float(temperature)

    # -- what it is ---------------------------------------------------------------
    def spec(self) -> dict:
        return {"backbone_spec": self.backbone.spec(), "shared": self.shared,
                "similarity": self.similarity, "temperature": self.temperature}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "DualEncoder":
        return cls(config=None, **spec)

    def architecture(self) -> dict:
        return {"family": self.backbone.family, **self.backbone.architecture(),
                "shared": self.shared}

    # -- data ---------------------------------------------------------------------
    def feature_converter(self, pack: bool = True, task_ids=()):
        from t5mtl.data.dual_encoder_features import DualEncoderFeatureConverter
        return DualEncoderFeatureConverter(pack=pack)

    # -- parameters ---------------------------------------------------------------
    def init_boxed(self, rng):
        if self.shared:
            return self.backbone.init(rng)
        return {side: self.backbone.init(jax.random.fold_in(rng, i))
                for i, side in enumerate(SIDES)}

    def adapt_params(self, params):
        if self.shared:
            return self.backbone.adapt_params(params)
        if set(SIDES) <= set(params):
            return {side: self.backbone.adapt_params(params[side]) for side in SIDES}
        one = self.backbone.adapt_params(params)                # one encoder: both sides
        return {side: one for side in SIDES}

    # -- forward ------------------------------------------------------------------
    def embed(self, params, tokens, side: str = "query", dropout_rng=None) -> jax.Array:
        """float32 [b, d]: the side's encoder mean-pooled (normalized for cosine)."""
        if side not in SIDES:
            raise T5mtlError(f"side must be one of {SIDES}, got {side!r}")
        tower = params if self.shared else params[side]
        encoded = self.backbone.encode(tower, tokens, None, dropout_rng)
        out = self.backbone.pooled(tower, encoded)
        return contrastive.l2_normalize(out) if self.similarity == "cosine" else out

    def embeddings(self, params, batch: Batch, dropout_rng=None):
        rngs = (None, None) if dropout_rng is None else tuple(jax.random.split(dropout_rng))
        return (self.embed(params, batch["query_tokens"], "query", rngs[0]),
                self.embed(params, batch["passage_tokens"], "passage", rngs[1]))

    def loss_denominator(self, batch: Batch, num_tasks: int = 0) -> dict:
        return {"loss": jnp.maximum(jnp.sum(_valid(batch).astype(jnp.float32)), 1.0)}

    def loss_fn(self, params, batch: Batch, dropout_rng, num_tasks: int = 0):
        use_dropout = self.backbone.dropout_rate > 0 and dropout_rng is not None
        q, p = self.embeddings(params, batch, dropout_rng if use_dropout else None)
        valid = _valid(batch)
        count = jnp.sum(valid.astype(jnp.float32))
        denominator = batch.get(losses.LOSS_DENOMINATOR_KEY) or self.loss_denominator(batch)
        mean = contrastive.info_nce(q, p, 1.0 / self.temperature, symmetric=False, valid=valid)
        loss = mean * count / denominator["loss"]
        scores = jnp.where(valid[None, :], q @ p.T, -jnp.inf)
        right = (jnp.argmax(scores, axis=1) == jnp.arange(q.shape[0])) & valid
        metrics = {"loss": loss, "num_sequences": count, "target_tokens": count,
                   "correct_tokens": jnp.sum(right.astype(jnp.float32))}
        return loss, losses.finalize_metrics(metrics)

    # -- scores and predictions -----------------------------------------------------
    def score_batch(self, params, batch: Batch):
        """[b]: each query's similarity / temperature to its own passage."""
        q, p = self.embeddings(params, batch)
        return jnp.sum(q * p, axis=-1) / self.temperature

    def predict_batch(self, params, batch: Batch, decode=None, rng=None):
        """int32 [b, 1]: the index of each query's best passage in the batch."""
        q, p = self.embeddings(params, batch)
        scores = jnp.where(_valid(batch)[None, :], q @ p.T, -jnp.inf)
        return jnp.argmax(scores, axis=1).astype(jnp.int32)[:, None]
