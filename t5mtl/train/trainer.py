"""The training loop behind `t5mtl train`.

One gin-configured call, `train(model_dir=...)`, runs: born-sharded init or
resume from the latest checkpoint (data position included), or finetuning
init from another model directory / HF checkpoint; the jitted, donated train
step over the mesh; metrics to TensorBoard and metrics.jsonl; periodic
seqio evaluation; orbax checkpoints (async, keep-N or keep-best, and one on
SIGTERM); a readable summary at the end. A model_dir holding another
model's or optimizer's checkpoints is refused before anything in it changes.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import signal
import time
from typing import Callable, Sequence

import gin
import jax
import numpy as np
import seqio

from t5mtl.errors import T5mtlError
from t5mtl.infer.evaluation import TaskEvaluator, flatten_metrics, score_table
from t5mtl.models.config import T5Config
from t5mtl.models.encoder_decoder import DecodeConfig, EncoderDecoderModel, LossConfig
from t5mtl.train import losses, partitioning
from t5mtl.train import model_dir as model_dir_lib
from t5mtl.train.checkpointer import TrainCheckpointer
from t5mtl.train.dispatch import dispatch_gate, temp_bytes
from t5mtl.train.init_from import init_params_from
from t5mtl.train.metrics_writer import MetricsLogger
from t5mtl.train.optimizers import create_optimizer
from t5mtl.train.train_step import create_train_state, jit_train_step, make_train_step

log = logging.getLogger(__name__)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The training data: a seqio task or mixture and how to batch it.

    `mixture_or_task_name` may also be a list of task names: they are mixed
    at equal rates.
    """
    mixture_or_task_name: str | Sequence[str] = ""
    task_feature_lengths: dict = dataclasses.field(
        default_factory=lambda: {"inputs": 64, "targets": 16})
    batch_size: int = 32            # global, over all processes
    split: str = "train"
    pack: bool = True
    shuffle: bool = True
    seed: int = 0


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """When and what to save, and where a finetuning run starts from."""
    period: int = 1000
    keep: int = 3
    keep_best_metric: str | None = None     # e.g. "eval/synth_all/accuracy"
    best_mode: str = "max"
    async_save: bool = True
    init_from: str | None = None            # a t5mtl model_dir or an HF T5 directory
    init_fresh_patterns: Sequence[str] = ()  # param-name regexes that start fresh


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EvalConfig:
    tasks: Sequence[str] = ()
    period: int = 0                 # 0: only at the end
    split: str = "validation"
    num_examples: int | None = None
    batch_size: int = 32
    task_feature_lengths: dict | None = None   # default: the training lengths
    decode: DecodeConfig | None = None


gin.external_configurable(DecodeConfig, module="t5mtl")


def vocabulary_spec(vocab: seqio.Vocabulary) -> dict | None:
    """model.json's description of a seqio vocabulary, so infer can use text."""
    if isinstance(vocab, seqio.ByteVocabulary):
        return {"kind": "byte", "extra_ids": vocab.extra_ids}
    if isinstance(vocab, seqio.SentencePieceVocabulary):
        return {"kind": "sentencepiece", "path": os.path.abspath(vocab.sentencepiece_model_file),
                "extra_ids": vocab.extra_ids}
    return None


def resolve_mixture(name_or_names: str | Sequence[str]) -> str:
    """A registered task/mixture name; a list of task names becomes an
    equal-rate mixture registered under a name derived from the list."""
    names = [name_or_names] if isinstance(name_or_names, str) else list(name_or_names)
    for name in names:
        try:
            seqio.get_mixture_or_task(name)
        except ValueError as e:
            raise T5mtlError(f"unknown task or mixture {name!r}") from e
    if isinstance(name_or_names, str):
        return name_or_names
    mixture = "equal:" + "+".join(names)
    if mixture not in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.add(mixture, names, default_rate=1.0)
    return mixture


