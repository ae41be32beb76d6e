"""`t5mtl convert`: HF T5 and BERT directories and t5x checkpoints <-> t5mtl model directories.

  t5mtl convert --from hf  --src HF_DIR --dst MODEL_DIR
  t5mtl convert --to hf    --src MODEL_DIR --dst HF_DIR
  (an HF BERT directory, config.json model_type "bert", converts both ways too:
  convert/hf_bert_dirs.py)
  t5mtl convert --from t5x --src T5X_CHECKPOINT --dst MODEL_DIR --t5x_config CONFIG
                [--step N] [--optimizer_state [--gin_file F --gin.X=Y]]
  t5mtl convert --to t5x   --src MODEL_DIR --dst T5X_DIR [--step N]
"""
from __future__ import annotations

import argparse
import os

from t5mtl import paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from", dest="from_format", choices=["hf", "t5x"],
                           help="import: SRC is an HF T5 directory or a t5x checkpoint, DST a "
                                "t5mtl model_dir")
    direction.add_argument("--to", dest="to_format", choices=["hf", "t5x"],
                           help="export: SRC is a t5mtl model_dir, DST an HF directory or a "
                                "t5x checkpoint directory")
    parser.add_argument("--src", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--step", type=int, default=None,
                        help="checkpoint step to read (default: the latest)")
    parser.add_argument("--scan_layers", action="store_true",
                        help="store imported params in the scanned layout")
    parser.add_argument("--t5x_config", default=None,
                        help="--from t5x: a JSON of t5x network.T5Config fields or the run's "
                             "model gin file (t5x/examples/t5/t5_1_1/small.gin, ...)")
    parser.add_argument("--optimizer_state", action="store_true",
                        help="--from t5x: also map t5x's Adafactor state to t5mtl's, so "
                             "`t5mtl train` resumes the run (the optimizer is the run's "
                             "create_optimizer; give its --gin_file / --gin.X=Y)")
    parser.add_argument("--gin_file", action="append", default=[],
                        help="with --optimizer_state: gin files of the t5mtl run to resume")
    parser.add_argument("--sentencepiece_model", default=None,
                        help="--from t5x: the run's SentencePiece model, copied into DST")


def hf_to_model_dir(src: str, dst: str, scan_layers: bool = False) -> None:
    """Writes a t5mtl model_dir (model.json + checkpoint 0) from an HF directory.

    The directory appears whole or not at all (temporary sibling, then rename).
    """
    from t5mtl.convert.atomic_dir import atomic_directory
    from t5mtl.convert.hf import hf_vocabulary_spec, import_hf
    from t5mtl.convert.hf_bert_dirs import hf_bert_to_model_dir, is_hf_bert
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.train.model_dir import save_params, write_model_json
    if is_hf_bert(src):
        return hf_bert_to_model_dir(src, dst)
    config, params = import_hf(src)
    model = EncoderDecoderModel(config.replace(scan_layers=scan_layers))
    vocab = hf_vocabulary_spec(src)
    with atomic_directory(dst) as tmp:
        if vocab:
            paths.copy_file(vocab["path"], paths.join(tmp, "spiece.model"))
            vocab = dict(vocab, path=paths.join(paths.absolute(dst), "spiece.model"))
        save_params(tmp, model.adapt_params(params), step=0)
        write_model_json(tmp, model, vocab)             # last: it marks the directory whole


def _check_plain_t5(src: str, model) -> None:
    from t5mtl.errors import T5mtlError
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    if not isinstance(model, EncoderDecoderModel) or model.encoder_input is not None \
            or model.attention_prefix is not None:
        raise T5mtlError(f"{src}: only plain T5 models export (this one is "
                         f"{type(model).__name__} with its seam modules)")


def model_dir_to_hf(src: str, dst: str, step: int | None = None) -> None:
    from t5mtl.convert.hf import export_hf
    from t5mtl.train.model_dir import load_params
    model, params = load_params(src, step)
    if getattr(getattr(model, "backbone", None), "family", None) == "bert":
        from t5mtl.convert.hf_bert_dirs import export_bert_model
        return export_bert_model(src, model, params, dst)
    _check_plain_t5(src, model)
    export_hf(model.config, params, dst)


