"""Expected improvement and its batched greedy (Kriging-believer) maximisation in a latent box.

EI(x) = (μ − f* − ξ) Φ(u) + σ φ(u),  u = (μ − f* − ξ) / σ          (Jones et al. 1998, eq. 15)
for maximisation. A batch is built greedily: after each chosen point the GP is told it observed its
own predicted mean there, without noise (Kriging believer, Ginsbourger et al. 2010): the mean is
unchanged and the variance near the chosen points shrinks to ~0, so the next point goes elsewhere.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch

from .gp import SparseGP

_SQRT2 = math.sqrt(2.0)


def expected_improvement(mean: torch.Tensor, var: torch.Tensor, best: float, xi: float = 0.0) -> torch.Tensor:
    sigma = var.clamp_min(1e-18).sqrt()
    improve = mean - best - xi
    u = improve / sigma
    cdf = 0.5 * (1 + torch.erf(u / _SQRT2))
    pdf = torch.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)
    return improve * cdf + sigma * pdf


class BelievedGP:
    """The GP's latent posterior conditioned on fantasy observations at its own predicted means.

    The GP is frozen during acquisition, so everything that does not depend on the query points is
    computed once: the inducing Cholesky L_mm, S, and for the believed points F their projections
    A_F = L_mm⁻¹ K_mF, SᵀA_F and the inverse of their joint covariance C_FF. A query x then costs one
    triangular solve: cov(F, x) = K_Fx − A_Fᵀ A_x + (SᵀA_F)ᵀ(SᵀA_x) and
    var(x | F) = var(x) − cov(x, F) C_FF⁻¹ cov(F, x).
    """

    def __init__(self, gp: SparseGP):
        self.gp = gp
        with torch.no_grad():
            self.l_mm, self.s = gp._chol_mm(), gp._s()
        self.points: list[torch.Tensor] = []
        self._f = None  # (x_F, A_F, SᵀA_F, C_FF⁻¹)

    def _project(self, x: torch.Tensor):
        a = torch.linalg.solve_triangular(self.l_mm, self.gp.kernel(self.gp.z, x), upper=False)
        return a, self.s.T @ a

    def mean_var(self, x: torch.Tensor):
        gp = self.gp
        a, s_a = self._project(x)
        mean = a.T @ gp.q_mean
        var = (gp.log_outputscale.exp() - a.pow(2).sum(0) + s_a.pow(2).sum(0)).clamp_min(1e-10)
        if self._f is None:
            return mean, var
        xf, a_f, sa_f, c_inv = self._f
        c_fx = gp.kernel(xf, x) - a_f.T @ a + sa_f.T @ s_a
        return mean, (var - (c_fx * (c_inv @ c_fx)).sum(0)).clamp_min(1e-12)

    @torch.no_grad()
    def believe(self, x: torch.Tensor):
        self.points.append(x.detach())
        xf = torch.stack(self.points)
        a_f, sa_f = self._project(xf)
        cov = self.gp.kernel(xf, xf) - a_f.T @ a_f + sa_f.T @ sa_f
        # believed exactly (jitter only): a chosen point's variance drops to ~0, so its EI does too
        c_inv = torch.linalg.inv(cov + 1e-6 * torch.eye(len(xf), dtype=cov.dtype))
        self._f = (xf, a_f, sa_f, c_inv)


def batched_greedy_ei(gp: SparseGP, best: float, lower: np.ndarray, upper: np.ndarray, batch: int = 50,
                      n_candidates: int = 2000, n_starts: int = 10, steps: int = 100, lr: float = 0.05,
                      seed: int = 0, maximise: bool = True) -> np.ndarray:
    """``batch`` points in the box [lower, upper] chosen greedily by EI with the Kriging believer.

    ``best`` is in the units of y; with ``maximise=False`` (e.g. the expression score) EI is taken
    on −y. Each point: EI on random candidates, the best ``n_starts`` refined by Adam in the box.
    """
    g = torch.Generator().manual_seed(seed)
    lo = torch.as_tensor(lower, dtype=torch.float64)
    hi = torch.as_tensor(upper, dtype=torch.float64)
    sign = 1.0 if maximise else -1.0
    f_best = sign * (best - gp.y_mean) / gp.y_std  # in the GP's standardised units, signed
    with frozen(gp):  # only the query points are optimised
        return _greedy(gp, f_best, sign, lo, hi, batch, n_candidates, n_starts, steps, lr, g)


def _signed(mean_var, sign):
    return sign * mean_var[0], mean_var[1]


def _ascend(f, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
    """Points ``x`` moved uphill on ``f`` (each row independently) by Adam, kept inside the box."""
    x = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr * float((hi - lo).mean()))
    for _ in range(steps):
        loss = -f(x).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.copy_(torch.maximum(torch.minimum(x, hi), lo))
    return x.detach()


@contextmanager
def frozen(gp: SparseGP):
    """The GP's parameters without gradients while the acquisition optimises query points."""
    before = [p.requires_grad for p in gp.parameters()]
    gp.requires_grad_(False)
    try:
        yield gp
    finally:
        for p, r in zip(gp.parameters(), before):
            p.requires_grad_(r)


def _greedy(gp, f_best, sign, lo, hi, batch, n_candidates, n_starts, steps, lr, g) -> np.ndarray:
    believed = BelievedGP(gp)
    chosen = []
    for _ in range(batch):
        cand = lo + (hi - lo) * torch.rand(n_candidates, len(lo), generator=g, dtype=torch.float64)
        with torch.no_grad():
            mean, var = believed.mean_var(cand)
            ei = expected_improvement(sign * mean, var, f_best)
        starts = cand[ei.topk(min(n_starts, len(cand))).indices]
        starts = _ascend(lambda x: expected_improvement(*_signed(believed.mean_var(x), sign), f_best), starts, lo, hi,
                         steps, lr)
        with torch.no_grad():
            mean, var = believed.mean_var(starts)
            ei = expected_improvement(sign * mean, var, f_best)
        x = starts[ei.argmax()].detach()
        believed.believe(x)
        chosen.append(x)
    return torch.stack(chosen).numpy()


def posterior_mean_incumbent(gp: SparseGP, lower: np.ndarray, upper: np.ndarray, maximise: bool = True,
                             seed: int = 0, n_grid: int = 10_000, steps: int = 150, lr: float = 0.05) -> float:
    """The best GP posterior mean over the box, in the units of y: the EI incumbent of the
    GrammarVAE's ``batched_greedy_ei`` (a 10,000-point random grid, then a local optimisation from its
    best point; they run L-BFGS for 150 iterations, here Adam steps clipped to the box)."""
    g = torch.Generator().manual_seed(seed)
    lo = torch.as_tensor(lower, dtype=torch.float64)
    hi = torch.as_tensor(upper, dtype=torch.float64)
    sign = 1.0 if maximise else -1.0
    with frozen(gp):
        l_mm, s = gp._chol_mm(), gp._s()
        grid = lo + (hi - lo) * torch.rand(n_grid, len(lo), generator=g, dtype=torch.float64)
        with torch.no_grad():
            best_grid = gp.latent(grid, l_mm=l_mm, s=s)[0] * sign
        x = _ascend(lambda x: sign * gp.latent(x, l_mm=l_mm, s=s)[0], grid[best_grid.argmax()][None], lo, hi,
                    steps, lr)
        with torch.no_grad():
            best = max(float(best_grid.max()), float(sign * gp.latent(x, l_mm=l_mm, s=s)[0]))
    return sign * best * gp.y_std + gp.y_mean
