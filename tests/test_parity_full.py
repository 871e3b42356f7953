"""Exactness over the whole reference data (slow: the NLTK reference runs at ~40 molecules/s
a core, about an hour for ZINC250k on 2 cores). Run with: pytest -m slow tests/test_parity_full.py"""
import time

import pytest

from grammar_rae.grammar.parallel import parse_many
from conftest import EXPRESSIONS, ZINC, need


def read_lines(path):
    with open(path) as f:
        return [line.rstrip("\r\n") for line in f]


@pytest.mark.slow
@pytest.mark.parametrize("name,path,n_rules,max_len", [
    ("expr", EXPRESSIONS, 12, 15),  # GVAE pads expressions to 15 steps
    ("smiles", ZINC, 76, 277),
    ("smiles_compact", ZINC, 183, 159),  # the derived compact grammar (grammar/compact.py)
])
def test_parity_with_nltk_on_every_string(name, path, n_rules, max_len, request):
    g = request.getfixturevalue(name)
    strings = read_lines(need(path))
    if name.startswith("smiles"):
        strings = [s.strip() for s in strings]
    assert len(g.productions) == n_rules
    t0 = time.time()
    ours = g.parse_many(strings, workers=0)
    t_ours = time.time() - t0
    assert g.max_length(ours) <= max_len if name == "expr" else g.max_length(ours) == max_len
    bad_derive = [i for i, (seq, s) in enumerate(zip(ours, strings)) if g.derive(seq) != s]
    assert not bad_derive, f"derive(parse(s)) != s for rows {bad_derive[:10]}"
    t0 = time.time()
    ref = parse_many(g, strings, workers=0, method="nltk", progress=True, chunk_size=500)
    t_ref = time.time() - t0
    mismatch = [i for i, (a, b) in enumerate(zip(ours, ref)) if a != b]
    print(f"\n{name}: {len(strings)} strings; ours {t_ours:.1f}s, NLTK ChartParser {t_ref:.1f}s; "
          f"{len(mismatch)} mismatches")
    assert not mismatch, f"rows differing from NLTK: {mismatch[:10]}"
