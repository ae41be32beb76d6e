"""BERT (Devlin et al. 2019) in Flax Linen: a post-LN encoder and its heads.

The arithmetic is HF transformers' BertModel / BertForMaskedLM /
BertForSequenceClassification / BertForQuestionAnswering, so that their
checkpoints load with parity (t5mtl.convert.hf_bert):

    embeddings: word + learned absolute position + token type, LayerNorm, dropout
    layer:      x = LN(x + dropout(out(selfattn(x))));  x = LN(x + dropout(wo(act(wi(x)))))
    pooler:     tanh(dense(hidden[:, 0]))                    ([CLS])
    mlm:        LN(act(transform(hidden))) @ word_embedding^T + bias   (tied decoder)
    classifier: dense(dropout(pooled))
    span:       dense(hidden) -> start, end logits

Unlike T5's layers, every dense layer has a bias, attention scales its scores
by head_dim**-0.5, and layer norms subtract the mean (biased variance, as
torch computes it). Activations run in config.dtype; layer norms, softmax and
the returned logits are float32. Parameters carry T5's logical axis names
(vocab, embed, heads, kv, mlp; abspos_buckets for positions) so the same
partitioning rules shard them.

Which heads exist is the module's `heads` field, a subset of HEADS:
"pooler" (BertModel's pooled [CLS] output), "mlm", "classification" (which
implies the pooler) and "span". No heads at all means BertModel: encoder and
pooler. As in HF, BertForMaskedLM and BertForQuestionAnswering carry no
pooler unless "pooler" is named.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t5mtl.errors import T5mtlError
from t5mtl.models.bert_config import BertConfig
from t5mtl.models.kernels.reference import NEG_INF
from t5mtl.models.layers import dense_2d

HEADS = ("pooler", "mlm", "classification", "span")

__all__ = ["HEADS", "normalize_heads", "heads_in_params", "Bert", "init_bert_boxed",
           "init_bert_params", "bert_param_shapes", "count_bert_params"]


def normalize_heads(heads) -> tuple[str, ...]:
    """The canonical form of a head selection: HEADS order, no repeats, "pooler"
    present exactly when the module builds one (no heads, "pooler" or
    "classification")."""
    if isinstance(heads, str):
        heads = (heads,)
    unknown = [h for h in heads if h not in HEADS]
    if unknown:
        raise T5mtlError(f"unknown BERT heads {unknown}; known: {', '.join(HEADS)}")
    chosen = set(heads)
    if not chosen or "classification" in chosen:
        chosen.add("pooler")
    return tuple(h for h in HEADS if h in chosen)


def heads_in_params(params) -> tuple[str, ...]:
    """The heads whose parameters a Bert param tree holds, in HEADS order
    (no normalization: a tree of the encoder alone gives ())."""
    subtree = {"pooler": "pooler", "mlm": "mlm", "classification": "classifier", "span": "span"}
    return tuple(h for h in HEADS if subtree[h] in params)


def _normal(stddev: float, axes: tuple):
    return nn.with_logical_partitioning(nn.initializers.normal(stddev), axes)


def _zeros(axes: tuple):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def _act(name: str, x):
    if name == "gelu":
        return jax.nn.gelu(x, approximate=False)     # erf GELU, as the original BERT
    if name == "gelu_new":
        return jax.nn.gelu(x, approximate=True)
    return jax.nn.relu(x)


class NamedDense(nn.Module):
    """x [..., *in] @ kernel [*in, *features] + bias [*features].

    The kernel is created in its final shape (attention's [embed, heads, kv]
    and [heads, kv, embed]) so each dimension has its logical axis name.
    """
    features: tuple[int, ...]
    kernel_axes: tuple
    stddev: float
    n_in: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", _normal(self.stddev, self.kernel_axes),
                            tuple(x.shape[-self.n_in:]) + tuple(self.features), jnp.float32)
        bias = self.param("bias", _zeros(self.kernel_axes[self.n_in:]), tuple(self.features),
                          jnp.float32)
        y = dense_2d(x.astype(self.dtype), kernel.astype(self.dtype), self.n_in, "xla")
        return y + bias.astype(self.dtype)


class TorchLayerNorm(nn.Module):
    """Mean-subtracting layer norm with scale and bias, in float32 (torch's
    biased variance; flax's fast E[x^2] - E[x]^2 variance differs slightly)."""
    epsilon: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                                 ("embed",)), (d,), jnp.float32)
        bias = self.param("bias", _zeros(("embed",)), (d,), jnp.float32)
        x = x.astype(jnp.float32)
        centered = x - jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(centered), axis=-1, keepdims=True)
        return (centered * jax.lax.rsqrt(var + self.epsilon) * scale + bias).astype(self.dtype)


def _layer_norm(cfg: BertConfig, name: str) -> nn.Module:
    return TorchLayerNorm(cfg.layer_norm_eps, jnp.dtype(cfg.dtype), name=name)


