"""The compact form of a grammar: unit productions (``A -> B``, one non-terminal) folded into their users.

A leftmost derivation spends many steps on choices that produce nothing by themselves: in the GrammarVAE's
SMILES grammar 47% of ZINC's derivation steps are unit productions (``chain -> branched_atom``,
``branched_atom -> atom``, ``atom -> aliphatic_organic``, ...). The standard unit-production elimination
(Hopcroft & Ullman, *Introduction to Automata Theory*, Thm. 4.4) gives every non-terminal ``A`` the
non-unit rules ``B -> alpha`` of each ``B`` that ``A`` reaches by unit rules alone, as ``A -> alpha``, and
drops the unit rules. The language is unchanged, and so is ambiguity: each parse tree of the compact
grammar is a tree of the original with its unit chains collapsed, and back. A decoder then takes one step
where it took a chain: ZINC250k's derivations fall from 129.6 rules to 68.5 on average.

Each compact rule remembers the original rules it stands for (``expansion``): ``A -> alpha`` made from
the chain ``A -> B -> ... -> C`` and ``C -> alpha`` expands to those rules in order, so a compact
derivation maps back to the original's leftmost derivation rule for rule (:meth:`CompactGrammar.expand`).

Nothing here is written by hand for SMILES: the compact grammar is derived from ``grammars/*.cfg``
whenever it is asked for (``load_grammar("smiles", form="compact")``), and a run directory stores its
text (``grammar.cfg``) like any other grammar's.
"""
from __future__ import annotations

import json
import re

import numpy as np

from .cfg import PADDING_PRODUCTION, Grammar, GrammarError

FORMS = ("original", "compact")
_EXPANSION_DIRECTIVE = "@expansion"


def _quote(terminal: str) -> str:
    return f"'{terminal}'" if "'" not in terminal else f'"{terminal}"'


def compact_text(grammar: Grammar) -> str:
    """The text of ``grammar``'s compact form: a ``.cfg`` file whose comment header names its source (by
    sha256) and records, per rule, the original rules it expands to (``# @expansion``, a JSON list)."""
    import nltk

    prods = grammar.nltk_productions[: grammar.padding_index]
    by_lhs: dict = {}
    for i, p in enumerate(prods):
        by_lhs.setdefault(p.lhs(), []).append(i)
    has_rules = set(by_lhs)

    def is_unit(p) -> bool:
        return len(p.rhs()) == 1 and isinstance(p.rhs()[0], nltk.Nonterminal)

    def closure(a, seen=()):
        """(chain of unit rules, final non-unit rule) for each way ``a`` derives a non-unit rule, in
        the order of the original rules."""
        if a in seen:
            raise GrammarError(f"{grammar.name}: the unit productions of {a} form a cycle; it has no compact form")
        out = []
        for i in by_lhs.get(a, []):
            p = prods[i]
            if is_unit(p):
                out += [((i,) + chain, final) for chain, final in closure(p.rhs()[0], seen + (a,))]
            else:
                out.append(((), i))
        return out

    def completes(p) -> bool:   # a rule using a non-terminal without rules (SMILES' `class`) never completes
        return all(not isinstance(s, nltk.Nonterminal) or s in has_rules for s in p.rhs())

    start = grammar.nltk_grammar.start()
    rules: dict = {}
    order, todo = [start], [start]
    while todo:   # the non-terminals the start symbol reaches in the compact grammar, in order of first use
        a = todo.pop(0)
        rules[a] = [(chain + (final,), prods[final]) for chain, final in closure(a) if completes(prods[final])]
        for _, p in rules[a]:
            for s in p.rhs():
                if isinstance(s, nltk.Nonterminal) and s not in rules and s not in todo:
                    todo.append(s)
                    order.append(s)
    lines = [f"# The compact form of {grammar.name} (sha256 {grammar.sha256}): its unit productions folded into",
             "# their users (grammar_rae/grammar/compact.py). Generated, not edited by hand: each rule's expansion",
             "# into the original rules is the JSON list below, one entry per rule in order.",
             f"# @token_separator {json.dumps(grammar.token_separator)}"]
    expansion = []
    for a in order:
        for exp, p in rules[a]:
            rhs = " ".join(_quote(s) if isinstance(s, str) else s.symbol() for s in p.rhs())
            lines.append(f"{a.symbol()} -> {rhs}")
            expansion.append(list(exp))
    lines.append(PADDING_PRODUCTION)
    expansion.append([grammar.padding_index])
    lines.insert(4, f"# {_EXPANSION_DIRECTIVE} {json.dumps(expansion, separators=(',', ':'))}")
    return "\n".join(lines) + "\n"


class CompactGrammar(Grammar):
    """A grammar derived by :func:`compact_text`, with its map back to the original rules.

    ``expansion[r]``: the original rule indices compact rule ``r`` stands for (padding: the original's
    padding rule); ``original``: the source grammar, when known (it is needed only to derive strings the
    long way, which :meth:`expand` makes possible)."""

    def __init__(self, text: str, name: str = "grammar", path: str | None = None, original: Grammar | None = None):
        super().__init__(text, name=name, path=path)
        found = [m.group(1) for line in text.splitlines()
                 if (m := re.match(rf"\s*#\s*{_EXPANSION_DIRECTIVE}\s+(.*\S)\s*$", line))]
        if len(found) != 1:
            raise GrammarError(f"{name}: a compact grammar carries exactly one '# {_EXPANSION_DIRECTIVE}' line")
        try:
            self.expansion: list[tuple[int, ...]] = [tuple(int(i) for i in e) for e in json.loads(found[0])]
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            raise GrammarError(f"{name}: its {_EXPANSION_DIRECTIVE} line is not a JSON list of rule lists: {e}") from e
        if len(self.expansion) != self.n_rules:
            raise GrammarError(f"{name}: {len(self.expansion)} expansions for {self.n_rules} rules")
        self.original = original
        width = max(len(e) for e in self.expansion)
        # [R, width] original rule indices, -1 after each rule's own (a vectorised expand)
        self.expansion_table = np.full((self.n_rules, width), -1, dtype=np.int64)
        for r, e in enumerate(self.expansion):
            self.expansion_table[r, : len(e)] = e

    def expand(self, rules) -> list[int]:
        """The original grammar's leftmost derivation of the string a compact derivation ``rules`` derives
        (padding and anything after it dropped)."""
        out: list[int] = []
        for r in rules:
            r = int(r)
            if r == self.padding_index:
                break
            out += self.expansion[r]
        return out


def is_compact(grammar: Grammar) -> bool:
    return isinstance(grammar, CompactGrammar)


def compact_grammar(grammar: Grammar) -> CompactGrammar:
    """The compact form of ``grammar`` (cached per source grammar)."""
    if grammar.sha256 not in _COMPACT:
        _COMPACT[grammar.sha256] = CompactGrammar(compact_text(grammar), name=f"{grammar.name}-compact",
                                                  original=grammar)
    return _COMPACT[grammar.sha256]


def grammar_from_text(text: str, name: str, path: str | None = None) -> Grammar:
    """A grammar from its file text: compact (it carries an expansion line) or plain."""
    if re.search(rf"^\s*#\s*{_EXPANSION_DIRECTIVE}\s", text, re.M):
        return CompactGrammar(text, name=name, path=path)
    return Grammar(text, name=name, path=path)


_COMPACT: dict[str, CompactGrammar] = {}
