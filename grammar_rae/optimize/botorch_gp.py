"""The BoTorch route for latent-space BO (``--gp botorch``): a sparse variational GP
(``SingleTaskVariationalGP``, Hensman et al. 2013; inducing points from a random data subset, trained
on minibatches with gpytorch's ``VariationalELBO``) and a batch proposed by ``qLogExpectedImprovement``
(Ament et al., NeurIPS 2023) with sequential greedy optimisation (``optimize_acqf(sequential=True)``:
each point is conditioned on the ones already chosen). Inputs are scaled to the unit box and targets
standardised here; the native route (gp.py + acquisition.py) is the GrammarVAE protocol itself.

Needs the optional extra: ``pip install "grammar-rae[botorch]"``.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def available() -> bool:
    try:
        import botorch  # noqa: F401
        return True
    except ImportError:
        return False


def fit_and_propose(x: np.ndarray, y: np.ndarray, lower: np.ndarray, upper: np.ndarray, batch: int,
                    maximise: bool, n_inducing: int = 500, epochs: int = 10, lr: float = 5e-3,
                    minibatch: int = 5000, seed: int = 0, x_test=None, y_test=None,
                    num_restarts: int = 5, raw_samples: int = 256) -> tuple[np.ndarray, dict | None]:
    """Fit the SVGP on (x, y), propose ``batch`` points in [lower, upper]; test RMSE/log-likelihood
    (in the units of y) when ``x_test`` is given."""
    if not available():
        raise ImportError('the BoTorch route needs BoTorch: pip install "grammar-rae[botorch]"')
    from botorch.acquisition.logei import qLogExpectedImprovement
    from botorch.models import SingleTaskVariationalGP
    from botorch.optim import optimize_acqf
    from gpytorch.mlls import VariationalELBO

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    lo, hi = (torch.as_tensor(b, dtype=torch.float64) for b in (lower, upper))
    span = (hi - lo).clamp_min(1e-9)
    sign = 1.0 if maximise else -1.0
    X = (torch.as_tensor(x, dtype=torch.float64) - lo) / span
    yt = sign * torch.as_tensor(y, dtype=torch.float64)
    y_mean, y_std = yt.mean(), yt.std().clamp_min(1e-12)
    Y = ((yt - y_mean) / y_std).unsqueeze(-1)
    m = min(n_inducing, len(X))
    inducing = X[torch.randperm(len(X), generator=g)[:m]].clone()
    model = SingleTaskVariationalGP(X, Y, inducing_points=inducing, learn_inducing_points=True)
    mll = VariationalELBO(model.likelihood, model.model, num_data=len(X))
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(len(X), generator=g).split(minibatch):
            loss = -mll(model.model(X[idx]), Y[idx].squeeze(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    metrics = None
    if x_test is not None and len(x_test):
        with torch.no_grad():
            xt = (torch.as_tensor(x_test, dtype=torch.float64) - lo) / span
            post = model.posterior(xt, observation_noise=True)
            mean = (post.mean.squeeze(-1) * y_std + y_mean) * sign
            var = post.variance.squeeze(-1) * y_std ** 2
        yt_test = torch.as_tensor(y_test, dtype=torch.float64)
        ll = -0.5 * torch.log(2 * math.pi * var) - (yt_test - mean) ** 2 / (2 * var)
        metrics = {"rmse": float(((yt_test - mean) ** 2).mean().sqrt()), "log_likelihood": float(ll.mean())}
    acq = qLogExpectedImprovement(model, best_f=Y.max())
    unit = torch.stack([torch.zeros(X.shape[1], dtype=torch.float64), torch.ones(X.shape[1], dtype=torch.float64)])
    cand, _ = optimize_acqf(acq, bounds=unit, q=batch, num_restarts=num_restarts, raw_samples=raw_samples,
                            sequential=True)
    return (cand.detach() * span + lo).numpy(), metrics
