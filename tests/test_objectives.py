"""Objectives match hand-computed values; invalid input gets the invalid score, never a crash."""
import math

import numpy as np
import pytest

from grammar_rae.optimize.objectives import (CYCLE_MEAN, CYCLE_STD, EXPR_INVALID, LOGP_MEAN, LOGP_STD, SA_MEAN,
                                             SA_STD, get_objective, largest_ring_penalty)


def test_penalized_logp_by_hand():
    from rdkit import Chem
    from rdkit.Chem import Crippen

    from grammar_rae.chem import sa_score

    obj = get_objective("logp")
    for s in ["CCO", "c1ccccc1", "C1CCCCCCCC1"]:  # the last has a 9-ring: cycle penalty 3
        m = Chem.MolFromSmiles(s)
        cyc = 3.0 if s.startswith("C1CCCCCCCC1") else 0.0
        assert largest_ring_penalty(m) == cyc
        want = ((Crippen.MolLogP(m) - LOGP_MEAN) / LOGP_STD + (-sa_score(m) - SA_MEAN) / SA_STD
                + (-cyc - CYCLE_MEAN) / CYCLE_STD)
        assert obj([s])[0] == pytest.approx(want)
    assert obj.higher_is_better


def test_invalid_molecules_get_the_invalid_score():
    obj = get_objective("logp")
    out = obj([None, "", "C1CC", "not smiles", "CCO"])
    assert (out[:4] == obj.invalid).all() and np.isfinite(out[4]) and out[4] > obj.invalid


def test_expression_score_by_hand():
    obj = get_objective("expr")
    assert not obj.higher_is_better
    assert obj(["1 / 3 + x + sin( x * x )"])[0] == pytest.approx(0.0, abs=1e-12)
    x = np.linspace(-10, 10, 1000)
    y = 1 / 3 + x + np.sin(x * x)
    assert obj(["x"])[0] == pytest.approx(math.log1p(np.mean(np.minimum((x - y) ** 2, 1000))))
    big = obj(["exp( x * x * x )"])[0]  # exp(1000) overflows to inf: the invalid score
    assert big == pytest.approx(EXPR_INVALID)
    assert (obj([None, "sin(", "x / ( x - x )"]) == EXPR_INVALID).all()


def test_other_targets_and_custom_objectives():
    obj = get_objective("expr", target="x * x")
    assert obj(["x * x"])[0] == 0.0 and obj(["x"])[0] > 0
    custom = get_objective("math:fsum")  # a callable on lists: fsum(["CCO"]) raises -> invalid
    assert custom(["CCO"])[0] == custom.invalid
    with pytest.raises(ValueError, match="unknown objective"):
        get_objective("solubility")
    with pytest.raises(ValueError, match="cannot load"):
        get_objective("no_such_module:f")