class _StopFlag:
    """SIGTERM: the loop saves a checkpoint and stops cleanly.

    With one process a Python SIGTERM handler sets the flag; nothing else
    runs per step. With several processes (jax.distributed) SIGTERM reaches
    each one at its own time (or only some of them), so they must agree on
    the step to stop at: leaving the loop at different steps deadlocks the
    next collective or the checkpoint save. They use JAX's preemption sync
    point: jax.distributed installs a SIGTERM handler (the preemption
    notifier), the notice reaches every process through the coordination
    service, and `reached_preemption_sync_point(step)` turns True at the
    same step everywhere (the largest step any process had reached, plus
    one) with no collective per step. Where the preemption service is
    disabled (`jax_enable_preemption_service=False`) the flag set by the
    Python handler is all-gathered every step instead.
    """

    def __init__(self):
        self.set = False            # agreed by every process: stop now
        self._signalled = False     # this process received SIGTERM (Python handler)
        self._previous = None
        self._mode = "local"
        if jax.process_count() > 1:
            self._mode = "allgather"
            if jax.distributed.is_initialized():
                from jax.experimental import multihost_utils
                try:        # a step id no loop has passed yet (they start at >= 0)
                    multihost_utils.reached_preemption_sync_point(-1)
                    self._mode = "sync_point"
                except RuntimeError:    # the preemption service is disabled
                    pass

    def __enter__(self):
        if self._mode == "sync_point":
            return self             # jax.distributed's notifier handles SIGTERM
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:          # not the main thread: no handler
            self._previous = None
        return self

    def _handle(self, signum, frame):
        log.warning("SIGTERM: saving a checkpoint and stopping")
        self._signalled = True

    def reached(self, step: int) -> bool:
        """Whether to stop now, having completed `step` (called once per step,
        in order, by every process)."""
        if self.set:
            return True
        if self._mode == "local":
            self.set = self._signalled
        elif self._mode == "sync_point":
            from jax.experimental import multihost_utils
            if multihost_utils.reached_preemption_sync_point(step):
                log.warning("SIGTERM (preemption notice) on some process: all processes save "
                            "a checkpoint at step %d and stop", step)
                self.set = True
        else:
            from jax.experimental import multihost_utils
            self.set = bool(np.any(multihost_utils.process_allgather(
                np.asarray(self._signalled))))
        return self.set

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _check_same_architecture(model_dir: str, config: T5Config, latest_step: int | None) -> None:
    """Raises T5mtlError if model_dir holds checkpoints of another architecture."""
    if latest_step is None or not model_dir_lib.is_model_dir(model_dir):
        return
    saved, _ = model_dir_lib.read_model_json(model_dir)
    diffs = model_dir_lib.architecture_differences(saved, config)
    if diffs:
        raise T5mtlError(
            f"{model_dir} holds checkpoints (latest: step {latest_step}) of another model: "
            f"{'; '.join(diffs)}. Nothing in {model_dir} was changed. Resume it with the model "
            f"config in its model.json, or train in a new --model_dir with "
            f"CheckpointConfig.init_from={model_dir!r}")


def _tokens(batch) -> int:
    return int(np.sum(batch["encoder_input_tokens"] > 0) + np.sum(batch["decoder_target_tokens"] > 0))


def _mean_metrics(history: list[dict]) -> dict[str, float]:
    host = jax.device_get(history)
    return {k: float(np.mean([h[k] for h in host])) for k in host[0]}


