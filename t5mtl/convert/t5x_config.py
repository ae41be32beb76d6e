"""t5x's `network.T5Config` (t5x/examples/t5/network.py) <-> t5mtl's T5Config.

A t5x checkpoint carries no model description: the run's gin files do. This
module reads it from either
  * a JSON object of `network.T5Config` fields ({"emb_dim": 512, ...}), or
  * a t5x gin file (`t5x/examples/t5/t5_1_1/small.gin` and friends), parsed
    with gin's own parser without importing t5x: `network.T5Config.x = v`
    lines and `network.T5Config:` blocks, macros (`%DROPOUT_RATE`), and
    `include` lines, resolved next to the including file or under any of its
    parent directories (so a file inside a t5x checkout finds
    't5x/examples/t5/t5_1_1/base.gin'); an include that cannot be found is
    skipped and named if a field is then missing.
and writes the gin text for a t5mtl config (export to t5x).

  t5x field               t5mtl field
  vocab_size              vocab_size (required)
  emb_dim                 d_model
  num_heads               num_heads
  head_dim                d_kv
  mlp_dim                 d_ff
  num_encoder_layers      num_layers
  num_decoder_layers      num_decoder_layers
  mlp_activations         ('relu',) -> relu; ('gelu', 'linear') -> gated-gelu
  logits_via_embedding    tie_word_embeddings
  dropout_rate            dropout_rate
  dtype                   dtype (activations)
  float32_attention_logits  (execution choice, not mapped)

t5x's network fixes 32 relative-position buckets, max distance 128 and RMS
norm epsilon 1e-6, as t5mtl's defaults do.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any

from t5mtl.errors import T5mtlError
from t5mtl.models.config import T5Config

# network.T5Config's defaults (vocab_size has none).
T5X_DEFAULTS: dict[str, Any] = {
    "dtype": "float32", "emb_dim": 512, "num_heads": 8, "num_encoder_layers": 6,
    "num_decoder_layers": 6, "head_dim": 64, "mlp_dim": 2048, "mlp_activations": ("relu",),
    "dropout_rate": 0.1, "logits_via_embedding": False, "float32_attention_logits": False,
}
T5X_FIELDS = ("vocab_size",) + tuple(T5X_DEFAULTS)
_ACTIVATIONS = {("relu",): "relu", ("gelu", "linear"): "gated-gelu"}
_REQUIRED = object()


def t5x_fields_to_config(fields: dict[str, Any], source: str = "t5x config",
                         notes: str = "") -> T5Config:
    """A t5mtl T5Config from t5x `network.T5Config` fields (defaults filled in)."""
    unknown = sorted(set(fields) - set(T5X_FIELDS))
    if unknown:
        raise T5mtlError(f"{source}: unknown network.T5Config fields {unknown} (known: "
                         f"{', '.join(T5X_FIELDS)})")
    if fields.get("vocab_size", _REQUIRED) is _REQUIRED:
        raise T5mtlError(f"{source}: network.T5Config.vocab_size is not set{notes}")
    f = {k: v for k, v in fields.items() if v is not _REQUIRED}
    f = {**T5X_DEFAULTS, **f}
    acts = tuple(str(a) for a in f["mlp_activations"])
    if acts not in _ACTIVATIONS:
        raise T5mtlError(f"{source}: mlp_activations={acts!r} is not supported; t5mtl has "
                         f"{' and '.join(map(repr, _ACTIVATIONS))}")
    dtype = _dtype_name(f["dtype"])
    if dtype not in ("float32", "bfloat16"):
        raise T5mtlError(f"{source}: dtype={f['dtype']!r}; expected float32 or bfloat16")
    ints = ("vocab_size", "emb_dim", "num_heads", "num_encoder_layers", "num_decoder_layers",
            "head_dim", "mlp_dim")
    for k in ints:
        if isinstance(f[k], bool) or not isinstance(f[k], int) or f[k] <= 0:
            raise T5mtlError(f"{source}: network.T5Config.{k}={f[k]!r}; expected a positive "
                             f"integer")
    return T5Config(vocab_size=f["vocab_size"], d_model=f["emb_dim"], d_kv=f["head_dim"],
                    d_ff=f["mlp_dim"], num_heads=f["num_heads"],
                    num_layers=f["num_encoder_layers"],
                    num_decoder_layers=f["num_decoder_layers"],
                    feed_forward_proj=_ACTIVATIONS[acts],
                    tie_word_embeddings=bool(f["logits_via_embedding"]),
                    dropout_rate=float(f["dropout_rate"]), dtype=dtype)


def config_to_t5x_fields(cfg: T5Config) -> dict[str, Any]:
    """The t5x `network.T5Config` fields of a t5mtl config. Raises T5mtlError
    for what t5x's network cannot express."""
    if (cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance) != (32, 128):
        raise T5mtlError(f"t5x's network fixes 32 relative-position buckets and max distance "
                         f"128; this model has {cfg.relative_attention_num_buckets} and "
                         f"{cfg.relative_attention_max_distance}")
    if cfg.layer_norm_epsilon != 1e-6:
        raise T5mtlError(f"t5x's network fixes layer norm epsilon 1e-6; this model has "
                         f"{cfg.layer_norm_epsilon}")
    acts = {v: k for k, v in _ACTIVATIONS.items()}[cfg.feed_forward_proj]
    return {"vocab_size": cfg.vocab_size, "dtype": cfg.dtype, "emb_dim": cfg.d_model,
            "num_heads": cfg.num_heads, "num_encoder_layers": cfg.num_layers,
            "num_decoder_layers": cfg.n_decoder_layers, "head_dim": cfg.d_kv,
            "mlp_dim": cfg.d_ff, "mlp_activations": list(acts),
            "dropout_rate": cfg.dropout_rate, "logits_via_embedding": cfg.tie_word_embeddings,
            "float32_attention_logits": False}


