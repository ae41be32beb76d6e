"""t5x Adafactor state -> t5mtl's Adafactor (optax.adafactor) state.

t5x keeps, per parameter, `v` (the second-moment EMA, for unfactored
parameters) or `v_row`/`v_col` (its factored row/column means), `m` (first
moment, only with beta1) and one `step`; unused slots are zeros of shape (1,).
optax.adafactor keeps the same slots in a FactoredState, plus `count`s.

Both decide factoring the same way for the same shape (the two largest
dimensions, when the smaller of them is >= 128; the largest is averaged out
of `v_row`), but t5mtl's attention kernels are 3-D where t5x's are 2-D, so
a parameter can be factored in one and not the other:

  t5x v        -> t5mtl v: reshaped/transposed like the parameter (exact)
  t5x v        -> t5mtl v_row/v_col: means of v over optax's axes (exact:
                  the mean of an EMA is the EMA of the means)
  t5x v_row/v_col, same shape in t5mtl -> copied (exact)
  t5x v_row/v_col, otherwise -> t5x's own estimate v_row (x) v_col / mean(v_row),
                  then as above (what t5x's next update would divide by; the
                  EMA continues from that estimate)

Counts become t5x's step, so the decay (1 - (step+1)^-0.8) and the learning
rate schedule continue where t5x stopped. A first moment (t5x beta1) is not
mapped: that raises T5mtlError.
"""
from __future__ import annotations

import jax
import numpy as np

from t5mtl.convert.t5x import T5xCheckpoint, _sources, kind_of, read_region, t5x_shape
from t5mtl.errors import T5mtlError
from t5mtl.models import param_names

_SLOTS = ("v", "v_row", "v_col")


