"""t5x checkpoints <-> t5mtl params, leaf by leaf.

t5x writes a train state {"target": params, "state": {"step", "param_states"}}
in one of two layouts, both read here without t5x:

  legacy  checkpoint_<step>/checkpoint    msgpack index (flax serialization):
                                          {"version", "optimizer": {"target", "state"}};
                                          small leaves inline, the rest as
                                          tensorstore specs with relative paths
          checkpoint_<step>/target.<a.b.c>/   one zarr array per leaf
  orbax   checkpoint_<step>/state/        orbax PyTreeCheckpointHandler (OCDBT)
                                          of the same tree, leaf keys "target.a.b.c"

t5mtl's parameter names are t5x's; three layouts differ:

  attention query/key/value kernel   t5x [embed, heads*kv]   t5mtl [embed, heads, kv]
  attention out kernel               t5x [heads*kv, embed]   t5mtl [heads, kv, embed]
  relpos_bias/rel_embedding          t5x [heads, buckets]    t5mtl [buckets, heads]

Reading goes one leaf at a time: with target shardings, each device's shard
is read from its own slice of the stored array (`jax.make_array_from_callback`
over tensorstore), so a host reads only its own shards and no leaf is read
whole to be split afterwards; with the scanned layout a shard gathers its
slice of each layer's array.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Callable

import jax
import numpy as np

from t5mtl import paths
from t5mtl.errors import T5mtlError
from t5mtl.models import param_names

Index = tuple[slice, ...]
_STEP_DIR = re.compile(r"checkpoint_(\d+)$")


# -- the stored arrays ---------------------------------------------------------------------

@dataclasses.dataclass
class StoredLeaf:
    """One array of a t5x checkpoint: its shape, dtype and a reader of regions."""
    shape: tuple[int, ...]
    dtype: Any
    _open: Callable[[], Any]        # -> a tensorstore.TensorStore or a numpy array
    _store: Any = None

    def read(self, index: Index | None = None) -> np.ndarray:
        if self._store is None:
            self._store = self._open()
        region = self._store if index is None else self._store[index]
        if isinstance(region, np.ndarray):
            return region
        return np.asarray(region.read().result())


@dataclasses.dataclass
class T5xCheckpoint:
    """A t5x checkpoint step: {"target/encoder/...": StoredLeaf, "state/step": ...}."""
    directory: str                  # the checkpoint_<step> directory
    step: int
    layout: str                     # "legacy" | "orbax"
    leaves: dict[str, StoredLeaf]

    def target_names(self) -> list[str]:
        return [n[len("target/"):] for n in self.leaves if n.startswith("target/")]


def _ts_open(spec: dict) -> Callable[[], Any]:
    def open_():
        import tensorstore as ts
        return ts.open(spec, open=True, read=True).result()
    return open_


def _inline(array: np.ndarray) -> StoredLeaf:
    array = np.asarray(array)
    return StoredLeaf(tuple(array.shape), array.dtype, lambda: array)


def _is_ts_spec(x) -> bool:
    return isinstance(x, dict) and "driver" in x and ("kvstore" in x or "path" in x)


def _legacy_leaves(tree, step_dir: str, prefix: str = "") -> dict[str, StoredLeaf]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if _is_ts_spec(value):
            spec = json.loads(json.dumps(value))
            kv = spec.get("kvstore")
            if isinstance(kv, dict) and kv.get("driver", "file") == "file" \
                    and not os.path.isabs(kv.get("path", "")):
                target = paths.join(step_dir, kv.get("path", ""))
                spec["kvstore"] = paths.kvstore(target) if paths.is_cloud(target) \
                    else dict(kv, path=target)
            elif "path" in spec and "kvstore" not in spec:
                spec["kvstore"] = paths.kvstore(paths.join(step_dir, spec.pop("path")))
            meta = spec.get("metadata", {})
            out[name] = StoredLeaf(tuple(meta.get("shape", ())), np.dtype(spec.get("dtype",
                                   "float32")), _ts_open(spec))
        elif isinstance(value, dict):
            out.update(_legacy_leaves(value, step_dir, name + "/"))
        elif value is not None:
            out[name] = _inline(value)
    return out


def _open_legacy(step_dir: str) -> T5xCheckpoint:
    from flax import serialization
    path = paths.join(step_dir, "checkpoint")
    try:
        with paths.open_file(path, "rb") as f:
            contents = serialization.msgpack_restore(f.read())
    except Exception as e:  # noqa: BLE001 - msgpack raises several types
        raise T5mtlError(f"{path}: not a t5x msgpack checkpoint index ({e})") from e
    if not isinstance(contents, dict):
        raise T5mtlError(f"{path}: not a t5x checkpoint index")
    version = contents.get("version", 0)
    state = contents.get("optimizer", contents) if version else contents
    if "target" not in state:
        raise T5mtlError(f"{path}: no 'target' (parameters) in the checkpoint index")
    leaves = _legacy_leaves(state, step_dir)
    step = int(leaves["state/step"].read()) if "state/step" in leaves else _dir_step(step_dir)
    return T5xCheckpoint(step_dir, step, "legacy", leaves)


def _open_orbax(step_dir: str) -> T5xCheckpoint:
    import orbax.checkpoint as ocp
    from etils import epath
    state_dir = paths.join(step_dir, "state")
    try:
        meta = ocp.PyTreeCheckpointHandler().metadata(epath.Path(state_dir))
        flags = json.loads(paths.read_text(paths.join(state_dir, "_METADATA")))
    except Exception as e:  # noqa: BLE001 - orbax raises several types
        raise T5mtlError(f"{state_dir}: not a readable orbax checkpoint ({e})") from e
    driver = "zarr3" if flags.get("use_zarr3") else "zarr"
    tree = getattr(meta, "tree", meta)
    leaves = {}
    for name, m in param_names.named_leaves(tree).items():
        key = getattr(m, "name", None) or name.replace("/", ".")
        if flags.get("use_ocdbt", True):
            kv = {"driver": "ocdbt", "base": paths.kvstore_url(state_dir), "path": key}
        else:
            kv = paths.kvstore(paths.join(state_dir, key))
        leaves[name] = StoredLeaf(tuple(m.shape), np.dtype(m.dtype),
                                  _ts_open({"driver": driver, "kvstore": kv}))
    if not any(n.startswith("target/") for n in leaves):
        raise T5mtlError(f"{state_dir}: no 'target' (parameters) in the checkpoint")
    step = _dir_step(step_dir)
    if "state/step" in leaves:
        try:
            step = int(leaves["state/step"].read())
        except Exception:  # noqa: BLE001 - a scalar orbax kept elsewhere: the dir name says
            pass
    return T5xCheckpoint(step_dir, step, "orbax", leaves)


def _dir_step(step_dir: str) -> int:
    m = _STEP_DIR.search(paths.basename(step_dir))
    return int(m.group(1)) if m else 0


def _step_dirs(path: str) -> dict[int, str]:
    steps = {}
    for name in paths.listdir(path):
        m = _STEP_DIR.fullmatch(name)
        full = paths.join(path, name)
        if m and (paths.isfile(paths.join(full, "checkpoint"))
                  or paths.isdir(paths.join(full, "state"))):
            steps[int(m.group(1))] = full
    return steps


def is_t5x_checkpoint(path: str) -> bool:
    """A t5x step directory, its `checkpoint` file, or a directory of checkpoint_<step>s."""
    if paths.isfile(path):
        return paths.basename(path) == "checkpoint"
    if not paths.isdir(path):
        return False
    return (paths.isfile(paths.join(path, "checkpoint"))
            or paths.isdir(paths.join(path, "state"))
            or bool(_step_dirs(path)))


def open_checkpoint(path: str, step: int | None = None) -> T5xCheckpoint:
    """The t5x checkpoint at `path`: a checkpoint_<step> directory (legacy or
    orbax), its msgpack `checkpoint` file, or a t5x model/checkpoint directory
    holding checkpoint_<step> directories (`step`, else the latest)."""
    if paths.isfile(path) and paths.basename(path) == "checkpoint":
        path = paths.dirname(paths.absolute(path))
    if not paths.isdir(path):
        paths.check_bucket(path)
        raise T5mtlError(f"{path}: no such t5x checkpoint directory")
    path = paths.absolute(path)
    steps = _step_dirs(path)
    if steps:
        if step is None:
            step = max(steps)
        if step not in steps:
            raise T5mtlError(f"{path}: no t5x checkpoint_{step} (there are {sorted(steps)})")
        path = steps[step]
    if paths.isdir(paths.join(path, "state")):
        ckpt = _open_orbax(path)
    elif paths.isfile(paths.join(path, "checkpoint")):
        ckpt = _open_legacy(path)
    else:
        raise T5mtlError(f"{path}: not a t5x checkpoint (no msgpack 'checkpoint' file, no "
                         f"orbax 'state' directory, no checkpoint_<step> directories)")
    if not steps and step is not None and ckpt.step != step:
        raise T5mtlError(f"{path}: holds t5x step {ckpt.step}, not {step}")
    return ckpt


# -- name and layout mapping ---------------------------------------------------------------

def kind_of(path: tuple[str, ...]) -> str:
    """How a t5mtl parameter's layout differs from t5x's."""
    if path[-1] == "rel_embedding":
        return "transpose"
    if path[-1] == "kernel" and len(path) > 1 and path[-2] in ("query", "key", "value"):
        return "join_last"
    if path[-1] == "kernel" and len(path) > 1 and path[-2] == "out":
        return "join_first"
    return "same"


def t5x_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The t5x shape of a t5mtl (per-layer) parameter shape."""
    if kind == "transpose":
        return tuple(reversed(shape))
    if kind == "join_last":
        return tuple(shape[:-2]) + (shape[-2] * shape[-1],)
    if kind == "join_first":
        return (shape[0] * shape[1],) + tuple(shape[2:])
    return tuple(shape)


