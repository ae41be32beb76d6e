"""The T5 encoder-decoder (v1.0 and v1.1 / Flan-T5) as Flax Linen modules.

Parameter tree (unscanned; with `scan_layers` the `layers_i` become one
`layers` subtree whose leaves gain a leading axis named `layers`):

  token_embedder/embedding                         [vocab, embed]
  encoder/relpos_bias/rel_embedding                [relpos_buckets, heads]
  encoder/layers_i/{pre_attention_layer_norm, attention, pre_mlp_layer_norm, mlp}
  encoder/encoder_norm/scale
  decoder/relpos_bias/rel_embedding
  decoder/layers_i/{pre_self_attention_layer_norm, self_attention,
                    pre_cross_attention_layer_norm, encoder_decoder_attention,
                    pre_mlp_layer_norm, mlp}
  decoder/decoder_norm/scale
  decoder/logits_dense/kernel                      [embed, vocab] (untied only)
  encoder_input/...     the encoder-input module's params, when it has one
  attention_prefix/...  the attention-prefix module's params, when it has one

Seams (flaxformer's split, with the mask carried rather than rebuilt):

  encode(tokens) = encode_embedded(encoder_inputs(tokens))
  encoder_inputs: embed(tokens) -> [encoder_input module] -> EncoderInputs
  encode_embedded: EncoderInputs (any length) -> EncoderOutput(hidden, segment_ids)
  decode(EncoderOutput, decoder tokens): the encoder mask comes from the
      EncoderOutput's segment ids, never from tokens

Reading the decoder's cross-attention: applied with
`mutable=["intermediates"]`, every decoder layer's cross-attention sows
`layers.value_weighted_attention` under "intermediates" (per layer, or
stacked on a leading [layers] axis when scanned); see
t5mtl.models.distillation.cross_attention_maps.

`encoder_input` (optional) maps EncoderInputs to EncoderInputs and may
change the sequence and its length (prepend vectors); `attention_prefix`
(optional) gives each stack's per-layer `KVPrefix` (see layers.KVPrefix).
Both are ordinary Flax modules selected by the model's gin config.

Packed rows: segment ids (0 = padding) build the masks, so different segments
never see each other. Outside incremental decoding the relative positions are
token indices (one bias for the batch): within a segment they differ exactly
as the per-segment positions do, so `*_positions` inputs are not needed.
Unpacked rows carry segment ids too: 1 for every real position, 0 for
padding.
"""
from __future__ import annotations

from typing import NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from t5mtl.models import kernels as kernels_lib
from t5mtl.models.config import T5Config
from t5mtl.models.layers import (MLP, NEG_INF, DenseGeneral, KVPrefix, MultiHeadAttention,
                                 RelativePositionBias, RMSNorm, dense_2d)


def _dtype(config: T5Config):
    return jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32


def _mask_to_bias(mask):
    """bool [b or 1, q or 1, k] -> additive float32 [b or 1, 1, q or 1, k]."""
    return jnp.where(mask, 0.0, NEG_INF).astype(jnp.float32)[:, None]


@flax.struct.dataclass
class EncoderInputs:
    """What the encoder stack reads: the seam between embedding and encoding.

      embedded     [b, l, d] vectors (token embeddings, or anything else)
      segment_ids  int32 [b, l]: 0 at padding; packed rows number their
                   segments 1, 2, ...; unpacked rows hold 1 at real positions
      task_ids     int32 [b, l] task index per position (-1 at padding), or None
      packed       whether rows are packed (static)
      tokens       int32 [b, l] the token ids `embedded` came from, or None
                   once a module changed the sequence (modules that act on
                   chosen ids, e.g. placeholders, read them)
    """
    embedded: jax.Array
    segment_ids: jax.Array
    task_ids: jax.Array | None = None
    packed: bool = flax.struct.field(pytree_node=False, default=False)
    tokens: jax.Array | None = None


class EncoderOutput(NamedTuple):
    """The encoder's output and the mask decoding attends with: [b, l, d], [b, l]."""
    hidden: jax.Array
    segment_ids: jax.Array


def encoder_self_mask(segment_ids, packed: bool):
    """bool [b, 1 or l, l]: unpacked rows see every real key; packed rows only
    their own segment's."""
    if not packed:
        return segment_ids[:, None, :] > 0
    return (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, None, :] > 0)


