"""Fusion-in-Decoder (Izacard & Grave 2021): a T5 whose encoder reads each
(question, passage) pair on its own and whose decoder cross-attends over all
of them at once; Atlas's reader.

The encoder features are [batch, passages, length] (or [batch, length]: one
passage). The encoder sees them as [batch x passages, length], one row per
pair, so no pair attends to another; its output is reshaped to
[batch, passages x length, d] with the pairs' padding masks laid end to end,
and the unchanged T5 decoder cross-attends over that. Nothing of the T5
modules changes: the model only reshapes around `Transformer.encode` and
`Transformer.decode`, for training (`logits`) and for decoding
(`encode_batch`, so greedy, sampling and beam search work as they are).

With one passage the model is the plain encoder-decoder on that input
(tested to 1e-5). Rows are unpacked (each row is one question's passages);
seam modules that read task ids are not supported. `cross_attention` reads
the decoder's cross-attention over the fused passages (Atlas's attention
distillation, t5mtl.models.distillation).
"""
from __future__ import annotations

import gin

from t5mtl.errors import T5mtlError
from t5mtl.models.base import Batch
from t5mtl.models.distillation import cross_attention_maps
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.models.t5 import EncoderOutput, Transformer


def passages_shape(tokens) -> tuple[int, int, int]:
    """(batch, passages, length) of [b, l] or [b, p, l] encoder tokens."""
    if tokens.ndim == 2:
        return tokens.shape[0], 1, tokens.shape[1]
    if tokens.ndim == 3:
        return tuple(tokens.shape)
    raise T5mtlError(f"Fusion-in-Decoder encoder_input_tokens must be [batch, passages, "
                     f"length] or [batch, length], got shape {tuple(tokens.shape)}")


def fuse(encoded: EncoderOutput, batch: int, passages: int) -> EncoderOutput:
    """[b x p, l, d] per-pair encodings -> [b, p x l, d], the masks likewise."""
    _, length, d = encoded.hidden.shape
    return EncoderOutput(encoded.hidden.reshape(batch, passages * length, d),
                         encoded.segment_ids.reshape(batch, passages * length))


@gin.configurable
class FusionInDecoder(EncoderDecoderModel):
    """An EncoderDecoderModel whose encoder reads passages separately (module docstring)."""

    def feature_converter(self, pack: bool = True, task_ids=()):
        if pack:
            raise T5mtlError("FusionInDecoder needs unpacked rows (one question's passages "
                             "per row): set DataConfig.pack=False")
        return super().feature_converter(False, task_ids)

    def _encode(self, params, batch: Batch, deterministic: bool = True, rngs=None
                ) -> EncoderOutput:
        if batch.get("encoder_task_ids") is not None or "encoder_segment_ids" in batch:
            raise T5mtlError("FusionInDecoder takes unpacked rows without task ids")
        tokens = batch["encoder_input_tokens"]
        b, p, length = passages_shape(tokens)
        encoded = self.module.apply({"params": params}, tokens.reshape(b * p, length),
                                    deterministic=deterministic, rngs=rngs,
                                    method=Transformer.encode)
        return fuse(encoded, b, p)

    def encode_batch(self, params, batch: Batch) -> EncoderOutput:
        return self._encode(params, batch)

    def logits(self, params, batch: Batch, dropout_rng=None, adapter_rng=None):
        params = self.weights(params, adapter_rng)
        rngs = None if dropout_rng is None else {"dropout": dropout_rng}
        deterministic = dropout_rng is None
        encoded = self._encode(params, batch, deterministic, rngs)
        return self.module.apply(
            {"params": params}, encoded, batch["decoder_input_tokens"],
            batch.get("decoder_segment_ids"), batch.get("decoder_positions"),
            deterministic=deterministic, rngs=rngs, method=Transformer.decode)

    def cross_attention(self, params, batch: Batch):
        """float32 [layers, b, t, p x l]: each decoder layer's cross-attention
        (attention probability times value norm, averaged over heads:
        layers.value_weighted_attention) in a dropout-free forward pass."""
        params = self.weights(params)
        encoded = self._encode(params, batch)
        _, variables = self.module.apply(
            {"params": params}, encoded, batch["decoder_input_tokens"], deterministic=True,
            mutable=["intermediates"], method=Transformer.decode)
        return cross_attention_maps(variables["intermediates"])
