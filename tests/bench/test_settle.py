"""bench.common.settle: the untimed steps a benchmarked system runs before it is timed."""
import math

from bench import common


def steps_from(times):
    """A fake step function that returns the given step times in order."""
    it = iter(times)
    return lambda: next(it)


def test_stops_at_min_steps_when_already_steady():
    times, best = common.settle(steps_from([2.6, 2.61, 9.9]), 2.55, 2, 8, 0.10)
    assert times == [2.6, 2.61]
    assert best == 2.55


def test_keeps_stepping_until_within_tolerance_of_the_fastest():
    # t5mtl after the other system's turn (docs/performance.md, "Pitfalls").
    seq = [5.3, 3.0, 4.2, 2.9, 2.79, 2.6]
    times, best = common.settle(steps_from(seq), 2.55, 2, 8, 0.10)
    assert times == [5.3, 3.0, 4.2, 2.9, 2.79]     # 2.79 <= 1.1 * 2.55 = 2.805
    assert best == 2.55


def test_a_faster_step_becomes_the_new_best():
    times, best = common.settle(steps_from([3.0, 2.0]), 2.55, 2, 8, 0.10)
    assert times == [3.0, 2.0] and best == 2.0


def test_first_round_has_no_history():
    # With no fastest step yet, the second step is judged against the first.
    times, best = common.settle(steps_from([5.0, 5.4, 4.0]), math.inf, 2, 8, 0.05)
    assert times == [5.0, 5.4, 4.0] and best == 4.0


def test_bounded_by_max_steps_and_fixed_count_when_max_equals_min():
    slow = [9.0] * 20
    times, _ = common.settle(steps_from(slow), 2.55, 2, 8, 0.10)
    assert len(times) == 8
    times, _ = common.settle(steps_from(slow), 2.55, 2, 2, 0.10)
    assert len(times) == 2
    times, _ = common.settle(steps_from(slow), 2.55, 0, 0, 0.10)
    assert times == []
