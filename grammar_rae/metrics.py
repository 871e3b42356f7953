"""Generation and reconstruction metrics for grammar models.

Strings are compared in a canonical form (:func:`canonical`): molecules as RDKit canonical SMILES,
expressions as their derivation written out, so spacing (``sin(x)+1``, ``sin( x ) + 1``) never
tells two strings apart.

- validity: the fraction of decodes that are grammar-complete and, for molecules, that RDKit can
  sanitise (the GrammarVAE's "prior validity" criterion);
- uniqueness: distinct valid strings / valid strings;
- novelty: valid distinct strings not in the training set / valid distinct strings;
- reconstruction accuracy: the fraction of decodes equal to their input, (a) deterministic: encode
  once, decode by argmax; (b) the GrammarVAE protocol: encode each input ``n_encode`` times (the
  VAE's posterior sample) and decode each code ``n_decode`` times by sampling rules, averaging exact
  matches over all n_encode x n_decode decodes. A deterministic encoder gives the same code all
  n_encode times, so its code is decoded n_decode times once: the same expected accuracy, at a
  tenth of the cost.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from .models.family import family


def canonical_smiles(s: str | None) -> str | None:
    """RDKit canonical SMILES, or None if RDKit cannot parse and sanitise ``s``."""
    if not s:
        return None
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(s)
    return Chem.MolToSmiles(mol) if mol is not None else None


def canonical(strings: Iterable[str | None], molecules: bool, grammar=None) -> list[str | None]:
    """Strings as the metrics compare them: canonical SMILES for molecules; otherwise, given the
    ``grammar``, the string its derivation gives (``sin(x)+1`` and ``sin( x ) + 1`` have one
    derivation, so both read ``sin( x ) + 1``; None where the grammar does not parse it); without a
    grammar, as they are."""
    if molecules:
        return [canonical_smiles(s) for s in strings]
    if grammar is None:
        return [s or None for s in strings]
    return [derived_string(grammar, s) for s in strings]


def derived_string(grammar, s: str | None) -> str | None:
    """``grammar``'s derivation of ``s`` written out (its tokens joined by the grammar's separator),
    or None if ``s`` is empty or outside the grammar."""
    from .grammar import ParseError

    if not s:
        return None
    try:
        return grammar.derive(grammar.parse(s))
    except ParseError:
        return None


class HashedStrings:
    """A set of strings kept as 64-bit hashes (blake2b): membership only, a fraction of the memory,
    and shippable (a pretrained run's canonical training SMILES for novelty)."""

    def __init__(self, hashes):
        self.hashes = set(int(h) for h in hashes)

    @staticmethod
    def hash(s: str) -> int:
        import hashlib

        return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little", signed=True)

    @classmethod
    def of(cls, strings) -> "HashedStrings":
        return cls(cls.hash(s) for s in strings)

    def __contains__(self, s) -> bool:
        return s is not None and self.hash(s) in self.hashes

    def __len__(self) -> int:
        return len(self.hashes)

    def __bool__(self) -> bool:
        return bool(self.hashes)


def generation_metrics(strings: Sequence[str | None], molecules: bool, training: Iterable[str] = (),
                       training_canonical: set[str] | None = None, grammar=None) -> dict:
    """validity, uniqueness and novelty of decoded strings (None = not grammar-complete), compared
    as :func:`canonical` writes them (pass the ``grammar`` of expressions, or a training file written
    with other spacing counts as novel).

    ``training_canonical``: ``set(canonical(training, molecules, grammar))`` computed once by a caller
    that scores several sample sets against the same training data (≈ 25 s for ZINC250k's SMILES)."""
    n = len(strings)
    complete = sum(s is not None for s in strings)
    canon = canonical(strings, molecules, grammar)
    valid = [c for c in canon if c is not None]
    distinct = set(valid)
    if training_canonical is not None:
        train = training_canonical
    else:
        train = set(canonical(training, molecules, grammar)) - {None} if training else set()
    out = {"n": n, "grammar_complete": complete / n if n else 0.0, "validity": len(valid) / n if n else 0.0,
           "uniqueness": len(distinct) / len(valid) if valid else 0.0}
    if train:
        out["novelty"] = sum(d not in train for d in distinct) / len(distinct) if distinct else 0.0
    return out


@torch.no_grad()
def reconstruction_accuracy(model, rules: torch.Tensor, strings: Sequence[str], molecules: bool,
                            n_encode: int = 1, n_decode: int = 1, sample: bool = False, batch: int = 500,
                            seed: int = 0) -> float:
    """Fraction of decodes equal to their input (see the module docstring for the two protocols).

    A deterministic encoder is run once per batch; the decoder's logits are reused across the
    ``n_decode`` samples (:meth:`GrammarAE.decode_repeated`); canonical SMILES are memoised, since
    sampled decodes repeat."""
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    target = canonical(strings, molecules, model.grammar)
    stochastic_encoder = n_encode > 1 and family(model.config.model).stochastic
    memo: dict = {}

    def canon(got):
        if not molecules:  # a decode is its derivation written out: canonical already
            return [s or None for s in got]
        for s in got:
            if s not in memo:
                memo[s] = canonical_smiles(s)
        return [memo[s] for s in got]

    hits = total = 0
    for i in range(0, len(rules), batch):
        x = rules[i:i + batch].to(device)
        want = target[i:i + batch]
        z = model.encode(x)
        for _ in range(n_encode if stochastic_encoder else 1):
            if stochastic_encoder:
                z = model.latent(x)[0]  # a posterior sample
            for out in model.decode_repeated(z, n_decode, sample=sample, generator=gen):
                got = canon(out.strings)
                hits += sum(g is not None and g == w for g, w in zip(got, want))
                total += len(want)
    return hits / total if total else 0.0


def expression_curves(strings: Sequence[str | None], x: np.ndarray | None = None) -> tuple[np.ndarray, list]:
    """Values of expressions in x on [-10, 10] (None for invalid or non-finite ones), for plots."""
    import re

    x = np.linspace(-10, 10, 1000) if x is None else x
    allowed = re.compile(r"^(?:sin\(|exp\(|[x0-9+*/() .])*$")  # the expression grammar's terminals only
    env = {"sin": np.sin, "exp": np.exp, "x": x, "__builtins__": {}}
    ys = []
    with np.errstate(all="ignore"):
        for s in strings:
            try:
                ok = bool(s) and allowed.match(s) is not None
                y = np.broadcast_to(np.asarray(eval(s, env), dtype=float), x.shape) if ok else None  # noqa: S307
            except Exception:  # any malformed or overflowing expression is simply not drawn
                y = None
            ys.append(y if y is not None and np.isfinite(y).all() else None)
    return x, ys