@gin.configurable(denylist=["model_dir", "before_training"])
def train(model_dir: str, *, model_config: T5Config = gin.REQUIRED,
          data: DataConfig = gin.REQUIRED, num_steps: int = gin.REQUIRED,
          optimizer=None, loss: LossConfig | None = None,
          checkpoints: CheckpointConfig | None = None, evaluation: EvalConfig | None = None,
          mesh_shape: Sequence[int] = (-1, 1, 1), num_microbatches: int = 1,
          log_period: int = 10, seed: int = 0, show_progress: bool = True,
          before_training: Callable[[], None] | None = None) -> dict:
    """Trains `model_config` on `data` for `num_steps` steps in `model_dir`.

    `before_training` is called once the model_dir is known to fit this run
    (resumed, initialized or fresh), before this run writes anything into it;
    `t5mtl train` writes config.gin there.

    Returns a summary: {"step", "loss", "eval": {task: {metric: value}}}.
    """
    checkpoints = checkpoints or CheckpointConfig()
    evaluation = evaluation or EvalConfig()
    if not data.mixture_or_task_name:
        raise T5mtlError("DataConfig.mixture_or_task_name is empty: name a seqio task or mixture")
    data = dataclasses.replace(data, mixture_or_task_name=resolve_mixture(
        data.mixture_or_task_name))
    provider = seqio.get_mixture_or_task(data.mixture_or_task_name)
    os.makedirs(model_dir, exist_ok=True)
    model = EncoderDecoderModel(model_config, loss)
    tx = optimizer if optimizer is not None else create_optimizer()
    mesh = partitioning.create_mesh(mesh_shape)
    rules = partitioning.logical_axis_rules()

    state, shardings = create_train_state(model.init_boxed, tx, jax.random.PRNGKey(seed),
                                          rng=jax.random.PRNGKey(seed + 1), mesh=mesh,
                                          rules=rules)
    ckpt = TrainCheckpointer(model_dir, keep=checkpoints.keep,
                             keep_best_metric=checkpoints.keep_best_metric,
                             best_mode=checkpoints.best_mode, async_save=checkpoints.async_save)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            state, shardings)
    try:
        # A model_dir that holds another model's checkpoints is an error
        # before anything in it is touched (resuming would fail, and starting
        # over would overwrite its model.json and, keep-N, its checkpoints).
        _check_same_architecture(model_dir, model_config, ckpt.latest_step())
        restored = ckpt.restore(abstract)
        data_position = 0
        if restored is not None:
            state, data_position = restored
            print(f"resumed from {ckpt.directory}/{int(state.step)} "
                  f"(data position {data_position})")
        elif checkpoints.init_from:
            state = init_params_from(state, shardings, tx, model_config, checkpoints.init_from,
                                     checkpoints.init_fresh_patterns, mesh, rules)
    except BaseException:
        ckpt.close()
        raise
    if before_training is not None:
        before_training()
    if jax.process_index() == 0:
        vocab = provider.output_features["targets"].vocabulary
        model_dir_lib.write_model_json(model_dir, model_config, vocabulary_spec(vocab))

    shard_index, num_shards = partitioning.process_batch_shard(mesh, data.batch_size)
    from t5mtl.data.batches import host_batches
    batches = host_batches(data.mixture_or_task_name, data.task_feature_lengths, data.split,
                           batch_size_per_host=data.batch_size // num_shards,
                           shuffle=data.shuffle, seed=data.seed, pack=data.pack,
                           shard_info=seqio.ShardInfo(shard_index, num_shards))
    batches = itertools.islice(batches, data_position, None)     # exact resume

    step_fn = jit_train_step(
        make_train_step(model.loss_fn, tx, num_microbatches=num_microbatches,
                        loss_denominator_fn=losses.loss_denominator_fn(
                            normalization=model.loss.normalization,
                            loss_normalizing_factor=model.loss.loss_normalizing_factor)),
        shardings, partitioning.batch_sharding(mesh), mesh, rules)
    evaluators = [TaskEvaluator(name, evaluation.task_feature_lengths or data.task_feature_lengths,
                                evaluation.split, evaluation.num_examples, evaluation.batch_size,
                                evaluation.decode) for name in evaluation.tasks]
    logger = MetricsLogger(model_dir)

    def run_eval(step: int) -> dict:
        results = {}
        for ev in evaluators:
            results.update(ev.evaluate(model, state.params, step))
        if results:
            logger.write(step, "eval", flatten_metrics(results))
        return results

    start_step = int(jax.device_get(state.step))
    compiled_step, before_dispatch = None, None
    history, eval_results, last_loss = [], {}, float("nan")
    tokens, t0 = 0, time.time()
    bar = _progress(start_step, num_steps, show_progress)
    with _StopFlag() as stop:
        step = start_step
        while step < num_steps and not stop.reached(step):
            try:
                batch = next(batches)
            except StopIteration:
                raise T5mtlError(f"{data.mixture_or_task_name!r} ran out of data at step {step}")
            data_position += 1
            tokens += _tokens(batch) * num_shards
            batch = partitioning.host_batch_to_global(batch, mesh)
            if compiled_step is None:
                # Compiled ahead of time for its buffer size: large CPU steps
                # run one at a time under the keep malloc policy.
                compiled_step = step_fn.lower(state, batch).compile()
                before_dispatch = dispatch_gate(mesh, temp_bytes(compiled_step))
            before_dispatch(state)
            state, metrics = compiled_step(state, batch)
            step += 1
            history.append(metrics)
            if step % log_period == 0 or step == num_steps:
                scalars = _mean_metrics(history)
                history = []
                last_loss = scalars["loss"]
                if not math.isfinite(last_loss):
                    raise T5mtlError(
                        f"loss is {last_loss} at step {step}; stopping without saving. The last "
                        f"good checkpoint is step {ckpt.latest_step()} in {ckpt.directory}")
                elapsed = max(time.time() - t0, 1e-9)
                scalars["tokens_per_second"] = tokens / elapsed
                logger.write(step, "train", scalars)
                tokens, t0 = 0, time.time()
                bar.set_postfix(loss=f"{last_loss:.3f}",
                                tok_s=f"{scalars['tokens_per_second']:.0f}")
            bar.update(1)
            if evaluation.period and step % evaluation.period == 0 and step < num_steps:
                eval_results = run_eval(step)
            if step % checkpoints.period == 0 and step < num_steps:
                ckpt.save(state, data_position, _checkpoint_metrics(eval_results))
    bar.close()
    if step == num_steps and evaluators:
        eval_results = run_eval(step)
    ckpt.save(state, data_position, _checkpoint_metrics(eval_results), force=True)
    ckpt.close()
    logger.close()
    return {"step": step, "loss": last_loss, "eval": eval_results, "stopped": stop.set}


