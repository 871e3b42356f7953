"""A context-free grammar loaded from a plain ``.cfg`` file, and everything derived from it.

The file format is NLTK's (``LHS -> RHS | RHS``, terminals quoted), so the grammars of the
GrammarVAE (Kusner et al., ICML 2017) read as they were published. Comment lines may carry
directives of the form ``# @key value``; the only one is ``@token_separator`` (a JSON string),
the text written between tokens by :meth:`Grammar.derive` (``""`` for SMILES, ``" "`` for
the expression set). When it is a space, white space between tokens is ignored on input.

From the file alone we derive the production list (the one-hot vocabulary, padding rule last),
the left-hand-side list, the per-LHS masks used by masked decoding, the non-terminals each rule
pushes, the terminals with their tokenizer, and an LR automaton for the fast exact parser.
Adding a grammar therefore needs no Python.
"""
from __future__ import annotations

import hashlib
import json
import re
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from ..errors import UserError

PADDING_PRODUCTION = "Nothing -> None"


class GrammarError(ValueError, UserError):
    """The grammar file itself is malformed."""


class ParseError(ValueError, UserError):
    """A string is not in the language of the grammar.

    ``position`` is the character offset where parsing could go no further and ``reason``
    says why (an unknown character, an unexpected token, an early end of input).
    """

    def __init__(self, string: str, position: int, reason: str):
        self.string, self.position, self.reason = string, position, reason
        shown = string if len(string) <= 120 else string[:117] + "..."
        super().__init__(f"cannot parse {shown!r} at position {position}: {reason}")

    def __reduce__(self):  # picklable, so worker processes can report it
        return (ParseError, (self.string, self.position, self.reason))


def _grammars_root():
    """The shipped grammars: the installed ``grammar_rae.grammars``, or ``grammars/`` of a source
    checkout used without installing (``PYTHONPATH=.``, as on a bare GPU machine)."""
    try:
        return resources.files("grammar_rae.grammars")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "grammars"


def _builtin_path(name: str) -> Path | None:
    ref = _grammars_root().joinpath(f"{name}.cfg")
    return Path(str(ref)) if ref.is_file() else None


def builtin_grammars() -> list[str]:
    """Names of the grammars shipped in ``grammars/``."""
    return sorted(p.name[:-4] for p in _grammars_root().iterdir() if p.name.endswith(".cfg"))


def load_grammar(name_or_path: str | Path) -> "Grammar":
    """Load a shipped grammar by name (``"smiles"``, ``"expr"``) or any ``.cfg`` file by path."""
    if isinstance(name_or_path, Grammar):
        return name_or_path
    path = Path(name_or_path)
    if not path.is_file():
        builtin = _builtin_path(str(name_or_path))
        if builtin is None:
            raise FileNotFoundError(
                f"no grammar {str(name_or_path)!r}: not a file, and not one of the shipped "
                f"grammars {builtin_grammars()}"
            )
        path = builtin
    return _load_cached(str(path.resolve()), path.stat().st_mtime_ns)


_CACHE: dict[tuple[str, int], "Grammar"] = {}


def _load_cached(path: str, mtime: int) -> "Grammar":
    key = (path, mtime)
    if key not in _CACHE:
        text = Path(path).read_text(encoding="utf-8")
        _CACHE[key] = Grammar(text, name=Path(path).stem, path=path)
    return _CACHE[key]


def _validate(name: str, prods: list, start) -> None:
    """Refuse grammars a decoder cannot use, saying which rule or symbol is at fault: an empty
    right-hand side, a start symbol without rules, a non-terminal that derives no string (all its
    rules lead to symbols without rules: GVAE SMILES' `class` is tolerated because `BACH` has other
    rules), and a non-terminal the start symbol never reaches."""
    import nltk

    real = [p for p in prods if str(p) != PADDING_PRODUCTION]
    for i, p in enumerate(real):
        if not p.rhs():
            raise GrammarError(f"{name}: rule {i} ({p.lhs()} -> nothing) has an empty right-hand side; a "
                               "grammar decoder needs every rule to produce something: fold the empty "
                               "alternative into the rules that use it")
    lhs = {p.lhs() for p in real}
    if start not in lhs:
        raise GrammarError(f"{name}: the start symbol {start} has no rules")
    productive: set = set()
    changed = True
    while changed:  # fixed point: a symbol is productive if some rule of it has only productive non-terminals
        changed = False
        for p in real:
            if p.lhs() not in productive and all(not isinstance(s, nltk.Nonterminal) or s in productive
                                                 for s in p.rhs()):
                productive.add(p.lhs())
                changed = True
    dead = sorted(str(x) for x in lhs - productive)
    if dead:
        undefined = sorted({str(s) for p in real for s in p.rhs() if isinstance(s, nltk.Nonterminal)} -
                           {str(x) for x in lhs})
        raise GrammarError(f"{name}: {', '.join(dead)} can never derive a finished string"
                           + (f" (undefined non-terminals: {', '.join(undefined)})" if undefined else
                              " (every rule of it leads back to itself)")
                           + "; give them rules that end in terminals")
    reached, todo = {start}, [start]
    while todo:
        x = todo.pop()
        for p in real:
            if p.lhs() == x:
                for s in p.rhs():
                    if isinstance(s, nltk.Nonterminal) and s in lhs and s not in reached:
                        reached.add(s)
                        todo.append(s)
    unreachable = sorted(str(x) for x in lhs - reached)
    if unreachable:
        raise GrammarError(f"{name}: {', '.join(unreachable)} cannot be reached from the start symbol {start}; "
                           "remove their rules or use them in a reachable rule (the start symbol is the "
                           "left-hand side of the first rule)")


