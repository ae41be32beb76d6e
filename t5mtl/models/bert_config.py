"""The BERT architecture (Devlin et al. 2019): config, HF config.json mapping, named sizes.

`BertConfig` describes the encoder only; which heads sit on it (masked LM,
sequence classification, span extraction) is the model's choice
(`t5mtl.models.bert.Bert`), as in HF transformers, where one BertConfig
serves BertModel, BertForMaskedLM and the rest.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import gin

from t5mtl.errors import T5mtlError

# HF hidden_act values with a t5mtl implementation: "gelu" is the exact
# (erf) GELU of the original BERT, "gelu_new" the tanh approximation.
HIDDEN_ACTS = ("gelu", "gelu_new", "relu")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture of a post-LN BERT encoder with learned absolute positions.

    `classifier_dropout` None means hidden_dropout, as in HF
    BertForSequenceClassification. `initializer_range` is the stddev of
    fresh weights (HF's init). `dtype` is an execution choice (activations;
    layer norms and softmax run in float32), not part of a checkpoint.
    """
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    classifier_dropout: float | None = None
    hidden_act: str = "gelu"
    pad_token_id: int = 0
    initializer_range: float = 0.02
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise T5mtlError(f"BertConfig {name}={value!r}; expected a positive integer")
        if self.hidden_size % self.num_heads:
            raise T5mtlError(f"BertConfig hidden_size={self.hidden_size} is not a multiple of "
                             f"num_heads={self.num_heads}")
        if self.hidden_act not in HIDDEN_ACTS:
            raise T5mtlError(f"BertConfig hidden_act={self.hidden_act!r}; expected one of "
                             f"{HIDDEN_ACTS}")
        if self.dtype not in ("float32", "bfloat16"):
            raise T5mtlError(f"BertConfig dtype={self.dtype!r}; expected float32 or bfloat16")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def classifier_dropout_rate(self) -> float:
        return self.hidden_dropout if self.classifier_dropout is None else self.classifier_dropout

    def replace(self, **changes) -> "BertConfig":
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise T5mtlError(f"unknown BertConfig fields {unknown}")
        return dataclasses.replace(self, **changes)

    # -- serialization (model.json specs, gin) -----------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BertConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise T5mtlError(f"unknown BertConfig fields {unknown}")
        return cls(**d)

    # -- HF transformers BertConfig ----------------------------------------------
    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json fields of HF's BertConfig (without `architectures`,
        which the exporter adds with the labels of a classification head)."""
        return {
                "model_type": "bert",
                "vocab_size": self.vocab_size,
                "hidden_size": self.hidden_size,
                "num_hidden_layers": self.num_layers,
                "num_attention_heads": self.num_heads,
                "intermediate_size": self.intermediate_size,
                "hidden_act": self.hidden_act,
                "hidden_dropout_prob": self.hidden_dropout,
                "attention_probs_dropout_prob": self.attention_dropout,
                "classifier_dropout": self.classifier_dropout,
                "max_position_embeddings": self.max_position_embeddings,
                "type_vocab_size": self.type_vocab_size,
                "initializer_range": self.initializer_range,
                "layer_norm_eps": self.layer_norm_eps,
                "pad_token_id": self.pad_token_id,
                "position_embedding_type": "absolute",
                "tie_word_embeddings": True,
                "is_decoder": False,
                "add_cross_attention": False,
                "use_cache": False,
        }

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json") -> "BertConfig":
        """The architecture an HF BERT config.json describes.

        Refused (one T5mtlError naming the field and value): anything that
        changes the math in a way t5mtl's BERT does not compute: relative
        position embeddings, decoder/cross-attention use, an MLM decoder not
        tied to the word embeddings, an activation outside HIDDEN_ACTS.
        """
        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size")
        missing = [k for k in required if k not in d]
        if missing:
            raise T5mtlError(f"{source}: missing BERT fields {missing}")
        if d.get("model_type", "bert") != "bert":
            raise T5mtlError(f"{source}: model_type={d.get('model_type')!r}, expected 'bert'")
        refused = {"position_embedding_type": ("absolute", "absolute"),
                   "is_decoder": (False, False), "add_cross_attention": (False, False),
                   "tie_word_embeddings": (True, True)}
        for key, (default, want) in refused.items():
            value = d.get(key, default)
            if value != want:
                raise T5mtlError(f"{source}: {key}={value!r} is not supported by t5mtl's BERT "
                                 f"(it computes {key}={want!r})")
        act = d.get("hidden_act", "gelu")
        if act not in HIDDEN_ACTS:
            raise T5mtlError(f"{source}: hidden_act={act!r} is not supported; expected one of "
                             f"{HIDDEN_ACTS}")
        try:
            return cls(
                    vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
                    num_layers=d["num_hidden_layers"], num_heads=d["num_attention_heads"],
                    intermediate_size=d["intermediate_size"],
                    max_position_embeddings=d.get("max_position_embeddings", 512),
                    type_vocab_size=d.get("type_vocab_size", 2),
                    layer_norm_eps=d.get("layer_norm_eps", 1e-12),
                    hidden_dropout=d.get("hidden_dropout_prob", 0.1),
                    attention_dropout=d.get("attention_probs_dropout_prob", 0.1),
                    classifier_dropout=d.get("classifier_dropout"),
                    hidden_act=act,
                    pad_token_id=d.get("pad_token_id") or 0,
                    initializer_range=d.get("initializer_range", 0.02))
        except T5mtlError as e:
            raise T5mtlError(f"{source}: {e}") from None


BERT_CONFIGS: dict[str, BertConfig] = {
    # Devlin et al. 2019: BERT-Base and BERT-Large, uncased WordPiece vocabulary.
    "bert_base": BertConfig(vocab_size=30522, hidden_size=768, num_layers=12, num_heads=12,
                            intermediate_size=3072),
    "bert_large": BertConfig(vocab_size=30522, hidden_size=1024, num_layers=24, num_heads=16,
                             intermediate_size=4096),
    # Tests: a vocabulary and MLP width that are not multiples of 8.
    "bert_tiny": BertConfig(vocab_size=101, hidden_size=32, num_layers=2, num_heads=4,
                            intermediate_size=37, max_position_embeddings=64),
    # The CPU recipes (bench/pmr.py, gin/runs/bert_*.gin): the shipped
    # 8,000-entry WordPiece vocabulary (data/vocabs/wordpiece_en_8k.txt).
    "bert_small_cpu": BertConfig(vocab_size=8000, hidden_size=128, num_layers=4, num_heads=4,
                                 intermediate_size=512, max_position_embeddings=256),
}


@gin.configurable
def get_bert_config(name: str = "bert_base", **overrides) -> BertConfig:
    """Returns a named BERT config, optionally with fields replaced (gin-friendly)."""
    if name not in BERT_CONFIGS:
        raise T5mtlError(f"unknown BERT model name {name!r}; known: {', '.join(BERT_CONFIGS)}")
    return BERT_CONFIGS[name].replace(**overrides) if overrides else BERT_CONFIGS[name]
