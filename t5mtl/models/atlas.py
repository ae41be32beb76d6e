"""Atlas (Izacard et al. 2022) behind the model protocol: a DualEncoder
retriever and a FusionInDecoder reader trained together, the retriever by
distilling the reader's view of the retrieved passages
(t5mtl.models.distillation).

Params: {"retriever": DualEncoder params, "reader": FusionInDecoder params}.
Batch features, k retrieved passages per question (all unpacked):

  encoder_input_tokens  [b, k, l]   the reader's rows, "question: ... context: ..."
  query_tokens          [b, lq]     the question, for the retriever
  passage_tokens        [b, k, lp]  the same k passages, re-scored by the
                                    current retriever (an all-padding row is
                                    a padding passage)
  decoder_input_tokens, decoder_target_tokens, decoder_loss_weights  [b, t]

loss = the reader's loss (FusionInDecoder.loss_fn: NLL, z-loss, its
normalization) + the mean over questions of KL(target || p_retriever),
where p_retriever = softmax_k(s(q, d_k) / retriever_temperature) over the
question's real passages (s: the DualEncoder's dot or cosine similarity;
retriever_temperature None = the DualEncoder's temperature; Atlas's is
sqrt(d) x 0.01 on dot products) and the target is

  distillation="adist"  softmax of ADist scores: the reader's cross-attention
                        in a second, dropout-free forward pass, as Atlas's
                        (reader.cross_attention)
  distillation="pdist"  softmax of PDist scores: the reader's answer
                        log-likelihood with each passage alone (a dropout-free
                        pass over [b x k] one-passage rows), `pdist_reduction`
                        "mean" (Atlas's code) or "sum" over answer tokens
  distillation="none"   no target: the loss is the reader's alone

at `target_temperature` (None = Atlas's, distillation.ATLAS_TARGET_TEMPERATURE),
under stop-gradient. `retriever_training`:

  "frozen"  the retriever is not trained: the loss and metrics are the
            reader's alone, with no distillation pass (as Atlas's loss when
            the retriever is not trained); `distillation_kl` still computes
            the KL for evaluation
  "query"   gradient only through the query embedding (the passage
            embeddings are stop-gradient: with a shared tower the passages
            keep the embeddings their index was built with only if the
            tower does not move; Atlas's query-side training unties the
            towers, DualEncoder(shared=False))
  "full"    gradient through both sides

In gin:

    train.model = @AtlasModel()
    AtlasModel.reader = @FusionInDecoder()
    AtlasModel.retriever = @DualEncoder()
    AtlasModel.distillation = "adist"
    AtlasModel.retriever_training = "query"
"""
from __future__ import annotations

from typing import Any, Mapping

import gin
import jax
import jax.numpy as jnp

from t5mtl.errors import T5mtlError
from t5mtl.models import distillation as dist
from t5mtl.models import losses
from t5mtl.models.base import BaseModel, Batch, class_path, import_class
from t5mtl.models.dual_encoder import DualEncoder
from t5mtl.models.fusion_in_decoder import FusionInDecoder

RETRIEVER_TRAINING = ("frozen", "query", "full")
SIDES = ("retriever", "reader")
RETRIEVER_DROPOUT_STREAM = 0xA7145


def _model_spec(model: BaseModel) -> dict:
    return {"class": class_path(model), "spec": model.spec()}


def _model_from_spec(spec: Mapping[str, Any]) -> BaseModel:
    return import_class(spec["class"]).from_spec(spec["spec"])


