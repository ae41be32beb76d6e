"""The "traditional" multi-task classifier (Mueller, Andrews & Dredze 2022):
a shared T5 encoder and one small classification head per task.

  tokens -> the encoder backbone (T5's encoder through its seams, or BERT)
         -> pooled (T5: mean over non-padding positions; BERT: its pooler)
         -> head of the example's task
         -> logits over that task's labels (TaskInfo.label_names)

The encoder is a `models.encoder_backbone` backbone: with a T5Config only
the embedder and encoder parameters exist (`token_embedder/...`,
`encoder/...`, named as in T5, so `CheckpointConfig.init_from` a T5
checkpoint fills them and leaves the heads fresh); with a BertConfig, BERT's
encoder and pooler (one linear head on BERT's pooled output is HF's
BertForSequenceClassification). Each task's head lives under `heads/<task name>/`:
`out` (linear) or `hidden` + tanh + `out` (mlp, as HF's classification head).

Batches come from `data.class_labels.ClassLabelConverter` (unpacked):
encoder_input_tokens, encoder_token_types (BERT's sentence A / B; T5 has
none and ignores them), task_ids [b] and labels [b]. The loss is the mean
softmax cross-entropy of each example's head over its task's labels; with
`num_tasks` the metrics carry per-task vectors as the T5 model's do
(`task/loss`, differentiable; `task/target_tokens` and
`task/correct_tokens`, here counting examples, one label each).

In gin (`tasks`: a mixture, a task, or a list, resolved to the training
mixture's task order):

    train.model = @MultiHeadClassifier()
    MultiHeadClassifier.config = @get_config()
    MultiHeadClassifier.tasks = ['synth_parity', 'synth_sign']
    MultiHeadClassifier.head = 'linear'          # or 'mlp'
    DataConfig.pack = False

predict_batch returns the predicted label's token ids plus EOS, so seqio's
evaluation decodes them into the label string; evaluation hands the task
ids over through `task_features`. score_batch gives log p(target label).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from t5mtl.errors import T5mtlError
from t5mtl.models import task_list
from t5mtl.models import losses
from t5mtl.models.base import BaseModel, Batch
from t5mtl.models.encoder_backbone import backbone_from_spec, encoder_backbone
from t5mtl.models.layers import NEG_INF

HEADS = ("linear", "mlp")


class ClassificationHeads(nn.Module):
    """One head per task over pooled vectors: logits [b, tasks, max labels],
    -1e10 at labels a task does not have."""
    task_names: tuple[str, ...]
    num_labels: tuple[int, ...]
    head: str = "linear"
    hidden_dim: int = 64
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, pooled, deterministic: bool = True):
        width = max(self.num_labels)
        x = nn.Dropout(self.dropout_rate)(pooled, deterministic=deterministic)
        out = []
        for name, n in zip(self.task_names, self.num_labels):
            logits = TaskHead(n, self.head, self.hidden_dim, self.dropout_rate, name=name)(
                x, deterministic)
            out.append(jnp.pad(logits, ((0, 0), (0, width - n)), constant_values=NEG_INF))
        return jnp.stack(out, axis=1)


class TaskHead(nn.Module):
    """One task's head: `out` (linear) or `hidden`, tanh, `out` (mlp)."""
    num_labels: int
    head: str = "linear"
    hidden_dim: int = 64
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        axis = "embed"
        if self.head == "mlp":
            x = jnp.tanh(_dense(self.hidden_dim, ("embed", "mlp"), "hidden")(x))
            x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
            axis = "mlp"
        return _dense(self.num_labels, (axis, None), "out")(x)


def _dense(features: int, axes: tuple, name: str) -> nn.Dense:
    """A Dense layer whose kernel and bias carry logical axis names."""
    return nn.Dense(features, name=name,
                    kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                             axes),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                           axes[-1:]))


