"""Mixing rates for seqio Mixtures, computed from real example counts.

A mixture samples each of its members (tasks or other mixtures) with
probability rate / sum of rates. The rate functions here are T5's and
FLAN's:

- "examples_proportional": rate = min(n, K), n the member's number of
  examples in the split (train), K the cap (FLAN 2021 capped each task at
  3,000; cap=None for no cap);
- "temperature": rate = min(n, K) ** (1 / T) (T5's
  `mixing_rate_num_examples(maximum=K, temperature=T)`; cap=None for n ** (1/T));
- "equal": rate = 1;
- "weights": rate = the weight given for each member.

A member that is itself a mixture (a nested mixture) counts as one member:
its n is the total over its tasks, and its share is divided among its own
tasks by its own rates, as seqio does.

Counts come from the data, never from a table: `task.num_input_examples(split)`
when the source knows it (seqio's DataSource; the synthetic suite; file
sources count their files once), otherwise the split is read and counted
once. Counts are cached per (task, split, source) for the process, and
computed lazily, when a dataset is built or `mixture_proportions` is asked,
so registering a mixture reads no data.

    register_mixture("glue_mix", ["glue_sst2", "glue_cola"], rate="examples_proportional",
                     cap=3000)
    register_mixture("mix2", ["glue_mix", "synth_all"], rate="weights", weights=[2, 1])

`register_mixture` is gin-configurable and returns the mixture's name, so a
gin file can build a mixture where it names one:

    DataConfig.mixture_or_task_name = @register_mixture()
    register_mixture.name = "my_mix"
    register_mixture.tasks_or_mixtures = ["glue_sst2", "glue_cola"]
    register_mixture.rate = "temperature"
    register_mixture.temperature = 2.0
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from typing import Any, Mapping, Sequence, Union

import gin
import seqio

from t5mtl.errors import T5mtlError

RATES = ("examples_proportional", "temperature", "equal", "weights")
FLAN_CAP = 3000  # FLAN 2021's per-task cap on examples-proportional mixing

Provider = Union[seqio.Task, seqio.Mixture]

_COUNTS: dict[tuple[str, str, int], int] = {}


class RateMixture(seqio.Mixture):
    """A seqio Mixture whose sub-mixture rates may be functions, like task rates.

    seqio accepts a function of the Task as a task's rate but only a number
    for a sub-mixture; here a function of the sub-mixture works too, so
    count-based rates stay lazy for nested mixtures.
    """

    def _get_submixture_rate(self, mix: seqio.Mixture) -> float:
        rate = self.rate_per_task_name[mix.name]
        value = rate(mix) if callable(rate) else rate
        if not isinstance(value, numbers.Number):
            raise T5mtlError(f"mixture {self.name!r}: rate of sub-mixture {mix.name!r} "
                             f"must be a number, got {value!r}")
        return float(value)


# ---------------------------------------------------------------- counts

def num_examples(provider: Provider, split: str = "train") -> int:
    """Examples in `split` of a task, or of a mixture's tasks together (cached).

    A task without the split is an error; a mixture counts the tasks that
    have it.
    """
    if isinstance(provider, seqio.Mixture):
        return sum(num_examples(t, split) for t in provider.tasks if split in t.splits)
    if split not in provider.splits:
        raise T5mtlError(f"task {provider.name!r} has no {split!r} split (it has "
                         f"{', '.join(provider.splits)}); a count-based rate needs it")
    key = (provider.name, split, id(provider.source))
    if key not in _COUNTS:
        n = provider.num_input_examples(split)
        if n is None:  # the source does not know: read the split once
            ds = provider.source.get_dataset(split=split, shuffle=False)
            n = int(ds.reduce(0, lambda count, _: count + 1))
        _COUNTS[key] = int(n)
    return _COUNTS[key]


def clear_count_cache() -> None:
    _COUNTS.clear()


# ---------------------------------------------------------------- rate functions

@dataclasses.dataclass(frozen=True)
class ExampleCountRate:
    """rate(member) = min(n, cap) ** (1 / temperature), n = its examples in `split`."""

    cap: int | None = None
    temperature: float = 1.0
    split: str = "train"

    def __post_init__(self):
        _check_cap_and_temperature(self.cap, self.temperature)

    def __call__(self, provider: Provider) -> float:
        n = num_examples(provider, self.split)
        if n <= 0:
            raise T5mtlError(f"{provider.name!r} has no {self.split!r} examples, so its "
                             f"examples-proportional rate would be zero")
        return rate_from_count(n, self.cap, self.temperature)


def rate_from_count(n: int, cap: int | None = None, temperature: float = 1.0) -> float:
    """The formula: min(n, cap) ** (1 / temperature)."""
    _check_cap_and_temperature(cap, temperature)
    capped = min(n, cap) if cap else n
    return float(capped) ** (1.0 / temperature)


def examples_proportional_rate(cap: int | None = FLAN_CAP,
                               split: str = "train") -> ExampleCountRate:
    """rate = min(n, cap): T5's examples-proportional mixing (FLAN: cap 3,000)."""
    return ExampleCountRate(cap=cap, temperature=1.0, split=split)


