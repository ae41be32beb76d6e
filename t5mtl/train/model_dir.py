"""The on-disk layout of a t5mtl model directory.

  model_dir/
    model.json        {"format": "t5mtl",
                       "model": {"class": "pkg.module:Class", "spec": {...}},
                       "vocabulary": {...} | null,
                       "tasks": [task names] | null,     (task index = position)
                       "base": {"path": dir, "step": N, "fingerprint": sha256} | null}
    checkpoints/      an orbax CheckpointManager directory: <step>/params (+ the
                      trainer's items: opt_state, progress)
    config.gin        the resolved gin config of the run that wrote it

The model's class and `spec` (t5mtl.models.base) rebuild the model that wrote
the directory. With a "base", the checkpoints hold only the trained subset
of the params; the rest are the base's (a t5mtl model_dir, an HF T5
directory or a t5x checkpoint, at that step), and every loader joins the
two, after checking that the base's parameters are still the ones it was
trained against (their `params_fingerprint`). model.json files written
before the model protocol ({"config": T5Config}) read as an
EncoderDecoderModel. `t5mtl convert --from hf` writes step 0 with params
only, `--from t5x` t5x's step (with the optimizer state on request);
training resumes from, or finetunes from, the same layout. A model_dir may
be a gs:// URL (t5mtl.paths; orbax writes its steps there itself).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from t5mtl import paths
from t5mtl.errors import T5mtlError
from t5mtl.models import param_names
from t5mtl.models.base import BaseModel, class_path, import_class

MODEL_JSON = "model.json"
CHECKPOINTS = "checkpoints"


@dataclasses.dataclass
class ModelInfo:
    """What model.json says."""
    model: BaseModel
    vocabulary: dict | None = None
    tasks: list[str] | None = None
    base: dict | None = None


def is_model_dir(path: str) -> bool:
    return paths.isfile(paths.join(path, MODEL_JSON))


def write_model_json(model_dir: str, model: BaseModel, vocabulary: dict | None = None,
                     tasks: list[str] | None = None, base: dict | None = None) -> None:
    """Writes model.json atomically (temp file + rename; one object upload
    for a gs:// model_dir)."""
    paths.makedirs(model_dir)
    payload = {"format": "t5mtl", "model": {"class": class_path(model), "spec": model.spec()},
               "vocabulary": vocabulary, "tasks": tasks, "base": base}
    paths.write_text(paths.join(model_dir, MODEL_JSON),
                     json.dumps(payload, indent=2, sort_keys=True))


def read_model_json(model_dir: str) -> ModelInfo:
    path = paths.join(model_dir, MODEL_JSON)
    if not paths.isfile(path):
        paths.check_bucket(model_dir)
        raise T5mtlError(f"{model_dir}: no {MODEL_JSON} (not a t5mtl model directory)")
    try:
        payload = json.loads(paths.read_text(path))
    except json.JSONDecodeError as e:
        raise T5mtlError(f"{path}: not valid JSON ({e})") from e
    if payload.get("format") != "t5mtl" or not ("model" in payload or "config" in payload):
        raise T5mtlError(f"{path}: not a t5mtl model.json (format={payload.get('format')!r})")
    if "model" in payload:
        cls = import_class(payload["model"]["class"])
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            raise T5mtlError(f"{path}: {payload['model']['class']!r} is not a t5mtl model class")
        model = cls.from_spec(payload["model"]["spec"])
    else:   # written before the model protocol: a T5Config
        from t5mtl.models.config import T5Config
        from t5mtl.models.encoder_decoder import EncoderDecoderModel
        model = EncoderDecoderModel(T5Config.from_dict(payload["config"]))
    return ModelInfo(model, payload.get("vocabulary"), payload.get("tasks"), payload.get("base"))


def architecture_differences(saved: BaseModel, new: BaseModel) -> list[str]:
    """ "X is A in model.json but B in this run", for the model class and each
    architecture field that differs."""
    if class_path(saved) != class_path(new):
        return [f"the model class is {class_path(saved)!r} in model.json but "
                f"{class_path(new)!r} in this run"]
    a, b = saved.architecture(), new.architecture()
    return [f"{k} is {a.get(k)!r} in model.json but {b.get(k)!r} in this run"
            for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def checkpoint_manager(model_dir: str, item_handlers: dict | None = None,
                       **options) -> ocp.CheckpointManager:
    """The model_dir's CheckpointManager over the items a t5mtl run saves:
    params and opt_state (StandardCheckpoint) and progress (JSON)."""
    handlers = {"params": ocp.StandardCheckpointHandler(),
                "opt_state": ocp.StandardCheckpointHandler(),
                "progress": ocp.JsonCheckpointHandler(), **(item_handlers or {})}
    return ocp.CheckpointManager(paths.absolute(paths.join(model_dir, CHECKPOINTS)),
                                 item_handlers=handlers,
                                 options=ocp.CheckpointManagerOptions(**options))


def save_params(model_dir: str, params, step: int = 0,
                save_concurrent_gb: int | None = None) -> None:
    """Saves params alone as checkpoint `step` (synchronously); with
    `save_concurrent_gb`, orbax serializes at most that many GB at once
    (bounds the host memory a large model's save takes)."""
    handlers = None if save_concurrent_gb is None else {
        "params": ocp.StandardCheckpointHandler(save_concurrent_gb=save_concurrent_gb)}
    with checkpoint_manager(model_dir, handlers, enable_async_checkpointing=False) as mngr:
        mngr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params)))
        mngr.wait_until_finished()


