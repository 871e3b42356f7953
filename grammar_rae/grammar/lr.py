"""Exact, fast parsing: a canonical LR(1) automaton built from the grammar, run by a
backtracking driver that explores every branch of every conflict.

Why this design:
- LR handles the left recursion of the GrammarVAE grammars (``chain -> chain branched_atom``)
  without rewriting them, so the parse tree is the grammar's own tree.
- The SMILES grammar is not LR(1) (after an atom, a bond may open a ring bond or a chain bond),
  so conflicting actions are all tried. For these grammars the losing branch dies within a token
  or two, and the driver stays linear.
- Exploring *every* branch proves the parse is unique. A string in the language with exactly one
  parse tree has exactly one leftmost derivation, so the result equals the pre-order productions
  of the first tree of ``nltk.ChartParser`` -- the reference meaning (DESIGN.md). A string with two
  or more trees (an ambiguous grammar) or one that exceeds the step budget is handed to NLTK itself,
  so the answer stays exact whatever grammar a user writes.

The LR parser reduces in post-order; each reduction's node holds the pre-order rule list of its
subtree (``[rule] + children``), so the root's list is the leftmost derivation.

The same driver is written in C (``_native.c``) for speed; this module is the reference
implementation, the fallback when the extension is not built, and the source of error messages.
"""
from __future__ import annotations

import numpy as np

from .cfg import Grammar, ParseError

SHIFT, REDUCE, ACCEPT = 1, 2, 3  # action code = (argument << 2) | kind
AMBIGUOUS, BUDGET = "ambiguous", "budget"


def build_lr1_tables(grammar: Grammar):
    """Canonical LR(1) tables for every production but padding.

    Returns ``(actions, goto, rule_lhs, rule_len, n_terminals)``: ``actions[state][terminal]`` is
    a tuple of action codes (several where the grammar is not LR(1)), ``goto[state]`` maps a
    non-terminal id to a state. Terminal ``n_terminals`` is the end of input.
    """
    import nltk

    T = len(grammar.terminals)
    eof = T
    nts: dict[str, int] = {}

    def sym(s):
        if isinstance(s, nltk.Nonterminal):
            return T + 1 + nts.setdefault(s.symbol(), len(nts))
        return grammar.terminal_index[s]

    rules = [(sym(p.lhs()), tuple(sym(s) for s in p.rhs()))
             for p in grammar.nltk_productions[: grammar.padding_index]]
    start = sym(nltk.Nonterminal(grammar.start_symbol))
    aug = len(rules)
    rules.append((T + 1 + len(nts), (start,)))  # S' -> start
    by_lhs: dict[int, list[int]] = {}
    for i, (lhs, _) in enumerate(rules):
        by_lhs.setdefault(lhs, []).append(i)

    # FIRST sets and nullability of non-terminals (fixed point).
    nullable: set[int] = set()
    first: dict[int, set[int]] = {lhs: set() for lhs, _ in rules}
    changed = True
    while changed:
        changed = False
        for lhs, rhs in rules:
            f = first[lhs]
            before = len(f)
            all_null = True
            for s in rhs:
                if s <= T:
                    f.add(s)
                    all_null = False
                    break
                f |= first.get(s, set())
                if s not in nullable:
                    all_null = False
                    break
            if all_null and lhs not in nullable:
                nullable.add(lhs)
                changed = True
            changed |= len(f) != before

    def first_of(seq, la):
        out = set()
        for s in seq:
            if s <= T:
                out.add(s)
                return out
            out |= first.get(s, set())
            if s not in nullable:
                return out
        out.add(la)
        return out

    def closure(kernel):
        items = set(kernel)
        work = list(kernel)
        while work:
            r, d, la = work.pop()
            rhs = rules[r][1]
            if d < len(rhs) and rhs[d] > T:
                for b in first_of(rhs[d + 1:], la):
                    for p in by_lhs.get(rhs[d], ()):
                        item = (p, 0, b)
                        if item not in items:
                            items.add(item)
                            work.append(item)
        return frozenset(items)

    states = [closure({(aug, 0, eof)})]
    index = {states[0]: 0}
    transitions: list[dict[int, int]] = []
    i = 0
    while i < len(states):
        moves: dict[int, set] = {}
        for r, d, la in states[i]:
            rhs = rules[r][1]
            if d < len(rhs):
                moves.setdefault(rhs[d], set()).add((r, d + 1, la))
        trans = {}
        for s, kernel in sorted(moves.items()):
            c = closure(kernel)
            if c not in index:
                index[c] = len(states)
                states.append(c)
            trans[s] = index[c]
        transitions.append(trans)
        i += 1

    actions: list[list[tuple[int, ...]]] = []
    goto: list[dict[int, int]] = []
    for st, trans in zip(states, transitions):
        row: list[list[int]] = [[] for _ in range(T + 1)]
        for s, nxt in trans.items():
            if s <= T:
                row[s].append((nxt << 2) | SHIFT)
        for r, d, la in st:
            if d == len(rules[r][1]):
                code = ACCEPT if r == aug else (r << 2) | REDUCE
                if code not in row[la]:
                    row[la].append(code)
        actions.append([tuple(sorted(a)) for a in row])
        goto.append({s - T - 1: nxt for s, nxt in trans.items() if s > T})
    rule_lhs = [lhs - T - 1 for lhs, _ in rules[:aug]]
    rule_len = [len(rhs) for _, rhs in rules[:aug]]
    return actions, goto, rule_lhs, rule_len, T


