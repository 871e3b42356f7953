"""The arithmetic-expression set: load the GrammarVAE file, or generate a fresh one by sampling
random leftmost derivations of any grammar within a step limit (GrammarVAE: 15 rules)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..grammar import Grammar, load_grammar


def load_expressions(path: str | Path) -> list[str]:
    """One expression a line (blank lines dropped)."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def min_derivation_lengths(grammar: Grammar) -> np.ndarray:
    """Fewest rules that complete each LHS (inf where it can never complete, e.g. SMILES ``class``)."""
    n_lhs = len(grammar.lhs_list)
    best = np.full(n_lhs, np.inf)
    changed = True
    while changed:
        changed = False
        for r in range(grammar.padding_index):
            cost = 1 + sum(best[k] if k >= 0 else np.inf for k in grammar.rule_rhs_nonterminals[r])
            lhs = grammar.rule_lhs[r]
            if cost < best[lhs]:
                best[lhs], changed = cost, True
    return best


def sample_derivation(grammar: Grammar, rng: np.random.Generator, max_length: int,
                      min_len: np.ndarray | None = None) -> list[int]:
    """A random leftmost derivation of at most ``max_length`` rules.

    At each step the open non-terminal's rules are drawn uniformly among those that can still
    finish within the limit (counting the fewest rules every open non-terminal needs), so every
    draw completes and no sample is rejected.
    """
    min_len = min_derivation_lengths(grammar) if min_len is None else min_len
    rhs_cost = [sum(min_len[k] if k >= 0 else np.inf for k in nts) for nts in grammar.rule_rhs_nonterminals]
    rules_of = [np.flatnonzero(grammar.lhs_mask[i, : grammar.padding_index]) for i in range(len(grammar.lhs_list))]
    stack = [grammar.start_index]
    open_cost = float(min_len[grammar.start_index])
    if open_cost > max_length:
        raise ConfigError(f"{grammar.name}: no derivation fits in {max_length} rules")
    out: list[int] = []
    while stack:
        lhs = stack.pop()
        open_cost -= min_len[lhs]
        room = max_length - len(out) - 1 - open_cost
        choices = [r for r in rules_of[lhs] if rhs_cost[r] <= room]
        r = int(choices[rng.integers(len(choices))])
        out.append(r)
        nts = grammar.rule_rhs_nonterminals[r]
        stack.extend(reversed(nts))
        open_cost += rhs_cost[r]
    return out


def generate_expressions(n: int, seed: int = 0, max_length: int = 15, grammar: Grammar | str = "expr",
                         unique: bool = True, max_tries: int | None = None) -> list[str]:
    """``n`` strings from random derivations of ``grammar`` (distinct when ``unique``), seeded."""
    g = load_grammar(grammar)
    rng = np.random.default_rng(seed)
    min_len = min_derivation_lengths(g)
    out: list[str] = []
    seen: set[str] = set()
    tries, limit = 0, max_tries or 50 * n + 1000
    while len(out) < n:
        tries += 1
        if tries > limit:
            raise ConfigError(f"only {len(out)} distinct strings after {limit} draws; "
                               f"the grammar may not have {n} strings within {max_length} rules")
        s = g.derive(sample_derivation(g, rng, max_length, min_len))
        if unique:
            if s in seen:
                continue
            seen.add(s)
        out.append(s)
    return out
