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


# Rationales for chain of thought.

def _explain_parity(query, answer):
    return f"the last digit {query[-1]} is {'even' if int(query[-1]) % 2 == 0 else 'odd'}"


def _explain_palindrome(query, answer):
    return f"backwards it reads {query[::-1]}"


def _compare(a, b):
    return f"{a} {'>' if a > b else '<'} {b}"


def _explain_greater(query, answer):
    return _compare(*(int(x) for x in query.split()))


def _explain_is_sorted(query, answer):
    return f"in order the letters are {''.join(sorted(query))}"


def _explain_sign(query, answer):
    return _compare(*(int(x) for x in query.split(" - ")))


TASKS = [
    SyntheticTask("parity", CATEGORY, "Is the number even or odd?", _parity,
                  labels=("even", "odd"), explain=_explain_parity),
    SyntheticTask("palindrome", CATEGORY, "Is it a palindrome?", _palindrome, labels=YES_NO,
                  explain=_explain_palindrome),
    SyntheticTask("greater", CATEGORY, "Is the first number larger?", _greater, labels=YES_NO,
                  explain=_explain_greater),
    SyntheticTask("is_sorted", CATEGORY, "Are the letters in alphabetical order?", _is_sorted,
                  labels=YES_NO, explain=_explain_is_sorted),
    SyntheticTask("sign", CATEGORY, "Is the result positive or negative?", _sign,
                  labels=("positive", "negative"), explain=_explain_sign),
]
