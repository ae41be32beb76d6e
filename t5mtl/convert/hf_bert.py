"""HF transformers BERT checkpoints <-> t5mtl's BERT (t5mtl.models.bert).

One name table (`name_table`) lists every (HF name, t5mtl path, layout);
import and export both read it. HF names: the encoder's tensors carry the
prefix "bert." in the heads models (BertForMaskedLM, ...) and none in a bare
BertModel; the heads' tensors are `cls.predictions.*` (masked LM, its decoder
tied to the word embeddings), `classifier.*` and `qa_outputs.*`.

Which heads a checkpoint has is read from config.json's `architectures` and
from the tensors themselves (a BertForMaskedLM converted from the original
BERT also holds the pooler). Tensors that t5mtl computes nothing from are
refused by name, except these, which are checked or dropped:
`embeddings.position_ids` (a buffer), `cls.predictions.decoder.{weight,bias}`
(must equal the word embeddings and `cls.predictions.bias`, which t5mtl
ties), and `cls.seq_relationship.*` (the next-sentence head of the original
pretraining checkpoints, dropped and logged). TF-era names
(`LayerNorm.gamma` / `.beta`) are read as `.weight` / `.bias`.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Iterator

import numpy as np

from t5mtl import paths
from t5mtl.convert.atomic_dir import atomic_directory
from t5mtl.convert.hf_tensors import (DENSE, IDENTITY, Layout, Path, get_path, linear_in,
                                      linear_out, read_hf_json, read_tensors, reshaped, set_path)
from t5mtl.errors import T5mtlError
from t5mtl.models.bert import bert_param_shapes, heads_in_params, normalize_heads
from t5mtl.models.bert_config import BertConfig

# The heads each HF class holds (the pooler: whether it builds one by default).
ARCHITECTURES = {
    "BertModel": ("pooler",),
    "BertForMaskedLM": ("mlm",),
    "BertForPreTraining": ("pooler", "mlm"),          # next-sentence head dropped
    "BertForSequenceClassification": ("classification",),
    "BertForQuestionAnswering": ("span",),
}
EXPORT_ARCHITECTURES = ("BertModel", "BertForMaskedLM", "BertForSequenceClassification",
                        "BertForQuestionAnswering")

_TIED = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")
_NSP = ("cls.seq_relationship.weight", "cls.seq_relationship.bias")


def name_table(cfg: BertConfig, heads, prefix: str = "bert.") -> Iterator[
        tuple[str, Path, Layout]]:
    """Yields (hf_name, t5mtl_path, (to_ours, to_hf)) for every parameter of a
    Bert with these heads; `prefix` precedes the encoder's HF names."""
    heads = normalize_heads(heads)
    split = lambda n: (cfg.num_heads, n // cfg.num_heads)

    def dense(hf: str, ours: Path, weight: Layout = DENSE, bias: Layout = IDENTITY):
        yield f"{hf}.weight", ours + ("kernel",), weight
        yield f"{hf}.bias", ours + ("bias",), bias

    def layer_norm(hf: str, ours: Path):
        yield f"{hf}.weight", ours + ("scale",), IDENTITY
        yield f"{hf}.bias", ours + ("bias",), IDENTITY

    emb = f"{prefix}embeddings"
    for hf, ours in (("word_embeddings", "word"), ("position_embeddings", "position"),
                     ("token_type_embeddings", "token_type")):
        yield f"{emb}.{hf}.weight", ("embeddings", ours, "embedding"), IDENTITY
    yield from layer_norm(f"{emb}.LayerNorm", ("embeddings", "layer_norm"))
    for i in range(cfg.num_layers):
        hf, ours = f"{prefix}encoder.layer.{i}", (f"layers_{i}",)
        for proj in ("query", "key", "value"):
            yield from dense(f"{hf}.attention.self.{proj}", ours + ("attention", proj),
                             linear_in(split), reshaped(split))
        yield from dense(f"{hf}.attention.output.dense", ours + ("attention", "out"),
                         linear_out(split))
        yield from layer_norm(f"{hf}.attention.output.LayerNorm", ours + ("attention_layer_norm",))
        yield from dense(f"{hf}.intermediate.dense", ours + ("mlp", "wi"))
        yield from dense(f"{hf}.output.dense", ours + ("mlp", "wo"))
        yield from layer_norm(f"{hf}.output.LayerNorm", ours + ("mlp_layer_norm",))
    if "pooler" in heads:
        yield from dense(f"{prefix}pooler.dense", ("pooler", "dense"))
    if "mlm" in heads:
        yield from dense("cls.predictions.transform.dense", ("mlm", "transform"))
        yield from layer_norm("cls.predictions.transform.LayerNorm", ("mlm", "layer_norm"))
        yield "cls.predictions.bias", ("mlm", "bias"), IDENTITY
    if "classification" in heads:
        yield from dense("classifier", ("classifier",))
    if "span" in heads:
        yield from dense("qa_outputs", ("span",))


# -- import ------------------------------------------------------------------------

def import_hf_bert(src: str) -> tuple[BertConfig, dict, tuple[str, ...]]:
    """Reads an HF BERT directory (config.json + model.safetensors or
    pytorch_model.bin; a gs:// one is downloaded first).

    Returns (config, params with numpy leaves, heads): `heads` is the
    canonical head tuple (t5mtl.models.bert.normalize_heads) to build
    `Bert(config, heads, num_labels)` with; a classification head's
    num_labels is `params["classifier"]["kernel"].shape[1]`.
    """
    if paths.is_cloud(src):
        with paths.local_copy(src, "HF model directory") as local:
            return import_hf_bert(local)
    source = os.path.join(src, "config.json")
    d = read_hf_json(src)
    cfg = BertConfig.from_hf_dict(d, source=source)
    tensors = {_modern_name(k): v for k, v in read_tensors(src).items()}
    prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
    heads = normalize_heads(_architecture_heads(d, source) + _tensor_heads(tensors, prefix))
    num_labels = len(d.get("id2label") or {}) or int(d.get("num_labels", 2))
    table = list(name_table(cfg, heads, prefix))
    _check_tensor_names(src, tensors, {name for name, _, _ in table}, prefix, heads)
    if "mlm" in heads:
        _check_tied_decoder(src, tensors, f"{prefix}embeddings.word_embeddings.weight")
    expected = bert_param_shapes(cfg, heads, num_labels)
    params: dict = {}
    for hf_name, path, (to_ours, _) in table:
        try:
            value = to_ours(tensors[hf_name])
        except ValueError:          # a reshape that the config's head count cannot do
            value = None
        want = tuple(get_path(expected, path).shape)
        if value is None or value.shape != want:
            raise T5mtlError(f"{src}: tensor {hf_name!r} has shape {tensors[hf_name].shape}, "
                             f"which does not fit config.json (t5mtl {'/'.join(path)} wants "
                             f"{want})")
        set_path(params, path, value)
    return cfg, params, heads


def _modern_name(name: str) -> str:
    if "LayerNorm." in name:
        if name.endswith(".gamma"):
            return name[:-len("gamma")] + "weight"
        if name.endswith(".beta"):
            return name[:-len("beta")] + "bias"
    return name


def _architecture_heads(d: dict, source: str) -> tuple[str, ...]:
    heads: tuple[str, ...] = ()
    for arch in d.get("architectures") or ():
        if arch not in ARCHITECTURES:
            raise T5mtlError(f"{source}: architecture {arch!r} is not supported; t5mtl's BERT "
                             f"reads {', '.join(ARCHITECTURES)}")
        heads += tuple(h for h in ARCHITECTURES[arch] if h != "pooler")
    return heads


def _tensor_heads(tensors: dict, prefix: str) -> tuple[str, ...]:
    """The heads whose tensors are present (one of a head's tensors suffices:
    the name check then reports the rest missing)."""
    marks = {"pooler": f"{prefix}pooler.", "mlm": "cls.predictions.", "classification":
             "classifier.", "span": "qa_outputs."}
    return tuple(head for head, mark in marks.items()
                 if any(k.startswith(mark) and k not in _TIED for k in tensors))


def _check_tensor_names(src: str, tensors: dict, known: set, prefix: str, heads) -> None:
    missing = [name for name in sorted(known) if name not in tensors]
    if missing:
        raise T5mtlError(f"{src}: weights lack tensors {missing} that config.json and the "
                         f"heads {heads} imply")
    dropped = [k for k in _NSP if k in tensors]
    if dropped:
        logging.info("%s: dropping the next-sentence head %s (t5mtl's BERT has none)", src,
                     dropped)
    ignored = {f"{prefix}embeddings.position_ids", *_TIED, *_NSP}
    extra = sorted(set(tensors) - known - ignored)
    if extra:
        raise T5mtlError(f"{src}: tensors {extra} are not part of t5mtl's BERT (heads {heads})")


def _check_tied_decoder(src: str, tensors: dict, word: str) -> None:
    pairs = ((_TIED[0], word), (_TIED[1], "cls.predictions.bias"))
    for tied, to in pairs:
        if tied in tensors and not np.array_equal(tensors[tied], tensors[to]):
            raise T5mtlError(f"{src}: {tied!r} differs from {to!r}; t5mtl's masked-LM decoder "
                             f"is tied to them")


# -- export ------------------------------------------------------------------------

def export_hf_bert(config: BertConfig, params: dict, dst: str,
                   architecture: str | None = None) -> None:
    """Writes config.json + model.safetensors that transformers'
    `<architecture>.from_pretrained(dst)` loads.

    `architecture`: one of EXPORT_ARCHITECTURES; None picks it from the
    params' heads (classification, span or mlm, whichever is the only one;
    else BertModel). A named architecture writes its own tensors only (other
    heads in `params` are left out); a tensor it needs that `params` lacks,
    or one whose shape does not fit `config`, is a T5mtlError naming it. The
    directory appears whole or not at all (t5mtl.convert.atomic_dir).
    """
    from safetensors.numpy import save_file
    present = heads_in_params(params)
    architecture = architecture or _infer_architecture(present)
    if architecture not in EXPORT_ARCHITECTURES:
        raise T5mtlError(f"architecture {architecture!r} cannot be exported; choose one of "
                         f"{', '.join(EXPORT_ARCHITECTURES)}")
    heads = normalize_heads(ARCHITECTURES[architecture])
    num_labels = 2
    if "classification" in heads and "classifier" in params:
        num_labels = int(np.shape(params["classifier"]["kernel"])[-1])
    expected = bert_param_shapes(config, heads, num_labels)
    prefix = "" if architecture == "BertModel" else "bert."
    table = list(name_table(config, heads, prefix))
    missing = [path for _, path, _ in table if not _has_path(params, path)]
    if missing:
        raise T5mtlError(f"params lack {['/'.join(p) for p in missing]}, which {architecture} "
                         f"needs (params have heads {present})")
    tensors = {}
    for hf_name, path, (_, to_hf) in table:
        value = np.asarray(get_path(params, path), np.float32)
        want = tuple(get_path(expected, path).shape)
        if value.shape != want:
            raise T5mtlError(f"param {'/'.join(path)} has shape {value.shape}; the config "
                             f"wants {want}")
        tensors[hf_name] = np.ascontiguousarray(to_hf(value))
    hf_config = {"architectures": [architecture], **config.to_hf_dict()}
    if "classification" in heads:
        hf_config["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
        hf_config["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
    with atomic_directory(dst, stage_locally=True) as tmp:
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(hf_config, f, indent=2)


def _has_path(tree, path: Path) -> bool:
    for p in path:
        if not hasattr(tree, "keys") or p not in tree:
            return False
        tree = tree[p]
    return True


def _infer_architecture(present: tuple[str, ...]) -> str:
    own = [h for h in present if h != "pooler"]
    if len(own) > 1:
        raise T5mtlError(f"params have heads {tuple(own)}; name the architecture to export "
                         f"({', '.join(EXPORT_ARCHITECTURES)})")
    by_head = {"mlm": "BertForMaskedLM", "classification": "BertForSequenceClassification",
               "span": "BertForQuestionAnswering"}
    return by_head[own[0]] if own else "BertModel"