def temperature_rate(temperature: float, cap: int | None = None,
                     split: str = "train") -> ExampleCountRate:
    """rate = min(n, cap) ** (1 / temperature): T5's temperature-scaled mixing."""
    return ExampleCountRate(cap=cap, temperature=temperature, split=split)


def _check_cap_and_temperature(cap, temperature) -> None:
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, numbers.Number)
                            or cap <= 0):
        raise T5mtlError(f"cap must be a positive number of examples or None, got {cap!r}")
    if (isinstance(temperature, bool) or not isinstance(temperature, numbers.Number)
            or not temperature > 0 or math.isinf(temperature)):
        raise T5mtlError(f"temperature must be a positive number, got {temperature!r}")


def _check_weight(mixture: str, member: str, w: Any) -> float:
    if isinstance(w, bool) or not isinstance(w, numbers.Number) or math.isnan(w) \
            or math.isinf(w):
        raise T5mtlError(f"mixture {mixture!r}: weight of {member!r} must be a number, got {w!r}")
    if w <= 0:
        raise T5mtlError(f"mixture {mixture!r}: weight of {member!r} is {w!r}; "
                         f"rates and weights must be positive")
    return float(w)


# ---------------------------------------------------------------- registration

def resolve(name: str) -> Provider:
    """The registered task or mixture `name`; an unknown name suggests close ones."""
    if not isinstance(name, str):
        raise T5mtlError(f"expected a task or mixture name, got {name!r}")
    if name in seqio.MixtureRegistry.names():
        return seqio.MixtureRegistry.get(name)
    if name in seqio.TaskRegistry.names():
        return seqio.TaskRegistry.get(name)
    known = list(seqio.TaskRegistry.names()) + list(seqio.MixtureRegistry.names())
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `t5mtl tasks list`"
    raise T5mtlError(f"unknown task or mixture {name!r}{hint}")


