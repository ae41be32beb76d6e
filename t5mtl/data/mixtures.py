"""The built-in mixtures: ExMix, ExT5 pretraining, the Flan-style instruction mix,
and OPT-IML-style generalization splits over the synthetic suite.

Registered when t5mtl.data.registry is imported (rates are computed lazily,
from real example counts, when a dataset is built):

- "exmix": every supervised task with a train split (the base tasks in T5
  format: the synthetic suite and the real tasks), examples-proportional
  with a cap of 3,000 examples per task (ExT5's ExMix recipe; FLAN's cap).
- "ext5_pretrain": span corruption on raw_text_en mixed with "exmix" at 2:1
  (corpus to supervised), as ExT5 pretrains.
- "flan_mix": the instruction variants of the same tasks, one sub-mixture
  per variant ("flan_mix_zs", "flan_mix_fs", "flan_mix_opt", "flan_mix_cot",
  "flan_mix_inv"; each examples-proportional, cap 3,000) weighted
  zs 0.4, fs 0.3, opt 0.1, cot 0.1, inv 0.1.
- The synthetic generalization splits (`generalization_splits`, default
  held-out setup: categories "classification" and "sequence" fully held
  out, one task of each other category held out, chosen with seed 0):
  "synth_seen_train" (instruction variants of the training tasks, weighted
  like flan_mix, on their train split), and three evaluation mixtures of
  zero-shot variants, read on their validation split:
  "synth_heldout_categories" (level i), "synth_heldout_tasks" (level ii),
  "synth_seen_tasks_eval" (level iii, held-out instances of the training
  tasks: the synthetic splits never share an input).

Every builder is gin-configurable and returns the mixture name, so a gin
file can change a cap, a ratio or the weights where it names the mixture:

    DataConfig.mixture_or_task_name = @register_exmix()
    register_exmix.cap = 1000
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Mapping, Sequence, Union

import gin
import numpy as np
import seqio

from t5mtl.data import instruction_tasks, task_info, templates
from t5mtl.data.mixing import FLAN_CAP, register_mixture
from t5mtl.errors import T5mtlError

EXMIX = "exmix"
EXT5_PRETRAIN = "ext5_pretrain"
FLAN_MIX = "flan_mix"
EXT5_CORPUS_TASK = "raw_text_en_span_corruption"
EXT5_RATIO = 2.0  # corpus : supervised
FLAN_VARIANT_WEIGHTS = {"zs": 0.4, "fs": 0.3, "opt": 0.1, "cot": 0.1, "inv": 0.1}

SYNTHETIC_HELDOUT_CATEGORIES = ("classification", "sequence")
SYNTHETIC_HELDOUT_TASKS_PER_CATEGORY = 1
SPLIT_SEED = 0
SYNTH_SEEN_TRAIN = "synth_seen_train"
SYNTH_EVAL_MIXTURES = {
    "heldout_categories": "synth_heldout_categories",   # level (i)
    "heldout_tasks": "synth_heldout_tasks",             # level (ii)
    "heldout_instances": "synth_seen_tasks_eval",       # level (iii)
}


def supervised_tasks(split: str | None = "train") -> list[str]:
    """Registered text-to-text base tasks (not instruction variants, not
    pretraining, none with pixels or other non-text features), sorted, that
    have `split` (None: all)."""
    names = []
    for info in task_info.list_task_infos(variant="none"):
        if info.category == "pretraining" or info.name not in seqio.TaskRegistry.names():
            continue
        task = seqio.TaskRegistry.get(info.name)
        if any(isinstance(f, seqio.ContinuousFeature) for f in task.output_features.values()):
            continue
        if split is None or split in task.splits:
            names.append(info.name)
    return names


# ---------------------------------------------------------------- ExMix / ExT5

@gin.configurable
def register_exmix(name: str = EXMIX, cap: int | None = FLAN_CAP,
                   tasks: Sequence[str] | None = None, temperature: float = 1.0) -> str:
    """ExMix: examples-proportional over `tasks` (default: every supervised
    task with a train split), each capped at `cap` examples."""
    return register_mixture(name, list(tasks) if tasks else supervised_tasks(),
                            rate="examples_proportional", cap=cap, temperature=temperature)


@gin.configurable
def register_ext5_pretrain(name: str = EXT5_PRETRAIN, ratio: float = EXT5_RATIO,
                           corpus_task: str = EXT5_CORPUS_TASK,
                           supervised: str = EXMIX) -> str:
    """ExT5 pretraining: `corpus_task` and `supervised` sampled at ratio : 1."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
        raise T5mtlError(f"ext5 ratio (corpus : supervised) must be positive, got {ratio!r}")
    return register_mixture(name, [corpus_task, supervised], rate="weights",
                            weights=[float(ratio), 1.0])


# ---------------------------------------------------------------- instruction mixtures

