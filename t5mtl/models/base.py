"""The model protocol: what `train`, `eval`, `infer`, `fewshot`, `t5mtl.load`
and the evaluator call, and how a model is written down in model.json.

As in t5x, the loops are handed a model object and never build one: gin
binds it (`train.model = @EncoderDecoderModel()`), and a model directory
records its class and arguments (`spec`) so `t5mtl.load` rebuilds the same
class. A new kind of model (an encoder-only one, a dual encoder, a test's toy
model) is a subclass of `BaseModel` in any importable module; nothing in the
trainer changes.

  init_boxed(rng)                       -> params, leaves boxed with logical axis names
  loss_fn(params, batch, rng, num_tasks=0) -> (loss, metrics)
  loss_denominator(batch, num_tasks=0)  -> the whole batch's normalizers (see models.losses)
  score_batch(params, batch)            -> per-example log-likelihood [b]
  predict_batch(params, batch, decode, rng) -> decoded ids [b, length]
  feature_converter(pack, task_ids)     -> the seqio FeatureConverter its batches come from
  check_tasks(task_names)               -> refuses training data of other tasks (default: none)
  task_features(task_name, batch_size)  -> extra eval features (default: none)
  embedded_ids()                        -> ids the model embeds (a larger task vocabulary is refused)
  warm_start(params, fresh, context)    -> params once a base is loaded (e.g. prompt inits)

Metrics are additive over microbatches except the ratios
`models.losses.finalize_metrics` recomputes; with `num_tasks > 0` and
`decoder_task_ids` in the batch they include per-task vectors
(`task/loss`, `task/target_tokens`, `task/correct_tokens`).
"""
from __future__ import annotations

import abc
import dataclasses
import importlib
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import flax.linen as nn
import jax

if TYPE_CHECKING:
    import seqio

from t5mtl.errors import T5mtlError

Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """What a parameter that did not come from the base (finetuning init) may
    be initialized from once the base's parameters are in place: the run's
    vocabulary (a seqio.Vocabulary), the label names of its classification
    tasks (in task order, without repeats) and a PRNG key. Models add what
    their modules need (the encoder-decoder adds the token `embedding` and
    the whole loaded `params`, e.g. to check what a module reads from
    elsewhere was made on this base)."""
    vocabulary: Any = None
    labels: tuple[str, ...] = ()
    rng: Any = None
    embedding: Any = None
    params: Any = None


def class_path(obj_or_cls) -> str:
    """"package.module:QualName" of a class (or an instance's class)."""
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}:{cls.__qualname__}"


def import_class(path: str) -> type:
    """The class a `class_path` names; a T5mtlError naming it if it cannot be imported."""
    module_name, _, qualname = path.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as e:
        raise T5mtlError(f"model class {path!r} cannot be imported ({e}); is its module on "
                         f"the Python path?") from e
    if not isinstance(obj, type):
        raise T5mtlError(f"{path!r} is not a class")
    return obj


def module_spec(module: nn.Module | None) -> dict | None:
    """A Flax module plugged into a seam, as JSON: its class and dataclass fields."""
    if module is None:
        return None
    args = {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
            if f.init and f.name not in ("parent", "name")}
    return {"class": class_path(module), "args": args}


def module_from_spec(spec: Mapping[str, Any] | None) -> nn.Module | None:
    if spec is None:
        return None
    return import_class(spec["class"])(**spec.get("args", {}))


class BaseModel(abc.ABC):
    """A model as the training, evaluation and inference loops see it."""

    # -- what it is (model.json) ----------------------------------------------
    @abc.abstractmethod
    def spec(self) -> dict:
        """JSON-able constructor arguments: `type(self).from_spec(spec)` rebuilds it."""

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "BaseModel":
        return cls(**spec)

    def architecture(self) -> dict:
        """The fields that decide what the parameters compute: a model_dir is
        resumed only by a model with the same class and architecture. By
        default the whole spec; models list execution choices (dtype,
        dropout, kernels) out of it."""
        return self.spec()

    # -- data ---------------------------------------------------------------------
    def feature_converter(self, pack: bool = True,
                          task_ids: Sequence[str] = ()) -> "seqio.FeatureConverter":
        """The converter its batches come from: encoder-decoder features plus
        the task-id features (t5mtl.data.task_ids) named in `task_ids` (the
        trainer asks for "decoder_task_ids" for per-task metrics) and those
        the model's own inputs use. Each one costs input-pipeline time."""
        from t5mtl.data.batches import make_feature_converter
        return make_feature_converter("encdec", pack, tuple(task_ids))

    def check_tasks(self, task_names: Sequence[str]) -> None:
        """Raises T5mtlError if the model cannot train on data whose task ids
        index `task_names` (the trainer's mixture, in task-id order).
        Default: any tasks."""

    def task_features(self, task_name: str, batch_size: int) -> dict:
        """Features beyond the tokens that the model reads to predict or score
        `batch_size` examples of `task_name` (evaluation adds them to each
        batch; e.g. the multi-head classifier's per-example task ids).
        Default: none."""
        return {}

    def embedded_ids(self) -> int | None:
        """How many token ids the model embeds (the trainer refuses a task
        vocabulary with more); None where it has no token embedding. Default:
        `config.vocab_size` of the model or of its encoder `backbone`."""
        for owner in (self, getattr(self, "backbone", None)):
            size = getattr(getattr(owner, "config", None), "vocab_size", None)
            if size:
                return int(size)
        return None

    # -- parameters -----------------------------------------------------------------
    @abc.abstractmethod
    def init_boxed(self, rng) -> Any:
        """Fresh params whose leaves carry logical axis names (nn.Partitioned)."""

    def init_params(self, rng) -> Any:
        """Fresh params, unboxed, from `init_boxed` compiled as one program
        (op by op it would dispatch every initializer separately)."""
        return nn.unbox(jax.jit(self.init_boxed)(rng))

    def abstract_params(self) -> Any:
        """The param tree as unboxed jax.ShapeDtypeStructs; allocates nothing."""
        return nn.unbox(jax.eval_shape(self.init_boxed, jax.random.PRNGKey(0)))

    def adapt_params(self, params: Any) -> Any:
        """Params restored from a checkpoint, in this model's layout (e.g.
        scanned or per-layer). Default: as they are."""
        return params

    def warm_start(self, params: Any, fresh: Sequence[str], context: WarmStart) -> Any:
        """Params after finetuning init: the leaves named in `fresh` kept their
        random init; a model may set them from the base's (e.g. a soft prompt
        from token embeddings). Called once, when a run starts from a base.
        Default: unchanged."""
        return params

    # -- computation ----------------------------------------------------------------
    @abc.abstractmethod
    def loss_fn(self, params, batch: Batch, dropout_rng, num_tasks: int = 0):
        """(loss, metrics); no dropout when dropout_rng is None."""

    def loss_denominator(self, batch: Batch, num_tasks: int = 0):
        """The whole batch's loss normalizers, handed to every microbatch's
        loss_fn under gradient accumulation; None if the loss needs none."""
        return None

    @abc.abstractmethod
    def score_batch(self, params, batch: Batch):
        """Per-example log-likelihood of the targets [b] (unpacked batches)."""

    @abc.abstractmethod
    def predict_batch(self, params, batch: Batch, decode=None, rng=None):
        """Decoded ids [b, length] (0 after EOS) for the batch's inputs."""
