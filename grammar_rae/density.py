"""Ex-post density estimation (Ghosh et al., ICLR 2020, Sec. 4): instead of trusting a prior, fit
q(z) on the latent codes of the training set and sample from it.

One interface for every estimator: ``fit(z) / sample(n) / log_prob(z) / save(path) / load(path)``.
Saved as safetensors (arrays) + JSON (settings): nothing is ever pickled.

- ``prior``    N(0, I): what a VAE assumes; the baseline for the deterministic models.
- ``gaussian`` one full-covariance Gaussian (the paper's "N" column).
- ``gmm``      a k-component full-covariance GMM (the paper's "GMM" column: k=10, sklearn
               GaussianMixture with max_iter 2000, tol 1e-3); ``k="auto"`` picks k by held-out
               log-likelihood.
- ``two-stage`` the 2-stage VAE's second stage (Dai & Wipf, ICLR 2019): a small MLP VAE fitted on the
               codes, sampled by decoding u ~ N(0, I); its ``log_prob`` is the ELBO (a lower bound).
- ``flow``     a RealNVP normalizing flow on the whitened codes (flow.py), early-stopped on held-out codes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.special import logsumexp
from .errors import UserError

KINDS = ("prior", "gaussian", "gmm", "two-stage", "flow")


class DensityError(ValueError, UserError):
    pass


def _check(z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or len(z) == 0:
        raise DensityError(f"expected latent codes as an [n, d] array, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise DensityError("latent codes contain NaN or inf; refusing to fit a density to them")
    return z


def _read_files(path: Path) -> tuple[dict, dict]:
    """The settings JSON and the arrays of a saved density, the arrays checked against their checksum."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from .checkpoint import RunError, verify_files

    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        if not isinstance(meta, dict) or meta.get("format") != "grammar-rae-density/1":
            raise DensityError(f"{path.with_suffix('.json')} is not a grammar-rae density file")
        verify_files(path.parent, meta.get("sha256"))
        return meta, load_file(str(path.with_suffix(".safetensors")))
    except RunError as e:
        raise DensityError(str(e)) from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, SafetensorError) as e:
        raise DensityError(f"cannot read density {path}: {e}") from e


def _gauss_logpdf(z: np.ndarray, mean: np.ndarray, chol: np.ndarray) -> np.ndarray:
    """log N(z; mean, L Lᵀ) for each row of z, via the Cholesky factor L."""
    from scipy.linalg import solve_triangular

    d = z.shape[1]
    y = solve_triangular(chol, (z - mean).T, lower=True)
    return -0.5 * (y * y).sum(0) - np.log(np.diag(chol)).sum() - 0.5 * d * np.log(2 * np.pi)


def _save_files(path: str | Path, arrays: dict, meta: dict) -> None:
    """``path.safetensors`` (numpy arrays) and ``path.json`` (settings), each written atomically."""
    from safetensors.numpy import save_file

    from .io import atomic_target, atomic_write_bytes

    from .checkpoint import file_sha256

    path = Path(path)
    tensors = path.with_suffix(".safetensors")
    with atomic_target(tensors) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp)
    # the checksum rides in the JSON, written last: the two files commit together
    meta = {"format": "grammar-rae-density/1", **meta, "sha256": {tensors.name: file_sha256(tensors)}}
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=1).encode())