@gin.configurable
def register_instruction_mixture(name: str = gin.REQUIRED,
                                 base_tasks: Sequence[str] = gin.REQUIRED,
                                 variant_weights: Mapping[str, float] | None = None,
                                 cap: int | None = FLAN_CAP, split: str = "train") -> str:
    """A Flan-style mix of the instruction variants of `base_tasks`.

    One sub-mixture "<name>_<variant>" per variant (examples-proportional
    with `cap`, over the tasks that have that variant), mixed by
    `variant_weights` (default FLAN_VARIANT_WEIGHTS; leave a variant out to
    drop it). Returns `name`.
    """
    weights = dict(FLAN_VARIANT_WEIGHTS if variant_weights is None else variant_weights)
    if not weights:
        raise T5mtlError(f"mixture {name!r}: variant_weights is empty")
    subs, sub_weights = [], []
    for variant, w in weights.items():
        if variant not in templates.VARIANTS:
            raise T5mtlError(f"mixture {name!r}: unknown variant {variant!r}; choose from "
                             f"{', '.join(templates.VARIANTS)}")
        members = instruction_tasks.instruction_task_names(variant, base_tasks)
        members = [m for m in members if split in seqio.TaskRegistry.get(m).splits]
        if not members:
            continue  # no task has this variant (e.g. no classification task: no "opt")
        subs.append(register_mixture(f"{name}_{variant}", members, rate="examples_proportional",
                                     cap=cap, split=split))
        sub_weights.append(w)
    if not subs:
        raise T5mtlError(f"mixture {name!r}: none of the tasks has a variant in "
                         f"{', '.join(weights)}")
    return register_mixture(name, subs, rate="weights", weights=sub_weights)


@gin.configurable
def register_flan_mix(name: str = FLAN_MIX, variant_weights: Mapping[str, float] | None = None,
                      cap: int | None = FLAN_CAP, tasks: Sequence[str] | None = None) -> str:
    """The Flan-style instruction mixture over every supervised task with a train split."""
    return register_instruction_mixture(name, list(tasks) if tasks else supervised_tasks(),
                                        variant_weights, cap)


# ---------------------------------------------------------------- generalization splits

@dataclasses.dataclass(frozen=True)
class GeneralizationSplits:
    """OPT-IML-style splits of a task suite by category (base task names).

    train_tasks: tasks of the seen categories, minus their held-out tasks.
    heldout_category_tasks: every task of the fully held-out categories (level i).
    heldout_tasks: the held-out tasks of seen categories (level ii).
    seen_tasks: the training tasks again; evaluated on `eval_split`, their
      held-out instances (level iii).
    """

    seen_categories: tuple[str, ...]
    heldout_categories: tuple[str, ...]
    train_tasks: tuple[str, ...]
    heldout_category_tasks: tuple[str, ...]
    heldout_tasks: tuple[str, ...]
    seen_tasks: tuple[str, ...]
    eval_split: str = "validation"

    def levels(self) -> dict[str, tuple[str, ...]]:
        """The three evaluation levels, in order."""
        return {"heldout_categories": self.heldout_category_tasks,
                "heldout_tasks": self.heldout_tasks,
                "heldout_instances": self.seen_tasks}


def generalization_splits(
        suite: Union[str, Sequence[str]] = "synthetic",
        held_out_categories: Union[int, Sequence[str]] = SYNTHETIC_HELDOUT_CATEGORIES,
        held_out_tasks_per_category: int = SYNTHETIC_HELDOUT_TASKS_PER_CATEGORY,
        seed: int = SPLIT_SEED) -> GeneralizationSplits:
    """Splits `suite` into training tasks and three held-out levels.

    Args:
      suite: a suite name (TaskInfo.suite, e.g. "synthetic", "glue") or a
        list of base task names.
      held_out_categories: category names held out entirely, or how many to
        draw (with `seed`) from the suite's sorted categories.
      held_out_tasks_per_category: tasks held out of each seen category,
        drawn with a generator seeded by (seed, category), so a category's
        choice does not depend on the others.
      seed: makes the draws; the same arguments always give the same split.
    """
    if isinstance(suite, str):
        infos = task_info.list_task_infos(suite=suite, variant="none")
        if not infos:
            suites = sorted({i.suite for i in task_info.list_task_infos() if i.suite})
            raise T5mtlError(f"unknown or empty suite {suite!r}; suites: {', '.join(suites)}")
    else:
        infos = [task_info.get_task_info(n) for n in suite]
    by_category: dict[str, list[str]] = {}
    for info in infos:
        by_category.setdefault(info.category, []).append(info.name)
    categories = sorted(by_category)
    if isinstance(held_out_categories, int) and not isinstance(held_out_categories, bool):
        if not 0 <= held_out_categories < len(categories):
            raise T5mtlError(f"cannot hold out {held_out_categories} of {len(categories)} "
                             f"categories; at least one must be seen")
        rng = np.random.default_rng([seed, 0])
        held = sorted(rng.choice(categories, held_out_categories, replace=False).tolist())
    else:
        held = sorted(held_out_categories)
        unknown = [c for c in held if c not in by_category]
        if unknown:
            raise T5mtlError(f"held-out categories {unknown} are not in the suite; it has "
                             f"{', '.join(categories)}")
        if len(held) >= len(categories):
            raise T5mtlError("every category is held out; at least one must be seen")
    seen = [c for c in categories if c not in held]
    m = held_out_tasks_per_category
    if isinstance(m, bool) or not isinstance(m, int) or m < 0:
        raise T5mtlError(f"held_out_tasks_per_category must be >= 0, got {m!r}")
    train, heldout_tasks = [], []
    for c in seen:
        names = sorted(by_category[c])
        if m >= len(names):
            raise T5mtlError(f"category {c!r} has {len(names)} tasks; holding out {m} would "
                             f"leave none to train on")
        rng = np.random.default_rng([seed, zlib.crc32(c.encode())])
        out = set(rng.choice(names, m, replace=False).tolist()) if m else set()
        heldout_tasks += sorted(out)
        train += [n for n in names if n not in out]
    return GeneralizationSplits(
        seen_categories=tuple(seen), heldout_categories=tuple(held),
        train_tasks=tuple(train),
        heldout_category_tasks=tuple(sorted(n for c in held for n in by_category[c])),
        heldout_tasks=tuple(heldout_tasks), seen_tasks=tuple(train))


