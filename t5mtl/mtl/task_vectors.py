"""Task arithmetic: Ilharco et al. 2023, "Editing Models with Task Arithmetic".

A task vector is what finetuning did to a model, tau = theta_ft - theta_base,
leaf by leaf. Edited models are the base plus scaled sums of task vectors,

    theta_new = theta_base + sum_i lambda_i tau_i

adding a task (lambda > 0), forgetting one (negation, lambda < 0) or both
at once; a task analogy (A - B + C, as in king - man + woman) is one lambda
over tau_A - tau_B + tau_C (`analogy`). The scaling coefficient is chosen on
validation data by the paper's rules (`negation_scale`, `addition_scale`)
or, for an analogy, by the target task's validation score (`analogy_scale`).

  base = load_model(B); va = task_vector(base, D_A); vb = task_vector(base, D_B)
  params = apply(base, [(0.5, va), (0.5, vb)])        # or [(-1.0, va)]
  write_model_dir(O, base, params, recipe)              # loadable by t5mtl.load

A finetuned directory must hold the base's architecture (the model class
and every architecture field but the scanned/per-layer layout) and the
base's parameter names, shapes and dtypes. Layouts may differ: every model
is read into the per-layer layout (`layers_i`), the arithmetic and `only`
work there, and the result is written in the base's layout; an `only`
pattern matches a leaf by its per-layer name (`encoder/layers_1/...`, one
layer of a scanned leaf) or its scanned one (`encoder/layers/...`, every
layer), whichever layout the base has. Adapter
directories (save_trainable_only; model.json names a base) are expanded to
full params first, and a weight adapter (LoRA) is merged into the kernels,
so a LoRA finetune gives a plain task vector; an adapter that adds
parameters the base lacks (a soft prompt) is refused. A finetune of another
base is refused: an adapter directory by its recorded base fingerprint, a
full one by its distance from the base (a finetune moves the parameters a
small fraction of their norm; another base differs by about their norm).

Differences are taken and summed in float64 and rounded once to the leaf's
dtype, so base + 1 * (ft - base) gives the finetuned params bit for bit.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from t5mtl import paths
from t5mtl.errors import T5mtlError
from t5mtl.models import param_names
from t5mtl.models.base import BaseModel
from t5mtl.models.layout import to_layout
from t5mtl.train import model_dir as model_dir_lib

RECIPE = "task_vector.json"
# Refuse a "finetuned" model whose distance from the base exceeds this
# fraction of the base's norm (two unrelated models are ~1.4 apart).
MAX_RELATIVE_DISTANCE = 0.5


@dataclasses.dataclass
class LoadedModel:
    """A model, its full params as a flat {name: np.ndarray} in the per-layer
    layout, and where they came from."""
    path: str
    model: BaseModel
    params: dict[str, np.ndarray]
    step: int | None = None
    info: model_dir_lib.ModelInfo | None = None

    def nested(self) -> dict:
        return param_names.unflatten(self.params)


@dataclasses.dataclass
class TaskVector:
    """theta_ft - theta_base of one finetuned directory, kept as the
    finetuned params (per-layer, flat) against the base's, so that
    differences are exact when applied."""
    path: str
    base: LoadedModel
    finetuned: dict[str, np.ndarray]
    step: int | None = None

    def delta(self, name: str) -> np.ndarray:
        """tau of one leaf, float64."""
        return self.finetuned[name].astype(np.float64) - self.base.params[name].astype(np.float64)

    def norm(self) -> float:
        return float(np.sqrt(sum(np.sum(np.square(self.delta(n))) for n in self.finetuned)))


def load_model(path: str, step: int | None = None) -> LoadedModel:
    """A t5mtl model_dir (adapters expanded and merged) or an HF T5 directory."""
    info = model_dir_lib.read_model_json(path) if model_dir_lib.is_model_dir(path) else None
    model, params = model_dir_lib.load_params(path, step)
    return _merged(LoadedModel(path, model, params, _step(path, step), info))


def _step(path: str, step: int | None) -> int | None:
    """The checkpoint step read: `step`, else a model_dir's latest."""
    if step is not None or not model_dir_lib.is_model_dir(path):
        return step
    with model_dir_lib.checkpoint_manager(path, read_only=True) as mngr:
        return mngr.latest_step()


