"""Named T5 configurations: the published sizes plus tiny ones for tests."""
from __future__ import annotations

import gin

from t5mtl.errors import T5mtlError
from t5mtl.models.config import T5Config

_V10 = dict(feed_forward_proj="relu", tie_word_embeddings=True, vocab_size=32128)
_V11 = dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, vocab_size=32128,
            dropout_rate=0.0)

NAMED_CONFIGS: dict[str, T5Config] = {
    # T5 1.0 (Raffel et al. 2020, Table 14): ReLU MLP, tied embeddings.
    "t5_1_0_small": T5Config(d_model=512, d_ff=2048, num_heads=8, d_kv=64, num_layers=6, **_V10),
    "t5_1_0_base": T5Config(d_model=768, d_ff=3072, num_heads=12, d_kv=64, num_layers=12, **_V10),
    "t5_1_0_large": T5Config(d_model=1024, d_ff=4096, num_heads=16, d_kv=64, num_layers=24,
                             **_V10),
    "t5_1_0_3b": T5Config(d_model=1024, d_ff=16384, num_heads=32, d_kv=128, num_layers=24,
                          **_V10),
    "t5_1_0_11b": T5Config(d_model=1024, d_ff=65536, num_heads=128, d_kv=128, num_layers=24,
                           **_V10),
    # T5 1.1 / Flan-T5: gated-GELU, untied logits, no dropout in pretraining.
    "t5_1_1_small": T5Config(d_model=512, d_ff=1024, num_heads=6, d_kv=64, num_layers=8, **_V11),
    "t5_1_1_base": T5Config(d_model=768, d_ff=2048, num_heads=12, d_kv=64, num_layers=12, **_V11),
    "t5_1_1_large": T5Config(d_model=1024, d_ff=2816, num_heads=16, d_kv=64, num_layers=24,
                             **_V11),
    "t5_1_1_xl": T5Config(d_model=2048, d_ff=5120, num_heads=32, d_kv=64, num_layers=24, **_V11),
    "t5_1_1_xxl": T5Config(d_model=4096, d_ff=10240, num_heads=64, d_kv=64, num_layers=24,
                           **_V11),
    # Tiny configs for tests and the CPU quickstart (byte vocabulary: 256 + 3
    # specials + 100 sentinels, padded to a multiple of 128 as T5 does).
    "t5_tiny_v1_0": T5Config(vocab_size=384, d_model=64, d_ff=128, num_heads=4, d_kv=16,
                             num_layers=2, **{k: v for k, v in _V10.items() if k != "vocab_size"}),
    "t5_tiny": T5Config(vocab_size=384, d_model=64, d_ff=128, num_heads=4, d_kv=16,
                        num_layers=2, **{k: v for k, v in _V11.items() if k != "vocab_size"}),
    "t5_small_cpu": T5Config(vocab_size=384, d_model=128, d_ff=256, num_heads=4, d_kv=32,
                             num_layers=3, **{k: v for k, v in _V11.items() if k != "vocab_size"}),
}


@gin.configurable
def get_config(name: str = "t5_1_1_small", **overrides) -> T5Config:
    """Returns a named config, optionally with fields replaced (gin-friendly)."""
    if name not in NAMED_CONFIGS:
        raise T5mtlError(f"unknown model name {name!r}; known: {', '.join(NAMED_CONFIGS)}")
    return NAMED_CONFIGS[name].replace(**overrides) if overrides else NAMED_CONFIGS[name]
