"""The compact grammar form (grammar/compact.py): derived from a grammar file by unit-production
elimination, the same strings in fewer steps, parsed exactly (NLTK's ChartParser on the derived grammar
is the reference) and mapped back rule for rule to the original grammar's derivations."""
from pathlib import Path

import nltk
import pytest

from conftest import write
from grammar_rae import ParseError, load_grammar
from grammar_rae.grammar import GrammarError
from grammar_rae.grammar.compact import CompactGrammar, compact_grammar, compact_text, grammar_from_text
from grammar_rae.grammar.reference import nltk_parse

FIXTURES = Path(__file__).parent / "fixtures"


def lines(name):
    return [l.strip() for l in (FIXTURES / name).read_text().splitlines() if l.strip()]


def test_a_small_grammar_compacts_as_unit_elimination_says(tmp_path):
    # S -> A 'b' | A ; A -> 'a' | B ; B -> 'c': the unit chains S -> A -> 'a' and S -> A -> B -> 'c' fold
    g = load_grammar(write(tmp_path, "S -> A 'b' | A\nA -> 'a' | B\nB -> 'c'\n"))
    c = compact_grammar(g)
    assert c.productions == ["S -> A 'b'", "S -> 'a'", "S -> 'c'", "A -> 'a'", "A -> 'c'", "Nothing -> None"]
    # the original rules (S -> A 'b' = 0, S -> A = 1, A -> 'a' = 2, A -> B = 3, B -> 'c' = 4, padding 5)
    assert c.expansion == [(0,), (1, 2), (1, 3, 4), (2,), (3, 4), (5,)]
    assert "B" not in c.lhs_list   # only reached through unit rules: gone
    for s in ["a", "c", "ab", "cb"]:
        assert c.derive(c.parse(s)) == s
        assert c.expand(c.parse(s)) == g.parse(s)
    assert len(c.parse("c")) == 1 and len(g.parse("c")) == 3


def test_a_cycle_of_unit_productions_is_refused(tmp_path):
    g = load_grammar(write(tmp_path, "S -> A | 'x'\nA -> S | 'y'\n"))
    with pytest.raises(GrammarError, match="cycle"):
        compact_text(g)


def test_compact_smiles_has_no_unit_productions_and_no_dead_rules(smiles, smiles_compact):
    prods = smiles_compact.nltk_productions[: smiles_compact.padding_index]
    units = [p for p in prods if len(p.rhs()) == 1 and isinstance(p.rhs()[0], nltk.Nonterminal)]
    assert not units
    # every rule can be decoded: the original's rules on `class` (a non-terminal without rules) are dropped
    assert smiles_compact.decoding_mask.sum() == smiles_compact.n_rules
    assert not smiles.decoding_mask.any(0).all()
    assert smiles_compact.name == "smiles-compact" and smiles_compact.original is smiles
    # each rule expands to original rules that chain: the first's LHS is the compact rule's LHS, the last
    # one's right-hand side is the compact rule's
    for r, exp in enumerate(smiles_compact.expansion[:-1]):
        first, last = smiles.productions[exp[0]], smiles.productions[exp[-1]]
        lhs, rhs = smiles_compact.productions[r].split(" -> ")
        assert first.split(" -> ")[0] == lhs and last.split(" -> ")[1] == rhs


@pytest.mark.parametrize("s", lines("molecules.smi"))
def test_compact_parse_matches_nltk_on_the_derived_grammar(smiles, smiles_compact, s):
    try:
        want = smiles.parse(s)
    except ParseError:
        with pytest.raises(ParseError):
            smiles_compact.parse(s)
        return
    got = smiles_compact.parse(s)
    assert got == nltk_parse(smiles_compact, s)
    assert smiles_compact.derive(got) == s
    assert smiles_compact.expand(got) == want


def test_zinc_derivations_halve_and_expand_to_the_originals(smiles, smiles_compact):
    mols = lines("zinc_train_200.smi")
    ours = smiles.parse_many(mols)
    short = smiles_compact.parse_many(mols)
    assert all(smiles_compact.expand(c) == o for c, o in zip(short, ours))
    assert all(smiles_compact.derive(c) == s for c, s in zip(short, mols))
    ratio = sum(map(len, short)) / sum(map(len, ours))
    assert 0.45 < ratio < 0.6   # measured on all of ZINC250k: 68.5 / 129.6 = 0.53


def test_the_text_carries_its_expansion_and_refuses_a_damaged_one(smiles, smiles_compact, tmp_path):
    text = compact_text(smiles)
    assert f"sha256 {smiles.sha256}" in text
    again = grammar_from_text(text, name="smiles-compact")
    assert isinstance(again, CompactGrammar) and again.expansion == smiles_compact.expansion
    assert again.sha256 == smiles_compact.sha256 and again.original is None
    assert not isinstance(grammar_from_text(smiles.text, name="smiles"), CompactGrammar)
    head, _, tail = text.partition("# @expansion ")
    with pytest.raises(GrammarError, match="expansions for"):
        CompactGrammar(head + "# @expansion [[0]]\n" + tail.split("\n", 1)[1], name="bad")
    with pytest.raises(GrammarError, match="not a JSON list"):
        CompactGrammar(head + "# @expansion [[0]\n" + tail.split("\n", 1)[1], name="bad")
