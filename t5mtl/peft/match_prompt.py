"""Match-Prompt (Xu et al., CIKM 2022): one prompt per text-matching task,
learned with the model frozen (specialization), then the model trained on
every matching task with its task's prompt prepended (generalization).

    EncoderDecoderModel.encoder_input = @TaskPrompts()
    TaskPrompts.tasks = ['glue_stsb', 'match_boolq', 'match_qnli', 'superglue_cb']
    TaskPrompts.length = 20
    train.trainable_patterns = ['encoder_input/.*']          # stage 1 (specialization)
    train.frozen_patterns = ['encoder_input/.*']             # stage 2 (generalization)

`TaskPrompts` holds one [P, d_model] prompt per task, `encoder_input/<task>`,
and prepends to each row the prompt of the row's task (its task id, the
index of its task in `tasks`: the mixture's task list, in task-id order).
The prompts are separate leaves, so each task's prompt has its own
optimizer state (Adafactor's factored moments and update clipping are per
leaf), and a batch of task A gives a gradient to A's prompt alone.

Init, the hybrid prompt of the paper (natural-language task description +
continuous tokens): once the trainer has loaded the base, `warm_start` sets
task t's prompt to the base's token embeddings of t's description, the
description's tokens repeated cyclically (or cut) to P: row i is the
embedding of token i mod n of the n tokens. The description is
`TaskPrompts.descriptions[t]` (gin), else `DESCRIPTIONS[t]` (the table
below, written for the matching tasks), else the task's TaskInfo instruction or
description; a task with none is an error naming it.

An unseen matching task gets its prompt the way the paper's manual prompts
do, from its description alone (`with_task`): the generalized model then
reads that task's description-embedding prompt without any training on it.

Rows must be unpacked; every row needs a task id (the batch's
encoder_task_ids, which EncoderDecoderModel asks the data for whenever it
has a seam module, or the [b, 1] ids `task_features` gives evaluation).
Padding rows (task id -1) get the first task's prompt; nothing reads them.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn
import gin
import jax.numpy as jnp
import numpy as np

from t5mtl.errors import T5mtlError
from t5mtl.models import task_list
from t5mtl.models.base import WarmStart
from t5mtl.models.t5 import EncoderInputs

# Short natural-language descriptions of the matching tasks (what relation of
# the two texts the label names), for the prompts' init: kept short because a
# prompt holds P tokens of it (byte vocabularies spend a token per character).
DESCRIPTIONS = {
    "glue_qnli": "question answering: does the sentence answer the question",
    "superglue_boolq": "question answering: is the answer to the question yes",
    "match_qnli": "question answering: does the sentence answer the question",
    "match_boolq": "question answering: is the answer to the question yes",
    "glue_stsb": "semantic similarity: how close in meaning are the sentences",
    "superglue_cb": "natural language inference: entailment, contradiction or neutral",
    "superglue_rte": "natural language inference: does the premise entail the hypothesis",
    "glue_mrpc": "paraphrase identification: do the sentences mean the same",
    "glue_qqp": "paraphrase identification: do the questions ask the same",
    "glue_mnli": "natural language inference: entailment, contradiction or neutral",
    "glue_rte": "natural language inference: does the premise entail the hypothesis",
}


@gin.configurable
class TaskPrompts(nn.Module):
    """A [length, embed] prompt per task of `tasks`, prepended to each row by
    its task id (see module doc)."""
    tasks: Sequence[str]
    length: int = 20
    descriptions: Any = ()         # {task: text} or [(task, text)]: extra descriptions
    stddev: float = 1.0
    init_fields: ClassVar[tuple[str, ...]] = ("stddev", "descriptions")

    def __post_init__(self):
        tasks = tuple(self.tasks)
        if not tasks or len(set(tasks)) != len(tasks):
            raise T5mtlError(f"TaskPrompts.tasks={list(tasks)}: name each task of the "
                             f"mixture once, in task-id order")
        if self.length < 1:
            raise T5mtlError(f"TaskPrompts.length={self.length}: must be at least 1")
        pairs = self.descriptions
        pairs = pairs.items() if hasattr(pairs, "items") else pairs
        object.__setattr__(self, "tasks", tasks)
        object.__setattr__(self, "descriptions", tuple(sorted((str(k), str(v))
                                                              for k, v in pairs)))
        super().__post_init__()

    @nn.compact
    def __call__(self, inputs: EncoderInputs, deterministic: bool = True) -> EncoderInputs:
        if inputs.packed:
            raise T5mtlError("TaskPrompts needs unpacked rows: set DataConfig.pack=False")
        b, l, d = inputs.embedded.shape
        init = nn.with_logical_partitioning(nn.initializers.normal(self.stddev),
                                            ("prompt", "embed"))
        table = jnp.stack([self.param(task, init, (self.length, d), jnp.float32)
                           for task in self.tasks])                     # [T, P, d]
        task_ids = inputs.task_ids
        if task_ids is None:
            if not self.is_initializing():
                raise T5mtlError("TaskPrompts: the batch has no encoder_task_ids, so no row "
                                 "says which task's prompt it gets (evaluate one task with "
                                 "model.task_features, or train on a mixture's batches)")
            task_ids = jnp.zeros((b, 1), jnp.int32)
        if task_ids.shape[1] != l:       # [b, 1] row ids: spread over the real positions
            task_ids = jnp.where(inputs.segment_ids > 0, task_ids[:, :1], -1)
        row_ids = task_ids[:, :1]
        prefix = jnp.take(table, jnp.maximum(row_ids[:, 0], 0), axis=0)   # [b, P, d]
        segment_ids = jnp.concatenate(
            [jnp.ones((b, self.length), inputs.segment_ids.dtype), inputs.segment_ids], axis=1)
        task_ids = jnp.concatenate([jnp.broadcast_to(row_ids, (b, self.length)), task_ids],
                                   axis=1)
        return EncoderInputs(
            jnp.concatenate([prefix.astype(inputs.embedded.dtype), inputs.embedded], axis=1),
            segment_ids, task_ids, inputs.packed)

    # -- the tasks ------------------------------------------------------------------
    def check_tasks(self, task_names: Sequence[str]) -> None:
        """Training data's task ids must index `tasks` in the same order."""
        task_list.check_task_order("TaskPrompts", "prompts", self.tasks, task_names)

    def task_features(self, task_name: str, batch_size: int) -> dict:
        """Evaluating one task: every row's task id is that task's index."""
        index = task_list.task_index("TaskPrompts", "prompt", self.tasks, task_name,
                                     "; give it one with match_prompt.with_task")
        return {"encoder_task_ids": task_list.task_id_rows(index, batch_size)}

    def description(self, task: str) -> str:
        """The text task `task`'s prompt is initialized from (module doc)."""
        from t5mtl.data.task_info import get_task_info, has_task_info
        text = dict(self.descriptions).get(task) or DESCRIPTIONS.get(task)
        if not text and has_task_info(task):
            info = get_task_info(task)
            text = info.instruction or info.description
        if not text:
            raise T5mtlError(f"task {task!r} has no description to initialize its prompt "
                             f"from: add it to TaskPrompts.descriptions")
        return text

    # -- init from the base ---------------------------------------------------------
    def warm_start(self, own: dict, context: WarmStart) -> dict:
        """Every task's prompt from its description's token embeddings."""
        if context.vocabulary is None:
            raise T5mtlError("TaskPrompts needs the run's vocabulary to embed the task "
                             "descriptions")
        return {**own, **{task: self.description_prompt(task, context.embedding,
                                                        context.vocabulary).astype(own[task].dtype)
                          for task in self.tasks}}

    def description_prompt(self, task: str, embedding, vocabulary) -> jnp.ndarray:
        """[length, embed]: the description's token embeddings, cycled or cut to length."""
        ids = description_ids(self.description(task), vocabulary, embedding.shape[0])
        if not ids:
            raise T5mtlError(f"the description of task {task!r} encodes to no tokens")
        return jnp.asarray(embedding, jnp.float32)[np.resize(np.asarray(ids), self.length)]


