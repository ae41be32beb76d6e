"""ATTEMPT (Asai et al., 2022): each example's soft prompt is its task's own
prompt plus an attention-weighted mixture of frozen source prompts (prompts
tuned earlier on other tasks) and that target prompt.

    EncoderDecoderModel.encoder_input = @Attempt()
    Attempt.sources = ['/runs/pt_a', '/runs/pt_b', ...]   # prompt-tuning adapter dirs
    Attempt.length = 100                # the sources' length
    Attempt.num_targets = 1             # one target prompt per task of the mixture
    train.trainable_patterns = ['encoder_input/.*']
    CheckpointConfig.init_from = '/path/to/the/sources/base'
    CheckpointConfig.save_trainable_only = True

For a row with input embeddings x_1..x_n (padding excluded) and task t:

    q     = max_i x_i                                    (max-pool, [d])
    h     = LayerNorm(W_up SiLU(W_down q))               (the shared attention module)
    c_j   = max_k P_j[k]  for P_j in (S_1, ..., S_m, T_t) (each candidate max-pooled)
    a     = softmax_j(c_j . h / temperature)             (temperature: d_model * e)
    P     = T_t + sum_j a_j P_j                          ([length, d], prepended)

as in the reference code (attn_method "sub": bottleneck 100, SiLU, LayerNorm
with scale and bias, temperature 2087 = 768 e for T5 base). The target
prompt enters twice, as a candidate and as the residual.

The source prompts are not parameters: they are read from their adapter
directories (prompt tuning's `encoder_input/vectors`, saved with
save_trainable_only) and enter the computation as constants behind
`stop_gradient`. Nothing trains or saves them; an ATTEMPT adapter directory
names its sources by path in model.json, and every load reads them again.
When a run starts from its base (`warm_start`), each source's recorded base
fingerprint must be the run's base's.

Parameters (`encoder_input/...`): `targets` [num_targets, length, d],
`down/kernel` [d, bottleneck], `up/kernel` [bottleneck, d],
`layer_norm/{scale,bias}` [d]; `trainable_count` gives their number.
Each forward pass sows the per-row attention [b, sources + 1] (the last
column: the target prompt) as `intermediates/encoder_input/attention`;
`attention_weights` returns it.
"""
from __future__ import annotations

import functools
import math
from typing import ClassVar, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np

from t5mtl.errors import T5mtlError
from t5mtl.models import task_list
from t5mtl.models.base import WarmStart
from t5mtl.models.t5 import EncoderInputs
from t5mtl.peft.prompt_tuning import sampled_rows

INITS = ("sampled_vocab", "random_uniform")


@functools.lru_cache(maxsize=64)
def _read_source(path: str):
    """(prompt [P, d] float32, the directory's ModelInfo) of one prompt-tuning
    adapter directory; a T5mtlError naming it when it is not one."""
    from t5mtl.train import model_dir
    if not model_dir.is_model_dir(path):
        raise T5mtlError(f"Attempt.sources: {path} is not an adapter directory (no "
                         f"{model_dir.MODEL_JSON} there)")
    info = model_dir.read_model_json(path)
    if not info.base:
        raise T5mtlError(f"Attempt.sources: {path} names no base; source prompts are "
                         f"prompt-tuning runs saved with CheckpointConfig.save_trainable_only")
    with jax.ensure_compile_time_eval():     # read eagerly, even inside a jit trace
        vectors = model_dir.saved_params(path).get("encoder_input", {}).get("vectors")
    if vectors is None:
        raise T5mtlError(f"Attempt.sources: {path} holds no prompt (encoder_input/vectors)")
    vectors = np.asarray(vectors, np.float32)
    vectors.setflags(write=False)
    return vectors, info


def source_prompts(sources: Sequence[str], length: int, d_model: int) -> np.ndarray:
    """[len(sources), length, d_model]: the prompts of the source directories,
    which must share one base and have this shape (else an error naming the
    directory)."""
    prompts, first = [], None
    for path in sources:
        vectors, info = _read_source(path)
        if vectors.shape != (length, d_model):
            raise T5mtlError(f"Attempt.sources: {path} holds a prompt of shape "
                             f"{list(vectors.shape)}, not [{length}, {d_model}] "
                             f"(Attempt.length, d_model)")
        if first is None:
            first = (path, info.base.get("fingerprint"))
        elif info.base.get("fingerprint") != first[1]:
            raise T5mtlError(f"Attempt.sources: {path} was trained on another base "
                             f"({info.base['path']}) than {first[0]}")
        prompts.append(vectors)
    if not prompts:
        return np.zeros((0, length, d_model), np.float32)
    return np.stack(prompts)


