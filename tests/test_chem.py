"""Molecule metrics: definitions checked on molecules whose answers are known."""
import math

import pytest

from grammar_rae import chem

REF = ["CCO", "c1ccccc1", "CC(=O)Nc1ccc(O)cc1", "CC(C)Cc1ccc(cc1)C(C)C(=O)O", "O=C(O)c1ccccc1OC(C)=O",
       "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "C1CCCCC1", "CCN(CC)CC"]


def test_identical_sets_score_as_identical():
    m = chem.molecule_metrics(REF, REF, with_fcd=False)
    assert m["n_valid"] == len(REF)
    assert m["SNN"] == pytest.approx(1.0) and m["Frag"] == pytest.approx(1.0) and m["Scaf"] == pytest.approx(1.0)
    assert all(m[f"W1_{k}"] == pytest.approx(0.0, abs=1e-12) for k in ("logP", "SA", "QED", "MW"))


def test_internal_diversity_of_copies_is_zero_and_of_distinct_molecules_positive():
    assert chem.internal_diversity(chem.mols(["CCO"] * 5)) == pytest.approx(0.0)
    assert chem.internal_diversity(chem.mols(REF)) > 0.5


def test_invalid_smiles_are_dropped_and_properties_match_rdkit():
    from rdkit.Chem import Crippen, Descriptors

    ms = chem.mols(["CCO", "C1CC", None, "not a smiles"])
    assert len(ms) == 1
    p = chem.properties(ms)
    assert p["logP"][0] == pytest.approx(Crippen.MolLogP(ms[0]))
    assert p["MW"][0] == pytest.approx(Descriptors.MolWt(ms[0]))
    assert 1 <= p["SA"][0] <= 10 and 0 < p["QED"][0] < 1


def test_fcd_is_zero_on_a_set_against_itself_and_positive_against_another():
    pytest.importorskip("fcd_torch")
    assert chem.fcd(REF, REF) == pytest.approx(0.0, abs=1e-3)
    assert chem.fcd(REF, ["C" * n for n in range(2, 10)]) > 1.0
    assert math.isnan(chem.fcd(["CCO"], REF))