class ExPostDensity:
    """A density over latent codes; build one with :func:`make_density` or :meth:`load`."""

    def __init__(self, kind: str = "gmm", k: int | str = 10, seed: int = 0, reg_covar: float = 1e-6,
                 max_iter: int = 2000, tol: float = 1e-3, k_candidates=(1, 2, 5, 10, 20)):
        if kind in ("two-stage", "flow"):
            raise DensityError(f"the {kind} density has its own class: use make_density({kind!r})")
        if kind not in KINDS:
            raise DensityError(f"unknown density {kind!r}; choose from {KINDS}")
        self.kind, self.k, self.seed, self.reg_covar = kind, k, seed, reg_covar
        self.max_iter, self.tol, self.k_candidates = max_iter, tol, tuple(k_candidates)
        self.weights = self.means = self.chols = None
        self.selection: dict[int, float] | None = None  # k -> held-out mean log-likelihood

    # ------------------------------------------------------------------ fitting
    def fit(self, z, dim: int | None = None) -> "ExPostDensity":
        if self.kind == "prior":
            d = dim if dim is not None else _check(z).shape[1]
            self._set(np.ones(1), np.zeros((1, d)), np.eye(d)[None])
            return self
        z = _check(z)
        if self.kind == "gaussian":
            cov = np.cov(z, rowvar=False).reshape(z.shape[1], z.shape[1]) + self.reg_covar * np.eye(z.shape[1])
            self._set(np.ones(1), z.mean(0, keepdims=True), np.linalg.cholesky(cov)[None])
            return self
        k = self.k
        if k == "auto":
            k = self._select_k(z)
        self._fit_gmm(z, int(k))
        return self

    def _fit_gmm(self, z: np.ndarray, k: int):
        from sklearn.mixture import GaussianMixture

        if k > len(z):
            raise DensityError(f"a {k}-component GMM needs at least {k} codes, got {len(z)}")
        gm = GaussianMixture(k, covariance_type="full", max_iter=self.max_iter, tol=self.tol,
                             reg_covar=self.reg_covar, random_state=self.seed).fit(z)
        self._set(gm.weights_, gm.means_, np.linalg.cholesky(gm.covariances_))
        self.k = k

    def _select_k(self, z: np.ndarray) -> int:
        """The k with the best mean log-likelihood on a held-out fifth of the codes."""
        rng = np.random.default_rng(self.seed)
        idx = rng.permutation(len(z))
        cut = max(1, len(z) // 5)
        held, train = z[idx[:cut]], z[idx[cut:]]
        self.selection = {}
        for k in self.k_candidates:
            if k > len(train):
                continue
            self._fit_gmm(train, k)
            self.selection[k] = float(self.log_prob(held).mean())
        return max(self.selection, key=self.selection.get)

    def _set(self, weights, means, chols):
        self.weights = np.asarray(weights, dtype=np.float64)
        self.means = np.asarray(means, dtype=np.float64)
        self.chols = np.asarray(chols, dtype=np.float64)

    # ------------------------------------------------------------------ using
    @property
    def dim(self) -> int:
        self._need_fit()
        return self.means.shape[1]

    def _need_fit(self):
        if self.means is None:
            raise DensityError("the density is not fitted yet: call fit(z) first")

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """``n`` codes drawn from the density, as float32 ``[n, d]``."""
        self._need_fit()
        rng = np.random.default_rng(self.seed if seed is None else seed)
        comp = rng.choice(len(self.weights), size=n, p=self.weights / self.weights.sum())
        eps = rng.standard_normal((n, self.dim))
        z = self.means[comp] + np.einsum("nij,nj->ni", self.chols[comp], eps)
        return z.astype(np.float32)

    def log_prob(self, z) -> np.ndarray:
        self._need_fit()
        z = np.asarray(z, dtype=np.float64)
        per = np.stack([np.log(w) + _gauss_logpdf(z, m, c) for w, m, c in zip(self.weights, self.means, self.chols)])
        return logsumexp(per, axis=0)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> None:
        """``path.safetensors`` holds the arrays, ``path.json`` the settings; written atomically."""
        self._need_fit()
        _save_files(path, {"weights": self.weights, "means": self.means, "chols": self.chols},
                    {"kind": self.kind, "k": self.k, "seed": self.seed, "reg_covar": self.reg_covar,
                     "selection": self.selection})

    @classmethod
    def load(cls, path: str | Path) -> "ExPostDensity":
        path = Path(path)
        meta, arrays = _read_files(path)
        if meta.get("kind") == "two-stage":
            return SecondStageVAE.load(path)
        if meta.get("kind") == "flow":
            from .flow import FlowDensity

            return FlowDensity.load(path)
        try:
            d = cls(meta["kind"], meta["k"], meta["seed"], meta["reg_covar"])
            d.selection = {int(k): v for k, v in (meta.get("selection") or {}).items()} or None
            d._set(arrays["weights"], arrays["means"], arrays["chols"])
        except (KeyError, TypeError, ValueError) as e:
            raise DensityError(f"density {path} is incomplete ({e})") from e
        n, dim = d.means.shape
        if d.weights.shape != (n,) or d.chols.shape != (n, dim, dim):
            raise DensityError(f"density {path}: arrays have inconsistent shapes")
        return d


class _NetDensity:
    """What the densities made of a torch network share: a fit seeded by ``self.seed`` that leaves the
    caller's RNG alone (the subclass's ``_fit`` does the work), and the not-fitted check."""

    net = None

    def fit(self, z, dim: int | None = None):
        import torch

        z = _check(z)
        with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's RNG
            torch.manual_seed(self.seed)
            return self._fit(z)

    def _need_fit(self):
        if self.net is None:
            raise DensityError("the density is not fitted yet: call fit(z) first")


class SecondStageVAE(_NetDensity):
    """The second stage of the 2-stage VAE (Dai & Wipf 2019; the RAE paper's 2sVAE row): a VAE
    u → z with MLP encoder/decoder (2 hidden layers, 1024 units in the paper) and a learned decoder
    scale γ, fitted on the (standardised) first-stage codes. Per code, the negative ELBO is

        KL(q(u|z) ‖ N(0, I)) + ‖z − D(u)‖² / (2γ²) + d·log γ + (d/2)·log 2π,

    so :meth:`log_prob` returns the ELBO, a lower bound of log q(z). Sampling draws from the model,
    z = D(u) + γ·ε with u, ε ~ N(0, I) (γ → 0 when the codes lie on a manifold, as Dai & Wipf argue;
    on codes that are already Gaussian the decoder may ignore u and γ carries the spread).
    Same interface as :class:`ExPostDensity`; weights in safetensors, settings in JSON.
    """

    kind = "two-stage"

    def __init__(self, hidden: int = 1024, epochs: int = 50, batch_size: int = 256, lr: float = 1e-3,
                 seed: int = 0, **_ignored):
        self.hidden, self.epochs, self.batch_size, self.lr, self.seed = hidden, epochs, batch_size, lr, seed
        self.net = None
        self.shift = self.scale = None

    def _build(self, d: int):
        import torch
        from torch import nn

        h = self.hidden
        self.net = nn.ModuleDict({
            "enc": nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2 * d)),
            "dec": nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, d))})
        self.net.log_gamma = nn.Parameter(torch.zeros(()))

    def _neg_elbo(self, x, sample: bool = True):
        import math

        import torch

        mean, log_var = self.net["enc"](x).chunk(2, dim=1)
        u = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var) if sample else mean
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(1)
        g = self.net.log_gamma
        d = x.shape[1]
        rec = (x - self.net["dec"](u)).pow(2).sum(1) / (2 * torch.exp(2 * g)) + d * g + 0.5 * d * math.log(2 * math.pi)
        return kl + rec

    def _fit(self, z: np.ndarray) -> "SecondStageVAE":
        import torch

        self.shift, self.scale = z.mean(0), z.std(0) + 1e-8
        x = torch.as_tensor((z - self.shift) / self.scale, dtype=torch.float32)
        self._build(x.shape[1])
        opt = torch.optim.Adam(self.net.parameters(), self.lr)
        g = torch.Generator().manual_seed(self.seed)
        for _ in range(self.epochs):
            for idx in torch.randperm(len(x), generator=g).split(self.batch_size):
                loss = self._neg_elbo(x[idx]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            if not torch.isfinite(loss):
                raise DensityError("the second-stage VAE diverged (non-finite loss)")
        self.net.eval()
        return self

    @property
    def dim(self) -> int:
        self._need_fit()
        return len(self.shift)

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        import torch

        self._need_fit()
        g = torch.Generator().manual_seed(self.seed if seed is None else seed)
        with torch.no_grad():
            u, eps = torch.randn(n, self.dim, generator=g), torch.randn(n, self.dim, generator=g)
            x = (self.net["dec"](u) + torch.exp(self.net.log_gamma) * eps).double().numpy()
        return (x * self.scale + self.shift).astype(np.float32)

    def log_prob(self, z) -> np.ndarray:
        """The ELBO of each code under the second stage (encoder mean, no sampling), in the units of z."""
        import torch

        self._need_fit()
        x = torch.as_tensor((np.asarray(z, dtype=np.float64) - self.shift) / self.scale, dtype=torch.float32)
        with torch.no_grad():
            elbo = -self._neg_elbo(x, sample=False).double().numpy()
        return elbo - np.log(self.scale).sum()  # change of variables from the standardised codes

    def save(self, path: str | Path) -> None:
        self._need_fit()
        arrays = {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        arrays["shift"], arrays["scale"] = self.shift, self.scale
        _save_files(path, arrays, {"kind": self.kind, "hidden": self.hidden, "epochs": self.epochs,
                                   "batch_size": self.batch_size, "lr": self.lr, "seed": self.seed})

    @classmethod
    def load(cls, path: str | Path) -> "SecondStageVAE":
        import torch

        path = Path(path)
        meta, arrays = _read_files(path)
        try:
            d = cls(meta["hidden"], meta["epochs"], meta["batch_size"], meta["lr"], meta["seed"])
            d.shift, d.scale = arrays.pop("shift"), arrays.pop("scale")
            d._build(len(d.shift))
            d.net.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise DensityError(f"cannot read density {path}: {e}") from e
        d.net.eval()
        return d


def make_density(kind: str, **kw):
    """``make_density("gmm", k=10)``, ``make_density("gaussian")``, ``make_density("prior")``,
    ``make_density("two-stage")``, ``make_density("flow")``."""
    if kind == "two-stage":
        return SecondStageVAE(**kw)
    if kind == "flow":
        from .flow import FlowDensity

        return FlowDensity(**kw)
    return ExPostDensity(kind, **kw)