class _Embeddings(nn.Module):
    """Word + absolute position + token type embeddings, LayerNorm, dropout."""
    config: BertConfig

    def setup(self):
        cfg, std = self.config, self.config.initializer_range
        self.word = nn.Embed(cfg.vocab_size, cfg.hidden_size,
                             embedding_init=_normal(std, ("vocab", "embed")))
        self.position = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size,
                                 embedding_init=_normal(std, ("abspos_buckets", "embed")))
        self.token_type = nn.Embed(cfg.type_vocab_size, cfg.hidden_size,
                                   embedding_init=_normal(std, (None, "embed")))
        self.layer_norm = _layer_norm(cfg, "layer_norm")
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def __call__(self, input_ids, token_type_ids, deterministic: bool):
        positions = jnp.arange(input_ids.shape[1])[None, :]
        x = (self.word(input_ids) + self.position(positions)
             + self.token_type(token_type_ids)).astype(jnp.float32)
        return self.dropout(self.layer_norm(x), deterministic=deterministic)

    def word_embedding(self):
        """The [vocab, embed] table the masked-LM decoder is tied to."""
        return self.word.embedding


class _SelfAttention(nn.Module):
    """Multi-head self-attention with biased q/k/v/out projections."""
    config: BertConfig

    @nn.compact
    def __call__(self, x, mask, deterministic: bool):
        cfg = self.config
        dtype, std = jnp.dtype(cfg.dtype), cfg.initializer_range
        heads = (cfg.num_heads, cfg.head_dim)
        proj = lambda name: NamedDense(heads, ("embed", "heads", "kv"), std, 1, dtype, name=name)(x)
        q, k, v = proj("query"), proj("key"), proj("value")
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        scores = scores * np.float32(cfg.head_dim ** -0.5) + mask
        probs = jax.nn.softmax(scores, axis=-1)
        probs = nn.Dropout(cfg.attention_dropout)(probs, deterministic=deterministic)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(dtype), v)
        return NamedDense((cfg.hidden_size,), ("heads", "kv", "embed"), std, 2, dtype,
                      name="out")(ctx)


class _Layer(nn.Module):
    """One post-LN transformer layer: attention + add&LN, MLP + add&LN."""
    config: BertConfig

    @nn.compact
    def __call__(self, x, mask, deterministic: bool):
        cfg = self.config
        drop = lambda h: nn.Dropout(cfg.hidden_dropout)(h, deterministic=deterministic)
        a = drop(_SelfAttention(cfg, name="attention")(x, mask, deterministic))
        x = _layer_norm(cfg, "attention_layer_norm")(x.astype(jnp.float32)
                                                     + a.astype(jnp.float32))
        h = _MLP(cfg, name="mlp")(x)
        x = _layer_norm(cfg, "mlp_layer_norm")(x.astype(jnp.float32)
                                               + drop(h).astype(jnp.float32))
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class _MLP(nn.Module):
    """wo(act(wi(x))), both with biases."""
    config: BertConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        dtype, std = jnp.dtype(cfg.dtype), cfg.initializer_range
        h = NamedDense((cfg.intermediate_size,), ("embed", "mlp"), std, 1, dtype, name="wi")(x)
        h = nn.with_logical_constraint(_act(cfg.hidden_act, h), ("batch", "length", "mlp"))
        return NamedDense((cfg.hidden_size,), ("mlp", "embed"), std, 1, dtype, name="wo")(h)


class _MLMHead(nn.Module):
    """HF BertOnlyMLMHead: LN(act(transform(h))) @ word_embedding^T + bias."""
    config: BertConfig

    @nn.compact
    def __call__(self, hidden, word_embedding):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        h = NamedDense((cfg.hidden_size,), ("embed", "mlp"), cfg.initializer_range, 1, dtype,
                   name="transform")(hidden)
        h = _layer_norm(cfg, "layer_norm")(_act(cfg.hidden_act, h))
        bias = self.param("bias", _zeros(("vocab",)), (cfg.vocab_size,), jnp.float32)
        logits = dense_2d(h, word_embedding.T.astype(dtype), 1, "xla")
        return logits.astype(jnp.float32) + bias


