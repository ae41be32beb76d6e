"""Ordering: sort, pick extremes, reverse an order."""
from t5mtl.data.synthetic.base import SyntheticTask, distinct_letters, numbers, words

CATEGORY = "ordering"


def _sort_letters(rng):
    s = distinct_letters(rng, 3, 7)
    return s, "".join(sorted(s))


def _sort_numbers(rng):
    xs = numbers(rng, int(rng.integers(3, 6)), 0, 9)
    return " ".join(map(str, xs)), " ".join(map(str, sorted(xs)))


def _max(rng):
    xs = numbers(rng, int(rng.integers(3, 5)), 0, 99)
    return " ".join(map(str, xs)), str(max(xs))


def _min(rng):
    xs = numbers(rng, int(rng.integers(3, 5)), 0, 99)
    return " ".join(map(str, xs)), str(min(xs))


def _reverse_words(rng):
    ws = words(rng, 2, 4)
    return " ".join(ws), " ".join(reversed(ws))


TASKS = [
    SyntheticTask("sort_letters", CATEGORY, "Sort the letters:", _sort_letters),
    SyntheticTask("sort_numbers", CATEGORY, "Sort the numbers:", _sort_numbers),
    SyntheticTask("max_number", CATEGORY, "Give the largest number:", _max),
    SyntheticTask("min_number", CATEGORY, "Give the smallest number:", _min),
    SyntheticTask("reverse_words", CATEGORY, "Reverse the order of the words:", _reverse_words),
]
