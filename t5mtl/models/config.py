"""The T5 architecture description shared by the model, the converters and gin."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from t5mtl.errors import T5mtlError

ACTIVATIONS = ("relu", "gated-gelu")


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Architecture of a T5 encoder-decoder.

    v1.0: relu MLP, tied input/output embedding (logits rescaled by
    d_model**-0.5). v1.1 / Flan-T5: gated-gelu MLP, untied logits.
    """
    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_heads: int = 8
    num_layers: int = 6
    num_decoder_layers: int | None = None   # None: same as num_layers
    feed_forward_proj: str = "relu"
    tie_word_embeddings: bool = True
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    # Execution choices (not part of the checkpoint's architecture).
    dtype: str = "float32"            # activations: float32 or bfloat16
    scan_layers: bool = False
    remat_policy: str = "none"        # none | full | dots_saveable
    kernels: str = "auto"             # auto | xla | cpu | jax_attention (models.kernels)

    def __post_init__(self):
        if self.feed_forward_proj not in ACTIVATIONS:
            raise T5mtlError(
                    f"feed_forward_proj={self.feed_forward_proj!r}; expected one of {ACTIVATIONS}")
        if self.dtype not in ("float32", "bfloat16"):
            raise T5mtlError(f"dtype={self.dtype!r}; expected float32 or bfloat16")
        if self.remat_policy not in ("none", "full", "dots_saveable"):
            raise T5mtlError(f"remat_policy={self.remat_policy!r}; expected none, full or dots_saveable")
        from t5mtl.models.kernels import check
        check(self.kernels)

    @property
    def n_decoder_layers(self) -> int:
        return self.num_layers if self.num_decoder_layers is None else self.num_decoder_layers

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj == "gated-gelu"

    def replace(self, **changes) -> "T5Config":
        return dataclasses.replace(self, **changes)

    # -- serialization ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "T5Config":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise T5mtlError(f"unknown T5Config fields {unknown}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    # -- HF transformers T5Config ---------------------------------------------
    def to_hf_dict(self) -> dict[str, Any]:
        return {
                "architectures": ["T5ForConditionalGeneration"],
                "model_type": "t5",
                "vocab_size": self.vocab_size,
                "d_model": self.d_model,
                "d_kv": self.d_kv,
                "d_ff": self.d_ff,
                "num_heads": self.num_heads,
                "num_layers": self.num_layers,
                "num_decoder_layers": self.n_decoder_layers,
                "feed_forward_proj": self.feed_forward_proj,
                "dense_act_fn": "gelu_new" if self.gated else "relu",
                "is_gated_act": self.gated,
                "tie_word_embeddings": self.tie_word_embeddings,
                # transformers >= 5 reads the output scaling from this key.
                "scale_decoder_outputs": self.tie_word_embeddings,
                "relative_attention_num_buckets": self.relative_attention_num_buckets,
                "relative_attention_max_distance": self.relative_attention_max_distance,
                "dropout_rate": self.dropout_rate,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "initializer_factor": 1.0,
                "is_encoder_decoder": True,
                "pad_token_id": 0,
                "eos_token_id": 1,
                "decoder_start_token_id": 0,
                "use_cache": True,
        }

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json") -> "T5Config":
        """The architecture an HF T5 config.json describes.

        Every field that changes the math is read: sizes, layer counts
        (num_decoder_layers, default num_layers), feed_forward_proj,
        relative-attention buckets and max distance, layer-norm epsilon, and
        the output layer (`hf_output_layer`). t5mtl's tied output is the
        input embedding scaled by d_model**-0.5, so `tie_word_embeddings`
        here is true only when the config both ties and scales; a tied but
        unscaled head (transformers 5.x saving a v1.1 model) becomes an
        untied one whose weights t5mtl.convert.hf copies from the embedding.
        """
        required = ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_layers")
        missing = [k for k in required if k not in d]
        if missing:
            raise T5mtlError(f"{source}: missing T5 fields {missing}")
        if d.get("model_type", "t5") != "t5":
            raise T5mtlError(f"{source}: model_type={d.get('model_type')!r}, expected 't5'")
        proj = d.get("feed_forward_proj", "relu")
        if proj in ("gated-gelu", "gated-gelu_new"):
            proj = "gated-gelu"          # transformers runs both as gelu_new (tanh)
        elif proj != "relu":
            raise T5mtlError(f"{source}: feed_forward_proj={proj!r} is not supported "
                             f"(relu, gated-gelu or gated-gelu_new)")
        tied, scaled = hf_output_layer(d)
        return cls(
                vocab_size=d["vocab_size"], d_model=d["d_model"], d_kv=d["d_kv"], d_ff=d["d_ff"],
                num_heads=d["num_heads"], num_layers=d["num_layers"],
                num_decoder_layers=d.get("num_decoder_layers") or d["num_layers"],
                feed_forward_proj=proj,
                tie_word_embeddings=tied and scaled,
                relative_attention_num_buckets=d.get("relative_attention_num_buckets", 32),
                relative_attention_max_distance=d.get("relative_attention_max_distance", 128),
                dropout_rate=d.get("dropout_rate", 0.1),
                layer_norm_epsilon=d.get("layer_norm_epsilon", 1e-6),
        )


def hf_output_layer(d: dict[str, Any]) -> tuple[bool, bool]:
    """(tied, scaled) of an HF T5 config.json's output layer.

    tied: lm_head shares the input embedding (`tie_word_embeddings`, default
    true). scaled: the decoder output is multiplied by d_model**-0.5 before
    it (`scale_decoder_outputs`, which transformers 5.x writes; older
    configs have no such key, and there the scaling follows
    tie_word_embeddings, as transformers 4.x computed it). transformers 5.x
    writes a v1.1 model as `"tie_word_embeddings": true,
    "scale_decoder_outputs": false`.
    """
    tied = d.get("tie_word_embeddings", True) is not False
    scaled = d.get("scale_decoder_outputs")
    return tied, bool(tied if scaled is None else scaled)