class Bert(nn.Module):
    """A BERT encoder with the heads named in `heads` (see HEADS and
    normalize_heads); `num_labels` sizes the classification head.

    Methods (call through `apply(..., method=...)`): `encode`, `pool`,
    `mlm_logits`, `classify`, `span_logits`; `__call__` runs the encoder and
    every head, so `init` creates every head's parameters.
    """
    config: BertConfig
    heads: tuple[str, ...] = ()
    num_labels: int = 2

    def setup(self):
        cfg = self.config
        dtype, std = jnp.dtype(cfg.dtype), cfg.initializer_range
        self._heads = normalize_heads(self.heads)
        self.embeddings = _Embeddings(cfg)
        self.layers = [_Layer(cfg) for _ in range(cfg.num_layers)]   # layers_0, layers_1, ...
        if "pooler" in self._heads:
            self.pooler = _Pooler(cfg)
        if "mlm" in self._heads:
            self.mlm = _MLMHead(cfg)
        if "classification" in self._heads:
            if self.num_labels < 1:
                raise T5mtlError(f"Bert num_labels={self.num_labels}; expected at least 1")
            self.classifier = NamedDense((self.num_labels,), ("embed", None), std, 1, dtype)
            self.classifier_dropout = nn.Dropout(cfg.classifier_dropout_rate)
        if "span" in self._heads:
            self.span = NamedDense((2,), ("embed", None), std, 1, dtype)

    def _need(self, head: str) -> None:
        if head not in self._heads:
            raise T5mtlError(f"this Bert has no {head!r} head (heads={self._heads})")

    def encode(self, input_ids, token_type_ids=None, attention_mask=None,
               deterministic: bool = True):
        """hidden [b, L, hidden_size] in config.dtype.

        attention_mask: 1 for real tokens, 0 for padding (keys at 0 get no
        attention); None attends to every position, as HF does.
        token_type_ids: None is all zeros (segment A).
        """
        cfg = self.config
        length = input_ids.shape[1]
        if length > cfg.max_position_embeddings:
            raise T5mtlError(f"BERT input length {length} exceeds max_position_embeddings="
                             f"{cfg.max_position_embeddings}")
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        mask = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, NEG_INF).astype(jnp.float32)
        x = self.embeddings(input_ids, token_type_ids, deterministic)
        for layer in self.layers:
            x = layer(x, mask, deterministic)
        return x.astype(jnp.dtype(cfg.dtype))

    def pool(self, hidden):
        """BertPooler: tanh(dense(hidden[:, 0])) -> [b, hidden_size]."""
        self._need("pooler")
        return self.pooler(hidden)

    def mlm_logits(self, hidden):
        """float32 [b, L, vocab_size] logits of the tied masked-LM head."""
        self._need("mlm")
        return self.mlm(hidden, self.embeddings.word_embedding())

    def classify(self, hidden, deterministic: bool = True):
        """float32 [b, num_labels]: dense(dropout(pool(hidden)))."""
        self._need("classification")
        pooled = self.classifier_dropout(self.pool(hidden), deterministic=deterministic)
        return self.classifier(pooled).astype(jnp.float32)

    def span_logits(self, hidden):
        """float32 (start [b, L], end [b, L]) of HF's qa_outputs."""
        self._need("span")
        logits = self.span(hidden).astype(jnp.float32)
        return logits[..., 0], logits[..., 1]

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
                 deterministic: bool = True) -> dict:
        """{"hidden", and per head: "pooled", "mlm", "classification", "span"}."""
        hidden = self.encode(input_ids, token_type_ids, attention_mask, deterministic)
        out = {"hidden": hidden}
        if "pooler" in self._heads:
            out["pooled"] = self.pool(hidden)
        if "mlm" in self._heads:
            out["mlm"] = self.mlm_logits(hidden)
        if "classification" in self._heads:
            out["classification"] = self.classify(hidden, deterministic)
        if "span" in self._heads:
            out["span"] = self.span_logits(hidden)
        return out


class _Pooler(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, hidden):
        cfg = self.config
        x = NamedDense((cfg.hidden_size,), ("embed", "mlp"), cfg.initializer_range, 1,
                   jnp.dtype(cfg.dtype), name="dense")(hidden[:, 0])
        return jnp.tanh(x)


# -- init and shapes -------------------------------------------------------------

def init_bert_boxed(config: BertConfig, rng, heads=(), num_labels: int = 2):
    """Fresh params with their logical-partitioning boxes (for sharding)."""
    ids = jnp.ones((1, 1), jnp.int32)
    return Bert(config, normalize_heads(heads), num_labels).init(rng, ids)["params"]


def init_bert_params(config: BertConfig, rng=None, heads=(), num_labels: int = 2):
    """Fresh params as a plain nested dict of arrays."""
    rng = jax.random.PRNGKey(0) if rng is None else rng
    return nn.unbox(jax.jit(lambda r: init_bert_boxed(config, r, heads, num_labels))(rng))


def bert_param_shapes(config: BertConfig, heads=(), num_labels: int = 2):
    """The param tree as jax.ShapeDtypeStructs (boxes removed); allocates nothing."""
    boxed = jax.eval_shape(lambda: init_bert_boxed(config, jax.random.PRNGKey(0), heads,
                                                   num_labels))
    return nn.unbox(boxed)


def count_bert_params(config: BertConfig, heads=(), num_labels: int = 2) -> int:
    """Parameter count; heads=() counts HF's BertModel (embeddings, encoder, pooler)."""
    shapes = bert_param_shapes(config, heads, num_labels)
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes)))
