"""The training loop behind `t5mtl train`.

One gin-configured call, `train(model_dir=...)`, runs: born-sharded init or
resume from the latest checkpoint (data position included), or finetuning
init from another model directory / HF checkpoint; the jitted, donated train
step over the mesh, differentiating only the trainable parameters; metrics,
per task of the mixture, to TensorBoard and metrics.jsonl; periodic seqio
evaluation on the mesh; orbax checkpoints (async, keep-N or keep-best, the
trainable subset alone if asked, and one on SIGTERM); a readable summary at
the end. A model_dir holding another model's or optimizer's checkpoints is
refused before anything in it changes.

The model is handed in (`train.model = @EncoderDecoderModel()`, any
`t5mtl.models.base.BaseModel`); `train.model_config` (a T5Config) with
`train.loss` still builds an EncoderDecoderModel, as gin files written
before the model protocol do.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import time
from typing import Callable, Sequence

import gin
import jax
import seqio

from t5mtl import paths
from t5mtl.data.data_config import DataConfig, count_tokens, resolve_mixture
from t5mtl.data.task_ids import task_names as mixture_task_names
from t5mtl.data.task_info import get_task_info, has_task_info
from t5mtl.data.vocab import vocabulary_spec
from t5mtl.errors import T5mtlError
from t5mtl.infer.evaluation import TaskEvaluator, flatten_metrics
from t5mtl.models import param_names
from t5mtl.models.base import BaseModel, WarmStart
from t5mtl.models.config import T5Config
from t5mtl.models.encoder_decoder import DecodeConfig, EncoderDecoderModel, LossConfig
from t5mtl.train import dispatch, partitioning
from t5mtl.train import model_dir as model_dir_lib
from t5mtl.train.checkpointer import TrainCheckpointer
from t5mtl.train.init_from import init_params_from
from t5mtl.train.metrics_writer import MetricsLogger, period_scalars
from t5mtl.train.nonfinite import NonFiniteGuard
from t5mtl.train.optimizers import create_optimizer
from t5mtl.train.preemption import StopFlag
from t5mtl.train.train_step import create_train_state, jit_train_step, make_train_step

log = logging.getLogger(__name__)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """When and what to save, and where a finetuning run starts from.

    `save_trainable_only`: checkpoints hold only the trainable parameters
    (train.trainable_patterns / frozen_patterns) and model.json names
    `init_from` as their base; every loader joins the two. Every frozen
    parameter must then come from `init_from`.
    """
    period: int = 1000
    keep: int = 3
    keep_best_metric: str | None = None     # e.g. "eval/synth_all/accuracy"
    best_mode: str = "max"
    async_save: bool = True
    init_from: str | None = None            # a t5mtl model_dir, HF T5 dir or t5x checkpoint
    init_fresh_patterns: Sequence[str] = ()  # param-name regexes that start fresh
    save_trainable_only: bool = False


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


def resolve_model(model: BaseModel | None, model_config: T5Config | None,
                  loss: LossConfig | None) -> BaseModel:
    """The run's model: `model`, or an EncoderDecoderModel of `model_config`
    (gin files written before the model protocol); `loss` replaces a T5
    model's LossConfig."""
    if model is not None and model_config is not None:
        raise T5mtlError("both train.model and train.model_config are bound; bind the config "
                         "as EncoderDecoderModel.config and drop train.model_config")
    if model is None:
        if model_config is None:
            raise T5mtlError("no model: bind train.model (e.g. @EncoderDecoderModel()) or "
                             "train.model_config")
        return EncoderDecoderModel(model_config, loss)
    if not isinstance(model, BaseModel):
        raise T5mtlError(f"train.model must be a t5mtl.models.base.BaseModel, got {model!r}")
    if loss is not None:
        if not isinstance(model, EncoderDecoderModel):
            raise T5mtlError(f"train.loss applies to EncoderDecoderModel, not "
                             f"{type(model).__name__}")
        model = model.replace(loss=loss)
    return model


def _check_vocabulary(model: BaseModel, provider, name: str) -> None:
    """Ids past the model's embedding would gather as NaN rows (XLA fills
    out-of-range gathers): refuse the run before it writes anything."""
    size = model.embedded_ids()
    for feature_name, feature in provider.output_features.items():
        vocab = getattr(feature, "vocabulary", None)
        if size is None or vocab is None or vocab.vocab_size <= size:
            continue
        raise T5mtlError(f"the {feature_name!r} vocabulary of {name!r} has {vocab.vocab_size} "
                         f"ids but the model embeds {size} (its config's vocab_size); set "
                         f"vocab_size >= {vocab.vocab_size}")


