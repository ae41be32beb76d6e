"""Number sequences: continue, fill a gap, count up, step back."""
from t5mtl.data.synthetic.base import SyntheticTask, numbers

CATEGORY = "sequence"


def _progression(rng, first_lo, first_hi, length):
    start, = numbers(rng, 1, first_lo, first_hi)
    step, = numbers(rng, 1, 1, 9)
    return [start + i * step for i in range(length)], step


def _next_number(rng):
    start, = numbers(rng, 1, 0, 99)
    step, = numbers(rng, 1, 1, 12)
    xs = [start + i * step for i in range(int(rng.integers(3, 6)))]
    return " ".join(map(str, xs)), str(xs[-1] + step)


def _missing_number(rng):
    xs, _ = _progression(rng, 0, 99, int(rng.integers(4, 6)))
    i = int(rng.integers(0, len(xs)))
    shown = [("_" if j == i else str(x)) for j, x in enumerate(xs)]
    return " ".join(shown), str(xs[i])


def _count_up(rng):
    start, = numbers(rng, 1, 0, 996)
    end = start + int(rng.integers(1, 4))
    return f"{start} {end}", " ".join(str(x) for x in range(start, end + 1))


def _previous_term(rng):
    step, = numbers(rng, 1, 1, 9)
    first, = numbers(rng, 1, step, 199)
    xs = [first + i * step for i in range(int(rng.integers(3, 5)))]
    return " ".join(map(str, xs)), str(first - step)


# Rationales for chain of thought.

def _explain_next(query, answer):
    xs = [int(x) for x in query.split()]
    d = xs[1] - xs[0]
    return f"each step adds {d}, {xs[-1]} + {d} = {xs[-1] + d}"


def _explain_previous(query, answer):
    xs = [int(x) for x in query.split()]
    d = xs[1] - xs[0]
    return f"each step adds {d}, {xs[0]} - {d} = {xs[0] - d}"


def _explain_missing(query, answer):
    shown = query.split()
    i = shown.index("_")
    j = next(j for j in range(len(shown) - 1) if "_" not in (shown[j], shown[j + 1]))
    d = int(shown[j + 1]) - int(shown[j])
    if i > 0:
        return f"each step adds {d}, {shown[i - 1]} + {d} = {int(shown[i - 1]) + d}"
    return f"each step adds {d}, {shown[1]} - {d} = {int(shown[1]) - d}"


TASKS = [
    SyntheticTask("next_number", CATEGORY, "Continue the sequence:", _next_number,
                  explain=_explain_next),
    SyntheticTask("missing_number", CATEGORY, "Fill in the missing number:",
                  _missing_number, explain=_explain_missing),
    SyntheticTask("count_up", CATEGORY, "Count from the first number to the second:", _count_up),
    SyntheticTask("previous_term", CATEGORY, "Give the number that comes before:",
                  _previous_term, explain=_explain_previous),
]
