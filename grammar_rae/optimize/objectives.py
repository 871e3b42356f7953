"""Objectives of the latent-space BO benchmark (Kusner et al. 2017, Sec. 4.3; REFERENCE.md §5).

Every objective maps a list of strings (None = invalid decode) to a float array and never raises:
an invalid string, an exception or a non-finite value gets the objective's ``invalid`` score.
``higher_is_better`` says the direction; the BO loop maximises ``sign * score``.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

# Normalisation constants every paper on this benchmark uses (GrammarVAE code; REFERENCE.md §5).
LOGP_MEAN, LOGP_STD = 2.4570953396190123, 1.434324401111988
SA_MEAN, SA_STD = -3.0525811293166134, 0.8335207024513095        # of −SA
CYCLE_MEAN, CYCLE_STD = -0.0485696876403053, 0.2860212110245455  # of −cycle
EXPR_TARGET = "1 / 3 + x + sin( x * x )"
EXPR_INVALID = math.log(1001.0)


@dataclass
class Objective:
    name: str
    fn: Callable[[Sequence[str | None]], np.ndarray]
    higher_is_better: bool
    invalid: float

    def __call__(self, strings: Sequence[str | None]) -> np.ndarray:
        out = np.asarray(self.fn(list(strings)), dtype=np.float64)
        return np.where(np.isfinite(out), out, self.invalid)


# ---------------------------------------------------------------------------------- molecules
def _mol(s):
    if not s:
        return None
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    return Chem.MolFromSmiles(s)


def largest_ring_penalty(mol) -> float:
    """cycle = max(0, size of the largest ring − 6)."""
    rings = mol.GetRingInfo().AtomRings()
    return float(max(0, max((len(r) for r in rings), default=0) - 6))


def penalized_logp_one(s: str | None) -> float:
    """z(logP) + z(−SA) + z(−cycle) with the published constants; NaN when not a molecule."""
    mol = _mol(s)
    if mol is None:
        return float("nan")
    from rdkit.Chem import Crippen

    from ..chem import sa_score

    try:
        logp = Crippen.MolLogP(mol)
        sa = -sa_score(mol)
        cycle = -largest_ring_penalty(mol)
    except Exception:  # RDKit can fail on exotic valences; such a molecule scores as invalid
        return float("nan")
    return (logp - LOGP_MEAN) / LOGP_STD + (sa - SA_MEAN) / SA_STD + (cycle - CYCLE_MEAN) / CYCLE_STD


def qed_one(s: str | None) -> float:
    mol = _mol(s)
    if mol is None:
        return float("nan")
    from rdkit.Chem import QED

    try:
        return float(QED.qed(mol))
    except Exception:
        return float("nan")


# ---------------------------------------------------------------------------------- expressions
def expression_values(strings: Sequence[str | None], x: np.ndarray) -> np.ndarray:
    """[n, len(x)] values of expressions of the expr grammar (NaN rows for invalid ones)."""
    from ..metrics import expression_curves

    _, ys = expression_curves(strings, x)
    out = np.full((len(strings), len(x)), np.nan)
    for i, y in enumerate(ys):
        if y is not None:
            out[i] = y
    return out


def expression_fit(target: str = EXPR_TARGET, n_points: int = 1000):
    """score = log(1 + mean(min((f(x) − y)², 1000))) on x = linspace(−10, 10, n), lower is better;
    invalid or non-finite: log(1001)."""
    x = np.linspace(-10, 10, n_points)
    y = expression_values([target], x)[0]
    if not np.isfinite(y).all():
        raise ValueError(f"the target expression {target!r} is not finite on [-10, 10]")

    def fn(strings):
        f = expression_values(strings, x)
        with np.errstate(all="ignore"):
            err = np.minimum((f - y) ** 2, 1000.0)
            score = np.log1p(err.mean(1))
        return np.where(np.isfinite(score), score, EXPR_INVALID)

    return fn


def _per_string(f):
    return lambda strings: np.array([f(s) for s in strings], dtype=np.float64)


def get_objective(name: str, target: str | None = None) -> Objective:
    """``logp`` (penalised, normalised), ``qed``, ``expr`` (with ``target``), or
    ``package.module:function`` (a function from a list of strings to scores; higher is better)."""
    if name == "logp":
        # invalid: the GrammarVAE protocol gives invalid points the worst training score; the BO loop
        # substitutes that; on its own an invalid molecule scores −inf-like (very low).
        return Objective("logp", _per_string(penalized_logp_one), True, -100.0)
    if name == "qed":
        return Objective("qed", _per_string(qed_one), True, 0.0)
    if name == "expr":
        return Objective("expr", expression_fit(target or EXPR_TARGET), False, EXPR_INVALID)
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot load objective {name!r}: {e}") from e

        def safe(strings):
            out = []
            for s in strings:
                try:
                    out.append(float(fn([s])[0]) if s is not None else float("nan"))
                except Exception:  # a user objective that fails on a string scores it as invalid
                    out.append(float("nan"))
            return np.array(out)

        return Objective(name, safe, True, -1e9)
    raise ValueError(f"unknown objective {name!r}: use logp, qed, expr or package.module:function")
