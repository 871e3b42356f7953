"""Grammar-masked decoding (Kusner et al., ICML 2017, Sec. 3, Alg. 1), batched.

A stack of non-terminals starts at the start symbol. At each step the top is popped, the logits are
restricted to that left-hand side's rules (the mask), a rule is chosen (argmax, or a sample at a
temperature via the Gumbel-max trick), and the rule's non-terminals are pushed right to left so the
leftmost is expanded next. An empty stack emits the padding rule. The GrammarVAE runs this as a
Python loop over samples; here one step is a handful of tensor operations for the whole batch, on
CPU or GPU, and :func:`reference_decode` keeps the per-sample loop as the baseline.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..grammar import Grammar


@dataclass
class Decoded:
    rules: torch.Tensor      # [B, T] long, padding after the end of each derivation
    complete: torch.Tensor   # [B] bool: the stack emptied within T steps
    strings: list            # str for complete derivations, None otherwise
    cornered: torch.Tensor | None = None   # [B] bool: a semantic mask had to be dropped at some step, or
                                           # the finished molecule is broken as a whole (StackMachine.flagged)
                                           # or refused by the acceptance test (DecodeOptions.rdkit)
    retried: torch.Tensor | None = None    # [B] bool: the row's first decode was flagged, so copies were
                                           # decoded (the first-decode validity is that of the others)

    @property
    def validity(self) -> float:
        return float(self.complete.float().mean()) if len(self.complete) else 0.0


class StackMachine:
    """The decoding stacks of a batch; call :meth:`step` once per time step with that step's logits.

    Autoregressive decoders interleave ``step`` with their own forward pass; decoders that produce
    all logits at once use :func:`decode`.
    """

    def __init__(self, grammar: Grammar, batch: int, max_steps: int, device="cpu", semantics=None):
        self.grammar = grammar
        tables = _tables(grammar, torch.device(device))
        self.mask, self.push, self.n_push, self.min_len, self.push_min = tables
        width = self.push.shape[1]
        depth = max_steps * max(width - 1, 1) + width + 1  # each step grows the stack by ≤ width-1
        self.stack = torch.zeros(batch, depth, dtype=torch.long, device=device)
        self.stack[:, 0] = grammar.start_index
        self.sp = torch.ones(batch, dtype=torch.long, device=device)
        # the fewest steps the entries on each stack still need (_shortest): > the steps left, it cannot finish
        self.min_left = torch.full((batch,), int(self.min_len[grammar.start_index]), dtype=torch.long, device=device)
        self._offsets = torch.arange(width, device=device)[None, :]
        self._padding_lhs = torch.tensor(grammar.padding_lhs, device=device)
        # an optional semantic layer (semantics.py): extra masks from what the derivation has built
        self.semantic_state = semantics.start(batch, depth, device) if semantics is not None else None
        # rows where a semantic tier left no rule at some step and was dropped for that step: the
        # derivation is no longer guaranteed what that tier guards (GrammarAE.decode decodes them again)
        self.cornered = torch.zeros(batch, dtype=torch.bool, device=device)

    def top(self) -> torch.Tensor:
        """[B] the left-hand side expanded at this step: the top of each stack (the padding LHS once
        a stack is empty)."""
        empty = self.sp == 0
        top = self.stack.gather(1, (self.sp - 1).clamp(min=0)[:, None]).squeeze(1)
        return torch.where(empty, self._padding_lhs, top)

    def current_mask(self) -> torch.Tensor:
        """[B, R] bool: the rules allowed at this step (the padding rule once a stack is empty)."""
        return self.mask[self.top()]

    def step(self, logits: torch.Tensor, sample: bool = False, temperature: float = 1.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Choose one rule per sample from ``logits`` [B, R]; returns the rule indices [B]."""
        return self.choose(_scores(logits, sample, temperature, generator))

    def choose(self, scores: torch.Tensor) -> torch.Tensor:
        """The allowed rule of highest score per sample (``scores`` [B, R]: logits, or logits plus Gumbel
        noise for a sample); applies it and returns the rule indices [B]."""
        allowed = self.current_mask()
        if self.semantic_state is not None:  # never an empty choice: the strongest mask that leaves one
            tiers = [allowed]
            for extra in self.semantic_state.mask(self):   # ring structure, valence, Kekule parity
                tiers.append(tiers[-1] & extra)
            for stronger in tiers[1:]:
                allowed = torch.where(stronger.any(1, keepdim=True), stronger, allowed)
            self.cornered |= ~tiers[-1].any(1) & (self.sp > 0)
        rule = scores.masked_fill(~allowed, float("-inf")).argmax(1)
        self.force(rule)
        return rule

    def force(self, rule: torch.Tensor) -> None:
        """Apply the rules [B] chosen at this step: the semantic record, then pop and push."""
        if self.semantic_state is not None:
            self.semantic_state.update(self, rule)
        active = self.sp > 0
        self.min_left += torch.where(active, self.push_min[rule] - self.min_len[self.top()], 0)
        self.sp -= active.long()  # pop
        self.stack.scatter_(1, self.sp[:, None] + self._offsets, self.push[rule])  # push RHS, reversed
        self.sp += self.n_push[rule]

    @property
    def done(self) -> torch.Tensor:
        return self.sp == 0

    def cannot_finish(self, steps_left) -> torch.Tensor:
        """[B] bool: rows whose stacks need more steps than ``steps_left`` (an int or [B]) to finish."""
        return self.min_left > steps_left

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the rows ``keep`` [B] bool (those still running): the stacks, and the semantic state's
        rows with them (a decoding loop drops finished rows so that they cost nothing more)."""
        for name in ("stack", "sp", "cornered", "min_left"):
            setattr(self, name, getattr(self, name)[keep])
        if self.semantic_state is not None:
            self.semantic_state.select(keep)

    def extend(self, k: int) -> None:
        """Append ``k`` rows at the start symbol, with a fresh semantic state (a decoding loop adds copies
        of rows to decode again)."""
        stack = torch.zeros(k, self.stack.shape[1], dtype=self.stack.dtype, device=self.stack.device)
        stack[:, 0] = self.grammar.start_index
        self.stack = torch.cat([self.stack, stack])
        self.sp = torch.cat([self.sp, torch.ones(k, dtype=self.sp.dtype, device=self.sp.device)])
        self.cornered = torch.cat([self.cornered, torch.zeros(k, dtype=torch.bool, device=self.stack.device)])
        self.min_left = torch.cat([self.min_left, self.min_left.new_full((k,), int(self.min_len[self.grammar.start_index]))])
        if self.semantic_state is not None:
            self.semantic_state.extend(k)

    def flagged(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """[B] bool: rows to decode again -- those a mask cornered, and finished rows whose molecule the
        semantic layer finds broken as a whole (SemanticState.broken). ``rows`` [B] bool: judge only
        these (the others False; the whole-molecule check is the costly part)."""
        out = self.cornered if rows is None else self.cornered & rows
        if self.semantic_state is None:
            return out
        finished = self.done if rows is None else self.done & rows
        if not bool(finished.any()):
            return out
        out = out.clone()
        out[finished] |= self.semantic_state.broken(finished)
        return out


_TABLES: dict = {}


def _tables(grammar: Grammar, device: torch.device):
    key = (grammar.sha256, str(device))
    if key not in _TABLES:
        width = max(1, max(len(n) for n in grammar.rule_rhs_nonterminals))
        push = torch.zeros(grammar.n_rules, width, dtype=torch.long)
        n_push = torch.zeros(grammar.n_rules, dtype=torch.long)
        for r, nts in enumerate(grammar.rule_rhs_nonterminals):
            n_push[r] = len(nts)
            for k, lhs in enumerate(reversed(nts)):
                push[r, k] = max(lhs, 0)  # -1 (never completes) only on rules the mask forbids
        mask = torch.as_tensor(grammar.decoding_mask)
        min_len, push_min = _shortest(grammar)
        _TABLES[key] = tuple(v.to(device) for v in (mask, push, n_push, min_len, push_min))
    return _TABLES[key]


def _shortest(grammar: Grammar):
    """(min_len [L], push_min [R]): the fewest steps in which each non-terminal can be derived to
    terminals, and per rule the sum of that over the non-terminals it pushes (NEVER where one can never
    be). A stack whose entries need more steps than the decoder has left cannot finish."""
    L, R = len(grammar.lhs_list), grammar.n_rules
    inf = NEVER
    min_len = np.full(L, inf, dtype=np.int64)
    usable = grammar.decoding_mask.any(0)
    changed = True
    while changed:
        changed = False
        for r in range(R):
            nts = grammar.rule_rhs_nonterminals[r]
            if not usable[r] or any(n < 0 for n in nts):
                continue
            cost = 1 + sum(int(min_len[n]) for n in nts)
            lhs = grammar.rule_lhs[r]
            if cost < min_len[lhs]:
                min_len[lhs], changed = min(cost, inf), True
    push_min = np.array([min(inf, sum(int(min_len[n]) if n >= 0 else inf for n in nts))
                         for nts in grammar.rule_rhs_nonterminals], dtype=np.int64)
    return torch.as_tensor(min_len), torch.as_tensor(push_min)


NEVER = 1 << 20   # _shortest: no derivation


def decode_tensor(grammar: Grammar, logits: torch.Tensor, sample: bool = False, temperature: float = 1.0,
                  generator: torch.Generator | None = None, strings: bool = True, semantics=None) -> Decoded:
    """The stack machine as tensor operations on any device (what :func:`decode` runs on GPU, and
    wherever a semantic layer adds its masks)."""
    B, T, _ = logits.shape
    scores = _scores(logits, sample, temperature, generator)
    machine = StackMachine(grammar, B, T, logits.device, semantics=semantics)
    rules = torch.full((B, T), grammar.padding_index, dtype=torch.long, device=logits.device)
    with torch.no_grad():
        for t in range(T):
            rules[:, t] = machine.step(scores[:, t])
            if t % 16 == 15 and bool(machine.done.all()):  # the rest is padding; one sync per 16 steps
                break
    return finish(grammar, rules, machine.done, strings, machine.flagged())


@torch.no_grad()
def decode(grammar: Grammar, logits: torch.Tensor, sample: bool = False, temperature: float = 1.0,
           generator: torch.Generator | None = None, strings: bool = True, semantics=None) -> Decoded:
    """Decode a batch of per-step logits ``[B, T, R]`` under the grammar's masks.

    On the GPU the stack machine runs as tensor operations; on the CPU the same choice (masked
    argmax of the same scores) runs in the native kernel, which compares only each popped LHS's
    rules. Sampling draws Gumbel noise for the whole batch at once in both cases. ``semantics``: a
    semantic layer (semantics.py) whose masks are added at every step (tensor operations).
    """
    B, T, _ = logits.shape
    if semantics is None and logits.device.type == "cpu" and _native_kernel() is not None:
        rules, complete = _native_decode(grammar, _scores(logits, sample, temperature, generator))
        return finish(grammar, rules, complete, strings)
    return decode_tensor(grammar, logits, sample, temperature, generator, strings, semantics)


def _scores(logits, sample, temperature, generator):
    """Logits, or for sampling logits/temperature + Gumbel noise (argmax of it is a sample of
    softmax(logits/temperature) restricted to the allowed rules)."""
    scores = logits.float()
    if sample:
        if temperature <= 0:
            raise ConfigError("temperature must be > 0 (use sample=False for argmax)")
        u = torch.rand(scores.shape, generator=generator, device=scores.device).clamp_(1e-20, 1.0)
        scores = scores / temperature - torch.log(-torch.log(u))
    return scores


def _native_kernel():
    try:
        from ..grammar import _native
    except ImportError:  # built without a C compiler: tensor operations on the CPU too
        return None
    return _native


_CANDIDATES: dict = {}


def _native_decode(grammar: Grammar, scores: torch.Tensor):
    key = grammar.sha256
    if key not in _CANDIDATES:
        mask = grammar.decoding_mask
        width = max(1, int(mask.sum(1).max()))
        cand = np.full((len(mask), width), -1, dtype=np.int32)
        for lhs, row in enumerate(mask):
            idx = np.flatnonzero(row)
            cand[lhs, : len(idx)] = idx
        _, push, n_push, _, _ = _tables(grammar, torch.device("cpu"))
        _CANDIDATES[key] = (cand, push.numpy().astype(np.int32), n_push.numpy().astype(np.int32))
    cand, push, n_push = _CANDIDATES[key]
    B, T, R = scores.shape
    s = np.ascontiguousarray(scores.numpy(), dtype=np.float32)
    rules = np.empty((B, T), dtype=np.int64)
    complete = np.empty(B, dtype=np.uint8)
    _native_kernel().masked_decode(s, cand, push, n_push, rules, complete, B, T, R, cand.shape[0],
                                   cand.shape[1], push.shape[1], grammar.start_index, grammar.padding_lhs,
                                   grammar.padding_index)
    return torch.from_numpy(rules), torch.from_numpy(complete.astype(bool))


def finish(grammar: Grammar, rules: torch.Tensor, complete: torch.Tensor, strings: bool,
           cornered: torch.Tensor | None = None) -> Decoded:
    out = None
    if strings:
        rows = rules.cpu().numpy()
        ok = complete.cpu().numpy()
        out = [grammar.derive(r) if c else None for r, c in zip(rows, ok)]
    return Decoded(rules, complete, out, cornered)


def reference_decode(grammar: Grammar, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The GrammarVAE's per-sample loop (argmax), kept as the baseline and the test oracle."""
    B, T, _ = logits.shape
    mask = grammar.decoding_mask
    rules = np.full((B, T), grammar.padding_index, dtype=np.int64)
    complete = np.zeros(B, dtype=bool)
    for b in range(B):
        stack = [grammar.start_index]
        for t in range(T):
            lhs = stack.pop() if stack else grammar.padding_lhs
            masked = np.where(mask[lhs], logits[b, t], -np.inf)
            r = int(np.argmax(masked))
            rules[b, t] = r
            stack.extend(reversed(grammar.rule_rhs_nonterminals[r]))
        complete[b] = not stack
    return rules, complete
