"""The TuRBO trust region's rules (grammar_rae/optimize/trust.py); the CLI run is in test_bo.py."""
import numpy as np
import pytest

from grammar_rae.optimize import trust


def test_failures_halve_the_length_after_the_failure_tolerance():
    # d = 25, batch 50: tolerance ⌈max(4, 25) / 50⌉ = 1; nothing beats an observed 0 when minimising
    assert trust.lengths(0.0, [[0.3, 1.0]] * 5, dim=25, batch=50, maximise=False) == [0.8, 0.4, 0.2, 0.1, 0.05, 0.025]
    # d = 56: tolerance 2, the length halves after every second failure
    assert trust.lengths(1.0, [[0.5]] * 4, dim=56, batch=50, maximise=True) == [0.8, 0.8, 0.4, 0.4, 0.2]


def test_three_successes_double_the_length_up_to_its_maximum():
    batches = [[2.0], [3.0], [4.0], [5.0], [6.0], [7.0], [0.0], [0.0]]
    assert trust.lengths(1.0, batches, dim=56, batch=50, maximise=True) == [0.8, 0.8, 0.8, 1.6, 1.6, 1.6, 1.6, 1.6,
                                                                              0.8]
    # a failure breaks a success streak (and the other way round)
    assert trust.lengths(1.0, [[2.0], [3.0], [0.0], [4.0]], dim=56, batch=50, maximise=True) == [0.8] * 5
    # a success breaks a failure streak (tolerance 2: fail, succeed, fail does not halve)
    assert trust.lengths(1000.0, [[999.0], [1002.0], [999.0]], dim=56, batch=50, maximise=True) == [0.8] * 4
    # an improvement of less than 10⁻³·|best| is a failure, maximising and minimising
    assert trust.lengths(1000.0, [[1000.5], [999.0]], dim=56, batch=50, maximise=True) == [0.8, 0.8, 0.4]
    assert trust.lengths(1.0, [[0.9995]], dim=4, batch=4, maximise=False) == [0.8, 0.4]
    assert trust.lengths(1.0, [[0.998]], dim=4, batch=4, maximise=False) == [0.8, 0.8]
    assert trust.lengths(-1.0, [[-1.0005]], dim=4, batch=4, maximise=False) == [0.8, 0.4]


def test_the_length_restarts_below_its_minimum():
    # tolerance 1: 0.8 / 2⁷ = 0.00625 < 0.5⁷ restarts at 0.8
    assert trust.lengths(0.0, [[1.0]] * 7, dim=4, batch=4, maximise=False) == [0.8, 0.4, 0.2, 0.1, 0.05, 0.025,
                                                                              0.0125, 0.8]


def test_the_box_is_shaped_by_the_lengthscales_and_clipped():
    lower, upper = np.array([0.0, -2.0, 0.0]), np.array([10.0, 2.0, 1.0])
    centre = np.array([5.0, 0.0, 0.5])
    # lengthscales in box units 0.1, 0.4, 0.2: geometric mean 0.2 -> weights 0.5, 2, 1
    lo, hi = trust.box(centre, 0.4, np.array([1.0, 1.6, 0.2]), lower, upper)
    np.testing.assert_allclose(hi - lo, [0.4 * 0.5 * 10, 0.4 * 2 * 4, 0.4 * 1 * 1])
    np.testing.assert_allclose((lo + hi) / 2, centre)
    # at the edge of the box the region is cut, not moved
    lo, hi = trust.box(np.array([9.5, 1.9, 0.0]), 0.4, np.array([1.0, 1.6, 0.2]), lower, upper)
    np.testing.assert_allclose(lo, [9.5 - 1.0, 1.9 - 1.6, 0.0])
    np.testing.assert_allclose(hi, [10.0, 2.0, 0.2])
    # an irrelevant dimension (huge lengthscale) is capped at twice the box's width before the rescaling
    lo, hi = trust.box(centre, 0.4, np.array([1.0, 1e6, 0.2]), lower, upper)
    assert hi[1] - lo[1] == pytest.approx(4.0) and hi[0] - lo[0] == pytest.approx(0.4 * 10 * 0.1 / (0.1 * 2 * 0.2) ** (1 / 3))
