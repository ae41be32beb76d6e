"""Your own tasks in a dozen lines, from Python, a gin binding or a JSON spec file.

    from t5mtl.data.user_tasks import register_dataset_task

    register_dataset_task(
        "mrpc", {"train": "/data/MRPC/train.tsv", "validation": "/data/MRPC/dev.tsv"},
        inputs="mrpc sentence1: {sentence1} sentence2: {sentence2}", targets="{label}",
        columns={"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"},
        label_names=("not_equivalent", "equivalent"), label_values=("0", "1"),
        metrics=("accuracy", "f1"), description="are the two sentences paraphrases")

registers a seqio Task (t5mtl.data.files.register_file_task underneath),
its TaskInfo card, and its instruction variants "<name>_zs", "_fs" (when it
has a train split) and "_opt" (classification) from templates generated
from its fields (t5mtl.data.template_tables.generic_table). Put the call in
a module and load it with `--module_import my_tasks` on any t5mtl command.

Without Python, the same keyword arguments as JSON objects: a spec file
{"tasks": [{"name": ..., "files": ..., ...}], "mixtures": [{"name": ...,
"tasks": [...], "rate": "equal"}]} given to gin as

    register_task_specs.paths = ['my_tasks.json']

(or the objects themselves: `register_task_specs.tasks = [{...}]`); every
command that reads gin (--gin_file / --gin.X=Y) registers them right after
parsing. See docs/tasks.md.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable, Mapping, Sequence, Union

import gin
import seqio

from t5mtl.data import files, metrics as metrics_lib, task_info as task_info_lib
from t5mtl.errors import T5mtlError

# Metric names a spec may use -> seqio metric function (percentages).
METRICS: dict[str, Callable] = {
    "accuracy": metrics_lib.accuracy,
    "f1": metrics_lib.binary_f1,
    "matthews_corrcoef": metrics_lib.matthews_corrcoef,
    "exact_match": metrics_lib.exact_match,
    "pearson_corrcoef": metrics_lib.pearson_corrcoef,
    "spearman_corrcoef": metrics_lib.spearman_corrcoef,
    "bleu": metrics_lib.bleu,
    "rouge": metrics_lib.rouge,
}
# "mean_multiclass_f1" is made per label set (mean_<n>class_f1).

POSTPROCESSORS = ("label_to_class_id", "float", "text")
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".csv": "csv"}
DEFAULT_VARIANTS = ("zs", "fs", "opt")


def _metric(name: Union[str, Callable], label_names: Sequence[str]) -> Callable:
    if callable(name):
        return name
    if name == "mean_multiclass_f1":
        if not label_names:
            raise T5mtlError("metric 'mean_multiclass_f1' needs label_names")
        return metrics_lib.mean_multiclass_f1(len(label_names))
    if name not in METRICS:
        raise T5mtlError(f"unknown metric {name!r}; choose from "
                         f"{', '.join([*METRICS, 'mean_multiclass_f1'])} or pass a function")
    return METRICS[name]


def _postprocessor(name, label_names: Sequence[str]) -> Callable | None:
    if name is None:
        name = "label_to_class_id" if label_names else "text"
    if callable(name):
        return name
    if name == "label_to_class_id":
        if not label_names:
            raise T5mtlError("postprocessor 'label_to_class_id' needs label_names")
        return functools.partial(metrics_lib.string_label_to_class_id,
                                 label_classes=tuple(label_names))
    if name == "float":
        return metrics_lib.string_to_float
    if name == "text":
        return None
    raise T5mtlError(f"unknown postprocessor {name!r}; choose from {', '.join(POSTPROCESSORS)} "
                     f"or pass a function")


def _raw_keys(raw: Any) -> list:
    """A raw label value and the forms a file may hold it in ("1" and 1, "true" and True)."""
    keys = [raw]
    if isinstance(raw, str):
        if raw.lower() in ("true", "false"):
            keys.append(raw.lower() == "true")
        elif raw.lstrip("-").isdigit():
            keys.append(int(raw))
    elif isinstance(raw, bool):
        keys.append(str(raw).lower())
    elif isinstance(raw, int):
        keys.append(str(raw))
    return keys


def _format(name: str, split_files: Mapping[str, Any], format: str | None) -> str:
    if format is not None:
        return format
    first = next(iter(split_files.values()))
    first = first if isinstance(first, str) else list(first)[0]
    ext = os.path.splitext(str(first))[1].lower()
    if ext not in FORMATS:
        raise T5mtlError(f"task {name!r}: cannot tell the format of {first!r} from its "
                         f"extension; pass format= (jsonl, tsv or csv)")
    return FORMATS[ext]


def register_dataset_task(
    name: str,
    files_by_split: Mapping[str, Union[str, Sequence[str]]],
    format: str | None = None,
    *,
    inputs: str,
    targets: str,
    columns: Mapping[str, Union[str, int]] | None = None,
    label_names: Sequence[str] = (),
    label_values: Union[Sequence[Any], Mapping[Any, str], None] = None,
    unlabelled_splits: Sequence[str] = (),
    metrics: Sequence[Union[str, Callable]] | None = None,
    postprocessor: Union[str, Callable, None] = None,
    header: bool = True,
    data_dir: str | None = None,
    on_error: str = "raise",
    category: str = "uncategorized",
    description: str = "",
    license: str = "",
    citation: str = "",
    homepage: str = "",
    languages: Sequence[str] = ("en",),
    variants: Sequence[str] = DEFAULT_VARIANTS,
    overwrite: bool = False,
) -> seqio.Task:
    """Registers a task read from JSONL/TSV/CSV files, its card and its instruction variants.

    Args:
      name: the task name.
      files_by_split: split -> file or list of files (absolute, gs://..., or
        relative to the data_dir).
      format: "jsonl", "tsv" or "csv" (default: from the first file's extension).
      inputs, targets: templates over the example's fields ("{field}" slots).
      columns: field -> JSON key (dotted for nested) or TSV/CSV column name
        (or index with header=False); default: the field's own name.
      label_names: the closed label set (a classification task): the targets
        the model learns to write; the targets template's one field is the label.
      label_values: the raw values in the files for each label name, in the
        same order (e.g. ("0", "1"); ints and booleans in JSON match too), or
        a mapping raw value -> label name; default: the names themselves.
      unlabelled_splits: splits whose files have no label column (their
        target is "<unk>").
      metrics: names from METRICS (or "mean_multiclass_f1") or seqio metric
        functions; default: accuracy with labels, else exact_match.
      postprocessor: "label_to_class_id" (the default with labels), "float",
        "text" (the default without), or a function.
      header: whether TSV/CSV files start with a header row.
      data_dir: overrides the process-wide data_dir for relative paths.
      on_error: "raise" (default) or "skip" bad records with a warning.
      category, description, license, citation, homepage, languages: the card.
      variants: instruction variants to register ("zs", "fs", "opt"); "fs"
        needs a train split, "opt" label names; others are skipped.
      overwrite: replace tasks already registered under these names.
    """
    if not files_by_split:
        raise T5mtlError(f"task {name!r}: files_by_split is empty")
    template = files.Template(inputs, targets)
    slots = template.fields()
    target_slots = [n for _, n in files._parse(targets) if n]
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(slots))
    if unknown:
        raise T5mtlError(f"task {name!r}: columns name fields {unknown} that the templates do "
                         f"not use; the templates use {list(slots)}")
    label_names = tuple(label_names)
    label_field = ""
    if label_names:
        if len(set(target_slots)) != 1:
            raise T5mtlError(f"task {name!r}: with label_names the targets template must be one "
                             f"field (the label), got {targets!r}")
        label_field = target_slots[0]
    fields = {}
    for f in slots:
        if f == label_field:
            if isinstance(label_values, Mapping):
                pairs = list(label_values.items())
            else:
                raw = label_names if label_values is None else tuple(label_values)
                if len(raw) != len(label_names):
                    raise T5mtlError(f"task {name!r}: {len(raw)} label_values for "
                                     f"{len(label_names)} label_names")
                pairs = list(zip(raw, label_names))
            bad = sorted({v for _, v in pairs} - set(label_names))
            if bad:
                raise T5mtlError(f"task {name!r}: label_values map to {bad}, which are not "
                                 f"among label_names {list(label_names)}")
            values = {k: v for raw, v in pairs for k in _raw_keys(raw)}
            fields[f] = files.Field(column=columns.get(f), values=values,
                                    missing_in=tuple(unlabelled_splits), default="<unk>")
        else:
            fields[f] = files.Field(column=columns.get(f))
    metric_names = list(metrics) if metrics is not None else (
        ["accuracy"] if label_names else ["exact_match"])
    metric_fns = [_metric(m, label_names) for m in metric_names]
    schema = "classification" if label_names else "text_to_text"
    info = task_info_lib.TaskInfo(
        name=name, category=category, schema=schema,
        metrics=tuple(m if isinstance(m, str) else getattr(m, "__name__", str(m))
                      for m in metric_names),
        label_names=label_names, fields=tuple(slots), splits=tuple(files_by_split),
        suite="user", source=", ".join(sorted({str(v) for v in files_by_split.values()})),
        languages=tuple(languages), license=license, citation=citation,
        description=description, homepage=homepage)
    task = files.register_file_task(
        name, dict(files_by_split), _format(name, files_by_split, format), template,
        fields=fields, metric_fns=metric_fns,
        postprocess_fn=_postprocessor(postprocessor, label_names), info=info,
        data_dir=data_dir, on_error=on_error, header=header, overwrite=overwrite)
    register_variants(name, variants, overwrite=overwrite)
    return task


def register_variants(name: str, variants: Sequence[str] = DEFAULT_VARIANTS,
                      overwrite: bool = False) -> list[str]:
    """Registers the instruction variants of task `name` that apply to it."""
    from t5mtl.data import instruction_tasks, template_tables, templates
    if not variants:
        return []
    table = template_tables.get(name)
    splits = seqio.TaskRegistry.get(name).splits
    made = []
    for v in variants:
        if v not in templates.VARIANTS:
            raise T5mtlError(f"task {name!r}: unknown instruction variant {v!r}; choose from "
                             f"{', '.join(templates.VARIANTS)}")
        if not table.has_variant(v, splits):
            continue
        variant = templates.variant_name(name, v)
        if overwrite or variant not in seqio.TaskRegistry.names():
            instruction_tasks.register_instruction_task(name, v, table, overwrite=overwrite)
        made.append(variant)
    return made


# ---------------------------------------------------------------- specs (no Python)

_SPEC_KEYS = {"name", "files", "format", "inputs", "targets", "columns", "label_names",
              "label_values", "unlabelled_splits", "metrics", "postprocessor", "header",
              "data_dir", "on_error", "category", "description", "license", "citation",
              "homepage", "languages", "variants"}
_MIXTURE_KEYS = {"name", "tasks", "rate", "cap", "temperature", "weights"}


def register_task_spec(spec: Mapping[str, Any], where: str = "task spec") -> seqio.Task:
    """Registers one task from a JSON-like dict (register_dataset_task's
    arguments, with "files" for files_by_split). Re-registering is allowed."""
    if not isinstance(spec, Mapping):
        raise T5mtlError(f"{where}: a task spec is an object, got {type(spec).__name__}")
    unknown = sorted(set(spec) - _SPEC_KEYS)
    missing = [k for k in ("name", "files", "inputs", "targets") if k not in spec]
    label = f"{where}, task {spec.get('name', '?')!r}"
    if unknown:
        raise T5mtlError(f"{label}: unknown keys {unknown}; allowed: {sorted(_SPEC_KEYS)}")
    if missing:
        raise T5mtlError(f"{label}: missing keys {missing}")
    kwargs = {k: v for k, v in spec.items() if k not in ("name", "files", "format")}
    try:
        return register_dataset_task(spec["name"], spec["files"], spec.get("format"),
                                     overwrite=True, **kwargs)
    except T5mtlError as e:
        raise T5mtlError(f"{where}: {e}") from None


def load_spec_file(path: str) -> dict:
    from etils import epath
    p = epath.Path(path)
    if not p.exists():
        raise T5mtlError(f"task spec file {path!r} not found")
    try:
        spec = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise T5mtlError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(spec, dict) or not set(spec) <= {"tasks", "mixtures"}:
        raise T5mtlError(f"{path}: a spec file is an object with \"tasks\" (and optionally "
                         f"\"mixtures\")")
    return spec


@gin.configurable
def register_task_specs(paths: Sequence[str] = (), tasks: Sequence[Mapping] = (),
                        mixtures: Sequence[Mapping] = ()) -> list[str]:
    """Registers tasks and mixtures from JSON spec files and/or inline specs;
    returns the names registered (tasks, then mixtures)."""
    from t5mtl.data.mixing import register_mixture
    items = [(f"{p}", t) for p in paths for t in load_spec_file(p).get("tasks", [])]
    items += [("gin register_task_specs.tasks", t) for t in tasks]
    mix = [(f"{p}", m) for p in paths for m in load_spec_file(p).get("mixtures", [])]
    mix += [("gin register_task_specs.mixtures", m) for m in mixtures]
    names = [register_task_spec(t, where).name for where, t in items]
    for where, m in mix:
        unknown = sorted(set(m) - _MIXTURE_KEYS) if isinstance(m, Mapping) else ["?"]
        if unknown or "name" not in m or "tasks" not in m:
            raise T5mtlError(f"{where}: a mixture spec has \"name\" and \"tasks\" (and "
                             f"optionally {sorted(_MIXTURE_KEYS - {'name', 'tasks'})}); got "
                             f"{m!r}")
        kwargs = {k: v for k, v in m.items() if k not in ("name", "tasks")}
        names.append(register_mixture(m["name"], list(m["tasks"]), **kwargs))
    return names


def register_bound_specs() -> list[str]:
    """Calls register_task_specs when gin binds any of its parameters."""
    bound = False
    for param in ("paths", "tasks", "mixtures"):
        try:
            gin.query_parameter(f"register_task_specs.{param}")
            bound = True
        except ValueError:
            pass
    return register_task_specs() if bound else []
