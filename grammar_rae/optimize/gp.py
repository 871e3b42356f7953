"""A sparse variational GP (SVGP, Hensman et al., UAI 2013) in torch, for BO on latent codes.

GrammarVAE protocol (REFERENCE.md §5): ARD-RBF kernel, 500 inducing points initialised on a random
subset of the data, Adam (lr 5e-4), 50 epochs, minibatches of 5,000. Whitened parameterisation
u = L_mm v, q(v) = N(m, S Sᵀ); the ELBO on a minibatch B of N points is

    ELBO = N/|B| · Σ_{i∈B} E_q[log N(y_i | f_i, σ²)] − KL(q(v) ‖ N(0, I))             (Hensman eq. 4)

with E_q[log N(y|f,σ²)] = log N(y | μ_i, σ²) − v_i / (2σ²), μ = Aᵀm, v = k_ii − ‖A_i‖² + ‖SᵀA_i‖²,
A = L_mm⁻¹ K_mn. Targets are standardised internally.

The ELBO needs the variances only summed over the minibatch, so ``elbo`` never forms A:
Σ_i v_i = |B| s² − tr P + tr(Sᵀ P S) with P = L_mm⁻¹ (K_mB K_Bm) L_mm⁻ᵀ, and μ = K_Bm (L_mm⁻ᵀ m).
That is one M×M Gram product of the minibatch instead of a triangular solve with |B| right-hand
sides plus an M×M by M×|B| product (and their backward passes): ~3× less work per step.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class _Gram(torch.autograd.Function):
    """Ψ = K Kᵀ with a one-product backward: dK = (G + Gᵀ) K (autograd would form Gᵀ… twice)."""

    @staticmethod
    def forward(ctx, k):
        ctx.save_for_backward(k)
        return k @ k.T

    @staticmethod
    def backward(ctx, grad):
        (k,) = ctx.saved_tensors
        return (grad + grad.T) @ k


class SparseGP(nn.Module):
    def __init__(self, inducing: torch.Tensor, lengthscale: torch.Tensor | float = 1.0, noise: float = 0.1):
        super().__init__()
        m, d = inducing.shape
        like = dict(dtype=inducing.dtype, device=inducing.device)  # every parameter where the inducing points are
        self.z = nn.Parameter(inducing.clone())
        ls = torch.as_tensor(lengthscale, **like).expand(d).clone()
        self.log_lengthscale = nn.Parameter(ls.log())
        self.log_outputscale = nn.Parameter(torch.zeros((), **like))
        self.log_noise = nn.Parameter(torch.tensor(math.log(noise), **like))
        self.q_mean = nn.Parameter(torch.zeros(m, **like))
        self.q_sqrt = nn.Parameter(torch.eye(m, **like))  # lower-triangular part is used
        self.y_mean, self.y_std = 0.0, 1.0

    # ------------------------------------------------------------------ kernel
    def kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """ARD RBF: s² exp(−½ Σ_d (a_d − b_d)² / ℓ_d²)."""
        ls = self.log_lengthscale.exp()
        a, b = a / ls, b / ls
        # ‖a − b‖² expanded: one matrix product, and a cheap backward (torch.cdist's is not)
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return torch.exp(self.log_outputscale - 0.5 * sq.clamp_min(0))

    def _chol_mm(self):
        kmm = self.kernel(self.z, self.z)
        jitter = 1e-6 * kmm.diagonal().mean()
        return torch.linalg.cholesky(kmm + jitter * torch.eye(len(self.z), dtype=kmm.dtype, device=kmm.device))

    def _project(self, x: torch.Tensor, l_mm=None):
        l_mm = self._chol_mm() if l_mm is None else l_mm
        return torch.linalg.solve_triangular(l_mm, self.kernel(self.z, x), upper=False)  # A [M, n]

    def _s(self):
        return torch.tril(self.q_sqrt)

    def latent(self, x: torch.Tensor, full_cov: bool = False, l_mm=None, s=None):
        """Mean and variance (or covariance) of f(x) under q, in standardised units. ``l_mm`` and ``s``
        (from a frozen GP) skip the O(M³) Cholesky when the caller asks many times."""
        a = self._project(x, l_mm)
        s_a = (self._s() if s is None else s).T @ a
        mean = a.T @ self.q_mean
        if full_cov:
            cov = self.kernel(x, x) - a.T @ a + s_a.T @ s_a
            return mean, cov
        var = self.log_outputscale.exp() - a.pow(2).sum(0) + s_a.pow(2).sum(0)
        return mean, var.clamp_min(1e-10)

    def elbo(self, x: torch.Tensor, y: torch.Tensor, n_total: int) -> torch.Tensor:
        """Hensman eq. 4 on the minibatch (x, y), scaled to ``n_total`` points (module docstring)."""
        l_mm, s = self._chol_mm(), self._s()
        k_mb = self.kernel(self.z, x)                                         # [M, B]
        mean = k_mb.T @ torch.linalg.solve_triangular(l_mm.T, self.q_mean[:, None], upper=True)[:, 0]
        half = torch.linalg.solve_triangular(l_mm, _Gram.apply(k_mb), upper=False)  # L⁻¹ Ψ
        p = torch.linalg.solve_triangular(l_mm, half.T, upper=False)             # L⁻¹ Ψ L⁻ᵀ (Ψ symmetric)
        var_sum = len(x) * self.log_outputscale.exp() - p.diagonal().sum() + ((p @ s) * s).sum()
        noise = self.log_noise.exp()
        exp_ll = (len(x) * (-0.5 * math.log(2 * math.pi) - 0.5 * noise.log())
                  - ((y - mean).pow(2).sum() + var_sum) / (2 * noise))
        kl = 0.5 * (s.pow(2).sum() + self.q_mean.pow(2).sum() - len(self.z)
                    - 2 * s.diagonal().abs().clamp_min(1e-12).log().sum())
        return n_total / len(x) * exp_ll - kl

    # ------------------------------------------------------------------ fitting and prediction
    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, n_inducing: int = 500, epochs: int = 50, batch: int = 5000,
            lr: float = 5e-4, seed: int = 0, progress: bool = False, device="cpu",
            init: "SparseGP | None" = None, init_from_targets: bool = True) -> "SparseGP":
        """The GrammarVAE protocol's settings by default (lr 5e-4 is theirs; with few epochs a larger
        lr converges faster): inducing points a random subset of the data, the variational mean
        initialised from their targets (``init_from_targets``; else 0). ``init``: start from a fitted
        GP's parameters (a warm start when a BO iteration adds a few points) instead."""
        from tqdm import tqdm  # text bars (tqdm.auto wants ipywidgets in notebooks)

        g = torch.Generator().manual_seed(seed)
        xt = torch.as_tensor(x, dtype=torch.float64, device=device)
        yt = torch.as_tensor(y, dtype=torch.float64, device=device).reshape(-1)
        if len(xt) != len(yt) or xt.ndim != 2:
            raise ValueError(f"x must be [n, d] and y [n]; got {tuple(xt.shape)} and {tuple(yt.shape)}")
        y_mean, y_std = yt.mean().item(), yt.std().item() or 1.0
        ys = (yt - y_mean) / y_std
        warm = init
        m = len(warm.z) if warm is not None else min(n_inducing, len(xt))
        # draws from the CPU generator, so a seed chooses the same points on every device
        chosen = torch.randperm(len(xt), generator=g, device="cpu")[:m].to(device)
        init = xt[chosen]
        # lengthscale: median pairwise distance of a subset, per dimension via the data spread
        spread = xt.std(0).clamp_min(1e-3)
        gp = cls(init, lengthscale=spread * math.sqrt(xt.shape[1]), noise=0.1).to(device)
        if warm is not None:  # a few added points barely move the targets' standardisation
            gp.load_state_dict(warm.state_dict())
        elif init_from_targets:  # q(u) starts at the inducing points' own targets, as the GVAE's GP does
            with torch.no_grad():
                gp.q_mean.copy_(torch.linalg.solve_triangular(gp._chol_mm(), ys[chosen][:, None], upper=False)[:, 0])
        gp.y_mean, gp.y_std = y_mean, y_std
        opt = torch.optim.Adam(gp.parameters(), lr=lr)
        n = len(xt)
        for _ in tqdm(range(epochs), desc="sparse GP", disable=not progress):
            order = torch.randperm(n, generator=g, device="cpu").to(device)
            for i in range(0, n, batch):
                idx = order[i:i + batch]
                loss = -gp.elbo(xt[idx], ys[idx], n) / n
                opt.zero_grad()
                loss.backward()
                opt.step()
        return gp.eval()

    @torch.no_grad()
    def predict(self, x: np.ndarray | torch.Tensor, include_noise: bool = True):
        """Predictive mean and variance in the units of y."""
        xt = torch.as_tensor(x, dtype=torch.float64, device=self.z.device)
        mean, var = self.latent(xt)
        if include_noise:
            var = var + self.log_noise.exp()
        return (mean * self.y_std + self.y_mean).cpu().numpy(), (var * self.y_std ** 2).cpu().numpy()

    def test_metrics(self, x: np.ndarray, y: np.ndarray) -> dict:
        """RMSE and mean predictive log-likelihood on held-out data (as the GrammarVAE reports)."""
        mean, var = self.predict(x)
        y = np.asarray(y, dtype=float).reshape(-1)
        ll = -0.5 * np.log(2 * np.pi * var) - (y - mean) ** 2 / (2 * var)
        return {"rmse": float(np.sqrt(np.mean((y - mean) ** 2))), "log_likelihood": float(ll.mean())}
