"""Where expected improvement searches: one small object per search region, behind one interface that
the BO loop (bo.py) drives.

  box      the protocol's: the bounding box of the training codes (GrammarVAE, REFERENCE.md §5)
  density  the box cut to the ex-post GMM's high-density part {z : log p(z) ≥ τ}, τ the ``quantile``
           of the training codes' log-density (acquisition.py's Region does the cutting)
  trust    a TuRBO-1 trust region around the best point so far, its side L replayed from the scores
           (trust.py)

The loop makes one per seed (:func:`make_region`), calls ``start(codes, best, state, where)`` once, then per iteration
``bounds(box, gp, x_fit, y_fit, state)`` (the (lower, upper) EI searches, given the fitted GP) and
``record(searched, state)`` (what the iteration's record keeps of it, so a resume can check it);
``density`` / ``threshold`` are the cut the acquisition applies inside those bounds (None: none).
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from . import trust as turbo


class BoxRegion:
    """The training codes' bounding box (the protocol)."""

    name = "box"

    def __init__(self, config, seed: int, batch: int, maximise: bool, iterations: int):
        self.config, self.seed, self.batch, self.maximise, self.iterations = config, seed, batch, maximise, iterations
        self.density = self.threshold = None

    def start(self, codes: np.ndarray, best: float, state: dict, where="") -> None:
        """Once per seed, before its first iteration (or its resume): ``codes`` the GP's training codes,
        ``best`` their best score, ``state`` the seed's state so far (``where``: its file, for errors)."""

    def bounds(self, box, gp, x_fit: np.ndarray, y_fit: np.ndarray, state: dict):
        return box

    def record(self, searched, state: dict) -> dict:
        return {}


class DensityRegion(BoxRegion):
    """The box where a 10-component GMM of the training codes is dense: the region holds 1 − ``quantile``
    of the codes (far from them the GP's mean extrapolates and decodes rarely finish)."""

    name = "density"
    MAX_ROWS = 50_000   # the GMM is fitted on a seeded sample of at most this many codes (EM on 220k: 25 min)

    def start(self, codes, best, state, where=""):
        if len(state["iterations"]) < self.iterations:   # fitted only when there is an iteration left to run
            self.density, self.threshold = fit_density_region(codes, self.config.region_quantile, self.seed,
                                                              self.MAX_ROWS)


class TrustRegion(BoxRegion):
    """TuRBO-1's hyper-rectangle around the best point so far (trust.py), sized by the GP's lengthscales."""

    name = "trust"

    def start(self, codes, best, state, where=""):
        self.best_training = best
        self.dim = codes.shape[1]
        recorded = [i.get("trust", {}).get("length") for i in state["iterations"]]
        if recorded and recorded != self.lengths(state)[:-1]:
            raise ConfigError(f"{where}: the trust region lengths it records differ from the ones its scores give "
                              "under this version's rules (trust.py); resume it with the version that made it")

    def lengths(self, state) -> list[float]:
        """L before each iteration, replayed from the scores: a resumed run searches the same regions."""
        return turbo.lengths(self.best_training, [[e["score"] for e in i["evaluations"]] for i in state["iterations"]],
                             self.dim, self.batch, self.maximise)

    def bounds(self, box, gp, x_fit, y_fit, state):
        self.centre = x_fit[int(np.argmax(y_fit) if self.maximise else np.argmin(y_fit))]
        self.length = self.lengths(state)[-1]
        return turbo.box(self.centre, self.length, gp.log_lengthscale.detach().exp().numpy(), *box)

    def record(self, searched, state):
        return {"trust": {"length": self.length, "lower": np.asarray(searched[0]).tolist(),
                          "upper": np.asarray(searched[1]).tolist()}}


REGIONS = {r.name: r for r in (BoxRegion, DensityRegion, TrustRegion)}


def make_region(gp_config, seed: int, batch: int, maximise: bool, iterations: int) -> BoxRegion:
    """The region object a GPConfig names, for one seed."""
    return REGIONS[gp_config.region](gp_config, seed, batch, maximise, iterations)


def fit_density_region(codes: np.ndarray, quantile: float, seed: int, max_rows: int = 50_000):
    """The density region's (density, threshold): a 10-component GMM fitted on (a seeded sample of at
    most ``max_rows`` of) the training codes, and the ``quantile`` of their log-density under it --
    the region {z : log p(z) ≥ threshold} holds 1 − ``quantile`` of the codes."""
    from ..density import make_density

    rng = np.random.default_rng(seed)
    fit_on = codes if len(codes) <= max_rows else codes[np.sort(rng.choice(len(codes), max_rows, replace=False))]
    density = make_density("gmm", k=10, seed=seed).fit(fit_on)
    return density, float(np.quantile(density.log_prob(fit_on), quantile))
