"""The grammar layer: tables derived from the file, exact parsing, derivation, errors."""
import pytest
from hypothesis import given, settings, strategies as st

from conftest import write
from grammar_rae import ParseError, load_grammar
from grammar_rae.grammar import GrammarError
from grammar_rae.grammar.reference import nltk_parse
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_molecules():
    return [l.strip() for l in (FIXTURES / "molecules.smi").read_text().splitlines() if l.strip()]


def test_smiles_tables_follow_the_published_order(smiles):
    assert len(smiles.productions) == 76
    assert smiles.productions[0] == "smiles -> chain"
    assert smiles.productions[-1] == "Nothing -> None" and smiles.padding_index == 75
    assert smiles.productions.index("aliphatic_organic -> 'C'") == 5
    assert smiles.productions.index("aliphatic_organic -> 'Cl'") == 12
    assert smiles.productions[-2] == "chain -> chain bond branched_atom"
    assert len(smiles.lhs_list) == 23 and smiles.lhs_list[0] == "smiles"
    assert smiles.start_symbol == "smiles"
    assert {"Cl", "Br", "@@", "\\"} <= set(smiles.terminals)


def test_masks_select_exactly_the_rules_of_each_lhs(smiles):
    m = smiles.lhs_mask
    assert m.shape == (23, 76)
    assert (m.sum(axis=0) == 1).all(), "each rule belongs to one LHS"
    for r, prod in enumerate(smiles.productions):
        assert smiles.lhs_list[smiles.rule_lhs[r]] == prod.split(" -> ")[0]
        assert m[smiles.rule_lhs[r], r]
    assert m[smiles.lhs_list.index("aliphatic_organic")].sum() == 10
    # rules that need `class` (no productions) push a non-terminal that can never expand
    r = smiles.productions.index("BACH -> charge class")
    assert smiles.rule_rhs_nonterminals[r] == (smiles.lhs_list.index("charge"), -1)
    assert smiles.lhs_mask[:, r].any() and not smiles.decoding_mask[:, r].any()
    assert (smiles.decoding_mask.sum() == 76 - 2) and smiles.rule_rhs_nonterminals[-1] == ()


def test_expression_grammar(expr):
    assert len(expr.productions) == 12
    assert expr.productions[5] == "T -> 'sin(' S ')'"
    assert expr.lhs_list == ["S", "T", "Nothing"]
    assert expr.tokenize("sin( x*x )") == ["sin(", "x", "*", "x", ")"]


def test_tokenizer_takes_longest_terminals(smiles):
    assert smiles.tokenize("ClC[C@@H]Br") == ["Cl", "C", "[", "C", "@@", "H", "]", "Br"]
    with pytest.raises(ParseError) as e:
        smiles.tokenize("CC X")
    assert e.value.position == 2


@pytest.mark.parametrize("s", fixture_molecules())
def test_parse_matches_nltk_and_round_trips(smiles, s):
    try:
        ref = nltk_parse(smiles, s)
    except ParseError:
        with pytest.raises(ParseError):
            smiles.parse(s)
        return
    assert smiles.parse(s) == ref
    assert smiles.parser.parse_python(s) == ref
    assert smiles.derive(ref) == s


def test_fixture_has_valid_and_invalid_strings(smiles):
    ok = bad = 0
    for s in fixture_molecules():
        try:
            smiles.parse(s)
            ok += 1
        except ParseError:
            bad += 1
    assert ok >= 25 and bad >= 1  # 'C%10' (two-digit ring bond) is outside the GVAE grammar


@pytest.mark.parametrize("s,pos,word", [
    ("CC(", 3, "end of input"),
    ("C==C", 2, "'='"),
    ("C)", 1, "')'"),
    ("", 0, "end of input"),
    ("C[C@@H", 6, "end of input"),
    ("CCq", 2, "unknown character"),
])
def test_parse_errors_say_where_and_why(smiles, s, pos, word):
    with pytest.raises(ParseError) as e:
        smiles.parse(s)
    assert e.value.position == pos and word in e.value.reason
    assert s in str(e.value)


def test_expression_errors(expr):
    with pytest.raises(ParseError) as e:
        expr.parse("x + ")
    assert e.value.position == 4 and "end of input" in e.value.reason
    with pytest.raises(ParseError):
        expr.parse("sin x")


def test_derive_checks_its_input(smiles, expr):
    seq = expr.parse("x + 1")
    assert expr.derive(seq + [expr.padding_index] * 5) == "x + 1"
    with pytest.raises(ValueError, match="incomplete"):
        expr.derive(seq[:-1])
    with pytest.raises(ValueError, match="does not expand"):
        expr.derive([4])  # T-rule where S is open
    with pytest.raises(ValueError, match="not a production"):
        expr.derive([99])
    with pytest.raises(ValueError, match="follows a complete"):
        expr.derive(seq + [7])
    assert expr.derive_many([seq, expr.parse("3")]) == ["x + 1", "3"]