@gin.configurable
def register_generalization_mixtures(
        prefix: str = "synth", splits: GeneralizationSplits | None = None,
        variant_weights: Mapping[str, float] | None = None, eval_variant: str = "zs",
        cap: int | None = FLAN_CAP) -> dict[str, str]:
    """Registers "<prefix>_seen_train" and the three evaluation mixtures.

    Training mixes the instruction variants of splits.train_tasks (like
    flan_mix); each evaluation mixture holds the `eval_variant` variant of
    its level's tasks at equal rates (evaluate it on splits.eval_split).
    Returns {"train": name, "heldout_categories": name, ...}.
    """
    splits = splits or generalization_splits()
    names = {"train": register_instruction_mixture(f"{prefix}_seen_train", splits.train_tasks,
                                                   variant_weights, cap)}
    eval_names = {"heldout_categories": f"{prefix}_heldout_categories",
                  "heldout_tasks": f"{prefix}_heldout_tasks",
                  "heldout_instances": f"{prefix}_seen_tasks_eval"}
    for level, tasks in splits.levels().items():
        members = instruction_tasks.instruction_task_names(eval_variant, tasks)
        if len(members) != len(tasks):
            missing = sorted(set(tasks) - {task_info.get_task_info(m).base_task for m in members})
            raise T5mtlError(f"level {level}: no {eval_variant!r} variant of {missing}")
        names[level] = register_mixture(eval_names[level], members, rate="equal")
    return names


@gin.configurable
def synthetic_generalization(
        level: str = "train", prefix: str = "synth",
        held_out_categories: Union[int, Sequence[str]] = SYNTHETIC_HELDOUT_CATEGORIES,
        held_out_tasks_per_category: int = SYNTHETIC_HELDOUT_TASKS_PER_CATEGORY,
        seed: int = SPLIT_SEED, variant_weights: Mapping[str, float] | None = None,
        eval_variant: str = "zs", cap: int | None = FLAN_CAP) -> str:
    """Registers the synthetic suite's generalization mixtures; returns one name.

    `level`: "train" (the training mixture) or one of "heldout_categories",
    "heldout_tasks", "heldout_instances" (evaluation mixtures). For gin:

        DataConfig.mixture_or_task_name = @synthetic_generalization()
        synthetic_generalization.held_out_categories = ['counting', 'sequence']
    """
    if level not in ("train", *SYNTH_EVAL_MIXTURES):
        raise T5mtlError(f"unknown level {level!r}; choose from train, "
                         f"{', '.join(SYNTH_EVAL_MIXTURES)}")
    splits = generalization_splits("synthetic", held_out_categories,
                                   held_out_tasks_per_category, seed)
    return register_generalization_mixtures(prefix, splits, variant_weights, eval_variant,
                                            cap)[level]


# ---------------------------------------------------------------- registration

def register(overwrite: bool = False) -> None:
    """Registers the built-in mixtures (again, replacing them, with overwrite=True)."""
    def needed(name):
        return overwrite or name not in seqio.MixtureRegistry.names()

    if needed(EXMIX):
        register_exmix()
    if needed(EXT5_PRETRAIN) and EXT5_CORPUS_TASK in seqio.TaskRegistry.names():
        register_ext5_pretrain()
    if needed(FLAN_MIX):
        register_flan_mix()
    if needed(SYNTH_SEEN_TRAIN) or any(needed(n) for n in SYNTH_EVAL_MIXTURES.values()):
        register_generalization_mixtures()
