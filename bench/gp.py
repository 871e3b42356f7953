"""Sparse-GP fitting speed: the ELBO as first written (per-point marginals: a triangular solve with
|B| right-hand sides, SᵀA, torch.cdist) against the summed-variance ELBO ``SparseGP.elbo`` uses now
(one Gram product), in the same run, on the same data and settings (the BO protocol: 500 inducing
points, minibatches of 5,000, float64). Prints seconds per epoch of each and the ratio; the fitted
GPs' test RMSE is printed beside them (the two are the same objective, so they should agree).

    python bench/gp.py [--n 20000] [--dim 25] [--epochs 2] [--threads 1]
"""
import argparse
import math
import time

import numpy as np
import torch

from grammar_rae.optimize.gp import SparseGP


def reference_elbo(self, x, y, n_total):
    """Hensman eq. 4 per point, as the module first computed it."""
    ls = self.log_lengthscale.exp()

    def kernel(a, b):
        return self.log_outputscale.exp() * torch.exp(-0.5 * torch.cdist(a / ls, b / ls).pow(2))

    l_mm = torch.linalg.cholesky(kernel(self.z, self.z) + 1e-6 * torch.eye(len(self.z), dtype=x.dtype))
    a = torch.linalg.solve_triangular(l_mm, kernel(self.z, x), upper=False)
    s = self._s()
    mean = a.T @ self.q_mean
    var = self.log_outputscale.exp() - a.pow(2).sum(0) + (s.T @ a).pow(2).sum(0)
    noise = self.log_noise.exp()
    exp_ll = -0.5 * math.log(2 * math.pi) - 0.5 * noise.log() - ((y - mean).pow(2) + var) / (2 * noise)
    kl = 0.5 * (s.pow(2).sum() + self.q_mean.pow(2).sum() - len(self.z)
                - 2 * s.diagonal().abs().clamp_min(1e-12).log().sum())
    return n_total / len(x) * exp_ll.sum() - kl


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="training points (synthetic, smooth in 2 of the dims)")
    ap.add_argument("--dim", type=int, default=25, help="latent dimension (expr-grae: 25, zinc-grae: 56)")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs of each")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n + 2000, args.dim))
    y = np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] ** 2 + 0.1 * rng.standard_normal(len(x))
    kw = dict(n_inducing=500, batch=5000, lr=5e-3, epochs=args.epochs, seed=0)
    rates, rmse = {}, {}
    new_elbo = SparseGP.elbo
    for name, elbo in (("reference", reference_elbo), ("summed-variance", new_elbo), ("reference", reference_elbo),
                       ("summed-variance", new_elbo)):  # interleaved, each twice: the best of two
        SparseGP.elbo = elbo
        t = time.perf_counter()
        gp = SparseGP.fit(x[:args.n], y[:args.n], **kw)
        rates[name] = min(rates.get(name, math.inf), (time.perf_counter() - t) / args.epochs)
        rmse[name] = gp.test_metrics(x[args.n:], y[args.n:])["rmse"]
    SparseGP.elbo = new_elbo
    for name in rates:
        print(f"{name:16s} {rates[name]:7.2f} s/epoch   test RMSE after {args.epochs} epochs {rmse[name]:.4f}")
    print(f"RATIO {rates['reference'] / rates['summed-variance']:.2f}x faster per epoch "
          f"(n={args.n}, dim={args.dim}, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
