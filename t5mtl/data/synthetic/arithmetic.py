"""Arithmetic on small whole numbers."""
from t5mtl.data.synthetic.base import SyntheticTask, numbers

CATEGORY = "arithmetic"


def _add(rng):
    a, b = numbers(rng, 2, 0, 99)
    return f"{a} + {b}", str(a + b)


def _subtract(rng):
    a, b = numbers(rng, 2, 0, 99)
    a, b = max(a, b), min(a, b)
    return f"{a} - {b}", str(a - b)


def _multiply(rng):
    a, = numbers(rng, 1, 0, 999)
    b, = numbers(rng, 1, 0, 9)
    return f"{a} * {b}", str(a * b)


def _add_one(rng):
    a, = numbers(rng, 1, 0, 9999)
    return str(a), str(a + 1)


def _remainder(rng):
    a, = numbers(rng, 1, 0, 999)
    b, = numbers(rng, 1, 2, 9)
    return f"{a} mod {b}", str(a % b)


TASKS = [
    SyntheticTask("add", CATEGORY, "Add the numbers:", _add),
    SyntheticTask("subtract", CATEGORY, "Subtract the numbers:", _subtract),
    SyntheticTask("multiply", CATEGORY, "Multiply the numbers:", _multiply),
    SyntheticTask("add_one", CATEGORY, "Add one to the number:", _add_one),
    SyntheticTask("remainder", CATEGORY, "Give the remainder:", _remainder),
]
