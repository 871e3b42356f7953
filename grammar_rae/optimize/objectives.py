"""Objectives of the latent-space BO benchmark (Kusner et al. 2017, Sec. 4.3; REFERENCE.md §5).

Every objective maps a list of strings (None = invalid decode) to a float array and never raises.
``fn`` gives NaN for a string that is not valid (not a molecule; an expression that raises); the
:class:`Objective` call maps NaN to the objective's ``invalid`` score, and :meth:`Objective.valid`
says which strings were valid.
``higher_is_better`` says the direction; the BO loop maximises ``sign * score``.
"""
from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError

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
    key: str = ""            # what else defines the scores (the target expression), for cache keys

    def __call__(self, strings: Sequence[str | None]) -> np.ndarray:
        out = np.asarray(self.fn(list(strings)), dtype=np.float64)
        return np.where(np.isfinite(out), out, self.invalid)

    def valid(self, strings: Sequence[str | None]) -> np.ndarray:
        """Which strings are valid: decoded, and scored without an error."""
        return np.isfinite(np.asarray(self.fn(list(strings)), dtype=np.float64))


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
_EXPR_TOKENS = re.compile(r"^(?:sin\(|exp\(|[x0-9+*/() .])*$")  # the expression grammar's terminals only


class _Py2Int(int):
    """An integer literal as Python 2 evaluated it: int / int is floor division (so 1 / 3 == 0);
    anything with a float or an array is ordinary arithmetic."""

    def _wrap(self, v):
        return _Py2Int(v) if type(v) is int else v

    def __truediv__(self, o):
        return _Py2Int(int(self) // int(o)) if isinstance(o, int) else NotImplemented

    def __rtruediv__(self, o):
        return _Py2Int(int(o) // int(self)) if isinstance(o, int) else NotImplemented

    def __add__(self, o):
        return self._wrap(int(self) + o) if isinstance(o, int) else NotImplemented

    def __mul__(self, o):
        return self._wrap(int(self) * o) if isinstance(o, int) else NotImplemented

    __radd__, __rmul__ = __add__, __mul__


def evaluate_expression(s: str, x: np.ndarray, integer_division: bool = False) -> np.ndarray:
    """f(x) of an expression of the expr grammar (Python precedence, as the GrammarVAE's ``eval``),
    broadcast to ``x.shape``; raises ValueError for anything that is not such an expression or that
    fails to evaluate. ``integer_division``: Python 2's int / int, as the GrammarVAE code ran."""
    if not s or not _EXPR_TOKENS.match(s):
        raise ValueError(f"not an expression of the expr grammar: {s!r}")
    code = re.sub(r"(?<![a-z])(\d+)", r"I(\1)", s) if integer_division else s
    env = {"sin": np.sin, "exp": np.exp, "x": x, "I": _Py2Int, "__builtins__": {}}
    try:
        with np.errstate(all="ignore"):
            return np.broadcast_to(np.asarray(eval(code, env), dtype=float), x.shape)  # noqa: S307
    except Exception as e:  # ZeroDivisionError (integer 1 / 0), SyntaxError, ...
        raise ValueError(f"{s!r} does not evaluate: {type(e).__name__}: {e}") from None


def expression_values(strings: Sequence[str | None], x: np.ndarray, integer_division: bool = False) -> np.ndarray:
    """[n, len(x)] values of expressions (a NaN row where a string does not evaluate)."""
    out = np.full((len(strings), len(x)), np.nan)
    for i, s in enumerate(strings):
        try:
            out[i] = evaluate_expression(s, x, integer_division)
        except ValueError:
            pass
    return out


def expression_fit(target: str = EXPR_TARGET, n_points: int = 1000, scoring: str = "ours"):
    """The GrammarVAE's expression score (its run_bo.py): log(1 + mean(min((f(x) − y)², 1000))) on
    x = linspace(−10, 10, n), lower is better. Per point the squared error is capped at 1000 (an
    overflowing exp counts 1000 there); a curve with NaN scores log(1001), still a valid expression;
    a string that does not evaluate (or is no expression) is invalid: NaN here, log(1001) after the
    Objective wrapper. ``scoring="gvae"``: the candidates are evaluated as the GVAE code did under
    Python 2 (1 / 3 == 0), the target with true division (its published top score 0.10 is the exact
    target scored that way, log(1 + 1/9))."""
    from ..grammar import ParseError, load_grammar

    if scoring not in ("ours", "gvae"):
        raise ConfigError(f"scoring must be 'ours' or 'gvae', not {scoring!r}")
    try:
        load_grammar("expr").parse(target)
    except ParseError as e:
        raise ConfigError(f"the target {target!r} is not an expression of the expr grammar: {e} "
                          "(tokens are separated by spaces, e.g. \"1 / 3 + x + sin( x * x )\")") from None
    x = np.linspace(-10, 10, n_points)
    try:
        y = evaluate_expression(target, x)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not np.isfinite(y).all():
        raise ConfigError(f"the target expression {target!r} is not finite everywhere on [-10, 10]")

    def fn(strings):
        f = expression_values(strings, x, integer_division=scoring == "gvae")
        evaluated = ~np.isnan(f).all(1) | np.array([_evaluates(s, x, scoring == "gvae") for s in strings])
        with np.errstate(all="ignore"):
            score = np.log1p(np.minimum((f - y) ** 2, 1000.0).mean(1))
        score = np.where(np.isfinite(score), score, EXPR_INVALID)
        return np.where(evaluated, score, np.nan)

    return fn


def _evaluates(s, x, integer_division) -> bool:
    try:
        evaluate_expression(s, x, integer_division)
        return True
    except ValueError:
        return False


def _per_string(f):
    return lambda strings: np.array([f(s) for s in strings], dtype=np.float64)


def get_objective(name: str, target: str | None = None, scoring: str = "ours") -> Objective:
    """``logp`` (penalised, normalised), ``qed``, ``expr`` (with ``target``; ``scoring="gvae"``: the
    GVAE code's integer division, for comparisons with the published table), or
    ``package.module:function`` (a function from a list of strings to scores; higher is better)."""
    if name == "logp":
        # invalid: the GrammarVAE protocol gives invalid points the worst training score; the BO loop
        # substitutes that; on its own an invalid molecule scores −inf-like (very low).
        return Objective("logp", _per_string(penalized_logp_one), True, -100.0)
    if name == "qed":
        return Objective("qed", _per_string(qed_one), True, 0.0)
    if name == "expr":
        return Objective("expr", expression_fit(target or EXPR_TARGET, scoring=scoring), False, EXPR_INVALID,
                         f"{target or EXPR_TARGET}|{scoring}")
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"cannot load objective {name!r}: {e}") from e

        def safe(strings):
            out = []
            for s in strings:
                try:
                    out.append(float(fn([s])[0]) if s is not None else float("nan"))
                except Exception:  # a user objective that fails on a string scores it as invalid
                    out.append(float("nan"))
            return np.array(out)

        return Objective(name, safe, True, -1e9)
    raise ConfigError(f"unknown objective {name!r}: use logp, qed, expr or package.module:function")