def _merged(loaded: LoadedModel) -> LoadedModel:
    """The weight adapter (LoRA) merged into the kernels: a plain model's
    params, flat, per-layer."""
    model, params = loaded.model, loaded.params
    if getattr(model, "weight_adapter", None) is not None:
        params = model.weights(params)
        model = model.replace(weight_adapter=None)
    flat = {k: np.asarray(v) for k, v in param_names.flatten(per_layer(model, params)).items()}
    return dataclasses.replace(loaded, model=model, params=flat)


def per_layer(model: BaseModel, params: dict) -> dict:
    """`params` of `model` in the per-layer layout (a scanned model's stacked
    leaves split into `layers_i`); models without layers as they are."""
    config = getattr(model, "config", None)
    if not getattr(config, "scan_layers", False) or "encoder" not in params:
        return params
    return to_layout(params, dataclasses.replace(config, scan_layers=False))


def scanned_name(name: str) -> str:
    """The name a per-layer leaf has in the scanned layout (`encoder/layers_1/x`
    -> `encoder/layers/x`); other names unchanged."""
    return re.sub(r"(^|/)(encoder|decoder)/layers_\d+/", r"\1\2/layers/", name, count=1)


def _architecture_line(base: LoadedModel, model: BaseModel) -> str | None:
    """What differs between the architectures (the scanned layout aside), or None."""
    a = {k: v for k, v in base.model.architecture().items() if k != "scan_layers"}
    b = {k: v for k, v in model.architecture().items() if k != "scan_layers"}
    if type(base.model) is not type(model):
        return f"it is a {type(model).__name__}, the base a {type(base.model).__name__}"
    diffs = [f"{k} is {b.get(k)!r} there but {a.get(k)!r} in the base"
             for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
    return "; ".join(diffs) or None


def task_vector(base: LoadedModel, path: str, step: int | None = None,
                max_relative_distance: float | None = MAX_RELATIVE_DISTANCE) -> TaskVector:
    """The task vector of the finetuned directory `path` (checkpoint `step`,
    latest if None) against `base`. Refuses another architecture, other
    parameter names/shapes/dtypes, and a finetune of another base."""
    info = model_dir_lib.read_model_json(path)
    raw_model = info.model
    if getattr(raw_model, "weight_adapter", None) is not None:
        raw_model = raw_model.replace(weight_adapter=None)
    why = _architecture_line(base, raw_model)
    if why:
        raise T5mtlError(f"{path} is not a finetune of the base {base.path}'s architecture: "
                         f"{why}")
    base_params, checked = None, bool(info.base and info.base.get("fingerprint"))
    if info.base:
        base_params = info.model.adapt_params(base.nested())
        found = model_dir_lib.params_fingerprint(base_params)
        if checked and info.base["fingerprint"] != found:
            raise T5mtlError(
                f"{path} is an adapter of the base {info.base['path']} (fingerprint "
                f"{info.base['fingerprint'][:12]}), not of {base.path} (fingerprint "
                f"{found[:12]}); task vectors need the base the model was finetuned from")
    params = model_dir_lib.restore_params(path, step, base_params=base_params)
    ft_params = _merged(LoadedModel(path, info.model, params, step, info)).params
    _check_leaves(base, path, ft_params)
    vector = TaskVector(path, base, ft_params, _step(path, step))
    if max_relative_distance is not None and not checked:
        distance = vector.norm() / max(_norm(base.params), 1e-30)
        if distance > max_relative_distance:
            raise T5mtlError(
                f"{path} does not look finetuned from {base.path}: its parameters are "
                f"{distance:.2f} x the base's norm away from them (a finetune moves them a "
                f"small fraction; limit {max_relative_distance}); task vectors need the base "
                f"the model was finetuned from")
    return vector


def _norm(flat: Mapping[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum(np.square(v.astype(np.float64))) for v in flat.values())))


