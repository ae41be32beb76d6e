"""Extraction and lookup: pick out a word, a letter, a value or a position."""
from t5mtl.data.synthetic.base import SyntheticTask, distinct_letters, letters, words

CATEGORY = "extraction"


def _first_word(rng):
    ws = words(rng, 2, 5)
    return " ".join(ws), ws[0]


def _second_word(rng):
    ws = words(rng, 2, 5)
    return " ".join(ws), ws[1]


def _lookup(rng):
    keys = distinct_letters(rng, 3, 4)
    values = [str(v) for v in rng.integers(0, 10, len(keys))]
    k = int(rng.integers(0, len(keys)))
    pairs = " ".join(f"{key}={value}" for key, value in zip(keys, values))
    return f"{keys[k]}: {pairs}", values[k]


def _letter_at(rng):
    s = letters(rng, 3, 9)
    i = int(rng.integers(0, len(s)))
    return f"{i + 1} in {s}", s[i]


def _position_of(rng):
    s = distinct_letters(rng, 3, 8)
    i = int(rng.integers(0, len(s)))
    return f"{s[i]} in {s}", str(i + 1)


TASKS = [
    SyntheticTask("first_word", CATEGORY, "Give the first word:", _first_word),
    SyntheticTask("second_word", CATEGORY, "Give the second word:", _second_word),
    SyntheticTask("lookup_value", CATEGORY, "Look up the value of the key:", _lookup),
    SyntheticTask("letter_at", CATEGORY, "Give the letter at the position:", _letter_at),
    SyntheticTask("position_of", CATEGORY, "Give the position of the letter:", _position_of),
]
