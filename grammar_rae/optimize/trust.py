"""A trust region for the BO loop: TuRBO-1 (Eriksson et al. 2019, "Scalable global optimization via
local Bayesian optimization", Sec. 2), with that paper's constants, fixed before any run here.

EI searches a hyper-rectangle centred at the best point observed so far instead of the whole box.
In units of the acquisition box (TuRBO's unit cube) its side along dimension i is
L · λ_i / (Π_j λ_j)^(1/d), with λ_i the GP's ARD lengthscale over the box's width, clipped (after
the fit) to [0.005, 2], TuRBO's lengthscale bounds: the region's volume is L^d of the box's whatever
the lengthscales, longer where the objective varies slowly. The rectangle is clipped to the box.

L starts at 0.8. A batch *succeeds* when its best beats the best so far by more than 10⁻³·|best|.
After τ_succ = 3 successes in a row L doubles (at most 1.6); after τ_fail = ⌈max(4, d) / batch⌉
failures in a row it halves; below 0.5⁷ it restarts at 0.8.

Where this differs from TuRBO-1, on purpose: the points are chosen by the protocol's batched greedy EI
(posterior-mean incumbent; ``acquisition.py``) inside the region, not by Thompson sampling; the GP is
the protocol's global sparse GP on all the data, not an exact GP on the region's points since the
last restart; and a restart keeps the data and the centre (the best point so far) instead of drawing
a fresh design.
"""
from __future__ import annotations

import math

import numpy as np

L_INIT, L_MIN, L_MAX = 0.8, 0.5 ** 7, 1.6
SUCCESS_TOLERANCE = 3
LENGTHSCALE_BOUNDS = (0.005, 2.0)


def lengths(best: float, batches: list[list[float]], dim: int, batch: int, maximise: bool) -> list[float]:
    """L before each iteration: ``len(batches) + 1`` values, replayed from the best training score
    and the scores of each finished batch (invalid points carry the worst score), so a resumed run
    searches the same regions as an uninterrupted one."""
    sign = 1.0 if maximise else -1.0
    fail_tolerance = math.ceil(max(4, dim) / batch)
    length, successes, failures, best = L_INIT, 0, 0, sign * best
    out = [length]
    for scores in batches:
        top = max((sign * s for s in scores), default=-math.inf)
        if top > best + 1e-3 * abs(best):
            successes, failures = successes + 1, 0
        else:
            successes, failures = 0, failures + 1
        best = max(best, top)
        if successes == SUCCESS_TOLERANCE:
            length, successes = min(2.0 * length, L_MAX), 0
        elif failures == fail_tolerance:
            length, failures = length / 2.0, 0
        if length < L_MIN:  # restart (module docstring: around the same best point, with the same data)
            length, successes, failures = L_INIT, 0, 0
        out.append(length)
    return out


def box(center: np.ndarray, length: float, lengthscale: np.ndarray, lower: np.ndarray, upper: np.ndarray):
    """The trust region's (lower, upper) around ``center`` inside the box [lower, upper]."""
    width = np.maximum(np.asarray(upper, float) - np.asarray(lower, float), 1e-12)
    w = np.clip(np.asarray(lengthscale, float) / width, *LENGTHSCALE_BOUNDS)
    w = w / np.exp(np.log(w).mean())  # geometric mean 1: the volume is length^d
    half = 0.5 * length * w * width
    return np.maximum(center - half, lower), np.minimum(center + half, upper)
