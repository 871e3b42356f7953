"""The search regions behind one interface (optimize/regions.py): what each gives the loop."""
import numpy as np
import pytest
import torch

from grammar_rae.errors import ConfigError
from grammar_rae.optimize.config import GPConfig
from grammar_rae.optimize.regions import REGIONS, make_region


class FakeGP:
    """What a region reads of the fitted GP: its ARD lengthscales."""

    def __init__(self, lengthscales):
        self.log_lengthscale = torch.log(torch.as_tensor(lengthscales, dtype=torch.float64))


def state_with(scores_per_iteration, lengths=None):
    its = [{"evaluations": [{"score": s} for s in scores]} for scores in scores_per_iteration]
    for it, length in zip(its, lengths or []):
        it["trust"] = {"length": length}
    return {"iterations": its}


BOX = (np.zeros(3), np.full(3, 4.0))
X = np.array([[2.0, 1.8, 2.2], [2.0, 2.0, 2.0], [0.5, 0.5, 3.5]])   # no trust box reaches the edge
Y = np.array([0.1, 0.9, 0.3])


def test_every_configurable_region_has_one_class():
    assert set(REGIONS) == {"box", "density", "trust"}
    for name in REGIONS:
        c = GPConfig(region=name)
        assert make_region(c, seed=1, batch=5, maximise=True, iterations=3).name == name


def test_the_box_searches_the_box_and_records_nothing():
    r = make_region(GPConfig(), 1, 5, True, 3)
    r.start(X, float(Y.max()), state_with([]))
    assert r.bounds(BOX, FakeGP([1, 1, 1]), X, Y, state_with([])) is BOX
    assert r.record(BOX, state_with([])) == {} and r.density is None and r.threshold is None


def test_the_trust_region_is_centred_at_the_best_point_and_recorded():
    r = make_region(GPConfig(region="trust"), 1, 5, True, 3)
    state = state_with([])
    r.start(X, float(Y.max()), state)
    lo, hi = r.bounds(BOX, FakeGP([1.0, 1.0, 1.0]), X, Y, state)
    np.testing.assert_allclose((lo + hi) / 2, X[1])          # the best point (0.9), side 0.8 of the box
    np.testing.assert_allclose(hi - lo, 0.8 * 4.0)
    assert r.record((lo, hi), state)["trust"]["length"] == 0.8
    minimise = make_region(GPConfig(region="trust"), 1, 5, False, 3)
    minimise.start(X, float(Y.min()), state)
    lo, hi = minimise.bounds(BOX, FakeGP([1.0, 1.0, 1.0]), X, Y, state)
    np.testing.assert_allclose((lo + hi) / 2, X[0])


def test_a_trust_run_whose_recorded_lengths_its_scores_do_not_give_is_refused():
    good = state_with([[0.1] * 5], lengths=[0.8])
    make_region(GPConfig(region="trust"), 1, 5, True, 3).start(X, 0.9, good)
    with pytest.raises(ConfigError, match="seed-1.json: the trust region lengths it records differ"):
        make_region(GPConfig(region="trust"), 1, 5, True, 3).start(X, 0.9, state_with([[0.1] * 5], [0.4]),
                                                                   "bo/state/seed-1.json")


def test_the_density_region_is_fitted_only_when_an_iteration_is_left(monkeypatch):
    import grammar_rae.optimize.regions as R

    fits = []
    monkeypatch.setattr(R, "fit_density_region", lambda codes, q, seed, rows: fits.append((q, seed)) or ("q", -1.0))
    done = make_region(GPConfig(region="density", region_quantile=0.05), 2, 5, True, 1)
    done.start(X, 0.9, state_with([[0.1] * 5]))
    assert fits == [] and done.density is None
    todo = make_region(GPConfig(region="density", region_quantile=0.05), 2, 5, True, 2)
    todo.start(X, 0.9, state_with([[0.1] * 5]))
    assert fits == [(0.05, 2)] and (todo.density, todo.threshold) == ("q", -1.0)
