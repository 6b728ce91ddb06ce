"""The Pareto front of ``tflq auto``'s trials: the candidates no other measured candidate beats on both accuracy and
cost (size, or latency when timed)."""
from __future__ import annotations

from collections.abc import Sequence


def front(points: Sequence[tuple[float | None, float | None]]) -> set[int]:
    """The indices of the ``(score, cost)`` points on the Pareto front: higher score and lower cost are better.

    A point with a None is not measured and is never on the front. A point is on it when no other point has a
    score at least as high and a cost at least as low, with one of the two strictly better (equal points are both
    on it)."""
    measured = [
        (index, score, cost) for index, (score, cost) in enumerate(points) if score is not None and cost is not None
    ]
    found = set()
    for index, score, cost in measured:
        beaten = any(
            other_score >= score and other_cost <= cost and (other_score > score or other_cost < cost)
            for other, other_score, other_cost in measured
            if other != index
        )
        if not beaten:
            found.add(index)
    return found
