"""Metrics compute what their definitions say."""
import numpy as np

from grammar_rae.metrics import canonical_smiles, expression_curves, generation_metrics


def test_molecule_metrics_use_canonical_smiles():
    strings = ["CCO", "OCC", "c1ccccc1", None, "C1CC", "CCN"]  # C1CC: grammar-complete, not a molecule
    m = generation_metrics(strings, molecules=True, training=["OCC"])
    assert m["n"] == 6 and m["grammar_complete"] == 5 / 6
    assert m["validity"] == 4 / 6                    # CCO, OCC, benzene, CCN
    assert m["uniqueness"] == 3 / 4                  # CCO == OCC
    assert m["novelty"] == 2 / 3                     # ethanol is in the training set
    assert canonical_smiles("C1CC") is None and canonical_smiles("OCC") == canonical_smiles("CCO")


def test_expression_metrics_compare_strings():
    m = generation_metrics(["x + 1", "x + 1", "1 + x", None], molecules=False, training=["1 + x"])
    assert m["validity"] == 0.75 and m["uniqueness"] == 2 / 3 and m["novelty"] == 0.5


def test_expression_curves():
    x, ys = expression_curves(["x * x", "sin( x )", "exp( x * x * x )", "1 / ( x - x )", "__import__('os')", None])
    assert np.allclose(ys[0], x * x) and np.allclose(ys[1], np.sin(x))
    assert ys[2] is None and ys[3] is None      # overflow, division by zero: not finite
    assert ys[4] is None and ys[5] is None      # not an expression of the grammar: never evaluated
