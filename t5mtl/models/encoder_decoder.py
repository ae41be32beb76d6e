"""The model contract the trainer, evaluator and infer code rely on (t5x style).

  loss_fn(params, batch, dropout_rng) -> (loss, metrics)
  score_batch(params, batch)          -> per-example target log-likelihood [b]
  predict_batch(params, batch)        -> decoded ids [b, max_decode_length]
  init_boxed(rng)                      -> params with logical-axis boxes

`batch` holds seqio.EncDecFeatureConverter features: encoder_input_tokens,
decoder_input_tokens, decoder_target_tokens, decoder_loss_weights and, when
packed, *_segment_ids and *_positions. The optimizer is not part of the model.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import gin
import jax
import jax.numpy as jnp

from t5mtl.models.config import T5Config
from t5mtl.models.t5 import Transformer

Batch = Mapping[str, jax.Array]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LossConfig:
    """How the token cross-entropy is turned into a loss (see train.losses)."""
    z_loss: float = 1e-4
    label_smoothing: float = 0.0
    normalization: str = "num_real_target_tokens"
    loss_normalizing_factor: float | None = None


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


class EncoderDecoderModel:
    """A T5 config plus the functions the training and evaluation loops call."""

    def __init__(self, config: T5Config, loss: LossConfig | None = None):
        self.config = config
        self.loss = loss or LossConfig()
        self.module = Transformer(config)

    # -- parameters --------------------------------------------------------
    def init_boxed(self, rng):
        """Params with nn.Partitioned boxes (logical axis names), for sharding."""
        dummy = jnp.ones((1, 4), jnp.int32)
        return self.module.init(rng, dummy, dummy)["params"]

    # -- forward -------------------------------------------------------------
    def logits(self, params, batch: Batch, dropout_rng=None):
        rngs = None if dropout_rng is None else {"dropout": dropout_rng}
        return self.module.apply(
            {"params": params},
            batch["encoder_input_tokens"], batch["decoder_input_tokens"],
            batch.get("encoder_segment_ids"), batch.get("decoder_segment_ids"),
            batch.get("encoder_positions"), batch.get("decoder_positions"),
            deterministic=dropout_rng is None, rngs=rngs)

    def loss_fn(self, params, batch: Batch, dropout_rng):
        from t5mtl.train.losses import cross_entropy_with_z_loss
        from t5mtl.train.train_step import LOSS_DENOMINATOR_KEY
        use_dropout = self.config.dropout_rate > 0 and dropout_rng is not None
        logits = self.logits(params, batch, dropout_rng if use_dropout else None)
        return cross_entropy_with_z_loss(
            logits, batch["decoder_target_tokens"], batch.get("decoder_loss_weights"),
            z_loss=self.loss.z_loss, label_smoothing=self.loss.label_smoothing,
            normalization=self.loss.normalization,
            loss_normalizing_factor=self.loss.loss_normalizing_factor,
            segment_ids=batch.get("decoder_segment_ids"),
            loss_denominator=batch.get(LOSS_DENOMINATOR_KEY))

    def eval_loss_fn(self, params, batch: Batch):
        return self.loss_fn(params, batch, None)

    def score_batch(self, params, batch: Batch):
        """Sum over target tokens of log p(token), per example (unpacked batches)."""
        logits = self.logits(params, batch)
        logp = jax.nn.log_softmax(logits, axis=-1)
        targets = batch["decoder_target_tokens"]
        tok = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        weights = batch.get("decoder_loss_weights")
        weights = (targets > 0) if weights is None else weights > 0
        return jnp.sum(jnp.where(weights, tok, 0.0), axis=-1)

    def predict_batch(self, params, batch: Batch, decode: DecodeConfig | None = None, rng=None):
        """Decoded ids [b, max_decode_length] (0 after EOS) for the batch's inputs."""
        decode = decode or DecodeConfig()
        return self.decoder(decode)(params, batch["encoder_input_tokens"], rng)

    def decoder(self, decode: DecodeConfig):
        """A jitted `(params, encoder_tokens, rng) -> ids` for `decode`."""
        from t5mtl.infer.beam_search import compiled_beam_search
        from t5mtl.infer.decoding import compiled_sampler
        if decode.method == "beam":
            beam = compiled_beam_search(self.module, decode.max_decode_length, decode.beam_size,
                                        decode.alpha, decode.eos_id)
            return lambda params, enc, rng=None: beam(params, enc)[0]
        if decode.method not in ("greedy", "sample"):
            from t5mtl.errors import T5mtlError
            raise T5mtlError(f"unknown decode method {decode.method!r} (greedy, sample, beam)")
        temperature = 0.0 if decode.method == "greedy" else decode.temperature
        run = compiled_sampler(self.module, decode.max_decode_length, temperature, decode.top_k,
                               decode.top_p, decode.eos_id)

        def sample(params, enc, rng=None):
            return run(params, enc, jax.random.PRNGKey(0) if rng is None else rng)
        return sample