def t5x_to_model_dir(src: str, dst: str, t5x_config: str | None, step: int | None = None,
                     scan_layers: bool = False, optimizer_state: bool = False,
                     sentencepiece_model: str | None = None, tx=None) -> int:
    """Writes a t5mtl model_dir from a t5x checkpoint (legacy or orbax layout):
    model.json and, at t5x's step, the params (each read into its shard over
    this host's devices), with `optimizer_state` also the optimizer state of
    `tx` (default: `create_optimizer()`, t5mtl's Adafactor) and progress, so
    `t5mtl train --model_dir=DST` resumes the run. Returns the step."""
    from t5mtl.convert import t5x
    from t5mtl.convert.atomic_dir import atomic_directory
    from t5mtl.convert.t5x_config import read_t5x_config
    from t5mtl.errors import T5mtlError
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.train.model_dir import save_params, write_model_json
    if sentencepiece_model and not paths.isfile(sentencepiece_model):
        raise T5mtlError(f"--sentencepiece_model {sentencepiece_model}: no such file")
    config = read_t5x_config(t5x_config)
    model = EncoderDecoderModel(config.replace(scan_layers=scan_layers))
    ckpt = t5x.open_checkpoint(src, step)
    mesh, shardings = host_param_shardings(model)
    params = t5x.read_params(ckpt, model.abstract_params(), shardings.params)
    vocab = None
    opt_state = None
    if optimizer_state:
        import jax
        from t5mtl.convert.t5x_adafactor import read_adafactor_state
        from t5mtl.train import partitioning
        from t5mtl.train.optimizers import create_optimizer
        tx = tx if tx is not None else create_optimizer()
        opt_shardings = partitioning.opt_state_shardings(
            jax.eval_shape(tx.init, params), params, shardings.params, mesh)
        opt_state = read_adafactor_state(ckpt, tx, params, opt_shardings)
    with atomic_directory(dst) as tmp:
        if sentencepiece_model:
            paths.copy_file(sentencepiece_model, paths.join(tmp, "spiece.model"))
            vocab = {"kind": "sentencepiece", "extra_ids": 100,
                     "path": paths.join(paths.absolute(dst), "spiece.model")}
        if opt_state is None:
            save_params(tmp, params, step=ckpt.step, save_concurrent_gb=1)
        else:
            _save_train_state(tmp, params, opt_state, ckpt.step)
        write_model_json(tmp, model, vocab)             # last: it marks the directory whole
    return ckpt.step


def host_param_shardings(model):
    """(mesh, TrainState-like shardings) of `model`'s params over this host's
    devices (FSDP): what the trainer would use on one host."""
    import jax
    import types
    from t5mtl.train import partitioning
    mesh = partitioning.create_mesh((1, -1, 1), jax.local_devices())
    rules = partitioning.logical_axis_rules()
    with partitioning.mesh_context(mesh, rules):
        boxed = jax.eval_shape(model.init_boxed, jax.random.PRNGKey(0))
        params = partitioning.logical_to_shardings(partitioning.logical_partition_specs(boxed),
                                                   mesh, rules)
    return mesh, types.SimpleNamespace(params=params)


def _save_train_state(model_dir: str, params, opt_state, step: int) -> None:
    import jax
    import numpy as np
    from t5mtl.train.checkpointer import TrainCheckpointer
    from t5mtl.train.train_step import TrainState
    state = TrainState(step=np.int32(step), params=params, opt_state=opt_state,
                       rng=jax.random.key_data(jax.random.PRNGKey(1)))
    ckpt = TrainCheckpointer(model_dir, async_save=False)
    ckpt.save(state, data_position=0, force=True)
    ckpt.close()


def model_dir_to_t5x(src: str, dst: str, step: int | None = None) -> int:
    """Writes a t5mtl model_dir's checkpoint as a t5x checkpoint directory
    (legacy layout: DST/checkpoint_<step>/ with t5x's names, zero Adafactor
    moments) plus DST/model.gin (t5x's network bindings) and
    DST/t5x_config.json (the same as network.T5Config fields). Returns the step."""
    import json
    from t5mtl.convert import t5x
    from t5mtl.convert.atomic_dir import atomic_directory
    from t5mtl.convert.t5x_config import config_to_t5x_fields, t5x_gin_text
    from t5mtl.models.layout import unstack_layers
    from t5mtl.train import model_dir as model_dir_lib
    model = model_dir_lib.read_model_json(src).model
    _check_plain_t5(src, model)
    if step is None:
        with model_dir_lib.checkpoint_manager(src, read_only=True) as mngr:
            step = mngr.latest_step()
    params = model_dir_lib.restore_params(src, step)
    if model.config.scan_layers:
        params = unstack_layers(params, model.config)
    fields = config_to_t5x_fields(model.config)
    with atomic_directory(dst, stage_locally=True) as tmp:
        t5x.write_legacy(os.path.join(tmp, f"checkpoint_{step}"), params, step)
        with open(os.path.join(tmp, "model.gin"), "w") as f:
            f.write(t5x_gin_text(model.config))
        with open(os.path.join(tmp, "t5x_config.json"), "w") as f:
            json.dump(fields, f, indent=1)
    return step


def run(args: argparse.Namespace) -> int:
    from t5mtl.errors import T5mtlError
    fmt = args.from_format or args.to_format
    if fmt != "t5x" and (args.t5x_config or args.optimizer_state or args.gin_file):
        raise T5mtlError("--t5x_config, --optimizer_state and --gin_file apply to t5x only")
    if args.from_format == "hf":
        hf_to_model_dir(args.src, args.dst, args.scan_layers)
    elif args.to_format == "hf":
        model_dir_to_hf(args.src, args.dst, args.step)
    elif args.from_format == "t5x":
        if (args.gin_file or args.gin_bindings) and not args.optimizer_state:
            raise T5mtlError("--gin_file / --gin.X=Y configure the optimizer of "
                             "--optimizer_state; without it they do nothing")
        if args.gin_file or args.gin_bindings:
            from t5mtl import gin_config
            gin_config.parse(args.gin_file, args.gin_bindings)
        step = t5x_to_model_dir(args.src, args.dst, args.t5x_config, args.step,
                                args.scan_layers, args.optimizer_state,
                                args.sentencepiece_model)
        print(f"t5x step {step}")
    else:
        step = model_dir_to_t5x(args.src, args.dst, args.step)
        print(f"step {step}: {args.dst}/checkpoint_{step}, {args.dst}/model.gin")
    print(f"wrote {args.dst}")
    return 0
