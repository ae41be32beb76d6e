"""T5 behind the model protocol (t5mtl.models.base): losses, scores and decoding.

`batch` holds seqio.EncDecFeatureConverter features: encoder_input_tokens,
decoder_input_tokens, decoder_target_tokens, decoder_loss_weights and, when
packed, *_segment_ids and *_positions; with task ids, encoder_task_ids and
decoder_task_ids (t5mtl.data.task_ids). The optimizer is not part of the
model.

In gin:

    train.model = @EncoderDecoderModel()
    EncoderDecoderModel.config = @get_config()
    EncoderDecoderModel.loss = @LossConfig()              # optional
    EncoderDecoderModel.encoder_input = @SomeModule()    # optional seam modules
    EncoderDecoderModel.weight_adapter = @LoRA()         # optional weight adapter

A weight adapter (t5mtl.peft.lora) keeps its parameters in its own subtree
(`subtree`), `init(rng, boxed_params)` creates them, and `apply(params)`
returns the params the T5 modules compute with; every forward pass goes
through `weights(params)`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from t5mtl.errors import T5mtlError
from t5mtl.models import losses
from t5mtl.models.base import BaseModel, Batch, module_from_spec, module_spec
from t5mtl.models.config import T5Config
from t5mtl.models.decoding import beam_search, sample_loop
from t5mtl.models.layout import to_layout
from t5mtl.models.t5 import EncoderOutput, Transformer


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LossConfig:
    """How the token cross-entropy is turned into a loss (see models.losses)."""
    z_loss: float = 1e-4
    label_smoothing: float = 0.0
    normalization: str = "num_real_target_tokens"
    loss_normalizing_factor: float | None = None

    def __post_init__(self):
        losses.check_normalization(self.normalization, self.loss_normalizing_factor)


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """How predict_batch decodes: greedy, sampled or beam search."""
    max_decode_length: int = 32
    method: str = "greedy"           # greedy | sample | beam
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    beam_size: int = 4
    alpha: float = 0.6
    eos_id: int = 1


gin.external_configurable(DecodeConfig, module="t5mtl")

# The weight adapter's dropout key: the step's dropout key folded with this.
ADAPTER_DROPOUT_STREAM = 0x10AD

# The T5Config fields that say which function the parameters compute. A run
# may resume a model_dir with other dropout, dtype, remat or kernel settings,
# not with other values of these.
ARCHITECTURE_FIELDS = (
    "vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_layers", "num_decoder_layers",
    "feed_forward_proj", "tie_word_embeddings", "relative_attention_num_buckets",
    "relative_attention_max_distance", "layer_norm_epsilon", "scan_layers")


class DecodeState(NamedTuple):
    """What T5 decoding carries between steps: the encoder output with its
    mask, the encoder's task ids (or None) and the per-layer KV caches."""
    encoded: EncoderOutput
    task_ids: Any
    cache: dict


