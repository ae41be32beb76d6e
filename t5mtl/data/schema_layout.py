"""The placeholder layout of schema prompts, shared by the data side
(t5mtl.data.schema_prompts renders the ids) and the model side
(t5mtl.peft.SchemaPrompts replaces them): plain Python, no TensorFlow, so
loading a model does not register tasks."""
from __future__ import annotations

import dataclasses

from t5mtl.errors import T5mtlError

TARGET_FIELDS = ("label", "answer")       # the first present is the target
DEFAULT_LENGTH = 4
# The key and type vocabularies of the registered schema tasks, fixed here so
# ids stay stable when tasks are added (tests check they cover the tasks).
DEFAULT_KEYS = ("hypothesis", "instruction", "passage", "premise", "query", "question",
                "sentence", "sentence1", "sentence2")
DEFAULT_TYPES = ("acceptability", "arithmetic", "classification", "counting", "extraction",
                 "nli", "ordering", "qa", "sentiment", "sequence", "similarity",
                 "string_edit")


@dataclasses.dataclass(frozen=True)
class SchemaLayout:
    """Which placeholder ids stand for which prompt: rows 0..T*P-1 are the
    type prompts (type i, slot j: row i*P + j), then the key prompts (key k,
    slot j: row (T + k)*P + j); row r is token id vocab_size - 1 - r."""
    keys: tuple[str, ...] = DEFAULT_KEYS
    types: tuple[str, ...] = DEFAULT_TYPES
    length: int = DEFAULT_LENGTH
    vocab_size: int = 0

    def __post_init__(self):
        object.__setattr__(self, "keys", tuple(self.keys))
        object.__setattr__(self, "types", tuple(self.types))
        for kind, names in (("key", self.keys), ("type", self.types)):
            if len(set(names)) != len(names):
                raise T5mtlError(f"schema prompts: repeated {kind} names in {names}")
        if self.length < 1:
            raise T5mtlError(f"schema prompts: length must be >= 1, got {self.length}")
        if self.rows > self.vocab_size:
            raise T5mtlError(f"schema prompts: {self.rows} placeholder ids do not fit a "
                             f"vocabulary of {self.vocab_size}")

    @property
    def rows(self) -> int:
        return (len(self.types) + len(self.keys)) * self.length

    def _run(self, row: int) -> list[int]:
        return [self.vocab_size - 1 - (row + j) for j in range(self.length)]

    def key_ids(self, field: str, task: str = "") -> list[int]:
        if field not in self.keys:
            raise T5mtlError(f"task {task!r}: field {field!r} has no key prompt "
                             f"(known keys: {', '.join(self.keys)})")
        return self._run((len(self.types) + self.keys.index(field)) * self.length)

    def type_ids(self, category: str, task: str = "") -> list[int]:
        if category not in self.types:
            raise T5mtlError(f"task {task!r}: category {category!r} has no type prompt "
                             f"(known types: {', '.join(self.types)})")
        return self._run(self.types.index(category) * self.length)
