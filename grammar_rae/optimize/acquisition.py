"""Expected improvement and its batched greedy (Kriging-believer) maximisation in a latent box.

EI(x) = (μ − f* − ξ) Φ(u) + σ φ(u),  u = (μ − f* − ξ) / σ          (Jones et al. 1998, eq. 15)
for maximisation. A batch is built greedily: after each chosen point the GP is told it observed its
own predicted mean there, without noise (Kriging believer, Ginsbourger et al. 2010): the mean is
unchanged and the variance near the chosen points shrinks to ~0, so the next point goes elsewhere.
A chosen point whose predicted mean beats the incumbent shows that the incumbent search (local, from
the best grid point) missed a better region: the incumbent becomes the best mean found by the same
local search started from that point. Otherwise the improvement there needs no variance, EI stays
high after believing it, and the rest of the batch piles onto the same place.

How each point is searched for (``search``):
- "grid", the GrammarVAE's ``batched_greedy_ei``: one grid of 10,000 uniform points of the box, drawn
  once (the same grid as the posterior-mean incumbent's); per point, the grid point of highest log EI
  refined by L-BFGS-B (150 iterations, box bounds) on log EI;
- "multistart": 2,000 fresh uniform candidates per point, the best 10 refined by Adam on EI.

Local proposals (``local``, grid search): the last ``n_local`` points of a batch are perturbations of
the best points observed so far (the data's and the evaluations'; :func:`local_pool`): the best point at
each scale, then the second best, and so on, each the best of its group of candidates by the same
believed EI, without refinement. A GP fitted on thousands of codes smooths over the small basin a single
good data row sits in, so EI alone -- over the box or over all the candidates at once -- never goes
there (its mean is the smoothed one, its variance near data low); a genetic algorithm's mutations, which
search exactly there, beat the box EI on the first targets of bench/bo_targets.py.

Where (``density``, ``threshold``): the box, as the protocol; or the box cut to the ex-post density's
high-density part {z : log p(z) ≥ τ} (:class:`Region`), for the grid search and the incumbent alike:
the grid is drawn from the density instead of uniformly, and a local search that leaves the region
is pulled back along its path to the region's edge.
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


def log_expected_improvement(mean: torch.Tensor, var: torch.Tensor, best: float) -> torch.Tensor:
    """log EI = log σ + log h(u), h(u) = u Φ(u) + φ(u). Far below the incumbent EI underflows (and
    its gradient with it), so for u < −10 the Mills-ratio series
    h(u) ≈ φ(u)/u² (1 − 3/u² + 15/u⁴ − 105/u⁶ + 945/u⁸); above it, Φ from erfc (accurate in the tail)."""
    sigma = var.clamp_min(1e-18).sqrt()
    u = (mean - best) / sigma
    log_phi = -0.5 * u * u - 0.5 * math.log(2 * math.pi)
    direct = torch.log((u * 0.5 * torch.erfc(-u / _SQRT2) + torch.exp(log_phi)).clamp_min(1e-300))
    t = torch.minimum(u, torch.full_like(u, -10.0))  # the tail's own argument, finite on both branches
    tail = (-0.5 * t * t - 0.5 * math.log(2 * math.pi) - 2 * torch.log(-t)
            + torch.log1p(-3 / t ** 2 + 15 / t ** 4 - 105 / t ** 6 + 945 / t ** 8))
    return sigma.log() + torch.where(u < -10, tail, direct)


class Region:
    """The search region: the box [lower, upper], optionally only where ``density.log_prob`` ≥
    ``threshold`` (an :class:`~grammar_rae.density.ExPostDensity` fitted on the training codes).
    Far from the codes the GP's mean extrapolates (posterior means far below every observed score)
    and the decoder rarely finishes a valid string; the region keeps EI where both were trained."""

    def __init__(self, lower, upper, density=None, threshold: float | None = None, device="cpu"):
        self.lo = torch.as_tensor(lower, dtype=torch.float64, device=device)
        self.hi = torch.as_tensor(upper, dtype=torch.float64, device=device)
        if (density is None) != (threshold is None):
            raise ValueError("a density region needs both the density and its threshold")
        self.density, self.threshold = density, threshold

    def inside(self, x: torch.Tensor) -> np.ndarray:
        """Which rows of ``x`` [n, d] lie in the region (the box is the caller's: L-BFGS-B's bounds)."""
        if self.density is None:
            return np.ones(len(x), dtype=bool)
        return self.density.log_prob(x.detach().cpu().numpy()) >= self.threshold

    def grid(self, n: int, g: torch.Generator) -> torch.Tensor:
        """``n`` points of the region: uniform in the box, or draws of the density inside the box
        (clipped to it) that pass the threshold, drawn in rounds until there are ``n``. ``g`` is a CPU
        generator: a seed gives the same points on every device."""
        if self.density is None:
            return self.lo + (self.hi - self.lo) * _uniform(n, len(self.lo), g, self.lo.device)
        kept = []
        for _ in range(100):
            seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=g, device="cpu"))
            draw = torch.as_tensor(self.density.sample(2 * n, seed=seed), dtype=torch.float64, device=self.lo.device)
            draw = torch.maximum(torch.minimum(draw, self.hi), self.lo)
            kept.append(draw[torch.as_tensor(self.inside(draw), device=self.lo.device)])
            if sum(len(k) for k in kept) >= n:
                return torch.cat(kept)[:n]
        raise ValueError(f"the density region is too small: fewer than {n} of {200 * n} draws passed "
                         f"the threshold {self.threshold:.3g}")

    def pull(self, start: torch.Tensor, x: torch.Tensor, steps: int = 30) -> torch.Tensor:
        """``x`` if it is inside, else the furthest point of the segment start → x found inside by
        bisection (``start`` is a grid point or a chosen point: inside)."""
        if self.inside(x[None])[0] or not self.inside(start[None])[0]:
            return x
        a, b = 0.0, 1.0
        for _ in range(steps):
            mid = (a + b) / 2
            if self.inside((start + mid * (x - start))[None])[0]:
                a = mid
            else:
                b = mid
        return start + a * (x - start)


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
        c_inv = torch.linalg.inv(cov + 1e-6 * torch.eye(len(xf), dtype=cov.dtype, device=cov.device))
        self._f = (xf, a_f, sa_f, c_inv)


# local_pool: the best observed points it perturbs, the perturbations' scales (times the codes' std per
# dimension) and how many candidates each (point, scale) gets
LOCAL_ANCHORS, LOCAL_SCALES, LOCAL_PER = 10, (0.05, 0.1, 0.2, 0.4), 250


def local_pool(x: np.ndarray, y: np.ndarray, maximise: bool, lower, upper, seed: int, anchors: int = LOCAL_ANCHORS,
               scales=LOCAL_SCALES, per: int = LOCAL_PER) -> np.ndarray:
    """[anchors · len(scales), per, d] candidates near the best observed points, in the order local
    proposals use them: for the best row of ``x`` (by ``y``) a group of ``per`` perturbations at each scale
    (Gaussian noise of ``s`` times the per-dimension std of ``x``), then for the second best, and so on;
    clipped to the box [lower, upper] (the genetic algorithm's mutation, as EI candidates)."""
    rng = np.random.default_rng(seed)
    order = np.argsort(-y if maximise else y, kind="stable")[:anchors]
    s = np.asarray(scales, dtype=float)
    noise = rng.standard_normal((len(order), len(s), per, x.shape[1])) * (s[None, :, None, None] * x.std(0))
    pts = x[order][:, None, None, :] + noise
    return np.clip(pts, lower, upper).reshape(len(order) * len(s), per, x.shape[1])


def batched_greedy_ei(gp: SparseGP, best: float, lower: np.ndarray, upper: np.ndarray, batch: int = 50,
                      search: str = "grid", n_grid: int = 10_000, maxiter: int = 150, n_candidates: int = 2000,
                      n_starts: int = 10, steps: int = 100, lr: float = 0.05, seed: int = 0,
                      maximise: bool = True, density=None, threshold: float | None = None,
                      local: np.ndarray | None = None, n_local: int = 0) -> np.ndarray:
    """``batch`` points in the box [lower, upper] chosen greedily by EI with the Kriging believer;
    with ``density`` and ``threshold`` only where log p ≥ threshold (:class:`Region`, grid search).

    ``best`` is in the units of y; with ``maximise=False`` (e.g. the expression score) EI is taken
    on −y. ``search`` (module docstring): "grid" (``n_grid``, ``maxiter``; the grid is the one
    :func:`posterior_mean_incumbent` draws with the same ``seed``) or "multistart" (``n_candidates``,
    ``n_starts``, ``steps``, ``lr``). ``local`` [groups, m, d] (:func:`local_pool`) and ``n_local``: the
    last ``n_local`` points are each the best by the believed EI of one group, in turn (grid search; module
    docstring).
    """
    g = torch.Generator().manual_seed(seed)
    region = Region(lower, upper, density, threshold, device=gp.z.device)
    lo, hi = region.lo, region.hi
    sign = 1.0 if maximise else -1.0
    f_best = sign * (best - gp.y_mean) / gp.y_std  # in the GP's standardised units, signed
    if search not in ("grid", "multistart"):
        raise ValueError(f"unknown EI search {search!r} (grid or multistart)")
    if search == "multistart" and density is not None:
        raise ValueError("the density region is searched by the grid search only (ei_search='grid')")
    if n_local and (search != "grid" or local is None or not len(local)):
        raise ValueError("local proposals need the grid search and a pool of candidates")
    with frozen(gp):  # only the query points are optimised
        if search == "grid":
            pool = torch.as_tensor(local, dtype=torch.float64, device=gp.z.device) if n_local else None
            return _greedy_grid(gp, f_best, sign, region, batch, region.grid(n_grid, g), maxiter, pool,
                                min(n_local, batch))
        return _greedy(gp, f_best, sign, lo, hi, batch, n_candidates, n_starts, steps, lr, g)


def _lbfgs(f, x0: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, maxiter: int) -> torch.Tensor:
    """``x0`` [d] moved uphill on the scalar ``f`` (of a [1, d] batch) by L-BFGS-B inside the box, as
    the GrammarVAE's ``global_optimization`` does (on the host; ``f`` runs where ``x0`` is); the start
    is kept if the search ends lower."""
    from scipy.optimize import minimize

    def negative(v):
        x = torch.tensor(v, dtype=torch.float64, device=x0.device, requires_grad=True)
        value = -f(x[None])[0]
        value.backward()
        if not torch.isfinite(value):
            return 1e300, np.zeros_like(v)
        return float(value.detach()), x.grad.cpu().numpy().copy()

    v0 = x0.detach().cpu().numpy()
    start = negative(v0)[0]
    r = minimize(negative, v0, jac=True, method="L-BFGS-B", bounds=list(zip(lo.tolist(), hi.tolist())),
                 options={"maxiter": maxiter})
    return torch.as_tensor(r.x, dtype=torch.float64, device=x0.device) if r.fun <= start else x0.clone()


def _greedy_grid(gp, f_best, sign, region: Region, batch, grid, maxiter, pool=None, n_local: int = 0) -> np.ndarray:
    believed = BelievedGP(gp)
    lo, hi = region.lo, region.hi

    def log_ei(x):
        return log_expected_improvement(*_signed(believed.mean_var(x), sign), f_best)

    chosen = []
    for k in range(batch):
        x = None
        if k >= batch - n_local:   # a local proposal: the best point of the next group inside the region, as it is
            group = pool[(k - (batch - n_local)) % len(pool)]
            ok = torch.as_tensor(region.inside(group), device=group.device)
            if bool(ok.any()):     # (a group wholly outside a density region gives way to the grid's EI point)
                with torch.no_grad():
                    score = log_ei(group)
                x = group[torch.where(ok, score, torch.tensor(-torch.inf, dtype=score.dtype)).argmax()]
        if x is None:
            with torch.no_grad():
                start = grid[log_ei(grid).argmax()]
            x = region.pull(start, _lbfgs(log_ei, start, lo, hi, maxiter))
        f_best = _believe(believed, x, sign, f_best, region, maxiter)
        chosen.append(x)
    return torch.stack(chosen).cpu().numpy()


def _believe(believed: "BelievedGP", x: torch.Tensor, sign: float, f_best: float, region: Region,
             maxiter: int = 150) -> float:
    """Tell the believer about ``x``; returns the incumbent, raised (module docstring) when x's
    predicted mean beats it."""
    def signed_mean(v):
        return sign * believed.mean_var(v)[0]  # the believer leaves the mean unchanged

    with torch.no_grad():
        mean = float(signed_mean(x[None])[0])
    believed.believe(x)
    if mean <= f_best:
        return f_best
    top = region.pull(x, _lbfgs(signed_mean, x, region.lo, region.hi, maxiter))
    with torch.no_grad():
        return max(mean, float(signed_mean(top[None])[0]))


def _uniform(n: int, d: int, g: torch.Generator, device) -> torch.Tensor:
    """[n, d] uniform draws on [0, 1) from the CPU generator ``g``, moved to ``device``."""
    return torch.rand(n, d, generator=g, dtype=torch.float64, device="cpu").to(device)


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
        cand = lo + (hi - lo) * _uniform(n_candidates, len(lo), g, lo.device)
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
        f_best = _believe(believed, x, sign, f_best, Region(lo, hi, device=lo.device))
        chosen.append(x)
    return torch.stack(chosen).cpu().numpy()


def posterior_mean_incumbent(gp: SparseGP, lower: np.ndarray, upper: np.ndarray, maximise: bool = True,
                             seed: int = 0, n_grid: int = 10_000, steps: int = 150, search: str = "grid",
                             lr: float = 0.05, density=None, threshold: float | None = None) -> float:
    """The best GP posterior mean over the box, in the units of y: the EI incumbent of the
    GrammarVAE's ``batched_greedy_ei`` (a 10,000-point random grid, then a local search from its best
    point: with ``search="grid"`` L-BFGS-B for ``steps`` iterations, as theirs, on the grid that
    ``batched_greedy_ei(search="grid")`` draws with the same ``seed``; with "multistart" ``steps``
    Adam steps clipped to the box, as BENCHMARKS.md's multistart rows ran). ``density`` and
    ``threshold``: over the density region only (:class:`Region`; grid search)."""
    g = torch.Generator().manual_seed(seed)
    region = Region(lower, upper, density, threshold, device=gp.z.device)
    if search != "grid" and density is not None:
        raise ValueError("the density region is searched by the grid search only (search='grid')")
    lo, hi = region.lo, region.hi
    sign = 1.0 if maximise else -1.0
    with frozen(gp):
        l_mm, s = gp._chol_mm(), gp._s()

        def signed_mean(x):
            return sign * gp.latent(x, l_mm=l_mm, s=s)[0]

        grid = region.grid(n_grid, g)
        with torch.no_grad():
            best_grid = signed_mean(grid)
        start = grid[best_grid.argmax()]
        if search == "grid":
            x = region.pull(start, _lbfgs(signed_mean, start, lo, hi, steps))[None]
        else:
            x = _ascend(signed_mean, start[None], lo, hi, steps, lr)
        with torch.no_grad():
            best = max(float(best_grid.max()), float(signed_mean(x)[0]))
    return sign * best * gp.y_std + gp.y_mean