def _check_leaves(base: LoadedModel, path: str, ft: Mapping[str, Any]) -> None:
    problems = [f"{n!r} is missing" for n in base.params if n not in ft]
    problems += [f"{n!r} is not in the base" for n in ft if n not in base.params]
    problems += [f"{n!r} is {tuple(np.shape(ft[n]))} {np.asarray(ft[n]).dtype} there but "
                 f"{v.shape} {v.dtype} in the base"
                 for n, v in base.params.items()
                 if n in ft and (tuple(np.shape(ft[n])) != v.shape or
                                 np.asarray(ft[n]).dtype != v.dtype)]
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise T5mtlError(f"{path}: its parameters do not match the base {base.path}'s: "
                         f"{'; '.join(problems[:3])}{more}")


def apply(base: LoadedModel, terms: Sequence[tuple[float, TaskVector]],
          only: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """theta_base + sum of scale * tau over `terms`, flat, per-layer, in the
    base's dtypes; with `only` (regexes over parameter names, per-layer or
    scanned), the other leaves stay the base's."""
    patterns = param_names.compile_patterns(only, "--only")
    if patterns:
        param_names.check_all_match(
            list(dict.fromkeys([*base.params, *map(scanned_name, base.params)])), patterns,
            "--only")
    for _, vector in terms:
        if vector.base is not base:
            raise T5mtlError(f"{vector.path}: its task vector was taken against "
                             f"{vector.base.path}, not against the base {base.path}")
    out = {}
    for name, value in base.params.items():
        if not terms or (patterns and not param_names.matches(name, patterns)
                         and not param_names.matches(scanned_name(name), patterns)):
            out[name] = value
            continue
        total = value.astype(np.float64)
        for scale, vector in terms:
            total = total + float(scale) * vector.delta(name)
        out[name] = total.astype(value.dtype)
    return out


def write_model_dir(out: str, base: LoadedModel, params: Mapping[str, np.ndarray],
                    recipe: Mapping[str, Any]) -> None:
    """A normal model_dir at `out` (checkpoint 0, the base's model, vocabulary,
    tasks and config.gin, `recipe` as task_vector.json), written whole or
    not at all."""
    from t5mtl.convert.atomic_dir import atomic_directory
    described = model_dir_lib.describe(base.path)
    with atomic_directory(out) as tmp:
        model_dir_lib.save_params(tmp, base.model.adapt_params(param_names.unflatten(
            dict(params))), step=0)
        gin_path = paths.join(base.path, "config.gin")
        if paths.isfile(gin_path):
            paths.copy_file(gin_path, paths.join(tmp, "config.gin"))
        paths.write_text(paths.join(tmp, RECIPE), json.dumps(recipe, indent=2))
        model_dir_lib.write_model_json(tmp, base.model, described["vocabulary"],
                                       described["tasks"])   # last: marks it whole


def analogy(scale: float, a: TaskVector, b: TaskVector,
            c: TaskVector) -> list[tuple[float, TaskVector]]:
    """The terms of the task analogy A - B + C: base + scale (tau_A - tau_B + tau_C)."""
    return [(scale, a), (-scale, b), (scale, c)]


def recipe(base: LoadedModel, terms: Sequence[tuple[float, TaskVector]],
           only: Sequence[str] = (), selection: Mapping[str, Any] | None = None,
           analogy_of: Sequence[TaskVector] | None = None) -> dict:
    """What made an edited model: base, each vector's directory and scale;
    with `analogy_of` (A, B, C), that the terms are the analogy A - B + C."""
    out = {"method": "task arithmetic (Ilharco et al. 2023): base + sum(scale * (ft - base))",
           "base": {"path": paths.absolute(base.path), "step": base.step},
           "vectors": [{"path": paths.absolute(v.path), "step": v.step, "scale": float(s)}
                       for s, v in terms],
           "only": list(only), "scale_selection": dict(selection) if selection else None,
           "analogy": None}
    if analogy_of is not None:
        out["analogy"] = {"form": "base + scale * (tau_A - tau_B + tau_C)",
                          **{k: paths.absolute(v.path) for k, v in zip("ABC", analogy_of)}}
    return out


# -- the scaling coefficient, chosen on validation data (Ilharco et al., sec. 3-4) --------

def negation_scale(scores: Mapping[float, Mapping[str, float]], target: str, control: str,
                   keep: float = 0.95) -> float:
    """Forgetting: the scale whose model has the lowest `target` accuracy
    while keeping at least `keep` of the base's (scale 0's) `control`
    accuracy; ties go to the smaller scale."""
    if 0.0 not in scores:
        raise T5mtlError("negation_scale needs the base's scores (scale 0) in the grid")
    floor = keep * scores[0.0][control]
    allowed = [s for s in sorted(scores) if scores[s][control] >= floor]
    return min(allowed, key=lambda s: (scores[s][target], s))


def normalized_accuracy(scores: Mapping[str, float], finetuned: Mapping[str, float]) -> float:
    """Mean over tasks of accuracy / the finetuned model's accuracy on that task."""
    return float(np.mean([scores[t] / finetuned[t] if finetuned[t] else 0.0
                          for t in finetuned]))


def addition_scale(scores: Mapping[float, Mapping[str, float]],
                   finetuned: Mapping[str, float]) -> float:
    """Adding: the scale with the best mean normalized accuracy over the
    tasks of `finetuned` (task -> its own finetuned model's accuracy); ties
    go to the smaller scale."""
    return max(sorted(scores), key=lambda s: (normalized_accuracy(scores[s], finetuned), -s))


def analogy_scale(scores: Mapping[float, Mapping[str, float]], target: str,
                  control: str | None = None, keep: float = 0.95) -> float:
    """Analogies: the scale with the best `target` score (the task the
    analogy is for, scored on its own validation data); with `control`,
    among the scales whose model keeps at least `keep` of the base's
    (scale 0's) control score. Ties go to the smaller scale."""
    allowed = sorted(scores)
    if control is not None:
        if 0.0 not in scores:
            raise T5mtlError("analogy_scale with a control task needs the base's scores "
                             "(scale 0) in the grid")
        allowed = [s for s in allowed if scores[s][control] >= keep * scores[0.0][control]]
    return max(allowed, key=lambda s: (scores[s][target], -s))


def task_scores(model: BaseModel, params, tasks: Sequence[str],
                task_feature_lengths: Mapping[str, int], split: str = "validation",
                num_examples: int | None = None, batch_size: int = 64) -> dict[str, float]:
    """{task: its first metric (accuracy or exact match)} of `params`."""
    from t5mtl.infer.evaluation import TaskEvaluator
    out = {}
    for task in tasks:
        result = TaskEvaluator(task, task_feature_lengths, split, num_examples,
                               batch_size).evaluate(model, params)
        out[task] = float(next(iter(result[task].values())))
    return out


def scale_grid(base: LoadedModel, vectors: Sequence[TaskVector],
               sign: float | Sequence[float], scales: Sequence[float],
               evaluate: Callable[[dict], dict[str, float]],
               only: Sequence[str] = ()) -> dict[float, dict[str, float]]:
    """{scale: evaluate(base + scale * sum(sign * vector))} over `scales` and
    0; `sign` is one for all vectors or one per vector ((1, -1, 1): an analogy)."""
    signs = [float(sign)] * len(vectors) if isinstance(sign, (int, float)) else list(sign)
    if len(signs) != len(vectors):
        raise T5mtlError(f"scale_grid: {len(signs)} signs for {len(vectors)} vectors")
    out = {}
    for scale in sorted({0.0, *map(float, scales)}):
        flat = apply(base, [(g * scale, v) for g, v in zip(signs, vectors)], only)
        out[scale] = evaluate(base.model.adapt_params(param_names.unflatten(flat)))
    return out