def to_t5x(kind: str, x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.T if kind == "transpose" else x.reshape(t5x_shape(kind,
                                                                                    x.shape)))


def read_region(leaf: StoredLeaf, kind: str, shape: tuple[int, ...], index: Index) -> np.ndarray:
    """The region `index` of a t5mtl-shaped (per-layer) parameter from its t5x array."""
    index = tuple(slice(*s.indices(n)) for s, n in zip(index, shape))
    if kind == "transpose":
        return np.ascontiguousarray(leaf.read(index[::-1]).T)
    if kind == "join_last":       # [..., heads, kv] <- [..., heads*kv]
        h, k, kv = index[-2], index[-1], shape[-1]
        x = leaf.read(index[:-2] + (slice(h.start * kv, h.stop * kv),))
        return x.reshape(x.shape[:-1] + (h.stop - h.start, kv))[..., k]
    if kind == "join_first":      # [heads, kv, ...] <- [heads*kv, ...]
        h, k, kv = index[0], index[1], shape[1]
        x = leaf.read((slice(h.start * kv, h.stop * kv),) + index[2:])
        return x.reshape((h.stop - h.start, kv) + x.shape[1:])[:, k]
    return leaf.read(index)


def _sources(ckpt: T5xCheckpoint, prefix: str, path: tuple[str, ...]):
    """[(t5x name, layer index or None)] for a t5mtl param path (scanned: one per layer)."""
    if "layers" in path:
        i = path.index("layers")
        n_layers = sum(1 for name in ckpt.leaves
                       if re.fullmatch(re.escape("/".join((prefix,) + path[:i])) + r"/layers_\d+/"
                                       + re.escape("/".join(path[i + 1:])), name))
        return [("/".join((prefix,) + path[:i] + (f"layers_{j}",) + path[i + 1:]), j)
                for j in range(n_layers)]
    return [("/".join((prefix,) + path), None)]