def t5x_factored_dims(shape, min_dim_size_to_factor: int = 128):
    """t5x's heuristic for a parameter of rank <= 2: (d1, d0) with d0 the
    largest dimension (averaged out of v_row) and d1 the other, or None."""
    shape = tuple(shape)
    if len(shape) != 2:
        return None
    order = np.argsort(shape, kind="stable")
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def _from_t5x(kind: str, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(x.T if kind == "transpose" else x.reshape(shape))


def _layer_moments(ckpt: T5xCheckpoint, base: str, kind: str, shape: tuple[int, ...],
                   want: dict[str, tuple]) -> dict[str, np.ndarray]:
    """optax's slots (shapes `want`) of one per-layer parameter from t5x's at `base`."""
    tshape = t5x_shape(kind, shape)
    leaves = {s: ckpt.leaves.get(f"{base}/{s}") for s in _SLOTS + ("m",)}
    if leaves["v"] is None and leaves["v_row"] is None:
        raise T5mtlError(f"{ckpt.directory}: no Adafactor state {base!r}/v or v_row (was the "
                         f"t5x run's optimizer Adafactor?)")
    m = leaves["m"]
    if m is not None and m.shape == tshape and tshape != (1,):
        raise T5mtlError(f"{ckpt.directory}: {base}/m is a first moment (t5x Adafactor with "
                         f"beta1); t5mtl's Adafactor state has none. Import the parameters "
                         f"only (without --optimizer_state)")
    unfactored_t5x = leaves["v"] is not None and leaves["v"].shape == tshape
    out = {s: np.zeros(w, np.float32) for s, w in want.items()}
    if want["v"] == shape:                       # unfactored in t5mtl
        if unfactored_t5x:
            out["v"] = read_region(leaves["v"], kind, shape, tuple(slice(None) for _ in shape))
        else:
            out["v"] = _from_t5x(kind, _estimate(leaves, tshape, base, ckpt), shape)
        return out
    if not unfactored_t5x and kind == "same" and leaves["v_row"].shape == want["v_row"] \
            and leaves["v_col"].shape == want["v_col"]:
        out["v_row"], out["v_col"] = leaves["v_row"].read(), leaves["v_col"].read()
        return out
    full = (read_region(leaves["v"], kind, shape, tuple(slice(None) for _ in shape))
            if unfactored_t5x else _from_t5x(kind, _estimate(leaves, tshape, base, ckpt), shape))
    order = np.argsort(shape)
    d0, d1 = int(order[-2]), int(order[-1])      # optax: v_row averages d1, v_col d0
    out["v_row"], out["v_col"] = full.mean(axis=d1), full.mean(axis=d0)
    if out["v_row"].shape != want["v_row"] or out["v_col"].shape != want["v_col"]:
        raise T5mtlError(f"{base}: t5mtl's Adafactor factors {shape} as {want['v_row']} x "
                         f"{want['v_col']}, not as expected")
    return out


def _estimate(leaves, tshape, base, ckpt) -> np.ndarray:
    """t5x's factored second-moment estimate v_row (x) v_col / mean(v_row)."""
    dims = t5x_factored_dims(tshape, min_dim_size_to_factor=1)
    vr, vc = leaves["v_row"], leaves["v_col"]
    if dims is None or vr is None or vc is None:
        raise T5mtlError(f"{ckpt.directory}: {base} has neither v of shape {tshape} nor "
                         f"factored v_row/v_col")
    d1, d0 = dims
    if vr.shape != tuple(np.delete(tshape, d0)) or vc.shape != tuple(np.delete(tshape, d1)):
        raise T5mtlError(f"{ckpt.directory}: {base}/v_row {vr.shape} and v_col {vc.shape} do "
                         f"not factor {tshape}")
    row, col = vr.read().astype(np.float32), vc.read().astype(np.float32)
    return np.expand_dims(row / row.mean(), d0) * np.expand_dims(col, d1)


def read_adafactor_state(ckpt: T5xCheckpoint, tx, params, shardings=None):
    """The state of t5mtl's Adafactor `tx` for `params` (t5mtl layout, the
    trainable subtree the run's optimizer sees) from a t5x checkpoint's
    Adafactor state; `shardings` like tx.init(params) places each leaf."""
    abstract = jax.eval_shape(tx.init, params)
    flat_params = {k: tuple(v.shape) for k, v in param_names.flatten(params).items()}
    slot_leaves: dict[str, dict[str, tuple]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        keys = param_names.path_keys(path)
        for i, k in enumerate(keys):
            if k in _SLOTS and "/".join(keys[i + 1:]) in flat_params:
                slot_leaves.setdefault("/".join(keys[i + 1:]), {})[k] = tuple(leaf.shape)
    if not slot_leaves:
        raise T5mtlError("t5x Adafactor state maps to t5mtl's Adafactor only; this run's "
                         "optimizer keeps no second moments (create_optimizer.name='adafactor')")
    moments = {}
    for name, want in slot_leaves.items():
        path = tuple(name.split("/"))
        kind = kind_of(path)
        shape = flat_params[name]
        sources = _sources(ckpt, "state/param_states", path)
        if sources[0][1] is None:
            moments[name] = _layer_moments(ckpt, sources[0][0], kind, shape, want)
        else:                                    # scanned: stack the layers
            per = [_layer_moments(ckpt, s, kind, shape[1:],
                                  {k: w[1:] for k, w in want.items()}) for s, _ in sources]
            moments[name] = {k: np.stack([p[k] for p in per]) for k in want}
            if any(moments[name][k].shape != w for k, w in want.items()):
                raise T5mtlError(f"{ckpt.directory}: {name}: {len(per)} layers in the "
                                 f"checkpoint's Adafactor state, {shape[0]} in the model")

    def fill(path, leaf, sharding=None):
        keys = param_names.path_keys(path)
        value = None
        if keys and keys[-1] == "count":
            value = np.asarray(ckpt.step, leaf.dtype)
        for i, k in enumerate(keys):
            if k in _SLOTS and "/".join(keys[i + 1:]) in moments:
                value = moments["/".join(keys[i + 1:])][k].astype(leaf.dtype)
        if value is None:
            raise T5mtlError(f"optimizer state {'/'.join(keys)!r} has no t5x counterpart "
                             f"(t5x Adafactor maps to t5mtl's Adafactor alone)")
        return value if sharding is None else jax.device_put(value, sharding)
    if shardings is None:
        return jax.tree_util.tree_map_with_path(fill, abstract)
    return jax.tree_util.tree_map_with_path(fill, abstract, shardings)
