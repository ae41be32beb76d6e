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


# Rationales for chain of thought: the steps a person would write down.

def _tens_units(b):
    return b // 10 * 10, b % 10


def _explain_add(query, answer):
    a, b = (int(x) for x in query.split(" + "))
    tens, units = _tens_units(b)
    if not tens or not units:
        return f"{a} + {b} = {a + b}"
    return f"{a} + {tens} = {a + tens}, {a + tens} + {units} = {a + b}"


def _explain_subtract(query, answer):
    a, b = (int(x) for x in query.split(" - "))
    tens, units = _tens_units(b)
    if not tens or not units:
        return f"{a} - {b} = {a - b}"
    return f"{a} - {tens} = {a - tens}, {a - tens} - {units} = {a - b}"


def _explain_multiply(query, answer):
    a, b = (int(x) for x in query.split(" * "))
    parts = [int(d) * 10 ** i for i, d in enumerate(reversed(str(a))) if d != "0"][::-1]
    if len(parts) <= 1:
        return f"{a} * {b} = {a * b}"
    steps = ", ".join(f"{p} * {b} = {p * b}" for p in parts)
    return f"{steps}, {' + '.join(str(p * b) for p in parts)} = {a * b}"


def _explain_remainder(query, answer):
    a, b = (int(x) for x in query.split(" mod "))
    q = a // b
    return f"{a} = {q} * {b} + {a - q * b}"


TASKS = [
    SyntheticTask("add", CATEGORY, "Add the numbers:", _add, explain=_explain_add),
    SyntheticTask("subtract", CATEGORY, "Subtract the numbers:", _subtract,
                  explain=_explain_subtract),
    SyntheticTask("multiply", CATEGORY, "Multiply the numbers:", _multiply,
                  explain=_explain_multiply),
    SyntheticTask("add_one", CATEGORY, "Add one to the number:", _add_one),
    SyntheticTask("remainder", CATEGORY, "Give the remainder:", _remainder,
                  explain=_explain_remainder),
]