@gin.configurable
class AtlasModel(BaseModel):
    """A retriever and a FiD reader, the retriever distilled from the reader
    (module docstring)."""

    def __init__(self, reader: FusionInDecoder = gin.REQUIRED,
                 retriever: DualEncoder = gin.REQUIRED, distillation: str = "adist",
                 retriever_training: str = "query", target_temperature: float | None = None,
                 retriever_temperature: float | None = None, pdist_reduction: str = "mean"):
        if not isinstance(reader, FusionInDecoder):
            raise T5mtlError(f"AtlasModel.reader must be a FusionInDecoder, got {reader!r}")
        if not isinstance(retriever, DualEncoder):
            raise T5mtlError(f"AtlasModel.retriever must be a DualEncoder, got {retriever!r}")
        if distillation not in dist.DISTILLATIONS:
            raise T5mtlError(f"AtlasModel.distillation must be one of {dist.DISTILLATIONS}, "
                             f"got {distillation!r}")
        if retriever_training not in RETRIEVER_TRAINING:
            raise T5mtlError(f"AtlasModel.retriever_training must be one of "
                             f"{RETRIEVER_TRAINING}, got {retriever_training!r}")
        if pdist_reduction not in dist.REDUCTIONS:
            raise T5mtlError(f"AtlasModel.pdist_reduction must be one of {dist.REDUCTIONS}, "
                             f"got {pdist_reduction!r}")
        for name, value in (("target_temperature", target_temperature),
                            ("retriever_temperature", retriever_temperature)):
            if value is not None and not value > 0:
                raise T5mtlError(f"AtlasModel.{name} must be positive or None, got {value!r}")
        self.reader, self.retriever = reader, retriever
        self.distillation, self.retriever_training = distillation, retriever_training
        self.target_temperature = target_temperature
        self.retriever_temperature = retriever_temperature
        self.pdist_reduction = pdist_reduction

    # -- what it is ---------------------------------------------------------------
    def spec(self) -> dict:
        return {"reader": _model_spec(self.reader), "retriever": _model_spec(self.retriever),
                "distillation": self.distillation,
                "retriever_training": self.retriever_training,
                "target_temperature": self.target_temperature,
                "retriever_temperature": self.retriever_temperature,
                "pdist_reduction": self.pdist_reduction}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "AtlasModel":
        rest = {k: v for k, v in spec.items() if k not in SIDES}
        return cls(reader=_model_from_spec(spec["reader"]),
                   retriever=_model_from_spec(spec["retriever"]), **rest)

    def architecture(self) -> dict:
        return {side: {"class": class_path(m), **m.architecture()}
                for side, m in zip(SIDES, (self.retriever, self.reader))}

    # -- data ---------------------------------------------------------------------
    def feature_converter(self, pack: bool = True, task_ids=()):
        """Unpacked rows of k passages per question (t5mtl.data.fid_task)."""
        if task_ids:
            raise T5mtlError("AtlasModel takes no task ids")
        from t5mtl.data.fid_task import FiDFeatureConverter
        return FiDFeatureConverter(pack=pack)

    def check_tasks(self, task_names) -> None:
        self.reader.check_tasks(task_names)

    def task_features(self, task_name: str, batch_size: int) -> dict:
        return self.reader.task_features(task_name, batch_size)

    # -- parameters ---------------------------------------------------------------
    def init_boxed(self, rng):
        return {"retriever": self.retriever.init_boxed(jax.random.fold_in(rng, 0)),
                "reader": self.reader.init_boxed(jax.random.fold_in(rng, 1))}

    def adapt_params(self, params):
        return {"retriever": self.retriever.adapt_params(params["retriever"]),
                "reader": self.reader.adapt_params(params["reader"])}

    def warm_start(self, params, fresh, context):
        own = [n[len("reader/"):] for n in fresh if n.startswith("reader/")]
        return {**params, "reader": self.reader.warm_start(params["reader"], own, context)}

    @property
    def distills(self) -> bool:
        """Whether training distills the reader into the retriever (the loss
        adds the KL): a distillation target and a retriever that trains."""
        return self.distillation != "none" and self.retriever_training != "frozen"

    # -- the retriever side -------------------------------------------------------
    def check_batch(self, batch: Batch) -> None:
        """A T5mtlError naming the shapes unless the features are laid out as
        the module docstring says (the retriever's only with distillation)."""
        tokens, targets = batch["encoder_input_tokens"], batch["decoder_target_tokens"]
        shapes = {"encoder_input_tokens": tokens.shape, "decoder_target_tokens": targets.shape}
        ok = tokens.ndim == 3 and targets.ndim == 2 and targets.shape[0] == tokens.shape[0]
        if self.distillation != "none":
            query, passages = batch["query_tokens"], batch["passage_tokens"]
            shapes.update(query_tokens=query.shape, passage_tokens=passages.shape)
            ok = ok and query.ndim == 2 and passages.ndim == 3 and (
                query.shape[0] == tokens.shape[0] and passages.shape[:2] == tokens.shape[:2])
        if not ok:
            raise T5mtlError(
                "AtlasModel: encoder_input_tokens [b, k, l], decoder_target_tokens [b, t], "
                "query_tokens [b, lq] and passage_tokens [b, k, lp] must agree on b and k, "
                "got " + ", ".join(f"{n} {tuple(s)}" for n, s in shapes.items()))

    @staticmethod
    def _valid_passages(batch: Batch):
        """bool [b, k]: real passages (passage_tokens not all padding) of real
        questions (query_tokens not all padding)."""
        valid = jnp.any(batch["passage_tokens"] > 0, axis=-1)
        return valid & jnp.any(batch["query_tokens"] > 0, axis=-1)[:, None]

    def retriever_scores(self, params, batch: Batch, dropout_rng=None):
        """float32 [b, k]: s(q, d_k) of each question and its k passages,
        with the gradient `retriever_training` allows."""
        if self.retriever_training == "frozen":
            params = jax.lax.stop_gradient(params)
        rngs = (None, None) if dropout_rng is None else tuple(jax.random.split(dropout_rng))
        passages = batch["passage_tokens"]
        b, k, lp = passages.shape
        q = self.retriever.embed(params, batch["query_tokens"], "query", rngs[0])
        p = self.retriever.embed(params, passages.reshape(b * k, lp), "passage", rngs[1])
        if self.retriever_training == "query":
            p = jax.lax.stop_gradient(p)
        return jnp.einsum("bd,bkd->bk", q.astype(jnp.float32),
                          p.reshape(b, k, -1).astype(jnp.float32))

    # -- the targets --------------------------------------------------------------
    def target_scores(self, reader_params, batch: Batch):
        """float32 [b, k]: ADist or PDist scores of the k passages (stop-gradient)."""
        reader_params = jax.lax.stop_gradient(reader_params)
        tokens = batch["encoder_input_tokens"]
        weights = batch.get("decoder_loss_weights")
        targets = batch["decoder_target_tokens"]
        weights = (targets > 0) if weights is None else weights
        if self.distillation == "adist":
            maps = self.reader.cross_attention(reader_params, batch)
            return dist.adist_scores(maps, tokens > 0, weights)
        b, k, length = tokens.shape
        alone = {"encoder_input_tokens": tokens.reshape(b * k, 1, length),
                 "decoder_input_tokens": jnp.repeat(batch["decoder_input_tokens"], k, axis=0)}
        logits = self.reader.logits(reader_params, alone)
        log_probs = losses.token_log_probs(logits, jnp.repeat(targets, k, axis=0))
        return dist.pdist_scores(log_probs.reshape(b, k, -1), weights, self.pdist_reduction)

    def _temperatures(self) -> tuple[float, float]:
        target = (dist.ATLAS_TARGET_TEMPERATURE[self.distillation]
                  if self.target_temperature is None else self.target_temperature)
        retriever = (self.retriever.temperature if self.retriever_temperature is None
                     else self.retriever_temperature)
        return target, retriever

    def distillation_kl(self, params, batch: Batch, dropout_rng=None):
        """float32 [b]: each question's KL(target || p_retriever) (0 for a
        question without real passages) and bool [b]: the questions counted."""
        self.check_batch(batch)
        valid = self._valid_passages(batch)
        target_t, retriever_t = self._temperatures()
        target = dist.target_distribution(self.target_scores(params["reader"], batch), valid,
                                          target_t)
        scores = self.retriever_scores(params["retriever"], batch, dropout_rng)
        return dist.retriever_kl(target, scores, valid, retriever_t), jnp.any(valid, axis=1)

    # -- the protocol's computations ----------------------------------------------
    def loss_denominator(self, batch: Batch, num_tasks: int = 0) -> dict:
        out = dict(self.reader.loss_denominator(batch, num_tasks))
        if self.distills:
            counted = jnp.any(self._valid_passages(batch), axis=1)
            out["questions"] = jnp.maximum(jnp.sum(counted.astype(jnp.float32)), 1.0)
        return out

    def loss_fn(self, params, batch: Batch, dropout_rng, num_tasks: int = 0):
        self.check_batch(batch)
        reader_loss, metrics = self.reader.loss_fn(params["reader"], batch, dropout_rng,
                                                   num_tasks)
        if not self.distills:
            return reader_loss, metrics
        use_dropout = self.retriever.backbone.dropout_rate > 0 and dropout_rng is not None
        retriever_rng = (jax.random.fold_in(dropout_rng, RETRIEVER_DROPOUT_STREAM)
                         if use_dropout else None)
        kl, counted = self.distillation_kl(params, batch, retriever_rng)
        denominator = batch.get(losses.LOSS_DENOMINATOR_KEY) or self.loss_denominator(batch)
        kl = jnp.sum(kl) / denominator["questions"]
        loss = reader_loss + kl
        metrics = {**metrics, "loss": loss, "reader_loss": reader_loss, "distillation_kl": kl,
                   "num_questions": jnp.sum(counted.astype(jnp.float32))}
        return loss, metrics

    def score_batch(self, params, batch: Batch):
        """The reader's log-likelihood of the targets given the k passages [b]."""
        return self.reader.score_batch(params["reader"], batch)

    def predict_batch(self, params, batch: Batch, decode=None, rng=None):
        """The reader's decoding over the k passages."""
        return self.reader.predict_batch(params["reader"], batch, decode, rng)