def read_params(ckpt: T5xCheckpoint, abstract, shardings=None, strict: bool = True):
    """`abstract`'s tree (t5mtl names, shapes, dtypes; per-layer or scanned)
    read from the t5x arrays `target/<name>`, each leaf straight into
    its sharding (numpy when `shardings` is None).

    strict: every name must be in the checkpoint and every `prefix` array of
    the checkpoint used. Otherwise names the checkpoint lacks are left out
    (finetuning init: seam parameters start fresh).
    Shape mismatches raise one T5mtlError naming each parameter and both shapes.
    """
    prefix = "target"
    flat_abstract = param_names.flatten(abstract)
    flat_shardings = (param_names.flatten(shardings) if shardings is not None
                      else dict.fromkeys(flat_abstract))
    plan, problems, used = {}, [], set()
    for name, leaf in flat_abstract.items():
        path = tuple(name.split("/"))
        kind = kind_of(path)
        sources = _sources(ckpt, prefix, path)
        scanned = "layers" in path
        layer_shape = tuple(leaf.shape[1:]) if scanned else tuple(leaf.shape)
        want = t5x_shape(kind, layer_shape)
        missing = [s for s, _ in sources if s not in ckpt.leaves]
        if missing or not sources:
            if strict:
                where = missing[0] if missing else f"{prefix}/{name.replace('layers', 'layers_*')}"
                problems.append(f"{where!r} {want} is not in the checkpoint")
            continue
        if scanned and len(sources) != leaf.shape[0]:
            problems.append(f"{prefix}/{name}: the model has {leaf.shape[0]} layers, the "
                            f"checkpoint {len(sources)}")
            continue
        bad = [(s, ckpt.leaves[s].shape) for s, _ in sources if ckpt.leaves[s].shape != want]
        if bad:
            problems.append(f"{bad[0][0]!r} has shape {bad[0][1]} in the checkpoint but the "
                            f"config implies {want} (t5mtl {name} {layer_shape})")
            continue
        used.update(s for s, _ in sources)
        plan[name] = (kind, [ckpt.leaves[s] for s, _ in sources], scanned, layer_shape)
    if strict:
        extra = sorted(n for n in ckpt.leaves if n.startswith(prefix + "/") and n not in used)
        problems += [f"{n!r} {ckpt.leaves[n].shape} is in the checkpoint but not in the model"
                     for n in extra]
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise T5mtlError(f"{ckpt.directory}: the t5x checkpoint does not fit the model config: "
                         f"{len(problems)} parameter(s) differ: {'; '.join(problems[:3])}{more}")

    out = {}
    for name, (kind, leaves, scanned, layer_shape) in plan.items():
        leaf = flat_abstract[name]
        dtype = leaf.dtype

        def region(index, kind=kind, leaves=leaves, scanned=scanned, layer_shape=layer_shape,
                   dtype=dtype):
            if not scanned:
                return read_region(leaves[0], kind, layer_shape, index).astype(dtype)
            layers = range(*index[0].indices(len(leaves)))
            return np.stack([read_region(leaves[j], kind, layer_shape, index[1:]).astype(dtype)
                             for j in layers])
        full = tuple(slice(None) for _ in leaf.shape)
        sharding = flat_shardings.get(name)
        out[name] = (region(full) if sharding is None
                     else jax.make_array_from_callback(tuple(leaf.shape), sharding, region))
    return param_names.unflatten(out)