@gin.configurable
def register_mixture(name: str = gin.REQUIRED,
                     tasks_or_mixtures: Sequence[Any] = gin.REQUIRED,
                     rate: str = "examples_proportional",
                     cap: int | None = FLAN_CAP,
                     temperature: float = 1.0,
                     weights: Union[Sequence[float], Mapping[str, float], None] = None,
                     split: str = "train",
                     overwrite: bool = True) -> str:
    """Registers a seqio Mixture of tasks and/or mixtures; returns its name.

    Args:
      name: the mixture's name.
      tasks_or_mixtures: names of registered tasks or mixtures (mixtures nest),
        or (name, weight) pairs, which imply rate="weights".
      rate: one of RATES (see the module docstring).
      cap: K for the count-based rates (None: no cap). Ignored by "equal" and
        "weights".
      temperature: T for the count-based rates ("examples_proportional"
        with T != 1 is the same formula as "temperature").
      weights: for rate="weights": one positive number per member (a list in
        member order, or a mapping name -> weight).
      split: the split whose examples the count-based rates count.
      overwrite: replace a mixture already registered under `name`.

    Bad input raises T5mtlError: an empty mixture, an unknown member (close
    names are suggested), a member listed twice, a zero or negative weight,
    an unknown rate, a cap or temperature that is not positive, a member
    without `split` under a count-based rate.
    """
    if not isinstance(name, str) or not name:
        raise T5mtlError(f"a mixture needs a name, got {name!r}")
    if isinstance(tasks_or_mixtures, str):
        raise T5mtlError(f"mixture {name!r}: give a list of task or mixture names, "
                         f"not the string {tasks_or_mixtures!r}")
    members = list(tasks_or_mixtures or [])
    if not members:
        raise T5mtlError(f"mixture {name!r} is empty: give at least one task or mixture")
    if all(isinstance(m, (tuple, list)) and len(m) == 2 for m in members):
        if weights is not None:
            raise T5mtlError(f"mixture {name!r}: give weights either as (name, weight) pairs "
                             f"or as weights=, not both")
        weights = {m[0]: m[1] for m in members}
        members = [m[0] for m in members]
        rate = "weights"
    if rate not in RATES:
        raise T5mtlError(f"mixture {name!r}: unknown rate {rate!r}; choose from {', '.join(RATES)}")
    providers = [resolve(m) for m in members]
    seen = set()
    for m in members:
        if m in seen:
            raise T5mtlError(f"mixture {name!r} lists {m!r} twice")
        seen.add(m)
    if name in seen:
        raise T5mtlError(f"mixture {name!r} cannot contain itself")
    if name in seqio.TaskRegistry.names():
        raise T5mtlError(f"{name!r} is already a task name; choose another mixture name")

    if rate == "weights":
        rates = _weights(name, members, weights)
    else:
        if weights is not None:
            raise T5mtlError(f"mixture {name!r}: weights are only used with rate='weights' "
                             f"(rate is {rate!r})")
        if rate == "equal":
            rates = [1.0] * len(members)
        else:
            fn = ExampleCountRate(cap=cap, temperature=temperature, split=split)
            for p in providers:  # a count-based rate needs the split in every task
                for t in (p.tasks if isinstance(p, seqio.Mixture) else [p]):
                    if split not in t.splits:
                        raise T5mtlError(
                            f"mixture {name!r}: task {t.name!r} has no {split!r} split (it has "
                            f"{', '.join(t.splits)}); a {rate} rate counts {split} examples")
            rates = [fn] * len(members)

    if name in seqio.MixtureRegistry.names():
        if not overwrite:
            raise T5mtlError(f"mixture {name!r} is already registered")
        seqio.MixtureRegistry.remove(name)
    try:
        seqio.MixtureRegistry.add(name, list(zip(members, rates)), mixture_cls=RateMixture)
    except ValueError as e:
        raise T5mtlError(f"mixture {name!r}: {e}") from e
    return name


def _weights(name: str, members: list[str], weights) -> list[float]:
    if weights is None:
        raise T5mtlError(f"mixture {name!r}: rate='weights' needs weights")
    if isinstance(weights, Mapping):
        extra = sorted(set(weights) - set(members))
        if extra:
            raise T5mtlError(f"mixture {name!r}: weights for {', '.join(map(repr, extra))}, "
                             f"which are not members")
        missing = [m for m in members if m not in weights]
        if missing:
            raise T5mtlError(f"mixture {name!r}: no weight for {', '.join(map(repr, missing))}")
        values = [weights[m] for m in members]
    else:
        values = list(weights)
        if len(values) != len(members):
            raise T5mtlError(f"mixture {name!r}: {len(values)} weights for {len(members)} members")
    return [_check_weight(name, m, w) for m, w in zip(members, values)]


# ---------------------------------------------------------------- inspection

def mixture_proportions(mixture: Union[str, seqio.Mixture],
                        split: str | None = None) -> dict[str, float]:
    """Each leaf task's share of the samples (sums to 1), as seqio samples them.

    With `split`, only tasks that have it (those seqio mixes for that split).
    """
    mix = seqio.get_mixture_or_task(mixture) if isinstance(mixture, str) else mixture
    if not isinstance(mix, seqio.Mixture):
        raise T5mtlError(f"{mix.name!r} is a task, not a mixture")
    tasks = [t for t in mix.tasks if split is None or split in t.splits]
    rates = {t.name: mix.get_rate(t) for t in tasks}
    total = sum(rates.values())
    if total <= 0:
        raise T5mtlError(f"mixture {mix.name!r}: rates sum to {total}")
    return {k: v / total for k, v in rates.items()}
