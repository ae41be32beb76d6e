"""HF BERT directories as t5mtl sees them elsewhere: `t5mtl convert`
(--from hf / --to hf), `t5mtl.load` and `CheckpointConfig.init_from`.

An HF BERT directory (config.json with model_type "bert") loads as a
`MaskedLanguageModel` of its config with the parameters as imported (its
pooler and heads included), so finetuning init takes the encoder, and the
pooler or MLM head where the new model has them, by name. Its vocab.txt,
when there is one, becomes the model_dir's WordPiece vocabulary
(`do_lower_case` from tokenizer_config.json, default true).

Exports: a masked LM writes BertForMaskedLM; a one-task multi-head
classifier with a linear head writes BertForSequenceClassification (its
head is BERT's classifier); other BERT models write BertModel (the encoder
and pooler, when they have one).
"""
from __future__ import annotations

import json
import os

from t5mtl import paths
from t5mtl.errors import T5mtlError


def is_hf_bert(src: str) -> bool:
    """Whether `src` is an HF directory whose config.json says model_type "bert"."""
    config = paths.join(src, "config.json")
    if not paths.isfile(config):
        return False
    with paths.open_file(config) as f:
        return json.load(f).get("model_type") == "bert"


def load_hf_bert(src: str):
    """(MaskedLanguageModel of the directory's config, its params as imported)."""
    from t5mtl.convert.hf_bert import import_hf_bert
    from t5mtl.models.masked_lm import MaskedLanguageModel
    config, params, _ = import_hf_bert(src)
    return MaskedLanguageModel(config), params


def _vocabulary(src: str, dst: str, tmp: str) -> dict | None:
    vocab = os.path.join(src, "vocab.txt")
    if not os.path.isfile(vocab):
        return None
    lowercase = True
    tok_config = os.path.join(src, "tokenizer_config.json")
    if os.path.isfile(tok_config):
        with open(tok_config) as f:
            lowercase = bool(json.load(f).get("do_lower_case", True))
    paths.copy_file(vocab, paths.join(tmp, "vocab.txt"))
    return {"kind": "wordpiece", "path": paths.join(paths.absolute(dst), "vocab.txt"),
            "lowercase": lowercase}


def hf_bert_to_model_dir(src: str, dst: str) -> None:
    """A t5mtl model_dir (model.json, checkpoint 0, vocab.txt) from an HF BERT
    directory, written whole or not at all."""
    from t5mtl.convert.atomic_dir import atomic_directory
    from t5mtl.train.model_dir import save_params, write_model_json
    model, params = load_hf_bert(src)
    with atomic_directory(dst) as tmp:
        vocab = _vocabulary(src, dst, tmp)
        save_params(tmp, params, step=0)
        write_model_json(tmp, model, vocab)              # last: it marks the directory whole


def export_bert_model(src: str, model, params, dst: str) -> None:
    """Writes the HF BERT directory of a t5mtl BERT model (module docstring)."""
    from t5mtl.convert.hf_bert import export_hf_bert
    from t5mtl.models.masked_lm import MaskedLanguageModel
    from t5mtl.models.multi_head import MultiHeadClassifier
    backbone = getattr(model, "backbone", None)
    if backbone is None or backbone.family != "bert":
        raise T5mtlError(f"{src}: {type(model).__name__} is not a BERT model")
    encoder = {k: v for k, v in params.items()
               if k == "embeddings" or k.startswith("layers_") or k in ("pooler", "mlm")}
    if isinstance(model, MaskedLanguageModel):
        export_hf_bert(backbone.config, encoder, dst, "BertForMaskedLM")
    elif isinstance(model, MultiHeadClassifier) and len(model.tasks) == 1 \
            and model.head == "linear":
        head = params["heads"][model.tasks[0]]["out"]
        export_hf_bert(backbone.config, {**encoder, "classifier": head}, dst,
                       "BertForSequenceClassification")
    else:
        if "pooler" not in encoder:
            raise T5mtlError(f"{src}: {type(model).__name__} has no pooler; HF's BertModel "
                             f"needs one (masked LMs export as BertForMaskedLM)")
        export_hf_bert(backbone.config, encoder, dst, "BertModel")