# -- writing (legacy layout) ---------------------------------------------------------------

def _write_array(step_dir: str, key: str, array: np.ndarray | None, shape, dtype) -> dict:
    """Writes one zarr array (zeros by fill value when `array` is None); returns
    the index entry t5x writes (kvstore path relative to the step directory)."""
    import tensorstore as ts
    dtype = np.dtype(dtype)
    metadata = {"chunks": _chunks(list(shape), dtype.itemsize),
                "compressor": {"id": "gzip", "level": 1}, "shape": list(shape)}
    spec = {"driver": "zarr", "dtype": dtype.name,
            "kvstore": {"driver": "file", "path": os.path.join(step_dir, key + "/")},
            "metadata": dict(metadata, fill_value=0 if array is None else None,
                             dtype="bfloat16" if dtype.name == "bfloat16" else dtype.str)}
    store = ts.open(spec, create=True, open=False).result()
    if array is not None:
        store.write(np.asarray(array, dtype)).result()
    return {"driver": "zarr", "dtype": dtype.name, "kvstore": {"driver": "file",
            "path": key + "/"}, "metadata": metadata}


def _chunks(shape: list[int], itemsize: int, limit: int = 64 << 20) -> list[int]:
    """t5x-like chunking: whole arrays up to `limit` bytes, else the largest
    dimension halved until a chunk fits."""
    chunks = list(shape) or [1]
    while int(np.prod(chunks)) * itemsize > limit and max(chunks) > 1:
        i = int(np.argmax(chunks))
        chunks[i] = -(-chunks[i] // 2)
    return chunks


def write_legacy(step_dir: str, params: dict, step: int, t5x_opt_shapes: bool = True) -> None:
    """Writes per-layer t5mtl `params` (numpy) as a t5x legacy checkpoint step:
    the msgpack index and one zarr array per parameter, plus zero-initialized
    Adafactor second moments (t5x's shapes: `v`, or `v_row`/`v_col` for
    factored 2-D parameters) so that t5x's Checkpointer restores it into an
    Adafactor train state."""
    from flax import serialization
    from t5mtl.convert.t5x_adafactor import t5x_factored_dims
    os.makedirs(step_dir, exist_ok=True)
    target, states = {}, {}
    for name, value in param_names.flatten(params).items():
        path = tuple(name.split("/"))
        array = to_t5x(kind_of(path), np.asarray(value))
        dotted = ".".join(path)
        _put(target, path, _write_array(step_dir, f"target.{dotted}", array, array.shape,
                                        array.dtype))
        if not t5x_opt_shapes:
            continue
        one = np.zeros((1,), np.float32)
        slots = {"m": one, "v": one, "v_row": one, "v_col": one}
        dims = t5x_factored_dims(array.shape)
        key = f"state.param_states.{dotted}"
        if dims is None:
            slots["v"] = _write_array(step_dir, key + ".v", None, array.shape, np.float32)
        else:
            d1, d0 = dims
            slots["v_row"] = _write_array(step_dir, key + ".v_row", None,
                                          np.delete(array.shape, d0).tolist(), np.float32)
            slots["v_col"] = _write_array(step_dir, key + ".v_col", None,
                                          np.delete(array.shape, d1).tolist(), np.float32)
        _put(states, path, slots)
    contents = {"version": 3, "optimizer": {
        "target": target, "state": {"step": np.asarray(step, np.int32), "param_states": states}}}
    with open(os.path.join(step_dir, "checkpoint"), "wb") as f:
        f.write(serialization.msgpack_serialize(contents))


def _put(tree: dict, path: tuple[str, ...], value) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value
