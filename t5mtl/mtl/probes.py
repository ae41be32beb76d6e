"""Task-conflict probes, measured during training every K steps.

From the per-task gradients of the trainable parameters on one step's batch
(t5mtl.mtl.task_gradients; g_i is the gradient of task i's own loss):

- directional conflict: cos(g_i, g_j) for each pair of present tasks, over
  the whole model and per parameter group;
- magnitude conflict: |g_i| and the ratios |g_i| / |g_j|;
- lookahead transfer (Mueller, Andrews and Dredze 2022, after Fifty et al.
  2021): T_ij = 1 - L_j(theta - lr g_i) / L_j(theta), the relative change of
  task j's loss on the same batch after an SGD step of size lr on task i's
  gradient alone (positive: the step on i helps j).

Parameter groups come from the parameter names (t5mtl.models.param_names):
``embeddings`` (token_embedder/...), ``encoder.<i>`` / ``decoder.<i>`` for
each block (``layers_<i>``, or layer i of a scanned ``layers`` leaf, split
along its leading axis; LoRA leaves follow the block their name names) and
``rest`` (relative-position biases, final norms, the logits head, seam
modules).

The probe runs deterministically (no dropout), as its own jitted function
beside the train step, on the state before the step and the step's batch;
with ``train.conflict_probe_period = 0`` (the default) nothing of it is built
or compiled. Its scalars go to metrics.jsonl and TensorBoard under the split
"conflict" with the names of :func:`probe_scalars`; ``t5mtl conflict``
summarizes them (t5mtl.mtl.conflict_command).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from t5mtl.errors import T5mtlError
from t5mtl.models import param_names
from t5mtl.mtl.task_gradients import (DEFAULT_MAX_TASKS, TASK_LOSS, check_task_memory,
                                      task_gradients)

EMBEDDINGS, REST = "embeddings", "rest"
SPLIT = "conflict"
_BLOCK = re.compile(r"(^|/)(encoder|decoder)/layers_(\d+)(/|$)")
_SCANNED = re.compile(r"(^|/)(encoder|decoder)/layers(/|$)")
_EMBED = re.compile(r"(^|/)token_embedder/")


def leaf_group(name: str) -> str | tuple[str, None]:
    """A leaf's group, or (stack, None) for a scanned stack split per layer."""
    m = _BLOCK.search(name)
    if m:
        return f"{m.group(2)}.{int(m.group(3))}"
    m = _SCANNED.search(name)
    if m:
        return (m.group(2), None)
    return EMBEDDINGS if _EMBED.search(name) else REST


def group_grams(grads: Any) -> dict[str, jax.Array]:
    """{group: [T, T] Gram matrix of the task gradients over its leaves}
    (leaves [T, ...]; a scanned stack's leaves [T, layers, ...])."""
    out: dict[str, jax.Array] = {}
    for name, g in param_names.flatten(grads).items():
        group = leaf_group(name)
        g = g.astype(jnp.float32)
        if isinstance(group, tuple):
            flat = g.reshape(g.shape[0], g.shape[1], -1)
            per_layer = jnp.einsum("tln,sln->lts", flat, flat)
            for layer in range(g.shape[1]):
                key = f"{group[0]}.{layer}"
                out[key] = out.get(key, 0.0) + per_layer[layer]
        else:
            flat = g.reshape(g.shape[0], -1)
            out[group] = out.get(group, 0.0) + flat @ flat.T
    return out


def cosines(gram: jax.Array) -> jax.Array:
    """[T, T] cosines from a Gram matrix (0 where a gradient is zero)."""
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))
    outer = norms[:, None] * norms[None, :]
    return jnp.where(outer > 0, gram / jnp.where(outer > 0, outer, 1.0), 0.0)


def gradient_stats(grads: Any) -> dict[str, Any]:
    """{"gram": whole-model [T, T], "groups": {group: [T, T]}} of task gradients."""
    groups = group_grams(grads)
    return {"gram": sum(groups.values()), "groups": groups}