def _check_same_architecture(model_dir: str, model: BaseModel, latest_step: int | None) -> None:
    """Raises T5mtlError if model_dir holds checkpoints of another architecture."""
    if latest_step is None or not model_dir_lib.is_model_dir(model_dir):
        return
    saved = model_dir_lib.read_model_json(model_dir).model
    diffs = model_dir_lib.architecture_differences(saved, model)
    if diffs:
        raise T5mtlError(
            f"{model_dir} holds checkpoints (latest: step {latest_step}) of another model: "
            f"{'; '.join(diffs)}. Nothing in {model_dir} was changed. Resume it with the model "
            f"config in its model.json, or train in a new --model_dir with "
            f"CheckpointConfig.init_from={model_dir!r}")


def _base_reference(model_dir: str, checkpoints: CheckpointConfig, trainable_names,
                    resuming: bool) -> dict | None:
    """model.json's "base" for trainable-only checkpoints (None otherwise): the
    init_from directory and its checkpoint step, kept from model.json when a
    run resumes (the saved subsets were trained against that step)."""
    if not checkpoints.save_trainable_only:
        return None
    if trainable_names is None or not checkpoints.init_from:
        raise T5mtlError("CheckpointConfig.save_trainable_only needs train.trainable_patterns "
                         "or train.frozen_patterns (what to save) and "
                         "CheckpointConfig.init_from (where the rest comes from)")
    path = paths.absolute(checkpoints.init_from)
    if resuming and model_dir_lib.is_model_dir(model_dir):
        saved = model_dir_lib.read_model_json(model_dir).base
        if saved and saved["path"] == path:
            return saved
    step = None
    if model_dir_lib.is_model_dir(path):
        with model_dir_lib.checkpoint_manager(path, read_only=True) as mngr:
            step = mngr.latest_step()
    else:
        from t5mtl.convert import t5x
        if t5x.is_t5x_checkpoint(path):
            step = t5x.open_checkpoint(path).step
    return {"path": path, "step": step}


def _fingerprint_base(base: dict | None, model_dir: str, source) -> None:
    """Records the base's fingerprint in `base` (model.json's reference) or,
    resuming, checks it against the recorded one."""
    if base is None:
        return
    if base.get("fingerprint"):
        model_dir_lib.check_base(base, source, model_dir)
    else:
        base["fingerprint"] = model_dir_lib.params_fingerprint(source)


def _restore_or_init(ckpt, state, shardings, tx, model, checkpoints, trainable_names, base,
                     mesh, rules, warm_start=None):
    """(state, data_position): the latest checkpoint, else finetuning init,
    else the fresh state. Trainable-only checkpoints get the rest from init_from."""
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            state, shardings)
    if checkpoints.save_trainable_only:
        abstract = abstract.replace(params=param_names.subset(abstract.params, trainable_names))
    restored = ckpt.restore(abstract)
    if restored is None and not checkpoints.init_from:
        return state, 0
    if restored is None or checkpoints.save_trainable_only:
        initialized, kept_fresh = init_params_from(
            state, shardings, tx, model, checkpoints.init_from, checkpoints.init_fresh_patterns,
            mesh, rules, trainable_names, base["step"] if base else None,
            None if restored is not None else warm_start,
            on_source=functools.partial(_fingerprint_base, base, paths.dirname(ckpt.directory)))
        if checkpoints.save_trainable_only:
            untrained = sorted(set(kept_fresh) - set(trainable_names))
            if untrained:
                raise T5mtlError(
                    f"save_trainable_only: frozen parameters {untrained[:5]} do not come from "
                    f"init_from {checkpoints.init_from!r}, so no checkpoint would hold them")
        if restored is None:
            return initialized, 0
        restored_state, data_position = restored
        params = param_names.merge(initialized.params, restored_state.params)
        state = restored_state.replace(params=params)
    else:
        state, data_position = restored
    print(f"resumed from {ckpt.directory}/{int(state.step)} (data position {data_position})")
    return state, data_position


