"""Rule-based classification with closed label sets (balanced classes)."""
from t5mtl.data.synthetic.base import (SyntheticTask, coin, distinct_letters, letters,
                                       numbers)

CATEGORY = "classification"
YES_NO = ("yes", "no")


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _parity(rng):
    n, = numbers(rng, 1, 0, 9999)
    return str(n), "even" if n % 2 == 0 else "odd"


def _palindrome(rng):
    if coin(rng):
        half = letters(rng, 1, 4)
        middle = letters(rng, 0, 1)
        s = half + middle + half[::-1]
        if len(s) >= 2:
            return s, "yes"
    while True:
        s = letters(rng, 3, 8)
        if s != s[::-1]:
            return s, "no"


def _greater(rng):
    while True:
        a, b = numbers(rng, 2, 0, 999)
        if a != b:
            return f"{a} {b}", _yes_no(a > b)


def _is_sorted(rng):
    s = distinct_letters(rng, 3, 6)
    if coin(rng):
        s = "".join(sorted(s))
    return s, _yes_no(list(s) == sorted(s))


def _sign(rng):
    while True:
        a, b = numbers(rng, 2, 0, 99)
        if a != b:
            return f"{a} - {b}", "positive" if a > b else "negative"


TASKS = [
    SyntheticTask("parity", CATEGORY, "Is the number even or odd?", _parity,
                  labels=("even", "odd")),
    SyntheticTask("palindrome", CATEGORY, "Is it a palindrome?", _palindrome, labels=YES_NO),
    SyntheticTask("greater", CATEGORY, "Is the first number larger?", _greater, labels=YES_NO),
    SyntheticTask("is_sorted", CATEGORY, "Are the letters in alphabetical order?", _is_sorted,
                  labels=YES_NO),
    SyntheticTask("sign", CATEGORY, "Is the result positive or negative?", _sign,
                  labels=("positive", "negative")),
]