def check_sources_base(sources: Sequence[str], params) -> None:
    """Raises a T5mtlError naming the first source directory whose recorded
    base fingerprint is not that of `params`' base part (everything but
    `encoder_input`), compared in the source run's own layout."""
    from t5mtl.train import model_dir
    base = {k: v for k, v in params.items() if k != "encoder_input"}
    fingerprints = {}
    for path in sources:
        _, info = _read_source(path)
        expected = info.base.get("fingerprint")
        layout = bool(getattr(getattr(info.model, "config", None), "scan_layers", False))
        if layout not in fingerprints:
            fingerprints[layout] = model_dir.params_fingerprint(info.model.adapt_params(base))
        if expected and fingerprints[layout] != expected:
            raise T5mtlError(f"Attempt.sources: {path} was trained on the base "
                             f"{info.base['path']} (fingerprint {expected[:12]}), not on this "
                             f"run's base (fingerprint {fingerprints[layout][:12]})")


def pool_inputs(embedded, segment_ids):
    """[b, d]: the max over each row's real positions (segment id != 0) of
    its embeddings; a row without any real position pools to 0."""
    real = (segment_ids != 0)[..., None]
    pooled = jnp.max(jnp.where(real, embedded, -jnp.inf), axis=1)
    return jnp.where(jnp.any(real, axis=1), pooled, 0.0)


def mix_prompts(query, sources, targets, target_ids, temperature):
    """(prompts [b, P, d], attention [b, S + 1]) from the attention module's
    per-row output `query` [b, d], the frozen `sources` [S, P, d], the
    target prompts [T, P, d] and each row's target index [b]."""
    target = targets[target_ids]                                     # [b, P, d]
    b = query.shape[0]
    candidates = jnp.concatenate(
        [jnp.broadcast_to(sources[None], (b, *sources.shape)), target[:, None]], axis=1)
    logits = jnp.einsum("bjd,bd->bj", jnp.max(candidates, axis=2), query) / temperature
    attention = jax.nn.softmax(logits, axis=-1)
    return target + jnp.einsum("bj,bjpd->bpd", attention, candidates), attention


