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

Packed rows: segment ids (0 = padding) build the masks, so different segments
never see each other. Outside incremental decoding the relative positions are
token indices (one bias for the batch): within a segment they differ exactly
as the per-segment positions do, so `*_positions` inputs are not needed.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from t5mtl.models.config import T5Config
from t5mtl.models.layers import (MLP, NEG_INF, DenseGeneral, MultiHeadAttention,
                                 RelativePositionBias, RMSNorm, dense_2d)


def _dtype(config: T5Config):
    return jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32


def _mask_to_bias(mask):
    """bool [b or 1, q or 1, k] -> additive float32 [b or 1, 1, q or 1, k]."""
    return jnp.where(mask, 0.0, NEG_INF).astype(jnp.float32)[:, None]


class EncoderLayer(nn.Module):
    config: T5Config
    deterministic: bool

    @nn.compact
    def __call__(self, x, bias, mask):
        cfg, dt = self.config, _dtype(self.config)
        drop = lambda y: nn.Dropout(cfg.dropout_rate)(y, deterministic=self.deterministic)
        h = RMSNorm(cfg.layer_norm_epsilon, dt, name="pre_attention_layer_norm")(x)
        h = MultiHeadAttention(cfg.num_heads, cfg.d_kv, cfg.dropout_rate, dt, name="attention")(
            h, h, bias, mask, deterministic=self.deterministic)
        x = x + drop(h)
        h = RMSNorm(cfg.layer_norm_epsilon, dt, name="pre_mlp_layer_norm")(x)
        x = x + drop(MLP(cfg.d_ff, cfg.gated, cfg.dropout_rate, dt, name="mlp")(
            h, self.deterministic))
        return nn.with_logical_constraint(x, ("batch", "length", "embed")), None


class DecoderLayer(nn.Module):
    config: T5Config
    deterministic: bool
    decode: bool = False
    max_decode_length: int | None = None

    @nn.compact
    def __call__(self, x, encoded, self_bias, self_mask, cross_mask):
        cfg, dt = self.config, _dtype(self.config)
        drop = lambda y: nn.Dropout(cfg.dropout_rate)(y, deterministic=self.deterministic)
        h = RMSNorm(cfg.layer_norm_epsilon, dt, name="pre_self_attention_layer_norm")(x)
        h = MultiHeadAttention(cfg.num_heads, cfg.d_kv, cfg.dropout_rate, dt,
                               name="self_attention")(
            h, h, self_bias, self_mask, deterministic=self.deterministic, decode=self.decode,
            max_decode_length=self.max_decode_length)
        x = x + drop(h)
        h = RMSNorm(cfg.layer_norm_epsilon, dt, name="pre_cross_attention_layer_norm")(x)
        h = MultiHeadAttention(cfg.num_heads, cfg.d_kv, cfg.dropout_rate, dt, is_cross=True,
                               name="encoder_decoder_attention")(
            h, encoded, None, cross_mask, deterministic=self.deterministic, decode=self.decode)
        x = x + drop(h)
        h = RMSNorm(cfg.layer_norm_epsilon, dt, name="pre_mlp_layer_norm")(x)
        x = x + drop(MLP(cfg.d_ff, cfg.gated, cfg.dropout_rate, dt, name="mlp")(
            h, self.deterministic))
        return nn.with_logical_constraint(x, ("batch", "length", "embed")), None


