"""Ex-post density estimation (Ghosh et al., ICLR 2020, Sec. 4): instead of trusting a prior, fit
q(z) on the latent codes of the training set and sample from it.

One interface for every estimator: ``fit(z) / sample(n) / log_prob(z) / save(path) / load(path)``.
Saved as safetensors (arrays) + JSON (settings): nothing is ever pickled.

- ``prior``    N(0, I): what a VAE assumes; the baseline for the deterministic models.
- ``gaussian`` one full-covariance Gaussian (the paper's "N" column).
- ``gmm``      a k-component full-covariance GMM (the paper's "GMM" column: k=10, sklearn
               GaussianMixture with max_iter 2000, tol 1e-3); ``k="auto"`` picks k by held-out
               log-likelihood.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

KINDS = ("prior", "gaussian", "gmm")


class DensityError(ValueError):
    pass


def _check(z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or len(z) == 0:
        raise DensityError(f"expected latent codes as an [n, d] array, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise DensityError("latent codes contain NaN or inf; refusing to fit a density to them")
    return z


def _gauss_logpdf(z: np.ndarray, mean: np.ndarray, chol: np.ndarray) -> np.ndarray:
    """log N(z; mean, L Lᵀ) for each row of z, via the Cholesky factor L."""
    from scipy.linalg import solve_triangular

    d = z.shape[1]
    y = solve_triangular(chol, (z - mean).T, lower=True)
    return -0.5 * (y * y).sum(0) - np.log(np.diag(chol)).sum() - 0.5 * d * np.log(2 * np.pi)


class ExPostDensity:
    """A density over latent codes; build one with :func:`make_density` or :meth:`load`."""

    def __init__(self, kind: str = "gmm", k: int | str = 10, seed: int = 0, reg_covar: float = 1e-6,
                 max_iter: int = 2000, tol: float = 1e-3, k_candidates=(1, 2, 5, 10, 20)):
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
        from safetensors.numpy import save_file

        from .io import atomic_target, atomic_write_bytes

        self._need_fit()
        path = Path(path)
        arrays = {"weights": self.weights, "means": self.means, "chols": self.chols}
        with atomic_target(path.with_suffix(".safetensors")) as tmp:
            save_file(arrays, tmp)
        meta = {"format": "grammar-rae-density/1", "kind": self.kind, "k": self.k, "seed": self.seed,
                "reg_covar": self.reg_covar, "selection": self.selection}
        atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=1).encode())

    @classmethod
    def load(cls, path: str | Path) -> "ExPostDensity":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = Path(path)
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            if meta.get("format") != "grammar-rae-density/1":
                raise DensityError(f"{path.with_suffix('.json')} is not a grammar-rae density file")
            arrays = load_file(str(path.with_suffix(".safetensors")))
        except (OSError, json.JSONDecodeError, SafetensorError) as e:
            raise DensityError(f"cannot read density {path}: {e}") from e
        d = cls(meta["kind"], meta["k"], meta["seed"], meta["reg_covar"])
        d.selection = {int(k): v for k, v in (meta.get("selection") or {}).items()} or None
        try:
            d._set(arrays["weights"], arrays["means"], arrays["chols"])
        except KeyError as e:
            raise DensityError(f"density {path} lacks array {e}") from e
        n, dim = d.means.shape
        if d.weights.shape != (n,) or d.chols.shape != (n, dim, dim):
            raise DensityError(f"density {path}: arrays have inconsistent shapes")
        return d


def make_density(kind: str, **kw) -> ExPostDensity:
    """``make_density("gmm", k=10)``, ``make_density("gaussian")``, ``make_density("prior")``."""
    return ExPostDensity(kind, **kw)