def _warm_start_context(provider, tasks, seed: int) -> WarmStart:
    """The run's vocabulary, its tasks' label names and a key, for the
    model's warm_start after finetuning init."""
    labels = [label for task in tasks if has_task_info(task)
              for label in get_task_info(task).label_names]
    return WarmStart(provider.output_features["targets"].vocabulary,
                     tuple(dict.fromkeys(labels)), jax.random.PRNGKey(seed + 2))


@gin.configurable(denylist=["model_dir", "before_training"])
def train(model_dir: str, *, model: BaseModel | None = None,
          data: DataConfig = gin.REQUIRED, num_steps: int = gin.REQUIRED,
          optimizer=None, checkpoints: CheckpointConfig | None = None,
          evaluation: EvalConfig | None = None, mesh_shape: Sequence[int] = (-1, 1, 1),
          num_microbatches: int = 1, trainable_patterns: Sequence[str] | None = None,
          frozen_patterns: Sequence[str] = (), log_period: int = 10, seed: int = 0,
          show_progress: bool = True, before_training: Callable[[], None] | None = None,
          model_config: T5Config | None = None, loss: LossConfig | None = None,
          skip_nonfinite_steps: bool = False, gradient_surgery=None,
          conflict_probe_period: int = 0, conflict_probe_lr: float = 0.01) -> dict:
    """Trains `model` on `data` for `num_steps` steps in `model_dir`.

    `trainable_patterns` / `frozen_patterns` (regexes over parameter names,
    t5mtl.models.param_names) select what trains; by default everything.
    `before_training` is called once the model_dir is known to fit this run
    (resumed, initialized or fresh), before this run writes anything into it;
    `t5mtl train` writes config.gin there.

    A step whose loss or gradient norm is NaN or Inf stops the run without
    saving it (t5mtl.train.nonfinite); `skip_nonfinite_steps` skips such
    steps instead and logs their count. A model_dir already at `num_steps`
    is left as it is (summary "finished": True).

    Multi-task (t5mtl.mtl, docs/mtl.md): `gradient_surgery` (None: the
    plain gradient; 'sum', 'pcgrad', 'cagrad', 'gradvac' or e.g. @PCGrad())
    turns the batch's per-task gradients into the update;
    `conflict_probe_period` K > 0 measures task conflict and lookahead
    transfer (SGD step `conflict_probe_lr`) every K steps, logged under the
    split "conflict" (0: nothing of it is built).

    Returns a summary: {"step", "loss", "eval": {task: {metric: value}},
    "stopped", "finished", "skipped_steps"}.
    """
    model = resolve_model(model, model_config, loss)
    checkpoints = checkpoints or CheckpointConfig()
    evaluation = evaluation or EvalConfig()
    if not data.mixture_or_task_name:
        raise T5mtlError("DataConfig.mixture_or_task_name is empty: name a seqio task or mixture")
    data = dataclasses.replace(data, mixture_or_task_name=resolve_mixture(
        data.mixture_or_task_name))
    provider = seqio.get_mixture_or_task(data.mixture_or_task_name)
    tasks = mixture_task_names(data.mixture_or_task_name)
    model.check_tasks(tasks)
    _check_vocabulary(model, provider, data.mixture_or_task_name)
    paths.makedirs(model_dir)        # a gs:// model_dir: its bucket must exist
    tx = optimizer if optimizer is not None else create_optimizer()
    surgery = None
    if gradient_surgery is not None:
        from t5mtl.mtl import surgery as surgery_lib
        surgery = surgery_lib.resolve(gradient_surgery)
        tx = surgery_lib.with_state(tx, surgery, len(tasks))
    if not isinstance(conflict_probe_period, int) or conflict_probe_period < 0:
        raise T5mtlError(f"train.conflict_probe_period must be an integer >= 0, got "
                         f"{conflict_probe_period!r}")
    if (surgery is not None or conflict_probe_period) and len(tasks) < 2:
        raise T5mtlError(f"gradient surgery and conflict probes need a mixture of at least 2 "
                         f"tasks; {data.mixture_or_task_name!r} has {len(tasks)}")
    mesh = partitioning.create_mesh(mesh_shape)
    rules = partitioning.logical_axis_rules()
    trainable_names = param_names.select(list(param_names.flatten(model.abstract_params())),
                                         trainable_patterns, frozen_patterns)

    state, shardings = create_train_state(model.init_boxed, tx, jax.random.PRNGKey(seed),
                                          rng=jax.random.PRNGKey(seed + 1), mesh=mesh,
                                          rules=rules, trainable_names=trainable_names)
    ckpt = TrainCheckpointer(model_dir, keep=checkpoints.keep,
                             keep_best_metric=checkpoints.keep_best_metric,
                             best_mode=checkpoints.best_mode, async_save=checkpoints.async_save)
    try:
        # A model_dir that holds another model's checkpoints is an error
        # before anything in it is touched (resuming would fail, and starting
        # over would overwrite its model.json and, keep-N, its checkpoints).
        _check_same_architecture(model_dir, model, ckpt.latest_step())
        base = _base_reference(model_dir, checkpoints, trainable_names,
                               ckpt.latest_step() is not None)
        ckpt.saved_params = trainable_names if base else None
        state, data_position = _restore_or_init(
            ckpt, state, shardings, tx, model, checkpoints, trainable_names, base, mesh, rules,
            _warm_start_context(provider, tasks, seed))
    except BaseException:
        ckpt.close()
        raise
    start_step = int(jax.device_get(state.step))
    if start_step >= num_steps:
        # A finished run (or one asked for fewer steps than it has): nothing
        # to train, and nothing in model_dir changes.
        ckpt.close()
        print(f"{model_dir} is already trained to step {start_step} (train.num_steps="
              f"{num_steps}); nothing to do")
        return {"step": start_step, "loss": float("nan"), "eval": {}, "stopped": False,
                "finished": True, "skipped_steps": 0}
    if before_training is not None:
        before_training()
    if jax.process_index() == 0:
        vocab = provider.output_features["targets"].vocabulary
        model_dir_lib.write_model_json(model_dir, model, vocabulary_spec(vocab), tasks, base)
        if data.truncation_check_examples:
            from t5mtl.data.truncation import log_truncation
            log_truncation(data.mixture_or_task_name, data.task_feature_lengths, data.split,
                           data.truncation_check_examples)

    shard_index, num_shards = partitioning.process_batch_shard(mesh, data.batch_size)
    from t5mtl.data.batches import host_batches
    batches = host_batches(data.mixture_or_task_name, data.task_feature_lengths, data.split,
                           batch_size_per_host=data.batch_size // num_shards,
                           shuffle=data.shuffle, seed=data.seed, pack=data.pack,
                           shard_info=seqio.ShardInfo(shard_index, num_shards),
                           feature_converter=model.feature_converter(
                               data.pack, ("decoder_task_ids",) if len(tasks) > 1 else ()))
    batches = itertools.islice(batches, data_position, None)     # exact resume

    step_fn = jit_train_step(
        make_train_step(functools.partial(model.loss_fn, num_tasks=len(tasks)), tx,
                        num_microbatches=num_microbatches,
                        loss_denominator_fn=functools.partial(model.loss_denominator,
                                                              num_tasks=len(tasks)),
                        trainable_names=trainable_names,
                        skip_nonfinite=skip_nonfinite_steps,
                        **({} if surgery is None else
                           {"gradient_surgery": surgery, "num_tasks": len(tasks)})),
        shardings, partitioning.batch_sharding(mesh), mesh, rules)
    evaluators = [TaskEvaluator(name, evaluation.task_feature_lengths or data.task_feature_lengths,
                                evaluation.split, evaluation.num_examples, evaluation.batch_size,
                                evaluation.decode, mesh=mesh) for name in evaluation.tasks]
    logger = MetricsLogger(model_dir)
    probe = None
    if conflict_probe_period:
        probe = _conflict_probe(model, tasks, conflict_probe_period, conflict_probe_lr,
                                trainable_names, logger, mesh, rules)

    def run_eval(step: int, params) -> dict:
        results = {}
        for ev in evaluators:
            results.update(ev.evaluate(model, params, step))
        if results:
            logger.write(step, "eval", flatten_metrics(results))
        return results

    start_step = int(jax.device_get(state.step))
    guard = NonFiniteGuard(skip_nonfinite_steps, lambda: (ckpt.latest_step(), ckpt.directory))
    try:
        summary = _loop(state, batches, data_position, start_step, num_steps, step_fn, ckpt,
                        guard, logger, run_eval, evaluators, checkpoints, evaluation, data,
                        mesh, tasks, num_shards, log_period, show_progress, probe)
    except BaseException:
        _close_after_error(ckpt)
        logger.close()
        raise
    ckpt.close()
    logger.close()
    return summary


