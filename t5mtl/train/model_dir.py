"""The on-disk layout of a t5mtl model directory.

  model_dir/
    model.json        {"format": "t5mtl", "config": {...}, "vocabulary": {...} | null}
    checkpoints/      an orbax CheckpointManager directory: <step>/params (+ the
                      trainer's items: opt_state, step, data position)
    config.gin        the resolved gin config of the run that wrote it

`t5mtl convert --from hf` writes step 0 with params only; training resumes
from, or finetunes from, the same layout.
"""
from __future__ import annotations

import json
import os
import tempfile

import jax
import numpy as np
import orbax.checkpoint as ocp

from t5mtl.errors import T5mtlError
from t5mtl.models.config import T5Config

MODEL_JSON = "model.json"
CHECKPOINTS = "checkpoints"


def is_model_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MODEL_JSON))


def write_model_json(model_dir: str, config: T5Config, vocabulary: dict | None = None) -> None:
    """Writes model.json atomically (temp file + rename)."""
    os.makedirs(model_dir, exist_ok=True)
    payload = {"format": "t5mtl", "config": config.to_dict(), "vocabulary": vocabulary}
    fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=".model.json.")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(model_dir, MODEL_JSON))


def read_model_json(model_dir: str) -> tuple[T5Config, dict | None]:
    path = os.path.join(model_dir, MODEL_JSON)
    if not os.path.isfile(path):
        raise T5mtlError(f"{model_dir}: no {MODEL_JSON} (not a t5mtl model directory)")
    try:
        with open(path) as f:
            payload = json.load(f)
    except json.JSONDecodeError as e:
        raise T5mtlError(f"{path}: not valid JSON ({e})") from e
    if payload.get("format") != "t5mtl" or "config" not in payload:
        raise T5mtlError(f"{path}: not a t5mtl model.json (format={payload.get('format')!r})")
    return T5Config.from_dict(payload["config"]), payload.get("vocabulary")


# The T5Config fields that say which function the parameters compute. A run
# may resume a model_dir with other dropout, dtype or remat settings, not with
# other values of these.
ARCHITECTURE_FIELDS = (
    "vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_layers", "num_decoder_layers",
    "feed_forward_proj", "tie_word_embeddings", "relative_attention_num_buckets",
    "relative_attention_max_distance", "layer_norm_epsilon", "scan_layers")


def architecture_differences(saved: T5Config, new: T5Config) -> list[str]:
    """ "field is X in model.json but Y in this run", for each architecture field
    that differs (num_decoder_layers=None counts as num_layers)."""
    def value(config, field):
        return config.n_decoder_layers if field == "num_decoder_layers" else getattr(config, field)
    return [f"{field} is {value(saved, field)!r} in model.json but {value(new, field)!r} in "
            f"this run" for field in ARCHITECTURE_FIELDS
            if value(saved, field) != value(new, field)]


def checkpoint_manager(model_dir: str, item_handlers: dict | None = None,
                       **options) -> ocp.CheckpointManager:
    """The model_dir's CheckpointManager over the items a t5mtl run saves:
    params and opt_state (StandardCheckpoint) and progress (JSON)."""
    handlers = {"params": ocp.StandardCheckpointHandler(),
                "opt_state": ocp.StandardCheckpointHandler(),
                "progress": ocp.JsonCheckpointHandler(), **(item_handlers or {})}
    return ocp.CheckpointManager(os.path.abspath(os.path.join(model_dir, CHECKPOINTS)),
                                 item_handlers=handlers,
                                 options=ocp.CheckpointManagerOptions(**options))


def save_params(model_dir: str, params, step: int = 0) -> None:
    """Saves params alone as checkpoint `step` (synchronously)."""
    with checkpoint_manager(model_dir, enable_async_checkpointing=False) as mngr:
        mngr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params)))
        mngr.wait_until_finished()


def restore_params(model_dir: str, config: T5Config, step: int | None = None):
    """Restores params (as numpy-backed jax arrays) from checkpoint `step` or the latest."""
    from t5mtl.convert.layout import to_layout
    from t5mtl.models.init import param_shapes
    with checkpoint_manager(model_dir) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise T5mtlError(f"{model_dir}: no checkpoint under {CHECKPOINTS}/")
        saved_scanned = _saved_is_scanned(mngr, step)
        layout_cfg = config.replace(scan_layers=saved_scanned)
        # Onto this process's first device whatever the saving run's devices
        # were (orbax would otherwise insist on the saved topology, e.g. a
        # checkpoint written by 2 processes would not load in 1).
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
            param_shapes(layout_cfg))
        try:
            restored = mngr.restore(step, args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract)))
        except (ValueError, KeyError) as e:
            raise T5mtlError(f"{model_dir}: checkpoint {step} does not match model.json "
                             f"({e})") from e
    params = jax.tree_util.tree_map(np.asarray, restored["params"])
    return to_layout(params, config)


def _saved_is_scanned(mngr: ocp.CheckpointManager, step: int) -> bool:
    meta = mngr.item_metadata(step)["params"]
    if meta is None:
        raise T5mtlError(f"{mngr.directory}/{step}: checkpoint has no params item")
    return "layers" in meta["encoder"]