def description_ids(text: str, vocabulary, vocab_size: int) -> list[int]:
    """The description's token ids that the embedding table has."""
    return [int(i) for i in vocabulary.encode(text) if 0 <= int(i) < vocab_size]


def with_task(model, params, task: str, vocabulary):
    """(model, params) with a prompt for `task` added (an unseen matching
    task): its description's embeddings through the model's token table, the
    rest of the params as they are. The model then evaluates `task`
    (task_features) and every task it had."""
    prompts = model.encoder_input
    if not isinstance(prompts, TaskPrompts):
        raise T5mtlError("with_task needs a model whose encoder_input is TaskPrompts")
    if task in prompts.tasks:
        raise T5mtlError(f"task {task!r} already has a prompt")
    extended = prompts.clone(tasks=prompts.tasks + (task,))
    embedding = params["token_embedder"]["embedding"]
    own = {**params["encoder_input"],
           task: extended.description_prompt(task, embedding, vocabulary)}
    return model.replace(encoder_input=extended), {**params, "encoder_input": own}


def trainable_parameters(config, num_tasks: int, length: int, stage: str,
                         train_prompts: bool = False) -> int:
    """Trainable parameters of a stage: specialization T * P * d_model (the
    prompts alone); generalization the whole model N(config), plus T * P *
    d_model when the prompts train too."""
    from t5mtl.models.init import count_params
    prompts = num_tasks * length * config.d_model
    if stage == "specialize":
        return prompts
    if stage == "generalize":
        return count_params(config) + (prompts if train_prompts else 0)
    raise T5mtlError(f"stage {stage!r}: choose 'specialize' or 'generalize'")