def _close_after_error(ckpt: TrainCheckpointer) -> None:
    """Lets a save in flight finish (it holds a finite state) without
    hiding the error being raised."""
    try:
        ckpt.close()
    except Exception as e:  # noqa: BLE001
        log.warning("%s", e)


def _loop(state, batches, data_position, start_step, num_steps, step_fn, ckpt, guard, logger,
          run_eval, evaluators, checkpoints, evaluation, data, mesh, tasks, num_shards,
          log_period, show_progress, probe=None) -> dict:
    """Steps from `start_step` to `num_steps` (or a stop signal), logging,
    evaluating and saving; returns the run's summary."""
    compiled_step, before_dispatch = None, None
    history, eval_results, last_loss = [], {}, float("nan")
    tokens, t0 = 0, time.time()
    bar = _progress(start_step, num_steps, show_progress)

    def save(step):
        guard.check()
        guard.check_state(step, state)
        ckpt.save(state, data_position, _checkpoint_metrics(eval_results), force=True)

    with StopFlag() as stop:
        step = start_step
        while step < num_steps and not stop.reached(step):
            try:
                batch = next(batches)
            except StopIteration:
                raise T5mtlError(f"{data.mixture_or_task_name!r} ran out of data at step {step}")
            data_position += 1
            tokens += count_tokens(batch) * num_shards
            batch = partitioning.host_batch_to_global(batch, mesh)
            if compiled_step is None:
                # Compiled ahead of time for its buffer size: large CPU steps
                # run one at a time under the keep malloc policy.
                compiled_step = step_fn.lower(state, batch).compile()
                before_dispatch = dispatch.dispatch_gate(mesh, dispatch.temp_bytes(compiled_step))
            if probe is not None:
                probe(step, state, batch)       # before the step donates the state
            before_dispatch(state)
            state, metrics = compiled_step(state, batch)
            step += 1
            guard.add(step, metrics["nonfinite"])
            history.append(metrics)
            ckpt.check()            # an async save that failed stops the run here
            if step % log_period == 0 or step == num_steps:
                skipped = guard.check()
                fetched = [h for h in jax.device_get(history) if not h["nonfinite"]]
                history = []
                scalars = {}
                if fetched:
                    scalars = period_scalars([{k: v for k, v in h.items() if k != "nonfinite"}
                                              for h in fetched],
                                             tasks if len(tasks) > 1 else ())
                    last_loss = scalars["loss"]
                if guard.skip:
                    scalars["skipped_steps"] = float(skipped)
                elapsed = max(time.time() - t0, 1e-9)
                scalars["tokens_per_second"] = tokens / elapsed
                logger.write(step, "train", scalars)
                tokens, t0 = 0, time.time()
                bar.set_postfix(loss=f"{last_loss:.3f}",
                                tok_s=f"{scalars['tokens_per_second']:.0f}")
            bar.update(1)
            if evaluation.period and step % evaluation.period == 0 and step < num_steps:
                eval_results = run_eval(step, state.params)
            if step % checkpoints.period == 0 and step < num_steps:
                save(step)
    bar.close()
    if step == num_steps and evaluators:
        eval_results = run_eval(step, state.params)
    save(step)
    if guard.skipped:
        log.warning("skipped %d step(s) whose loss or gradient norm was NaN or Inf",
                    guard.skipped)
    return {"step": step, "loss": last_loss, "eval": eval_results, "stopped": stop.set,
            "finished": False, "skipped_steps": guard.skipped}


def _conflict_probe(model, tasks, period, lr, trainable_names, logger, mesh, rules):
    """`probe(step, state, batch)`: every `period` steps, the conflict probes
    (t5mtl.mtl.probes) on the state before the step, logged at that step."""
    from t5mtl.mtl import probes
    fn = jax.jit(probes.make_probe(functools.partial(model.loss_fn, num_tasks=len(tasks)),
                                   len(tasks), lr, trainable_names))

    def probe(step, state, batch):
        if step % period:
            return
        with partitioning.mesh_context(mesh, rules):
            result = fn(state.params, batch)
        logger.write(step, probes.SPLIT, probes.probe_scalars(result, tasks))

    return probe


def _checkpoint_metrics(eval_results: dict) -> dict | None:
    """Metrics keep-best ranks by, named "eval/<task>/<metric>"."""
    if not eval_results:
        return None
    return {f"eval/{k}": v for k, v in flatten_metrics(eval_results).items()}


def _progress(start: int, total: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=start, desc="train", unit="step",
                disable=not enabled or jax.process_index() != 0, dynamic_ncols=True)

