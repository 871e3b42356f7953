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
    # exp(1000) overflows to inf: capped at 1000 at those points, as the GrammarVAE's run_bo.py does
    with np.errstate(over="ignore"):
        capped = np.minimum((np.exp(x ** 3) - y) ** 2, 1000)
    assert obj(["exp( x * x * x )"])[0] == pytest.approx(math.log1p(capped.mean())) and obj.valid(["exp( x * x * x )"])[0]
    bad = [None, "sin(", "x - x"]  # no decode, incomplete (raises SyntaxError), not the grammar's
    assert (obj(bad) == EXPR_INVALID).all() and not obj.valid(bad).any()
    gvae = get_objective("expr", scoring="gvae")
    assert not gvae.valid(["1 / ( 1 / 2 )"])[0] and gvae(["1 / ( 1 / 2 )"])[0] == EXPR_INVALID  # 1 / 0 raises


def test_gvae_scoring_divides_integers_as_python_2_did():
    ours, gvae = get_objective("expr"), get_objective("expr", scoring="gvae")
    target = "1 / 3 + x + sin( x * x )"
    assert ours([target])[0] == pytest.approx(0.0, abs=1e-12)
    assert gvae([target])[0] == pytest.approx(math.log1p(1 / 9))  # the GVAE paper's top score, 0.10
    x = np.linspace(-10, 10, 1000)
    y = 1 / 3 + x + np.sin(x * x)
    # ( 1 + 2 ) / 2 is 1 under integer division; 2 / x stays a float division
    assert gvae(["( 1 + 2 ) / 2 * x"])[0] == pytest.approx(math.log1p(np.mean(np.minimum((x - y) ** 2, 1000))))
    assert gvae(["2 / x"])[0] == pytest.approx(ours(["2 / x"])[0])
    assert gvae.key != ours.key  # BO caches tell the two apart


def test_other_targets_and_custom_objectives():
    obj = get_objective("expr", target="x * x")
    assert obj(["x * x"])[0] == 0.0 and obj(["x"])[0] > 0
    custom = get_objective("math:fsum")  # a callable on lists: fsum(["CCO"]) raises -> invalid
    assert custom(["CCO"])[0] == custom.invalid
    with pytest.raises(ValueError, match="unknown objective"):
        get_objective("solubility")
    with pytest.raises(ValueError, match="cannot load"):
        get_objective("no_such_module:f")