def t5x_gin_text(cfg: T5Config) -> str:
    """gin lines binding t5x's network to this architecture (what t5x's
    t5_1_1/*.gin files bind), to include in a t5x run's gin config."""
    f = config_to_t5x_fields(cfg)
    lines = ["# t5x network config written by `t5mtl convert --to t5x`.",
             "from __gin__ import dynamic_registration",
             "from t5x.examples.t5 import network", "",
             "network.Transformer.config = @network.T5Config()",
             "network.T5Config:"]
    for k in T5X_FIELDS:
        v = tuple(f[k]) if k == "mlp_activations" else f[k]
        lines.append(f"  {k} = {v!r}")
    return "\n".join(lines) + "\n"


# -- reading -------------------------------------------------------------------------------

def read_t5x_config(path: str) -> T5Config:
    """A t5mtl T5Config from a JSON of t5x network.T5Config fields or a t5x gin file."""
    if not path:
        raise T5mtlError("a t5x checkpoint holds no model config: pass --t5x_config (a JSON "
                         "of t5x network.T5Config fields or the run's model gin file, e.g. "
                         "t5x/examples/t5/t5_1_1/small.gin)")
    if not os.path.isfile(path):
        raise T5mtlError(f"--t5x_config {path}: no such file")
    with open(path) as f:
        text = f.read()
    if path.endswith(".json") or text.lstrip().startswith("{"):
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as e:
            raise T5mtlError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(fields, dict):
            raise T5mtlError(f"{path}: expected a JSON object of network.T5Config fields")
        return t5x_fields_to_config(fields, source=path)
    fields, unresolved = gin_t5x_fields(path)
    notes = (f" (includes not found: {', '.join(unresolved)})" if unresolved else "")
    return t5x_fields_to_config(fields, source=path, notes=notes)


class _Macro:
    def __init__(self, name):
        self.name = name


class _Reference:
    def __init__(self, name):
        self.name = name


def _delegate():
    from gin import config_parser

    class Delegate(config_parser.ParserDelegate):
        def configurable_reference(self, scoped_name, evaluate):
            return _Reference(scoped_name)

        def macro(self, name):
            return _Macro(name)
    return Delegate()


def gin_t5x_fields(path: str) -> tuple[dict[str, Any], list[str]]:
    """({field: value} bound on network.T5Config, includes not found) of a gin
    file and the files it includes; later bindings win, as in gin."""
    bindings: list[tuple[str, str, Any]] = []
    unresolved: list[str] = []
    _parse_gin(os.path.abspath(path), bindings, unresolved, seen=set())
    macros = {sel: v for sel, arg, v in bindings if not arg}
    fields: dict[str, Any] = {}
    for selector, arg, value in bindings:
        if arg and (selector == "T5Config" or selector.endswith(".T5Config")):
            fields[arg] = _resolve(value, macros, path)
    return fields, unresolved


def _parse_gin(path: str, bindings: list, unresolved: list, seen: set) -> None:
    from gin import config_parser
    if path in seen:
        return
    seen.add(path)
    with open(path) as f:
        text = f.read()
    try:
        statements = list(config_parser.ConfigParser(text, _delegate()))
    except SyntaxError as e:
        raise T5mtlError(f"{path}: not a gin file ({e})") from e
    for st in statements:
        if isinstance(st, config_parser.IncludeStatement):
            found = _find_include(st.filename, path)
            if found is None:
                unresolved.append(st.filename)
            else:
                _parse_gin(found, bindings, unresolved, seen)
        elif isinstance(st, config_parser.BindingStatement) and not st.scope:
            bindings.append((st.selector, st.arg_name, st.value))


def _find_include(name: str, including: str) -> str | None:
    if os.path.isabs(name):
        return name if os.path.isfile(name) else None
    directory = os.path.dirname(including)
    while True:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _resolve(value, macros: dict, source: str, depth: int = 0):
    if depth > 20:
        raise T5mtlError(f"{source}: macros nest too deep")
    if isinstance(value, _Macro):
        if value.name == "gin.REQUIRED":
            return _REQUIRED
        if value.name not in macros:
            return _REQUIRED
        return _resolve(macros[value.name], macros, source, depth + 1)
    if isinstance(value, _Reference):      # e.g. dtype = @jnp.bfloat16
        return value.name.rsplit(".", 1)[-1]
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(v, macros, source, depth + 1) for v in value)
    return value


def _dtype_name(value) -> str:
    """'float32' of 'float32', 'jnp.float32', "<class 'jax.numpy.float32'>"..."""
    name = getattr(value, "__name__", None) or str(value)
    found = re.search(r"(bfloat16|float16|float32|float64)", name)
    return found.group(1) if found else name