_REMAT_POLICIES = {
    "full": None,
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _stack(layer_cls, config: T5Config, num_layers: int, n_broadcast: int, **attrs):
    """Returns a callable applying `num_layers` layers: a loop or one nn.scan."""
    cls = layer_cls
    if config.remat_policy != "none":
        cls = nn.remat(cls, policy=_REMAT_POLICIES[config.remat_policy],
                       prevent_cse=not config.scan_layers)
    if config.scan_layers:
        scanned = nn.scan(cls, variable_axes={"params": 0, "cache": 0},
                          split_rngs={"params": True, "dropout": True},
                          in_axes=(nn.broadcast,) * n_broadcast, length=num_layers,
                          metadata_params={nn.PARTITION_NAME: "layers"})
        layer = scanned(config, name="layers", **attrs)
        return lambda x, *args: layer(x, *args)[0]

    layers = [cls(config, name=f"layers_{i}", **attrs) for i in range(num_layers)]

    def apply(x, *args):
        for layer in layers:
            x, _ = layer(x, *args)
        return x
    return apply


class Encoder(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, embedded, positions, attention_mask, deterministic: bool):
        """embedded [b, l, d]; positions [b or 1, l]; attention_mask bool [b, l or 1, l]."""
        cfg = self.config
        bias = RelativePositionBias(cfg.relative_attention_num_buckets,
                                    cfg.relative_attention_max_distance, cfg.num_heads,
                                    bidirectional=True, name="relpos_bias")(positions, positions)
        mask = _mask_to_bias(attention_mask)
        x = nn.Dropout(cfg.dropout_rate)(embedded, deterministic=deterministic)
        x = _stack(EncoderLayer, cfg, cfg.num_layers, 2, deterministic=deterministic)(
            x, bias, mask)
        x = RMSNorm(cfg.layer_norm_epsilon, _dtype(cfg), name="encoder_norm")(x)
        return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


class Decoder(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, embedded, encoded, query_positions, key_positions, self_mask, cross_mask,
                 deterministic: bool, decode: bool = False, max_decode_length: int | None = None):
        cfg = self.config
        bias = RelativePositionBias(cfg.relative_attention_num_buckets,
                                    cfg.relative_attention_max_distance, cfg.num_heads,
                                    bidirectional=False, name="relpos_bias")(
            query_positions, key_positions)
        x = nn.Dropout(cfg.dropout_rate)(embedded, deterministic=deterministic)
        x = _stack(DecoderLayer, cfg, cfg.n_decoder_layers, 4, deterministic=deterministic,
                   decode=decode, max_decode_length=max_decode_length)(
            x, encoded, bias, _mask_to_bias(self_mask), _mask_to_bias(cross_mask))
        x = RMSNorm(cfg.layer_norm_epsilon, _dtype(cfg), name="decoder_norm")(x)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        if cfg.tie_word_embeddings:
            return None, x * (cfg.d_model ** -0.5)
        logits = DenseGeneral((cfg.vocab_size,), ("embed", "vocab"), cfg.d_model ** -0.5,
                              name="logits_dense")(x.astype(jnp.float32))
        return logits, None


def _segments(tokens, segment_ids):
    """Segment ids, or (tokens != 0) for unpacked rows where pad id 0 is masked."""
    if segment_ids is None:
        return (tokens != 0).astype(jnp.int32)
    return segment_ids


def _token_indices(tokens):
    """Positions [1, l] for the relative-position bias: token indices, as in
    flaxformer and HF. Packed rows' per-segment positions are not needed:
    within a segment, index differences equal position differences, and the
    mask removes every pair across segments. One bias for the whole batch
    keeps it out of the per-example attention tensors."""
    return jnp.arange(tokens.shape[1], dtype=jnp.int32)[None]


class Transformer(nn.Module):
    """T5 encoder-decoder. `__call__` gives float32 logits [batch, length, vocab]."""
    config: T5Config

    def setup(self):
        cfg = self.config
        self.token_embedder = nn.Embed(
            cfg.vocab_size, cfg.d_model, dtype=_dtype(cfg), param_dtype=jnp.float32,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                        ("vocab", "embed")))
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, encoder_input_tokens, encoder_segment_ids=None, encoder_positions=None,
               deterministic: bool = True):
        del encoder_positions       # the bias uses token indices (_token_indices)
        seg = _segments(encoder_input_tokens, encoder_segment_ids)
        pos = _token_indices(encoder_input_tokens)
        if encoder_segment_ids is None:
            # Unpacked: every query may look at every real (non-pad) key.
            mask = seg[:, None, :] > 0                                  # [b, 1, l]
        else:
            mask = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0)
        embedded = self.token_embedder(encoder_input_tokens)
        return self.encoder(embedded, pos, mask, deterministic)

    def decode(self, encoded, encoder_input_tokens, decoder_input_tokens,
               encoder_segment_ids=None, decoder_segment_ids=None, decoder_positions=None,
               deterministic: bool = True, decode: bool = False,
               max_decode_length: int | None = None):
        """Decoder logits. With `decode=True`, `decoder_input_tokens` is one step
        [b, 1] at `decoder_positions` [b, 1], attending to a cache of
        `max_decode_length` positions."""
        enc_seg = _segments(encoder_input_tokens, encoder_segment_ids)
        b, q_len = decoder_input_tokens.shape
        if decode:
            q_pos = decoder_positions
            k_pos = jnp.arange(max_decode_length, dtype=jnp.int32)[None]
            self_mask = k_pos[:, None, :] <= q_pos[:, :, None]          # [b, 1, max]
            cross_mask = enc_seg[:, None, :] > 0
        else:
            q_pos = k_pos = _token_indices(decoder_input_tokens)
            idx = jnp.arange(q_len)
            self_mask = idx[None, :, None] >= idx[None, None, :]        # [1, q, q]
            if decoder_segment_ids is None:
                cross_mask = enc_seg[:, None, :] > 0                    # [b, 1, k]
            else:
                self_mask = self_mask & (decoder_segment_ids[:, :, None]
                                         == decoder_segment_ids[:, None, :])
                cross_mask = ((decoder_segment_ids[:, :, None] == enc_seg[:, None, :])
                              & (enc_seg[:, None, :] > 0))
        embedded = self.token_embedder(decoder_input_tokens)
        logits, tied_out = self.decoder(embedded, encoded, q_pos, k_pos, self_mask, cross_mask,
                                        deterministic, decode, max_decode_length)
        if logits is None:
            logits = dense_2d(tied_out.astype(jnp.float32), self.token_embedder.embedding.T)
        return logits.astype(jnp.float32)

    def __call__(self, encoder_input_tokens, decoder_input_tokens, encoder_segment_ids=None,
                 decoder_segment_ids=None, encoder_positions=None, decoder_positions=None,
                 deterministic: bool = True):
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                              deterministic)
        return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                           encoder_segment_ids, decoder_segment_ids, decoder_positions,
                           deterministic)