class LRParser:
    """Parses strings of one grammar; see the module docstring."""

    def __init__(self, grammar: Grammar, budget_per_token: int = 200):
        self.grammar = grammar
        self.actions, self.goto, self.rule_lhs, self.rule_len, self.n_terminals = build_lr1_tables(grammar)
        self.budget_per_token = budget_per_token
        self.n_states = len(self.actions)
        self.n_conflicts = sum(len(a) > 1 for row in self.actions for a in row)
        self._fast = _make_fast_parser(self)

    @property
    def accelerated(self) -> bool:
        """True when the C driver is in use."""
        return self._fast is not None

    def parse(self, string: str) -> list[int]:
        if self._fast is not None:
            from . import _native

            result = _native.parse(self._fast, string)
            if type(result) is list:
                return result
            # None: not in the language (the Python driver below says where and why);
            # 2/3: ambiguous or over budget, which the Python driver hands to NLTK.
        return self.parse_python(string)

    def parse_python(self, string: str) -> list[int]:
        g = self.grammar
        tokens = g.tokenize(string)
        ids = [g.terminal_index[t] for t in tokens]
        ids.append(self.n_terminals)
        result = self._run(ids)
        if type(result) is list:
            return result
        if result in (AMBIGUOUS, BUDGET):
            from .reference import nltk_parse

            return nltk_parse(g, string)
        pos, state = result
        offsets = g._token_offsets(string)
        expected = [g.terminals[t] if t < self.n_terminals else "end of input"
                    for t, a in enumerate(self.actions[state]) if a]
        got = "end of input" if pos >= len(tokens) else repr(tokens[pos])
        exp = ", ".join(repr(e) if e != "end of input" else e for e in expected[:12])
        more = f" (and {len(expected) - 12} more)" if len(expected) > 12 else ""
        raise ParseError(string, offsets[pos], f"unexpected {got}; expected one of {exp}{more}")

    def _run(self, ids: list[int]):
        """Returns the pre-order rule list, AMBIGUOUS, BUDGET, or (furthest position, state)."""
        actions, goto, rule_lhs, rule_len = self.actions, self.goto, self.rule_lhs, self.rule_len
        budget = self.budget_per_token * len(ids) + 1000
        states, values, pos = [0], [None], 0
        choices: list = []  # (alternatives, next index, pos, states, values)
        found, furthest = None, (0, 0)
        act = -1  # -1: read the table; otherwise an action chosen when backtracking
        while True:
            budget -= 1
            if budget < 0:
                return BUDGET
            if act < 0:
                acts = actions[states[-1]][ids[pos]]
                if len(acts) == 1:
                    act = acts[0]
                elif acts:
                    choices.append((acts, 1, pos, states[:], values[:]))
                    act = acts[0]
                else:
                    if pos >= furthest[0]:
                        furthest = (pos, states[-1])
                    act = 0  # dead end
            kind = act & 3
            if kind == SHIFT:
                states.append(act >> 2)
                values.append(None)
                pos += 1
                act = -1
                continue
            if kind == REDUCE:
                r = act >> 2
                n = rule_len[r]
                node = [r]
                if n:
                    for child in values[-n:]:
                        if child is not None:
                            node += child
                    del states[-n:], values[-n:]
                states.append(goto[states[-1]][rule_lhs[r]])
                values.append(node)
                act = -1
                continue
            if kind == ACCEPT:
                if found is not None:  # a second parse tree
                    return AMBIGUOUS
                found = values[-1]
            # Dead end or accepted: resume the most recent untried alternative.
            while choices and choices[-1][1] >= len(choices[-1][0]):
                choices.pop()
            if not choices:
                return found if found is not None else furthest
            acts, i, pos, st, vals = choices[-1]
            choices[-1] = (acts, i + 1, pos, st, vals)
            states, values = st[:], vals[:]
            act = acts[i]


def _make_fast_parser(p: LRParser):
    """Pack the tables for the C driver; None when the extension is not available."""
    try:
        from . import _native
    except ImportError:
        return None
    g = p.grammar
    T = p.n_terminals
    n_nt = 1 + max(max(p.rule_lhs), max((k for row in p.goto for k in row), default=0))
    action = np.zeros((p.n_states, T + 1), dtype=np.int32)
    conflicts: list[int] = [0]
    for s, row in enumerate(p.actions):
        for t, acts in enumerate(row):
            if len(acts) == 1:
                action[s, t] = acts[0]
            elif acts:
                action[s, t] = -len(conflicts)
                conflicts.extend(acts)
                conflicts.append(0)
    goto = np.full((p.n_states, n_nt), -1, dtype=np.int32)
    for s, row in enumerate(p.goto):
        for k, nxt in row.items():
            goto[s, k] = nxt
    terminals = [t.encode("utf-8") for t in g.terminals]
    return _native.make_tables(
        terminals, 1 if g._skip_space else 0, T, p.n_states, n_nt,
        action.tobytes(), np.asarray(conflicts, dtype=np.int32).tobytes(), goto.tobytes(),
        np.asarray(p.rule_lhs, dtype=np.int32).tobytes(), np.asarray(p.rule_len, dtype=np.int32).tobytes(),
        p.budget_per_token,
    )
