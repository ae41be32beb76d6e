"""The end-of-run text `t5mtl train` prints: the last loss, the per-task
eval table, the checkpoint, and how to try the model (text-to-text models)."""
from __future__ import annotations

import json

from t5mtl import paths
from t5mtl.data.data_config import example_input
from t5mtl.infer.evaluation import score_table
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.train import model_dir as model_dir_lib


def summarize(model_dir: str, summary: dict) -> str:
    """The end-of-run text: per-task eval table, the checkpoint, how to infer."""
    lines = [f"trained to step {summary['step']}; last train loss {summary['loss']:.4f}"]
    if summary["eval"]:
        lines += ["", score_table(summary["eval"]), ""]
    lines.append(f"checkpoint: {paths.join(model_dir, model_dir_lib.CHECKPOINTS)}/"
                 f"{summary['step']}")
    if _text_to_text(model_dir):
        example = example_input(sorted(summary["eval"])[0]) if summary["eval"] else "..."
        lines.append(f"try it:     t5mtl infer --model_dir {model_dir} "
                     f"--input {json.dumps(example)}")
    return "\n".join(lines)


def _text_to_text(model_dir: str) -> bool:
    """Whether `t5mtl infer` (text in, decoded text out) can run the model_dir's
    model: an EncoderDecoderModel; not a dual encoder, classifier or reader."""
    return isinstance(model_dir_lib.read_model_json(model_dir).model, EncoderDecoderModel)
