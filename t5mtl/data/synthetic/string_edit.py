"""String edits: rewrite a short string of letters or words."""
from t5mtl.data.synthetic.base import VOWELS, SyntheticTask, letters, words

CATEGORY = "string_edit"


def _reverse(rng):
    s = letters(rng, 3, 8)
    return s, s[::-1]


def _uppercase(rng):
    s = " ".join(words(rng, 1, 4))
    return s, s.upper()


def _remove_vowels(rng):
    while True:
        s = letters(rng, 4, 9)
        kept = "".join(c for c in s if c not in VOWELS)
        if kept:
            return s, kept


def _double(rng):
    s = letters(rng, 2, 6)
    return s, "".join(c + c for c in s)


def _rotate(rng):
    s = letters(rng, 3, 8)
    return s, s[1:] + s[0]


TASKS = [
    SyntheticTask("reverse_letters", CATEGORY, "Reverse the letters:", _reverse),
    SyntheticTask("uppercase", CATEGORY, "Write it in capital letters:", _uppercase),
    SyntheticTask("remove_vowels", CATEGORY, "Remove the vowels:", _remove_vowels),
    SyntheticTask("double_letters", CATEGORY, "Write every letter twice:", _double),
    SyntheticTask("rotate_left", CATEGORY, "Move the first letter to the end:", _rotate),
]