@gin.configurable
class MultiHeadClassifier(BaseModel):
    """A shared T5 encoder, mean-pooled, and a classification head per task."""

    def __init__(self, config=gin.REQUIRED,
                 tasks: str | Sequence[str] = gin.REQUIRED, head: str = "linear",
                 hidden_dim: int | None = None,
                 labels: Sequence[Sequence[str]] | None = None,
                 label_ids: Sequence[Sequence[Sequence[int]]] | None = None,
                 eos_id: int = 1, family: str | None = None):
        self.backbone = (backbone_from_spec({"family": family, "config": config})
                         if family is not None else encoder_backbone(config))
        if head not in HEADS:
            raise T5mtlError(f"MultiHeadClassifier.head {head!r}: choose from {HEADS}")
        if labels is None or label_ids is None:
            from t5mtl.data.class_labels import label_token_ids
            tasks = _resolve_tasks(tasks)
            labels, label_ids, eos_id = label_token_ids(tasks)
        tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
        if not tasks or len(labels) != len(tasks) or len(label_ids) != len(tasks):
            raise T5mtlError(f"MultiHeadClassifier: {len(tasks)} tasks but {len(labels)} "
                             f"label sets and {len(label_ids)} label id sets")
        self.config, self.head = self.backbone.config, head
        self.hidden_dim = int(hidden_dim or self.backbone.d_model)
        self.tasks = tasks
        self.labels = tuple(tuple(t) for t in labels)
        self.label_ids = tuple(tuple(tuple(int(i) for i in ids) for ids in t) for t in label_ids)
        self.eos_id = int(eos_id)
        self.heads = ClassificationHeads(tasks, tuple(len(t) for t in self.labels), head,
                                         self.hidden_dim, self.backbone.dropout_rate)

    # -- what it is ---------------------------------------------------------------
    def spec(self) -> dict:
        return {"family": self.backbone.family, "config": self.config.to_dict(), "tasks": list(self.tasks), "head": self.head,
                "hidden_dim": self.hidden_dim, "labels": [list(t) for t in self.labels],
                "label_ids": [[list(ids) for ids in t] for t in self.label_ids],
                "eos_id": self.eos_id}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "MultiHeadClassifier":
        # model.json of runs made before BERT came in has no "family": T5.
        return cls(**{"family": "t5", **spec})

    def architecture(self) -> dict:
        arch = self.backbone.architecture()
        if self.backbone.family != "t5":
            arch = {"family": self.backbone.family, **arch}
        return {**arch, "tasks": list(self.tasks), "labels": [list(t) for t in self.labels],
                "head": self.head, "hidden_dim": self.hidden_dim}

    def check_tasks(self, task_names: Sequence[str]) -> None:
        task_list.check_task_order("MultiHeadClassifier", "heads", self.tasks, task_names)

    def task_features(self, task_name: str, batch_size: int) -> dict:
        index = task_list.task_index("MultiHeadClassifier", "head", self.tasks, task_name)
        return {"task_ids": task_list.task_id_rows(index, batch_size, ())}

    # -- data ---------------------------------------------------------------------
    def feature_converter(self, pack: bool = True, task_ids=()):
        """encoder_input_tokens, task_ids and labels, one example per row;
        packing is refused (`task_ids` is ignored: the task id always comes)."""
        from t5mtl.data.class_labels import ClassLabelConverter
        return ClassLabelConverter(self.label_ids, self.eos_id, self.labels, pack=pack)

    # -- parameters ---------------------------------------------------------------
    def init_boxed(self, rng):
        enc_rng, head_rng = jax.random.split(rng)
        params = self.backbone.init(enc_rng, heads=("pooler",))
        pooled = jnp.zeros((1, self.backbone.d_model), jnp.float32)
        return {**params, "heads": self.heads.init(head_rng, pooled)["params"]}

    def adapt_params(self, params):
        """The backbone's layout (T5: per-layer or scanned as `scan_layers`
        asks; a T5 source's decoder is dropped, this model has none)."""
        heads = {"heads": params["heads"]} if "heads" in params else {}
        return {**self.backbone.adapt_params(params, heads=("pooler",)), **heads}

    # -- forward ------------------------------------------------------------------
    def pooled(self, params, tokens, dropout_rng=None, token_types=None):
        """float32 [b, d]: the backbone's pooled output (T5: the mean over
        real tokens; BERT: the pooler on [CLS], sentence A / B by
        `token_types`, None: all A)."""
        encoded = self.backbone.encode(params, tokens, token_types, dropout_rng)
        return self.backbone.pooled(params, encoded)

    def all_logits(self, params, tokens, dropout_rng=None, token_types=None):
        """float32 [b, tasks, max labels]: every head on every example."""
        if dropout_rng is not None:
            dropout_rng, head_rng = jax.random.split(dropout_rng)
        pooled = self.pooled(params, tokens, dropout_rng, token_types)
        rngs = None if dropout_rng is None else {"dropout": head_rng}
        return self.heads.apply({"params": params["heads"]}, pooled, dropout_rng is None,
                                rngs=rngs)

    def logits(self, params, batch: Batch, dropout_rng=None):
        """float32 [b, max labels]: each example's own task's head (-1e10 at
        labels its task lacks)."""
        task = self._task_ids(batch)
        logits = self.all_logits(params, batch["encoder_input_tokens"], dropout_rng,
                                 batch.get("encoder_token_types"))
        return jnp.take_along_axis(logits, jnp.maximum(task, 0)[:, None, None], axis=1)[:, 0]

    def _task_ids(self, batch: Batch):
        if "task_ids" in batch:
            return jnp.asarray(batch["task_ids"], jnp.int32)
        if len(self.tasks) == 1:
            return jnp.zeros(batch["encoder_input_tokens"].shape[:1], jnp.int32)
        raise T5mtlError(f"MultiHeadClassifier of {len(self.tasks)} tasks needs the batch's "
                         f"'task_ids' to pick each example's head")

    def loss_denominator(self, batch: Batch, num_tasks: int = 0) -> dict:
        """{"loss": the number of labeled examples} and, with tasks, each task's."""
        weights = _weights(batch)
        out = {"loss": jnp.maximum(jnp.sum(weights), 1.0)}
        if num_tasks:
            counts = losses.task_sums(weights, batch["task_ids"], num_tasks)
            out["task"] = jnp.maximum(counts, 1.0)
        return out

    def loss_fn(self, params, batch: Batch, dropout_rng, num_tasks: int = 0):
        if num_tasks and num_tasks != len(self.tasks):
            raise T5mtlError(f"the data has {num_tasks} tasks but MultiHeadClassifier has "
                             f"{len(self.tasks)} heads ({list(self.tasks)})")
        use_dropout = self.backbone.dropout_rate > 0 and dropout_rng is not None
        logits = self.logits(params, batch, dropout_rng if use_dropout else None)
        labels = jnp.maximum(jnp.asarray(batch["labels"], jnp.int32), 0)
        weights = _weights(batch)
        log_z = jax.nn.logsumexp(logits, axis=-1)
        label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
        ce = (log_z - label_logit) * weights
        correct = (jnp.argmax(logits, axis=-1) == labels) * weights
        denominator = batch.get(losses.LOSS_DENOMINATOR_KEY) or self.loss_denominator(
            batch, num_tasks)
        loss = jnp.sum(ce) / denominator["loss"]
        metrics = {"loss": loss, "cross_entropy": loss, "target_tokens": jnp.sum(weights),
                   "correct_tokens": jnp.sum(correct), "num_sequences": jnp.sum(weights)}
        if num_tasks:
            task = batch["task_ids"]
            metrics["task/loss"] = losses.task_sums(ce, task, num_tasks) / denominator["task"]
            metrics["task/target_tokens"] = losses.task_sums(weights, task, num_tasks)
            metrics["task/correct_tokens"] = losses.task_sums(correct, task, num_tasks)
        return loss, losses.finalize_metrics(metrics)

    # -- scores and predictions -----------------------------------------------------
    def score_batch(self, params, batch: Batch):
        """log p(label) of each example's target (decoder_target_tokens, EOS
        and padding ignored) under its task's head; -inf for a target that is
        none of its task's labels."""
        logp = jax.nn.log_softmax(self.logits(params, batch), axis=-1)
        index = self._match_labels(batch["decoder_target_tokens"], self._task_ids(batch))
        picked = jnp.take_along_axis(logp, jnp.maximum(index, 0)[:, None], axis=-1)[:, 0]
        return jnp.where(index >= 0, picked, -jnp.inf)

    def _match_labels(self, targets, task):
        """int32 [b]: the label index whose token ids equal the targets' (EOS
        and padding stripped), -1 if none."""
        from t5mtl.data.class_labels import padded_table
        table, lengths, width = padded_table(self.label_ids)
        targets = jnp.where(targets == self.eos_id, 0, jnp.asarray(targets, jnp.int32))
        n = jnp.sum(targets != 0, axis=-1)
        targets = jnp.pad(targets, ((0, 0), (0, max(0, width - targets.shape[1]))))[:, :width]
        rows = jnp.asarray(table, jnp.int32)[jnp.maximum(task, 0)]      # [b, labels, width]
        lens = jnp.asarray(lengths, jnp.int32)[jnp.maximum(task, 0)]
        match = (jnp.all(rows == targets[:, None], -1) & (lens == n[:, None]) & (lens > 0))
        return jnp.where(jnp.any(match, -1), jnp.argmax(match, -1), -1).astype(jnp.int32)

    def predict_labels(self, params, batch: Batch):
        """int32 [b]: the argmax label index of each example's head."""
        return jnp.argmax(self.logits(params, batch), axis=-1).astype(jnp.int32)

    def predict_batch(self, params, batch: Batch, decode=None, rng=None):
        """The predicted label's token ids then EOS, 0 after: [b, max_decode_length]."""
        from t5mtl.data.class_labels import padded_table
        width = max(len(ids) for t in self.label_ids for ids in t) + 1
        length = width if decode is None else decode.max_decode_length
        with_eos = [[list(ids) + [self.eos_id] for ids in t] for t in self.label_ids]
        table = jnp.asarray(padded_table(with_eos)[0], jnp.int32)       # [tasks, labels, w]
        table = jnp.pad(table, ((0, 0), (0, 0), (0, max(0, length - width))))[..., :length]
        task = jnp.maximum(self._task_ids(batch), 0)
        return table[task, self.predict_labels(params, batch)]


def _weights(batch: Batch):
    """1.0 for examples with a task and a label (0 for padding rows, id -1)."""
    return ((jnp.asarray(batch["task_ids"]) >= 0)
            & (jnp.asarray(batch["labels"]) >= 0)).astype(jnp.float32)


def _resolve_tasks(tasks: str | Sequence[str]) -> list[str]:
    """The task list a mixture, task or list of tasks trains with (the
    order task ids index)."""
    from t5mtl.data.data_config import resolve_mixture
    from t5mtl.data.task_ids import task_names
    if not isinstance(tasks, str) and not list(tasks):
        raise T5mtlError("MultiHeadClassifier.tasks is empty: name classification tasks")
    return task_names(resolve_mixture(tasks if isinstance(tasks, str) else list(tasks)))