@gin.configurable
class EncoderDecoderModel(BaseModel):
    """A T5 config, optional seam modules, and the functions the loops call."""

    def __init__(self, config: T5Config = gin.REQUIRED, loss: LossConfig | None = None,
                 encoder_input: nn.Module | None = None,
                 attention_prefix: nn.Module | None = None, weight_adapter=None):
        if not isinstance(config, T5Config):
            raise T5mtlError(f"EncoderDecoderModel.config must be a T5Config (e.g. "
                             f"@get_config()), got {config!r}")
        self.config = config
        self.loss = loss or LossConfig()
        self.encoder_input = encoder_input
        self.attention_prefix = attention_prefix
        self.weight_adapter = weight_adapter
        self.module = Transformer(config, encoder_input, attention_prefix)
        self._decoders: dict[DecodeConfig, Any] = {}

    def replace(self, **changes) -> "EncoderDecoderModel":
        args = dict(config=self.config, loss=self.loss, encoder_input=self.encoder_input,
                    attention_prefix=self.attention_prefix, weight_adapter=self.weight_adapter)
        return type(self)(**{**args, **changes})

    # -- what it is ---------------------------------------------------------------
    def spec(self) -> dict:
        return {"config": self.config.to_dict(), "loss": dataclasses.asdict(self.loss),
                "encoder_input": module_spec(self.encoder_input),
                "attention_prefix": module_spec(self.attention_prefix),
                "weight_adapter": module_spec(self.weight_adapter)}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "EncoderDecoderModel":
        # by keyword: gin may bind these on a configurable subclass, and an
        # explicit keyword overrides a binding where a positional one collides
        return cls(config=T5Config.from_dict(spec["config"]),
                   loss=LossConfig(**spec.get("loss", {})),
                   encoder_input=module_from_spec(spec.get("encoder_input")),
                   attention_prefix=module_from_spec(spec.get("attention_prefix")),
                   weight_adapter=module_from_spec(spec.get("weight_adapter")))

    def architecture(self) -> dict:
        cfg = self.config
        arch = {f: (cfg.n_decoder_layers if f == "num_decoder_layers" else getattr(cfg, f))
                for f in ARCHITECTURE_FIELDS}
        for seam in ("encoder_input", "attention_prefix", "weight_adapter"):
            arch[seam] = _architecture_spec(getattr(self, seam))
        return arch

    def _seam_modules(self):
        return [m for m in (self.encoder_input, self.attention_prefix, self.weight_adapter)
                if m is not None]

    def feature_converter(self, pack: bool = True, task_ids=()):
        """With seam modules (they may condition on the task) the encoder's
        task ids come along too. A seam module whose class sets
        `unpacked_only = True` (one task per row) refuses packing."""
        for module in self._seam_modules():
            if pack and getattr(type(module), "unpacked_only", False):
                raise T5mtlError(f"{type(module).__name__} needs unpacked rows (one task per "
                                 f"row): set DataConfig.pack=False")
        if self.encoder_input is not None or self.attention_prefix is not None:
            task_ids = tuple(dict.fromkeys(("encoder_task_ids", *task_ids)))
        return super().feature_converter(pack, task_ids)

    def check_tasks(self, task_names) -> None:
        """Each seam module with a `check_tasks(task_names)` method checks them."""
        for module in self._seam_modules():
            if hasattr(type(module), "check_tasks"):
                module.check_tasks(list(task_names))

    def task_features(self, task_name: str, batch_size: int) -> dict:
        """The features seam modules with a `task_features` method add (e.g. a
        task-conditioned prefix's per-row task ids)."""
        out = {}
        for module in self._seam_modules():
            if hasattr(type(module), "task_features"):
                out.update(module.task_features(task_name, batch_size))
        return out

    # -- parameters ---------------------------------------------------------------
    def init_boxed(self, rng):
        """Params with nn.Partitioned boxes (logical axis names), for sharding."""
        dummy = jnp.ones((1, 4), jnp.int32)
        params = self.module.init(rng, dummy, dummy)["params"]
        if self.weight_adapter is not None:
            adapter = self.weight_adapter
            params = {**params, adapter.subtree: adapter.init(jax.random.fold_in(rng, 1), params)}
        return params

    def weights(self, params, dropout_rng=None):
        """The params the T5 modules compute with: the weight adapter's
        (e.g. LoRA's W + scale A B) applied, its own subtree gone; with
        `dropout_rng` (training), the adapter's own dropout applied."""
        if self.weight_adapter is None:
            return params
        return self.weight_adapter.apply(params, dropout_rng)

    def adapt_params(self, params):
        """Per-layer or scanned, as this config's `scan_layers` asks."""
        return to_layout(params, self.config)

    def warm_start(self, params, fresh, context):
        """Each seam module with a `warm_start(own_params, context)` method
        whose parameters are all fresh gets to set them; the context carries
        the token embedding table and the params as loaded."""
        context = dataclasses.replace(context, embedding=params["token_embedder"]["embedding"],
                                      params=params)
        params = dict(params)
        for name, module in (("encoder_input", self.encoder_input),
                             ("attention_prefix", self.attention_prefix)):
            own = [n for n in fresh if n.startswith(name + "/")]
            if module is None or not own or not hasattr(module, "warm_start"):
                continue
            params[name] = module.warm_start(params[name], context)
        return params

    # -- forward ------------------------------------------------------------------
    def logits(self, params, batch: Batch, dropout_rng=None, adapter_rng=None):
        rngs = None if dropout_rng is None else {"dropout": dropout_rng}
        return self.module.apply(
            {"params": self.weights(params, adapter_rng)},
            batch["encoder_input_tokens"], batch["decoder_input_tokens"],
            batch.get("encoder_segment_ids"), batch.get("decoder_segment_ids"),
            batch.get("encoder_positions"), batch.get("decoder_positions"),
            deterministic=dropout_rng is None, task_ids=batch.get("encoder_task_ids"),
            rngs=rngs)

    def encode_batch(self, params, batch: Batch) -> EncoderOutput:
        """The encoder's output for the batch's encoder features, with
        `params` as the T5 modules compute with them (`weights` applied);
        what decoding starts from."""
        return self.module.apply({"params": params}, batch["encoder_input_tokens"],
                                 task_ids=batch.get("encoder_task_ids"),
                                 method=Transformer.encode)

    def loss_denominator(self, batch: Batch, num_tasks: int = 0) -> dict:
        """{"loss": the batch's denominator} and, with tasks, {"task": [num_tasks]}:
        the one place the loss's normalization is decided (segment ids included)."""
        targets = batch["decoder_target_tokens"]
        weights = batch.get("decoder_loss_weights")
        weights = (targets > 0) if weights is None else weights
        segment_ids = batch.get("decoder_segment_ids")
        cfg = self.loss
        out = {"loss": losses.loss_denominator(weights, cfg.normalization,
                                               cfg.loss_normalizing_factor, segment_ids)}
        if num_tasks and "decoder_task_ids" in batch:
            out["task"] = losses.task_loss_denominator(
                weights, batch["decoder_task_ids"], num_tasks, cfg.normalization,
                cfg.loss_normalizing_factor, segment_ids)
        return out

    def loss_fn(self, params, batch: Batch, dropout_rng, num_tasks: int = 0):
        use_dropout = self.config.dropout_rate > 0 and dropout_rng is not None
        adapter_rng = (jax.random.fold_in(dropout_rng, ADAPTER_DROPOUT_STREAM)
                       if self.weight_adapter is not None and dropout_rng is not None else None)
        logits = self.logits(params, batch, dropout_rng if use_dropout else None, adapter_rng)
        denominator = batch.get(losses.LOSS_DENOMINATOR_KEY) or {}
        with_tasks = bool(num_tasks) and "decoder_task_ids" in batch
        cfg = self.loss
        return losses.cross_entropy_with_z_loss(
            logits, batch["decoder_target_tokens"], batch.get("decoder_loss_weights"),
            z_loss=cfg.z_loss, label_smoothing=cfg.label_smoothing,
            normalization=cfg.normalization, loss_normalizing_factor=cfg.loss_normalizing_factor,
            segment_ids=batch.get("decoder_segment_ids"),
            loss_denominator=denominator.get("loss"),
            task_ids=batch["decoder_task_ids"] if with_tasks else None,
            num_tasks=num_tasks if with_tasks else 0,
            task_loss_denominator=denominator.get("task"))

    def score_batch(self, params, batch: Batch):
        """Sum over target tokens of log p(token), per example (unpacked batches)."""
        targets = batch["decoder_target_tokens"]
        tok = losses.token_log_probs(self.logits(params, batch), targets)
        weights = batch.get("decoder_loss_weights")
        weights = (targets > 0) if weights is None else weights > 0
        return jnp.sum(jnp.where(weights, tok, 0.0), axis=-1)

    # -- decoding -----------------------------------------------------------------
    def decode_fns(self, max_decode_length: int):
        """(prefill, step) over the KV cache, `weights(params)` passed at call:

          prefill(params, batch) -> (logits [b, V] at position 0, DecodeState)
          step(params, state, tokens [b], position) -> (logits [b, V], state)
        """
        module = self.module

        def prefill(params, batch):
            task_ids = batch.get("encoder_task_ids")
            encoded = self.encode_batch(params, batch)
            b = encoded.hidden.shape[0]
            start = jnp.zeros((b, 1), jnp.int32)      # decoder start token = pad = 0
            logits, variables = module.apply(
                {"params": params}, encoded, start, decoder_positions=start, decode=True,
                max_decode_length=max_decode_length, task_ids=task_ids, mutable=["cache"],
                method=Transformer.decode)
            return logits[:, 0], DecodeState(encoded, task_ids, variables["cache"])

        def step(params, state: DecodeState, tokens, position):
            b = tokens.shape[0]
            logits, variables = module.apply(
                {"params": params, "cache": state.cache}, state.encoded, tokens[:, None],
                decoder_positions=jnp.full((b, 1), position, jnp.int32), decode=True,
                max_decode_length=max_decode_length, task_ids=state.task_ids,
                mutable=["cache"], method=Transformer.decode)
            return logits[:, 0], state._replace(cache=variables["cache"])

        return prefill, step

    def predict_batch(self, params, batch: Batch, decode: DecodeConfig | None = None, rng=None):
        """Decoded ids [b, max_decode_length] (0 after EOS) for the batch's inputs."""
        return self.decoder(decode or DecodeConfig())(params, batch, rng)

    def decoder(self, decode: DecodeConfig):
        """A jitted `(params, batch, rng=None) -> ids [b, max_decode_length]`;
        `batch` needs encoder_input_tokens (and encoder_task_ids if the seam
        modules use task ids)."""
        if decode not in self._decoders:
            self._decoders[decode] = self._build_decoder(decode)
        return self._decoders[decode]

    def _build_decoder(self, decode: DecodeConfig):
        prefill, step = self.decode_fns(decode.max_decode_length)
        if decode.method == "beam":
            run_beam = jax.jit(lambda params, batch: self._beam(prefill, step, decode, params,
                                                                batch))
            return lambda params, batch, rng=None: run_beam(params, _decoder_inputs(batch))[0]
        if decode.method not in ("greedy", "sample"):
            raise T5mtlError(f"unknown decode method {decode.method!r} (greedy, sample, beam)")
        temperature = 0.0 if decode.method == "greedy" else decode.temperature

        @jax.jit
        def run(params, batch, rng):
            params = self.weights(params)
            logits, state = prefill(params, batch)
            return sample_loop(logits, state, lambda *a: step(params, *a),
                               decode.max_decode_length, rng, temperature, decode.top_k,
                               decode.top_p, decode.eos_id)

        def sample(params, batch, rng=None):
            return run(params, _decoder_inputs(batch),
                       jax.random.PRNGKey(0) if rng is None else rng)
        return sample

    def beam_search(self, params, batch: Batch, decode: DecodeConfig):
        """(ids [b, N], scores [b]) of beam search (T5's length penalty)."""
        prefill, step = self.decode_fns(decode.max_decode_length)
        return jax.jit(lambda p, b: self._beam(prefill, step, decode, p, b))(
            params, _decoder_inputs(batch))

    def _beam(self, prefill, step, decode: DecodeConfig, params, batch):
        batch_size, beams = batch["encoder_input_tokens"].shape[0], decode.beam_size
        params = self.weights(params)
        logits, state = prefill(params, jax.tree.map(lambda x: jnp.repeat(x, beams, axis=0),
                                                     batch))
        return beam_search(logits, state, lambda *a: step(params, *a), batch_size, beams,
                           decode.max_decode_length, decode.alpha, decode.eos_id,
                           cache_batch_axis=1 if self.config.scan_layers else 0)


def _architecture_spec(module) -> dict | None:
    """A seam module's spec less the fields that only choose its fresh init
    (listed in its `init_fields`): they do not change what it computes."""
    spec = module_spec(module)
    if spec is not None:
        drop = set(getattr(module, "init_fields", ()))
        spec["args"] = {k: v for k, v in spec["args"].items() if k not in drop}
    return spec


def _decoder_inputs(batch) -> dict:
    """The features decoding reads: encoder tokens and, if present, task ids
    (a bare token array is accepted as the encoder tokens)."""
    if not isinstance(batch, Mapping):
        return {"encoder_input_tokens": jnp.asarray(batch)}
    return {k: batch[k] for k in ("encoder_input_tokens", "encoder_task_ids") if k in batch}