def test_c_and_python_drivers_agree_on_expressions(expr):
    from grammar_rae.data.expressions import generate_expressions

    strings = generate_expressions(300, seed=3)
    for s in strings:
        assert expr.parse(s) == expr.parser.parse_python(s) == nltk_parse(expr, s)


def test_c_driver_is_built(smiles):
    # The install builds it; the pure-Python driver is only a fallback for machines without a compiler.
    import shutil
    import sysconfig

    if not shutil.which(sysconfig.get_config_var("CC").split()[0] if sysconfig.get_config_var("CC") else "cc"):
        pytest.skip("no C compiler on this machine: the pure-Python parser is used (README: C compiler optional)")
    assert smiles.parser.accelerated


def test_parse_many_workers_and_errors(smiles):
    mols = fixture_molecules()
    one, err1 = smiles.parse_many(mols, workers=1, on_error="skip")
    two, err2 = smiles.parse_many(mols * 3, workers=2, on_error="skip", chunk_size=7)
    assert two == one * 3
    assert [i for i, _ in err1] == [i for i, r in enumerate(one) if r is None]
    assert len(err2) == 3 * len(err1)
    with pytest.raises(ParseError):
        smiles.parse_many(mols, workers=1)


# ------------------------------------------------------------------ any grammar file works
def test_user_grammar_file_without_python(tmp_path):
    g = load_grammar(write(tmp_path, "# @token_separator \" \"\nS -> '(' S ')' S | 'a'\n"))
    assert g.productions[-1] == "Nothing -> None"  # padding appended
    for s in ["a", "( a ) a", "( ( a ) a ) a"]:
        assert g.parse(s) == nltk_parse(g, s)
        assert g.derive(g.parse(s)) == s
    with pytest.raises(ParseError):
        g.parse("( a")


def test_ambiguous_grammar_gives_nltks_first_tree(tmp_path):
    g = load_grammar(write(tmp_path, "E -> E '+' E | E '*' E | 'a'\n"))
    for s in ["a", "a+a", "a+a*a", "a*a+a*a"]:
        assert g.parse(s) == nltk_parse(g, s)
    assert g.parser.n_conflicts > 0


def test_bad_grammar_files(tmp_path):
    with pytest.raises(GrammarError):
        load_grammar(write(tmp_path, "# only comments\n"))
    with pytest.raises(GrammarError):
        load_grammar(write(tmp_path, "S -> 'a' |\nthis is not a rule\n"))
    with pytest.raises(GrammarError, match="must be last"):
        load_grammar(write(tmp_path, "Nothing -> None\nS -> 'a'\n"))
    with pytest.raises(FileNotFoundError, match="shipped grammars"):
        load_grammar("no-such-grammar")


# ------------------------------------------------------------------ fuzzing against NLTK
SMILES_ALPHABET = list("CNOScnos()[]=#-+/\\123@H") + ["Cl", "Br", "@@"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(SMILES_ALPHABET), max_size=14).map("".join))
def test_fuzz_random_smiles_match_nltk_or_raise(smiles, s):
    check_against_nltk(smiles, s)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(fixture_molecules()), st.integers(0, 40), st.sampled_from(SMILES_ALPHABET + [""]),
       st.sampled_from(["insert", "delete", "replace"]))
def test_fuzz_mutated_molecules_match_nltk_or_raise(smiles, base, i, tok, op):
    i = min(i, len(base))
    s = {"insert": base[:i] + tok + base[i:], "delete": base[:i] + base[i + 1:],
         "replace": base[:i] + tok + base[i + 1:]}[op]
    check_against_nltk(smiles, s)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["x", "1", "2", "3", "+", "*", "/", "(", ")", "sin(", "exp("]), max_size=12)
       .map(" ".join))
def test_fuzz_expressions_match_nltk_or_raise(expr, s):
    check_against_nltk(expr, s)


def check_against_nltk(g, s):
    try:
        ref = nltk_parse(g, s)
    except ParseError:
        ref = None
    for parse in (g.parse, g.parser.parse_python):
        if ref is None:
            with pytest.raises(ParseError):
                parse(s)
        else:
            assert parse(s) == ref


def test_shipped_grammars_are_found_in_a_source_checkout_that_is_not_installed(monkeypatch):
    """On a bare machine (PYTHONPATH=., no pip install) the package-data mapping is absent."""
    import grammar_rae.grammar.cfg as cfg

    def not_installed(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(cfg.resources, "files", not_installed)
    assert cfg.builtin_grammars() == ["expr", "smiles"]
    assert cfg.load_grammar("expr").name == "expr"