def make_probe(loss_fn: Callable, num_tasks: int, lookahead_lr: float,
               trainable_names: Sequence[str] | None = None,
               max_tasks: int = DEFAULT_MAX_TASKS) -> Callable:
    """``probe(params, batch) -> dict of arrays`` (jit it): Gram matrices,
    task losses, present flags and the lookahead losses [i, j] = L_j(theta -
    lr g_i), for `loss_fn(params, batch, rng)` with num_tasks bound,
    differentiated with respect to the trainable names (None: all)."""
    if not lookahead_lr > 0:
        raise T5mtlError(f"conflict_probe_lr must be > 0, got {lookahead_lr!r}")

    def probe(params, batch):
        flat = param_names.flatten(params)
        chosen = set(flat if trainable_names is None else trainable_names)
        trainable = param_names.unflatten({n: v for n, v in flat.items() if n in chosen})
        frozen = param_names.unflatten({n: v for n, v in flat.items() if n not in chosen})
        check_task_memory(num_tasks, trainable, max_tasks, "conflict probes")

        def on(t, b, r):
            return loss_fn(param_names.merge(frozen, t), b, r)

        grads, present, _, metrics = task_gradients(on, trainable, batch, None, num_tasks)

        def lookahead(grad_i):
            moved = jax.tree.map(lambda p, g: (p - lookahead_lr * g).astype(p.dtype),
                                 trainable, grad_i)
            return on(moved, batch, None)[1][TASK_LOSS].astype(jnp.float32)

        after = jax.lax.map(lookahead, grads)
        return {**gradient_stats(grads), "task_loss": metrics[TASK_LOSS].astype(jnp.float32),
                "present": present, "lookahead": after}

    return probe


def transfer(task_loss: np.ndarray, lookahead: np.ndarray) -> np.ndarray:
    """[i, j] = 1 - L_j(theta - lr g_i) / L_j(theta)."""
    task_loss = np.asarray(task_loss, np.float64)
    return 1.0 - np.asarray(lookahead, np.float64) / task_loss[None, :]


def probe_scalars(result: Mapping[str, Any], task_names: Sequence[str]) -> dict[str, float]:
    """The flat scalars a probe logs (present tasks only):

    conflict/cos/<ti>/<tj>              whole-model cosine, i < j (mixture order)
    conflict/group_cos/<group>/<ti>/<tj> the same per parameter group
    conflict/norm/<ti>                  |g_i|
    conflict/norm_ratio/<ti>/<tj>       |g_i| / |g_j|, i < j
    conflict/loss/<ti>                  L_i(theta)
    conflict/transfer/<ti>/<tj>         1 - L_j(theta - lr g_i) / L_j(theta), all i, j
    """
    result = jax.device_get(result)
    present = np.asarray(result["present"], bool)
    gram = np.asarray(result["gram"], np.float64)
    norms = np.sqrt(np.maximum(np.diagonal(gram), 0.0))
    cos = np.asarray(cosines(jnp.asarray(gram)), np.float64)
    moved = transfer(result["task_loss"], result["lookahead"])
    live = [i for i in range(len(task_names)) if present[i]]
    out = {}
    for i in live:
        ti = task_names[i]
        out[f"conflict/norm/{ti}"] = float(norms[i])
        out[f"conflict/loss/{ti}"] = float(result["task_loss"][i])
        for j in live:
            tj = task_names[j]
            out[f"conflict/transfer/{ti}/{tj}"] = float(moved[i, j])
            if i < j:
                out[f"conflict/cos/{ti}/{tj}"] = float(cos[i, j])
                if norms[j] > 0:
                    out[f"conflict/norm_ratio/{ti}/{tj}"] = float(norms[i] / norms[j])
    for group, g in result["groups"].items():
        gcos = np.asarray(cosines(jnp.asarray(g)), np.float64)
        for i in live:
            for j in live:
                if i < j:
                    out[f"conflict/group_cos/{group}/{task_names[i]}/{task_names[j]}"] = \
                        float(gcos[i, j])
    return out
