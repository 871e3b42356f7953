"""A normalizing flow as an ex-post density (issue 36): RealNVP's affine coupling layers (Dinh et al., ICLR
2017) on the whitened training codes, fitted by maximum likelihood with a held-out tenth for early stopping.

    x = L⁻¹(z − μ)            whitening by the codes' mean and covariance Cholesky factor L
    u = f_K ∘ … ∘ f_1(x)      f_k: x_b ↦ x_b · exp(s_k(x_a)) + t_k(x_a) on one half b of the coordinates,
                              given the other half a (alternating halves of a fixed random permutation)
    log q(z) = log N(u; 0, I) + Σ_k Σ s_k − log|det L|        (change of variables)

s is bounded (``scale · tanh``) so early training cannot blow up. Sampling runs the layers backwards from
u ~ N(0, I). Same interface as :class:`grammar_rae.density.ExPostDensity` (fit / sample / log_prob /
save / load); weights in safetensors, settings in JSON, nothing pickled.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .density import _NetDensity


class FlowDensity(_NetDensity):
    kind = "flow"

    def __init__(self, layers: int = 8, hidden: int = 256, epochs: int = 200, batch_size: int = 512,
                 lr: float = 1e-3, patience: int = 15, seed: int = 0, **_ignored):
        self.layers, self.hidden, self.epochs, self.batch_size = layers, hidden, epochs, batch_size
        self.lr, self.patience, self.seed = lr, patience, seed
        self.net = self.mean = self.chol = self.perms = None
        self.held_out: float | None = None   # mean log-likelihood of the held-out codes at the kept epoch
        self.epochs_run = 0

    # ------------------------------------------------------------------ the network
    def _build(self, d: int):
        import torch
        from torch import nn

        a = d // 2
        g = torch.Generator().manual_seed(self.seed)
        self.perms = torch.stack([torch.randperm(d, generator=g) for _ in range(self.layers)])

        def mlp():
            return nn.Sequential(nn.Linear(a, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.hidden), nn.ReLU(),
                                 nn.Linear(self.hidden, 2 * (d - a)))

        self.net = nn.ModuleList(mlp() for _ in range(self.layers))
        for m in self.net:            # start at the identity map
            nn.init.zeros_(m[-1].weight)
            nn.init.zeros_(m[-1].bias)

    def _forward(self, x):
        """u and Σ log|det| of the coupling layers, for whitened codes x [n, d]."""
        import torch

        a = x.shape[1] // 2
        logdet = torch.zeros(len(x), dtype=x.dtype)
        for perm, m in zip(self.perms, self.net):
            x = x[:, perm]
            xa, xb = x[:, :a], x[:, a:]
            s, t = m(xa).chunk(2, dim=1)
            s = 2.0 * torch.tanh(s / 2.0)
            x = torch.cat([xa, xb * torch.exp(s) + t], 1)
            logdet = logdet + s.sum(1)
        return x, logdet

    def _inverse(self, u):
        import torch

        a = u.shape[1] // 2
        for perm, m in zip(reversed(self.perms), reversed(self.net)):
            ua, ub = u[:, :a], u[:, a:]
            s, t = m(ua).chunk(2, dim=1)
            s = 2.0 * torch.tanh(s / 2.0)
            u = torch.cat([ua, (ub - t) * torch.exp(-s)], 1)
            u = u[:, torch.argsort(perm)]
        return u

    def _log_prob_white(self, x):
        u, logdet = self._forward(x)
        return -0.5 * (u * u).sum(1) - 0.5 * u.shape[1] * math.log(2 * math.pi) + logdet

    # ------------------------------------------------------------------ fitting (_NetDensity.fit seeds it)
    def _fit(self, z: np.ndarray) -> "FlowDensity":
        import copy

        import torch

        from .density import DensityError

        if z.shape[1] < 2 or len(z) < 20:
            raise DensityError(f"a flow needs codes of at least 2 dimensions and 20 rows, got {z.shape}")
        self.mean = z.mean(0)
        cov = np.cov(z, rowvar=False) + 1e-6 * np.eye(z.shape[1])
        self.chol = np.linalg.cholesky(cov)
        x = torch.as_tensor(np.linalg.solve(self.chol, (z - self.mean).T).T, dtype=torch.float32)
        self._build(x.shape[1])
        g = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(x), generator=g)
        cut = max(10, len(x) // 10)
        held, train = x[order[:cut]], x[order[cut:]]
        opt = torch.optim.Adam(self.net.parameters(), self.lr)
        best, best_state, bad = -math.inf, copy.deepcopy(self.net.state_dict()), 0
        for epoch in range(self.epochs):
            self.net.train()
            for idx in torch.randperm(len(train), generator=g).split(self.batch_size):
                loss = -self._log_prob_white(train[idx]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            if not torch.isfinite(loss):
                raise DensityError("the flow diverged (non-finite loss); try a lower lr")
            self.net.eval()
            with torch.no_grad():
                ll = float(self._log_prob_white(held).mean())
            self.epochs_run = epoch + 1
            if ll > best:
                best, best_state, bad = ll, copy.deepcopy(self.net.state_dict()), 0
            else:
                bad += 1
                if bad >= self.patience:
                    break
        self.net.load_state_dict(best_state)
        self.net.eval()
        self.held_out = best - float(np.log(np.diag(self.chol)).sum())   # in the units of z
        return self

    # ------------------------------------------------------------------ using
    @property
    def dim(self) -> int:
        self._need_fit()
        return len(self.mean)

    def sample(self, n: int, seed: int | None = None, temperature: float = 1.0) -> np.ndarray:
        """``n`` codes as float32 [n, d]; ``temperature`` < 1 draws u from N(0, T²I) (fewer outliers)."""
        import torch

        self._need_fit()
        g = torch.Generator().manual_seed(self.seed if seed is None else seed)
        with torch.no_grad():
            x = self._inverse(temperature * torch.randn(n, self.dim, generator=g)).double().numpy()
        return (x @ self.chol.T + self.mean).astype(np.float32)

    def log_prob(self, z) -> np.ndarray:
        import torch

        self._need_fit()
        x = np.linalg.solve(self.chol, (np.asarray(z, dtype=np.float64) - self.mean).T).T
        with torch.no_grad():
            lp = self._log_prob_white(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
        return lp - np.log(np.diag(self.chol)).sum()

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> None:
        from .density import _save_files

        self._need_fit()
        arrays = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        arrays.update(mean=self.mean, chol=self.chol, perms=self.perms.numpy())
        _save_files(path, arrays, {"kind": self.kind, "layers": self.layers, "hidden": self.hidden,
                                   "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                                   "patience": self.patience, "seed": self.seed, "held_out": self.held_out,
                                   "epochs_run": self.epochs_run})

    @classmethod
    def load(cls, path: str | Path) -> "FlowDensity":
        import torch

        from .density import DensityError, _read_files

        path = Path(path)
        meta, arrays = _read_files(path)
        try:
            d = cls(meta["layers"], meta["hidden"], meta["epochs"], meta["batch_size"], meta["lr"],
                    meta["patience"], meta["seed"])
            d.held_out, d.epochs_run = meta.get("held_out"), meta.get("epochs_run", 0)
            d.mean, d.chol = arrays.pop("mean"), arrays.pop("chol")
            d._build(len(d.mean))
            d.perms = torch.from_numpy(arrays.pop("perms").astype(np.int64))
            d.net.load_state_dict({k.removeprefix("net."): torch.from_numpy(v) for k, v in arrays.items()})
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise DensityError(f"cannot read density {path}: {e}") from e
        if d.perms.shape != (d.layers, len(d.mean)):
            raise DensityError(f"density {path}: arrays have inconsistent shapes")
        d.net.eval()
        return d