def _checkpoint_metrics(eval_results: dict) -> dict | None:
    """Metrics keep-best ranks by, named "eval/<task>/<metric>"."""
    if not eval_results:
        return None
    return {f"eval/{k}": v for k, v in flatten_metrics(eval_results).items()}


def _progress(start: int, total: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=start, desc="train", unit="step",
                disable=not enabled or jax.process_index() != 0, dynamic_ncols=True)


def summarize(model_dir: str, summary: dict) -> str:
    """The end-of-run text: per-task eval table, the checkpoint, how to infer."""
    lines = [f"trained to step {summary['step']}; last train loss {summary['loss']:.4f}"]
    if summary["eval"]:
        lines += ["", score_table(summary["eval"]), ""]
    lines.append(f"checkpoint: {os.path.join(model_dir, model_dir_lib.CHECKPOINTS)}/"
                 f"{summary['step']}")
    example = _example_input(sorted(summary["eval"])[0]) if summary["eval"] else "..."
    lines.append(f"try it:     t5mtl infer --model_dir {model_dir} --input {json.dumps(example)}")
    return "\n".join(lines)


def _example_input(task_name: str) -> str:
    """The first validation input of a task, as text (for the infer hint)."""
    task = seqio.get_mixture_or_task(task_name)
    if not isinstance(task, seqio.Task) or "validation" not in task.splits:
        return "..."
    ds = task.get_dataset(None, split="validation", shuffle=False, num_epochs=1)
    for ex in ds.take(1).as_numpy_iterator():
        if "inputs_pretokenized" in ex:
            return ex["inputs_pretokenized"].decode()
    return "..."
