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


# Rationales for chain of thought.

def _explain_count_letter(query, answer):
    c, s = query.split(" in ")
    pos = [str(i + 1) for i, x in enumerate(s) if x == c]
    if not pos:
        return f"there is no {c} in {s}"
    return f"{c} is at positions {', '.join(pos)} of {s}, {len(pos)} times"


def _numbered(items):
    return ", ".join(f"{i} {x}" for i, x in enumerate(items, 1))


def _explain_count_words(query, answer):
    return _numbered(query.split())


def _explain_length(query, answer):
    return _numbered(query)


def _explain_count_vowels(query, answer):
    vowels = [c for c in query if c in VOWELS]
    return f"the vowels are {_numbered(vowels)}" if vowels else "there are no vowels"


TASKS = [
    SyntheticTask("count_letter", CATEGORY, "Count how often the letter occurs:", _count_letter,
                  explain=_explain_count_letter),
    SyntheticTask("count_words", CATEGORY, "Count the words:", _count_words,
                  explain=_explain_count_words),
    SyntheticTask("string_length", CATEGORY, "Count the letters:", _length,
                  explain=_explain_length),
    SyntheticTask("count_vowels", CATEGORY, "Count the vowels:", _count_vowels,
                  explain=_explain_count_vowels),
]
