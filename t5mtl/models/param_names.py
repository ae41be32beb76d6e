"""Parameter names: the one way t5mtl names, selects, splits and joins the
leaves of a param tree.

A parameter's name is the "/"-joined keys of its path in the nested dict,
`decoder/layers_0/mlp/wi_0/kernel` (with `scan_layers`: `.../layers/mlp/...`).
Optimizer state, checkpoint metadata and restored trees name their leaves
the same way (the keys of optax's named tuples and of lists included:
`0/mu/encoder/...`). Patterns are Python regexes matched against the whole
name (`re.fullmatch`). Used by trainable subsets, optimizer labels,
checkpoint comparisons, finetuning init and sharding derivation.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

import jax
from flax import traverse_util

from t5mtl.errors import T5mtlError


def key_name(key: Any) -> str:
    """One path entry as text (DictKey, GetAttrKey, SequenceKey, FlattenedIndexKey)."""
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_keys(path: Sequence[Any]) -> tuple[str, ...]:
    return tuple(key_name(k) for k in path)


def path_name(path: Sequence[Any]) -> str:
    """"encoder/layers_0/mlp/wi_0/kernel" for a key path into a tree."""
    return "/".join(path_keys(path))


def named_leaves(tree: Any) -> dict[str, Any]:
    """{name: leaf} in tree order."""
    return {path_name(path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def names_tree(tree: Any) -> Any:
    """A tree like `tree` whose leaves are their names."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path_name(path), tree)


def compile_patterns(patterns: str | Iterable[str], what: str) -> list[re.Pattern]:
    """Compiled regexes; a bad one raises T5mtlError naming it and `what` it is for."""
    if isinstance(patterns, str):
        patterns = [patterns]
    compiled = []
    for p in patterns:
        try:
            compiled.append(re.compile(p))
        except re.error as e:
            raise T5mtlError(f"bad {what} pattern {p!r}: {e}") from None
    return compiled


def matches(name: str, patterns: Sequence[re.Pattern]) -> bool:
    return any(p.fullmatch(name) for p in patterns)


def check_all_match(names: Sequence[str], patterns: Sequence[re.Pattern], what: str) -> None:
    """Raises T5mtlError for a pattern that matches none of `names` (almost surely a typo)."""
    for pat in patterns:
        if not any(pat.fullmatch(n) for n in names):
            raise T5mtlError(f"{what} pattern {pat.pattern!r} matches no parameter; names "
                             f"look like {list(names)[:3]}")


# -- nested dicts of params: split into subsets and join again ----------------------------

def flatten(params: dict) -> dict[str, Any]:
    """{name: leaf} of a nested dict (empty dicts vanish)."""
    return traverse_util.flatten_dict(params, sep="/")


def unflatten(flat: dict[str, Any]) -> dict:
    return traverse_util.unflatten_dict(flat, sep="/")


def subset(params: dict, names: Iterable[str]) -> dict:
    """The nested dict holding only the leaves named (paths kept)."""
    flat = flatten(params)
    return unflatten({n: flat[n] for n in names})


def merge(*trees: dict) -> dict:
    """One nested dict of all leaves; a later tree's leaf wins over an earlier one's."""
    flat: dict[str, Any] = {}
    for tree in trees:
        flat.update(flatten(tree))
    return unflatten(flat)


def select(names: Sequence[str], trainable_patterns: Sequence[str] | None = None,
           frozen_patterns: Sequence[str] = ()) -> list[str] | None:
    """The names that train: those matching a trainable pattern (every name
    when `trainable_patterns` is None) and no frozen pattern. None when no
    pattern is given (everything trains). A pattern that matches no name, or
    a selection that leaves nothing to train, raises T5mtlError."""
    if trainable_patterns is None and not frozen_patterns:
        return None
    trainable = None if trainable_patterns is None else compile_patterns(trainable_patterns,
                                                                         "trainable")
    frozen = compile_patterns(frozen_patterns, "frozen")
    check_all_match(names, trainable or [], "trainable")
    check_all_match(names, frozen, "frozen")
    chosen = [n for n in names
              if (trainable is None or matches(n, trainable)) and not matches(n, frozen)]
    if not chosen:
        raise T5mtlError(f"trainable patterns {list(trainable_patterns or [])} and frozen "
                         f"patterns {list(frozen_patterns)} leave no parameter to train")
    return chosen