class EncoderLayer(nn.Module):
    config: T5Config
    deterministic: bool
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x, bias, mask, kv_prefix=None):
        cfg, dt = self.config, _dtype(self.config)
        drop = lambda y: nn.Dropout(cfg.dropout_rate)(y, deterministic=self.deterministic)
        h = RMSNorm(cfg.layer_norm_epsilon, dt, name="pre_attention_layer_norm")(x)
        h = MultiHeadAttention(cfg.num_heads, cfg.d_kv, cfg.dropout_rate, dt,
                               kernels=self.kernels, name="attention")(
            h, h, bias, mask, deterministic=self.deterministic, kv_prefix=kv_prefix)
        x = x + drop(h)
        h = RMSNorm(cfg.layer_norm_epsilon, dt, name="pre_mlp_layer_norm")(x)
        x = x + drop(MLP(cfg.d_ff, cfg.gated, cfg.dropout_rate, dt, self.kernels, name="mlp")(
            h, self.deterministic))
        return nn.with_logical_constraint(x, ("batch", "length", "embed")), None


class DecoderLayer(nn.Module):
    config: T5Config
    deterministic: bool
    decode: bool = False
    max_decode_length: int | None = None
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x, encoded, self_bias, self_mask, cross_mask, kv_prefix=None):
        cfg, dt = self.config, _dtype(self.config)
        drop = lambda y: nn.Dropout(cfg.dropout_rate)(y, deterministic=self.deterministic)
        h = RMSNorm(cfg.layer_norm_epsilon, dt, name="pre_self_attention_layer_norm")(x)
        h = MultiHeadAttention(cfg.num_heads, cfg.d_kv, cfg.dropout_rate, dt,
                               kernels=self.kernels, name="self_attention")(
            h, h, self_bias, self_mask, deterministic=self.deterministic, decode=self.decode,
            max_decode_length=self.max_decode_length, kv_prefix=kv_prefix)
        x = x + drop(h)
        h = RMSNorm(cfg.layer_norm_epsilon, dt, name="pre_cross_attention_layer_norm")(x)
        h = MultiHeadAttention(cfg.num_heads, cfg.d_kv, cfg.dropout_rate, dt, is_cross=True,
                               kernels=self.kernels, name="encoder_decoder_attention")(
            h, encoded, None, cross_mask, deterministic=self.deterministic, decode=self.decode)
        x = x + drop(h)
        h = RMSNorm(cfg.layer_norm_epsilon, dt, name="pre_mlp_layer_norm")(x)
        x = x + drop(MLP(cfg.d_ff, cfg.gated, cfg.dropout_rate, dt, self.kernels, name="mlp")(
            h, self.deterministic))
        return nn.with_logical_constraint(x, ("batch", "length", "embed")), None