def _restore_saved_params(model_dir: str, step: int | None) -> tuple[Any, int]:
    """The params item of checkpoint `step` (latest if None) as numpy, in the
    tree and shapes it was saved with, and the step."""
    with checkpoint_manager(model_dir) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise T5mtlError(f"{model_dir}: no checkpoint under {CHECKPOINTS}/")
        if step not in mngr.all_steps():
            raise T5mtlError(f"{model_dir}: no checkpoint {step} (there are "
                             f"{sorted(mngr.all_steps())})")
        meta = mngr.item_metadata(step)["params"]
        if meta is None:
            raise T5mtlError(f"{mngr.directory}/{step}: checkpoint has no params item")
        # Onto this process's first device whatever the saving run's devices
        # were (orbax would otherwise insist on the saved topology, e.g. a
        # checkpoint written by 2 processes would not load in 1).
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                                getattr(meta, "tree", meta))
        restored = mngr.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract)))
    return jax.tree.map(np.asarray, restored["params"]), step


def saved_params(model_dir: str, step: int | None = None):
    """What checkpoint `step` (latest if None) holds of the params, as saved
    (an adapter directory's own params alone), as numpy."""
    return _restore_saved_params(model_dir, step)[0]


def params_fingerprint(params) -> str:
    """sha256 over every leaf's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name, leaf in sorted(param_names.flatten(params).items()):
        leaf = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{name}:{leaf.dtype}:{leaf.shape};".encode())
        digest.update(memoryview(leaf).cast("B"))
    return digest.hexdigest()


def check_base(base_ref: dict, params, model_dir: str) -> None:
    """Raises T5mtlError if `params` (the base, in the adapted model's layout)
    are not the ones model.json's base reference was trained against."""
    expected = base_ref.get("fingerprint")
    if expected and params_fingerprint(params) != expected:
        raise T5mtlError(
            f"{model_dir} was trained on the base {base_ref['path']} at step "
            f"{base_ref.get('step')}, whose parameters have changed since (fingerprint "
            f"{expected[:12]}, now {params_fingerprint(params)[:12]}); restore that base or "
            f"train the adapter again")


def restore_params(model_dir: str, step: int | None = None, base_params=None):
    """The full params of checkpoint `step` (latest if None) as numpy, in the
    layout of the model in model.json, base joined in: the base named in
    model.json, or `base_params` when the caller holds it already (its
    leaves are used, not copied). Params that do not fit that model, or a
    base other than the one trained against, raise T5mtlError."""
    info = read_model_json(model_dir)
    model = info.model
    saved, step = _restore_saved_params(model_dir, step)
    if base_params is not None and not info.base:
        raise T5mtlError(f"{model_dir}: not an adapter directory (its model.json names no "
                         f"base), so no base is joined to it")
    if info.base:
        if base_params is None:
            _, base_params = load_params(info.base["path"], info.base.get("step"), model=model)
        base = info.model.adapt_params(base_params)
        check_base(info.base, base, model_dir)
        saved = param_names.merge(base, saved)
    params = model.adapt_params(saved)
    from t5mtl.train.checkpointer import leaf_shapes, shape_differences
    diffs = shape_differences(leaf_shapes(params), leaf_shapes(model.abstract_params()))
    if diffs:
        more = f"; and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        raise T5mtlError(f"{model_dir}: checkpoint {step} does not match its model: "
                         f"{'; '.join(diffs[:3])}{more}")
    return params


def load_params(path: str, step: int | None = None,
                model: BaseModel | None = None) -> tuple[BaseModel, Any]:
    """(model, params) of a t5mtl model_dir (checkpoint `step`, latest if None),
    an HF T5 directory, or, given the `model` it holds (a t5x checkpoint
    carries no config), a t5x checkpoint (its names that `model` has)."""
    if is_model_dir(path):
        return read_model_json(path).model, restore_params(path, step)
    from t5mtl.convert import t5x
    if model is not None and t5x.is_t5x_checkpoint(path):
        return model, t5x.read_params(t5x.open_checkpoint(path, step), model.abstract_params(),
                                      strict=False)
    from t5mtl.convert.hf_bert_dirs import is_hf_bert, load_hf_bert
    if is_hf_bert(path):
        return load_hf_bert(path)
    if paths.isfile(paths.join(path, "config.json")):
        from t5mtl.convert.hf import import_hf
        from t5mtl.models.encoder_decoder import EncoderDecoderModel
        config, params = import_hf(path)
        model = EncoderDecoderModel(config)
        return model, model.adapt_params(params)
    if t5x.is_t5x_checkpoint(path):
        raise T5mtlError(f"{path}: a t5x checkpoint holds no model config; convert it first "
                         f"(t5mtl convert --from t5x --t5x_config CONFIG) or use it as "
                         f"CheckpointConfig.init_from")
    paths.check_bucket(path)
    raise T5mtlError(f"{path}: neither a t5mtl model directory (model.json) nor an HF "
                     f"directory (config.json)")


def describe(path: str) -> dict:
    """{"vocabulary": spec or None, "tasks": names or None} of a t5mtl model_dir
    or an HF T5 directory."""
    if is_model_dir(path):
        info = read_model_json(path)
        return {"vocabulary": info.vocabulary, "tasks": info.tasks}
    from t5mtl.convert.hf import hf_vocabulary_spec
    return {"vocabulary": hf_vocabulary_spec(path), "tasks": None}
