"""`t5mtl convert`: HF T5 directory <-> t5mtl model directory.

  t5mtl convert --from hf --src HF_DIR --dst MODEL_DIR
  t5mtl convert --to hf   --src MODEL_DIR --dst HF_DIR
"""
from __future__ import annotations

import argparse
import os
import shutil


def add_arguments(parser: argparse.ArgumentParser) -> None:
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from", dest="from_format", choices=["hf"],
                           help="import: SRC is an HF T5 directory, DST a t5mtl model_dir")
    direction.add_argument("--to", dest="to_format", choices=["hf"],
                           help="export: SRC is a t5mtl model_dir, DST an HF directory")
    parser.add_argument("--src", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step to export")
    parser.add_argument("--scan_layers", action="store_true",
                        help="store imported params in the scanned layout")


def hf_to_model_dir(src: str, dst: str, scan_layers: bool = False) -> None:
    """Writes a t5mtl model_dir (model.json + checkpoint 0) from an HF directory.

    The directory appears whole or not at all (temporary sibling, then rename).
    """
    from t5mtl.convert.atomic_dir import atomic_directory
    from t5mtl.convert.hf import hf_vocabulary_spec, import_hf
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.train.model_dir import save_params, write_model_json
    config, params = import_hf(src)
    model = EncoderDecoderModel(config.replace(scan_layers=scan_layers))
    vocab = hf_vocabulary_spec(src)
    with atomic_directory(dst) as tmp:
        if vocab:
            shutil.copy(vocab["path"], os.path.join(tmp, "spiece.model"))
            vocab = dict(vocab, path=os.path.join(os.path.abspath(dst), "spiece.model"))
        write_model_json(tmp, model, vocab)
        save_params(tmp, model.adapt_params(params), step=0)


def model_dir_to_hf(src: str, dst: str, step: int | None = None) -> None:
    from t5mtl.convert.hf import export_hf
    from t5mtl.errors import T5mtlError
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.train.model_dir import load_params
    model, params = load_params(src, step)
    if not isinstance(model, EncoderDecoderModel) or model.encoder_input is not None \
            or model.attention_prefix is not None:
        raise T5mtlError(f"{src}: only plain T5 models export to HF (this one is "
                         f"{type(model).__name__} with its seam modules)")
    export_hf(model.config, params, dst)


def run(args: argparse.Namespace) -> int:
    if args.from_format == "hf":
        hf_to_model_dir(args.src, args.dst, args.scan_layers)
    else:
        model_dir_to_hf(args.src, args.dst, args.step)
    print(f"wrote {args.dst}")
    return 0