_REMAT_POLICIES = {
    "full": None,
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def layer_stack(layer_cls, config: T5Config, num_layers: int, n_broadcast: int, **attrs):
    """Returns `apply(x, *broadcast_args, kv_prefix=None)` running `num_layers`
    layers: a Python loop or one nn.scan. Every layer gets the same
    broadcast args; `kv_prefix` leaves have a leading [layers] axis and each
    layer gets its own slice (scanned over, under nn.scan)."""
    cls = layer_cls
    if config.remat_policy != "none":
        cls = nn.remat(cls, policy=_REMAT_POLICIES[config.remat_policy],
                       prevent_cse=not config.scan_layers)
    if config.scan_layers:
        def apply_scanned(x, *args, kv_prefix=None):
            per_layer = () if kv_prefix is None else (0,)
            scanned = nn.scan(cls, variable_axes={"params": 0, "cache": 0, "intermediates": 0},
                              split_rngs={"params": True, "dropout": True},
                              in_axes=(nn.broadcast,) * n_broadcast + per_layer,
                              length=num_layers,
                              metadata_params={nn.PARTITION_NAME: "layers"})
            extra = () if kv_prefix is None else (kv_prefix,)
            return scanned(config, name="layers", **attrs)(x, *args, *extra)[0]
        return apply_scanned

    layers = [cls(config, name=f"layers_{i}", **attrs) for i in range(num_layers)]

    def apply(x, *args, kv_prefix=None):
        for i, layer in enumerate(layers):
            extra = () if kv_prefix is None else (kv_prefix.layer(i),)
            x, _ = layer(x, *args, *extra)
        return x
    return apply


class Encoder(nn.Module):
    config: T5Config
    kernels: str = "xla"

    @nn.compact
    def __call__(self, embedded, positions, attention_mask, deterministic: bool,
                 kv_prefix: KVPrefix | None = None):
        """embedded [b, l, d]; positions [b or 1, l]; attention_mask bool [b, l or 1, l]."""
        cfg = self.config
        bias = RelativePositionBias(cfg.relative_attention_num_buckets,
                                    cfg.relative_attention_max_distance, cfg.num_heads,
                                    bidirectional=True, name="relpos_bias")(positions, positions)
        mask = _mask_to_bias(attention_mask)
        x = nn.Dropout(cfg.dropout_rate)(embedded, deterministic=deterministic)
        x = layer_stack(EncoderLayer, cfg, cfg.num_layers, 2, deterministic=deterministic,
                   kernels=self.kernels)(x, bias, mask, kv_prefix=kv_prefix)
        x = RMSNorm(cfg.layer_norm_epsilon, _dtype(cfg), name="encoder_norm")(x)
        return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


class Decoder(nn.Module):
    config: T5Config
    kernels: str = "xla"

    @nn.compact
    def __call__(self, embedded, encoded, query_positions, key_positions, self_mask, cross_mask,
                 deterministic: bool, decode: bool = False, max_decode_length: int | None = None,
                 kv_prefix: KVPrefix | None = None):
        cfg = self.config
        bias = RelativePositionBias(cfg.relative_attention_num_buckets,
                                    cfg.relative_attention_max_distance, cfg.num_heads,
                                    bidirectional=False, name="relpos_bias")(
            query_positions, key_positions)
        x = nn.Dropout(cfg.dropout_rate)(embedded, deterministic=deterministic)
        x = layer_stack(DecoderLayer, cfg, cfg.n_decoder_layers, 4, deterministic=deterministic,
                   decode=decode, max_decode_length=max_decode_length, kernels=self.kernels)(
            x, encoded, bias, _mask_to_bias(self_mask), _mask_to_bias(cross_mask),
            kv_prefix=kv_prefix)
        x = RMSNorm(cfg.layer_norm_epsilon, _dtype(cfg), name="decoder_norm")(x)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        if cfg.tie_word_embeddings:
            return None, x * (cfg.d_model ** -0.5)
        logits = DenseGeneral((cfg.vocab_size,), ("embed", "vocab"), cfg.d_model ** -0.5,
                              kernels=self.kernels, name="logits_dense")(x.astype(jnp.float32))
        return logits, None


def _token_indices(length: int):
    """Positions [1, l] for the relative-position bias: token indices, as in
    flaxformer and HF. Packed rows' per-segment positions are not needed:
    within a segment, index differences equal position differences, and the
    mask removes every pair across segments. One bias for the whole batch
    keeps it out of the per-example attention tensors."""
    return jnp.arange(length, dtype=jnp.int32)[None]


class Transformer(nn.Module):
    """T5 encoder-decoder. `__call__` gives float32 logits [batch, length, vocab].

    `encoder_input` and `attention_prefix` are optional modules plugged into
    the seams (module docstring); the T5 modules themselves never change.
    """
    config: T5Config
    encoder_input: nn.Module | None = None
    attention_prefix: nn.Module | None = None

    def setup(self):
        cfg = self.config
        kernels = kernels_lib.resolve(cfg.kernels)
        self.token_embedder = nn.Embed(
            cfg.vocab_size, cfg.d_model, dtype=_dtype(cfg), param_dtype=jnp.float32,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                        ("vocab", "embed")))
        self.encoder = Encoder(cfg, kernels)
        self.decoder = Decoder(cfg, kernels)

    # -- the encoder's seams -----------------------------------------------------
    def embed(self, tokens):
        """Token embeddings [b, l, d] in the activation dtype."""
        return self.token_embedder(tokens)

    def encoder_inputs(self, tokens, segment_ids=None, task_ids=None,
                       deterministic: bool = True) -> EncoderInputs:
        """Embedded tokens with their segment ids, through the encoder-input
        module when there is one. Without `segment_ids` rows are unpacked and
        pad id 0 is masked."""
        packed = segment_ids is not None
        if not packed:
            segment_ids = (tokens != 0).astype(jnp.int32)
        inputs = EncoderInputs(self.embed(tokens), segment_ids, task_ids, packed, tokens)
        if self.encoder_input is not None:
            inputs = self.encoder_input(inputs, deterministic=deterministic)
        return inputs

    def encode_embedded(self, inputs: EncoderInputs, deterministic: bool = True,
                        kv_prefix: KVPrefix | None = None) -> EncoderOutput:
        """The encoder stack over any embedded sequence. `kv_prefix`: the
        encoder's per-layer prefix; None asks the attention-prefix module."""
        if kv_prefix is None:
            kv_prefix = self._prefix("encoder", inputs.embedded.shape[0], inputs.task_ids,
                                     deterministic)
        mask = encoder_self_mask(inputs.segment_ids, inputs.packed)
        hidden = self.encoder(inputs.embedded, _token_indices(inputs.embedded.shape[1]), mask,
                              deterministic, kv_prefix)
        return EncoderOutput(hidden, inputs.segment_ids)

    def encode(self, encoder_input_tokens, encoder_segment_ids=None, encoder_positions=None,
               deterministic: bool = True, task_ids=None) -> EncoderOutput:
        del encoder_positions       # the bias uses token indices (_token_indices)
        inputs = self.encoder_inputs(encoder_input_tokens, encoder_segment_ids, task_ids,
                                     deterministic)
        return self.encode_embedded(inputs, deterministic)

    def _prefix(self, stack: str, batch_size: int, task_ids, deterministic: bool):
        if self.attention_prefix is None:
            return None
        num_layers = (self.config.num_layers if stack == "encoder"
                      else self.config.n_decoder_layers)
        return self.attention_prefix(stack, num_layers, batch_size, task_ids,
                                     deterministic=deterministic)

    # -- the decoder -------------------------------------------------------------
    def decode(self, encoded: EncoderOutput, decoder_input_tokens, decoder_segment_ids=None,
               decoder_positions=None, deterministic: bool = True, decode: bool = False,
               max_decode_length: int | None = None, task_ids=None,
               kv_prefix: KVPrefix | None = None):
        """Decoder logits. The cross-attention mask comes from
        `encoded.segment_ids`. With `decode=True`, `decoder_input_tokens` is
        one step [b, 1] at `decoder_positions` [b, 1], attending to a cache of
        `max_decode_length` positions. `task_ids` (the encoder's, [b, l]) and
        `kv_prefix` reach the attention-prefix seam as in `encode_embedded`."""
        enc_seg = encoded.segment_ids
        b, q_len = decoder_input_tokens.shape
        if decode:
            q_pos = decoder_positions
            k_pos = jnp.arange(max_decode_length, dtype=jnp.int32)[None]
            self_mask = k_pos[:, None, :] <= q_pos[:, :, None]          # [b, 1, max]
            cross_mask = enc_seg[:, None, :] > 0
        else:
            q_pos = k_pos = _token_indices(q_len)
            idx = jnp.arange(q_len)
            self_mask = idx[None, :, None] >= idx[None, None, :]        # [1, q, q]
            if decoder_segment_ids is None:
                cross_mask = enc_seg[:, None, :] > 0                    # [b, 1, k]
            else:
                self_mask = self_mask & (decoder_segment_ids[:, :, None]
                                         == decoder_segment_ids[:, None, :])
                cross_mask = ((decoder_segment_ids[:, :, None] == enc_seg[:, None, :])
                              & (enc_seg[:, None, :] > 0))
        if kv_prefix is None:
            kv_prefix = self._prefix("decoder", b, task_ids, deterministic)
        embedded = self.embed(decoder_input_tokens)
        logits, tied_out = self.decoder(embedded, encoded.hidden, q_pos, k_pos, self_mask,
                                        cross_mask, deterministic, decode, max_decode_length,
                                        kv_prefix)
        if logits is None:
            logits = dense_2d(tied_out.astype(jnp.float32), self.token_embedder.embedding.T,
                              kernels=kernels_lib.resolve(self.config.kernels))
        return logits.astype(jnp.float32)

    def __call__(self, encoder_input_tokens, decoder_input_tokens, encoder_segment_ids=None,
                 decoder_segment_ids=None, encoder_positions=None, decoder_positions=None,
                 deterministic: bool = True, task_ids=None):
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                              deterministic, task_ids)
        return self.decode(encoded, decoder_input_tokens, decoder_segment_ids,
                           decoder_positions, deterministic, task_ids=task_ids)
