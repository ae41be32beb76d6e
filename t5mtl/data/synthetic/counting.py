"""Counting letters, words and vowels."""
from t5mtl.data.synthetic.base import VOWELS, SyntheticTask, letters, words

CATEGORY = "counting"


def _count_letter(rng):
    s = letters(rng, 3, 9, alphabet="abcdef")
    c = "abcdef"[int(rng.integers(0, 6))]
    return f"{c} in {s}", str(s.count(c))


def _count_words(rng):
    ws = words(rng, 1, 7)
    return " ".join(ws), str(len(ws))


def _length(rng):
    s = letters(rng, 1, 12)
    return s, str(len(s))


def _count_vowels(rng):
    s = letters(rng, 3, 10)
    return s, str(sum(c in VOWELS for c in s))


TASKS = [
    SyntheticTask("count_letter", CATEGORY, "Count how often the letter occurs:", _count_letter),
    SyntheticTask("count_words", CATEGORY, "Count the words:", _count_words),
    SyntheticTask("string_length", CATEGORY, "Count the letters:", _length),
    SyntheticTask("count_vowels", CATEGORY, "Count the vowels:", _count_vowels),
]