class Grammar:
    """A CFG with its rule tables, tokenizer, exact parser and derivation.

    Attributes use the GrammarVAE's names: ``productions`` (strings in NLTK notation, padding
    last), ``lhs_list``, ``lhs_mask`` (``[n_lhs, n_rules]`` bool: the rules of each LHS),
    ``rule_lhs`` (LHS index of each rule) and ``rule_rhs_nonterminals`` (LHS indices a rule
    pushes onto the decoding stack, left to right).
    """

    def __init__(self, text: str, name: str = "grammar", path: str | None = None):
        import nltk  # imported here: loading a grammar is the only place that needs it

        self.name, self.path, self.text = name, path, text
        self.sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
        self.token_separator = ""
        for line in text.splitlines():
            m = re.match(r"\s*#\s*@token_separator\s+(.*\S)\s*$", line)
            if m:
                try:
                    self.token_separator = json.loads(m.group(1))
                except json.JSONDecodeError as e:
                    raise GrammarError(f"{name}: @token_separator wants a JSON string: {e}") from e
        body = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
        if not body.strip():
            raise GrammarError(f"{name}: the grammar has no productions")
        try:
            cfg = nltk.CFG.fromstring(body)
        except ValueError as e:
            raise GrammarError(f"{name}: not a valid CFG: {e}") from e
        prods = list(cfg.productions())
        if str(prods[-1]) != PADDING_PRODUCTION and any(str(p) == PADDING_PRODUCTION for p in prods):
            raise GrammarError(f"{name}: the padding rule {PADDING_PRODUCTION!r} must be last")
        _validate(name, prods, cfg.start())
        if str(prods[-1]) != PADDING_PRODUCTION:
            prods.append(nltk.Production(nltk.Nonterminal("Nothing"), [nltk.Nonterminal("None")]))
            cfg = nltk.CFG(cfg.start(), prods)
        self.nltk_grammar = cfg
        self.nltk_productions = prods
        self.productions: list[str] = [str(p) for p in prods]
        self._production_index = {p: i for i, p in enumerate(prods)}
        self.start_symbol: str = cfg.start().symbol()
        self.padding_index = len(prods) - 1

        # LHS list in order of first appearance (GrammarVAE's lhs_list), padding LHS included.
        self.lhs_list: list[str] = []
        for p in prods:
            if p.lhs().symbol() not in self.lhs_list:
                self.lhs_list.append(p.lhs().symbol())
        lhs_index = {s: i for i, s in enumerate(self.lhs_list)}
        self.rule_lhs = np.array([lhs_index[p.lhs().symbol()] for p in prods], dtype=np.int64)
        self.lhs_mask = np.zeros((len(self.lhs_list), len(prods)), dtype=bool)
        self.lhs_mask[self.rule_lhs, np.arange(len(prods))] = True
        # Non-terminals without productions (e.g. SMILES `class`, padding's `None`) never expand;
        # pushing them would make a derivation that can never complete, so they map to -1.
        self.rule_rhs_nonterminals: list[tuple[int, ...]] = [
            tuple(lhs_index.get(s.symbol(), -1) for s in p.rhs() if isinstance(s, nltk.Nonterminal))
            for p in prods
        ]
        self.rule_rhs_nonterminals[-1] = ()  # padding pushes nothing
        self.start_index = lhs_index[self.start_symbol]
        self.padding_lhs = int(self.rule_lhs[-1])
        # A rule that pushes a non-terminal without rules can never complete (GVAE SMILES:
        # `BACH -> charge class`); decoders never choose it.
        completable = np.array([-1 not in nts for nts in self.rule_rhs_nonterminals])
        self.decoding_mask = self.lhs_mask & completable[None, :]

        terms = {s for p in prods for s in p.rhs() if isinstance(s, str)}
        self.terminals: list[str] = sorted(terms, key=lambda t: (-len(t), t))
        self.terminal_index = {t: i for i, t in enumerate(self.terminals)}
        if not self.terminals:
            raise GrammarError(f"{name}: the grammar has no terminals")
        self._skip_space = self.token_separator.isspace() if self.token_separator else False
        alternatives = "|".join(re.escape(t) for t in self.terminals)
        # Longest match first (alternatives are sorted by length): 'Cl' before 'C', '@@' before '@'.
        self._token_re = re.compile(alternatives)
        # Right-hand sides reversed, for derive(): str = terminal, int = LHS index (-1: no rules).
        self._rhs_reversed = [
            tuple(s if isinstance(s, str) else lhs_index.get(s.symbol(), -1) for s in reversed(p.rhs()))
            for p in prods
        ]

    # ------------------------------------------------------------------ the character baseline
    @cached_property
    def character_grammar(self) -> "Grammar":
        """The token-level grammar of the character VAE baseline (the GrammarVAE paper's CVAE):
        ``S -> t S | t`` for every terminal t. Its leftmost derivation is the token sequence itself
        (each rule also says whether the string ends there), so the same model, trainer and
        decoder serve the baseline with no grammar knowledge beyond the tokenizer."""
        def quote(t: str) -> str:
            return f"'{t}'" if "'" not in t else f'"{t}"'

        lines = [f"# character grammar of {self.name}", f"# @token_separator {json.dumps(self.token_separator)}"]
        lines += [f"S -> {quote(t)} S | {quote(t)}" for t in sorted(self.terminals)]
        return Grammar("\n".join(lines) + "\n", name=f"{self.name}-chars")

    # ------------------------------------------------------------------ basic facts
    @property
    def n_rules(self) -> int:
        return len(self.productions)

    def __repr__(self) -> str:
        return f"Grammar({self.name!r}, {self.n_rules} productions, {len(self.lhs_list)} LHS)"

    def max_length(self, sequences: Iterable[Sequence[int]]) -> int:
        """The longest rule sequence of a dataset (the decoder's number of steps)."""
        return max((len(s) for s in sequences), default=0)

    # ------------------------------------------------------------------ tokens
    def tokenize(self, string: str) -> list[str]:
        """Split ``string`` into terminals by longest match; raise ParseError on unknown text."""
        tokens, pos, n = [], 0, len(string)
        match = self._token_re.match
        while pos < n:
            if self._skip_space and string[pos].isspace():
                pos += 1
                continue
            m = match(string, pos)
            if m is None:
                raise ParseError(string, pos, f"unknown character {string[pos]!r} (not a terminal of {self.name})")
            tokens.append(m.group())
            pos = m.end()
        return tokens

    def _token_offsets(self, string: str) -> list[int]:
        offsets, pos = [], 0
        for t in self.tokenize(string):
            while self._skip_space and string[pos].isspace():
                pos += 1
            offsets.append(pos)
            pos += len(t)
        offsets.append(len(string))
        return offsets

    # ------------------------------------------------------------------ parsing
    @cached_property
    def parser(self):
        from .lr import LRParser

        return LRParser(self)

    def parse(self, string: str) -> list[int]:
        """The rule indices of ``string``'s leftmost derivation (no padding).

        Exactly what ``nltk.ChartParser`` gives as the pre-order productions of its first parse
        tree on the same grammar; raises :class:`ParseError` for strings outside the language.
        """
        return self.parser.parse(string)

    def parse_many(self, strings: Sequence[str], workers: int = 1, progress: bool = False,
                   on_error: str = "raise", chunk_size: int = 2000):
        """Parse many strings, over ``workers`` processes (``0``: all cores).

        ``on_error="raise"`` stops at the first bad string; ``"skip"`` returns ``(results,
        errors)`` where ``results[i]`` is ``None`` for a bad string and ``errors`` lists
        ``(index, ParseError)``.
        """
        from .parallel import parse_many

        return parse_many(self, strings, workers=workers, progress=progress,
                          on_error=on_error, chunk_size=chunk_size)

    # ------------------------------------------------------------------ derivation
    def derive(self, indices: Iterable[int]) -> str:
        """The string of a leftmost derivation (padding and anything after it ignored).

        Raises ValueError if a rule does not expand the left-most open non-terminal, or if the
        derivation is incomplete.
        """
        # The sentential form right of the output, reversed: ints are non-terminals, str terminals.
        stack: list = [self.start_index]
        out: list[str] = []
        lhs, rhs_rev, pad = self.rule_lhs, self._rhs_reversed, self.padding_index
        for step, r in enumerate(indices):
            r = int(r)
            if r == pad:
                break
            while stack and type(stack[-1]) is str:
                out.append(stack.pop())
            if not 0 <= r < pad:
                raise ValueError(f"step {step}: rule index {r} is not a production of {self.name}")
            if not stack:
                raise ValueError(f"step {step}: rule {r} follows a complete derivation")
            top = stack.pop()
            if top != lhs[r]:
                want = self.lhs_list[top] if top >= 0 else "a non-terminal without rules"
                raise ValueError(f"step {step}: {self.productions[r]!r} does not expand {want}")
            stack.extend(rhs_rev[r])
        while stack and type(stack[-1]) is str:
            out.append(stack.pop())
        if stack:
            raise ValueError("incomplete derivation: non-terminals are still open")
        return self.token_separator.join(out)

    def derive_many(self, sequences: Iterable[Iterable[int]]) -> list[str]:
        return [self.derive(s) for s in sequences]