@gin.configurable
class Attempt(nn.Module):
    """ATTEMPT's instance prompt on the encoder-input seam (see module doc).

    Rows must be unpacked; the prompt's positions get segment id 1 and the
    row's task id, like PrependVectors. `num_targets` > 1 is the multi-task
    mode: row task id t (its mixture index) selects target prompt t, and the
    attention module is shared by all targets. `tasks` (optional) names
    the targets in task-id order: the trainer checks the run's tasks
    against it, and evaluation of one of them feeds its task id."""
    sources: tuple[str, ...] = ()
    length: int = 100
    num_targets: int = 1
    bottleneck: int = 100
    temperature: float | None = None     # None: d_model * e, the paper's
    init: str = "sampled_vocab"          # target prompts: or "random_uniform"
    init_range: float = 0.5
    population: int = 5000
    tasks: tuple[str, ...] = ()          # the targets' task names, in task-id order
    init_fields: ClassVar[tuple[str, ...]] = ("init", "init_range", "population")

    def __post_init__(self):
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.tasks and len(self.tasks) != self.num_targets:
            raise T5mtlError(f"Attempt.tasks names {len(self.tasks)} tasks but "
                             f"num_targets={self.num_targets}")
        if self.init not in INITS:
            raise T5mtlError(f"Attempt.init={self.init!r}: choose one of {', '.join(INITS)}")
        if self.num_targets < 1:
            raise T5mtlError(f"Attempt.num_targets={self.num_targets}: at least 1")
        super().__post_init__()

    @nn.nowrap
    def check_tasks(self, task_names: Sequence[str]) -> None:
        """The run's tasks (task-id order) must be `tasks` when given, and
        at most `num_targets` many."""
        if self.tasks:
            task_list.check_task_order("Attempt", "target prompts", self.tasks, task_names)
        if len(task_names) > self.num_targets:
            raise T5mtlError(f"Attempt.num_targets={self.num_targets}, but the run mixes "
                             f"{len(task_names)} tasks: {list(task_names)}")

    @nn.nowrap
    def task_features(self, task_name: str, batch_size: int) -> dict:
        """The task id evaluation batches of `task_name` carry (its index in
        `tasks`); none for a single target."""
        if not self.tasks:
            return {}
        index = task_list.task_index("Attempt", "target prompt", self.tasks, task_name)
        return {"encoder_task_ids": task_list.task_id_rows(index, batch_size)}

    @nn.nowrap
    def source_prompts(self, d_model: int) -> np.ndarray:
        """The frozen source prompts [S, length, d_model], as read from disk."""
        return source_prompts(self.sources, self.length, d_model)

    @nn.nowrap
    def resolved_temperature(self, d_model: int) -> float:
        return self.temperature if self.temperature is not None else d_model * math.e

    @nn.compact
    def __call__(self, inputs: EncoderInputs, deterministic: bool = True) -> EncoderInputs:
        if inputs.packed:
            raise T5mtlError("Attempt needs unpacked rows: set DataConfig.pack=False")
        b, _, d = inputs.embedded.shape
        r = self.init_range
        targets = self.param("targets", nn.with_logical_partitioning(
            lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -r, r),
            (None, "prompt", "embed")), (self.num_targets, self.length, d), jnp.float32)
        dense = functools.partial(nn.Dense, use_bias=False, dtype=jnp.float32,
                                  param_dtype=jnp.float32)
        init = nn.initializers.normal(0.01)
        x = pool_inputs(inputs.embedded.astype(jnp.float32), inputs.segment_ids)
        x = dense(self.bottleneck, name="down",
                  kernel_init=nn.with_logical_partitioning(init, ("embed", None)))(x)
        x = dense(d, name="up", kernel_init=nn.with_logical_partitioning(init, (None, "embed")))(
            nn.silu(x))
        x = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, param_dtype=jnp.float32,
                         name="layer_norm",
                         scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                         bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",))
                         )(x)
        task_ids = inputs.task_ids
        if task_ids is not None and task_ids.shape[1] != inputs.segment_ids.shape[1]:
            task_ids = jnp.broadcast_to(task_ids[:, :1], inputs.segment_ids.shape)  # [b, 1]
        target_ids = (jnp.zeros((b,), jnp.int32) if task_ids is None
                      else jnp.clip(task_ids[:, 0], 0, self.num_targets - 1))
        sources = jax.lax.stop_gradient(jnp.asarray(self.source_prompts(d)))
        prompts, attention = mix_prompts(x, sources, targets, target_ids,
                                         self.resolved_temperature(d))
        self.sow("intermediates", "attention", attention)
        segment_ids = jnp.concatenate(
            [jnp.ones((b, self.length), inputs.segment_ids.dtype), inputs.segment_ids], axis=1)
        if task_ids is not None:
            task_ids = jnp.concatenate(
                [jnp.broadcast_to(task_ids[:, :1], (b, self.length)), task_ids], axis=1)
        embedded = jnp.concatenate([prompts.astype(inputs.embedded.dtype), inputs.embedded], 1)
        return EncoderInputs(embedded, segment_ids, task_ids, inputs.packed)

    def warm_start(self, own: dict, context: WarmStart) -> dict:
        """Checks the sources were tuned on this base; sets the target prompts
        to sampled vocabulary rows (the reference code's init) unless
        `init` is random_uniform."""
        if context.params is not None:
            check_sources_base(self.sources, context.params)
        if self.init == "random_uniform":
            return own
        targets = own["targets"]
        embedding = jnp.asarray(context.embedding, jnp.float32)
        rows = sampled_rows(embedding, targets.shape[0] * targets.shape[1], self.population,
                            context.rng)
        return {**own, "targets": rows.reshape(targets.shape).astype(targets.dtype)}


def trainable_count(d_model: int, length: int = 100, bottleneck: int = 100,
                    num_targets: int = 1) -> int:
    """ATTEMPT's trainable parameters: num_targets * length * d (target
    prompts) + 2 * d * bottleneck (W_down, W_up) + 2 * d (LayerNorm)."""
    return num_targets * length * d_model + 2 * d_model * bottleneck + 2 * d_model


def config_trainable_count(config, length: int = 100, bottleneck: int = 100,
                           num_targets: int = 1) -> int:
    """`trainable_count` for a T5Config."""
    return trainable_count(config.d_model, length, bottleneck, num_targets)


def attention_weights(model, params, tokens, task_ids=None) -> np.ndarray:
    """[b, sources + 1]: each row's attention over the source prompts (in
    `Attempt.sources` order) and, last, its target prompt. `tokens` [b, l]
    encoder ids (0 = padding); `task_ids` [b] or [b, l] target indices."""
    from t5mtl.models.t5 import Transformer
    tokens = jnp.asarray(tokens)
    if task_ids is not None:
        task_ids = jnp.asarray(task_ids, jnp.int32)
        if task_ids.ndim == 1:
            task_ids = jnp.broadcast_to(task_ids[:, None], tokens.shape)
    _, state = model.module.apply({"params": model.weights(params)}, tokens, None, task_ids,
                                  method=Transformer.encoder_inputs, mutable=["intermediates"])
    return np.asarray(state["intermediates"]["encoder_input"]["attention"][0])
