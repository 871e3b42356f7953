"""BO cost on CPU: one sparse-GP fit on N latent points (default 250,000 x 56, the ZINC250k scale)
and one batch of 50 points by greedy EI with the Kriging believer, timed. Beside it, in the same run,
the per-point cost of the straightforward acquisition (what the GrammarVAE code and our first version
did): every EI evaluation recomputes the inducing Cholesky and the joint covariance of the chosen
points and the queries. Both optimise the same EI from the same candidates; the ratio is per point.

    python bench/bo.py [--n 250000] [--dim 56] [--epochs 1] [--reference-points 2]
"""
import argparse
import time

import numpy as np
import torch

import grammar_rae.optimize.acquisition as A
from grammar_rae.optimize.gp import SparseGP


class StraightforwardBeliever:
    """The reference: no caching; each call factorises K_mm again and conditions on the chosen points
    through the full joint covariance."""

    def __init__(self, gp):
        self.gp, self.points = gp, []

    def mean_var(self, x):
        mean, var = self.gp.latent(x)
        if not self.points:
            return mean, var
        xf = torch.stack(self.points)
        _, cov = self.gp.latent(torch.cat([xf, x]), full_cov=True)
        k = len(xf)
        c_ff = cov[:k, :k] + 1e-6 * torch.eye(k, dtype=cov.dtype)
        c_fx = cov[:k, k:]
        return mean, (var - (c_fx * torch.linalg.solve(c_ff, c_fx)).sum(0)).clamp_min(1e-12)

    def believe(self, x):
        self.points.append(x.detach())


def timed_batch(gp, best, lo, hi, batch, believer=None):
    original = A.BelievedGP
    if believer is not None:
        A.BelievedGP = believer
    try:
        t0 = time.perf_counter()
        pts = A.batched_greedy_ei(gp, best, lo, hi, batch=batch, seed=0)
        return time.perf_counter() - t0, pts
    finally:
        A.BelievedGP = original


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=250_000)
    ap.add_argument("--dim", type=int, default=56)
    ap.add_argument("--epochs", type=int, default=1, help="GP epochs timed (the protocol uses 50)")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--reference-points", type=int, default=2,
                    help="Points chosen by the straightforward acquisition (it is slow; per-point cost is compared)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.dim))
    y = np.sin(x[:, 0]) + 0.1 * x[:, 1:].sum(1) + 0.1 * rng.standard_normal(args.n)
    t0 = time.perf_counter()
    gp = SparseGP.fit(x, y, n_inducing=500, epochs=args.epochs, batch=5000, lr=5e-3)
    t_fit = time.perf_counter() - t0
    print(f"sparse GP, {args.n:,} x {args.dim}, 500 inducing, {args.epochs} epoch(s): {t_fit:.1f} s "
          f"(the protocol's 50 epochs: ~{t_fit * 50 / args.epochs / 60:.1f} min)", flush=True)
    lo, hi = x.min(0), x.max(0)
    t_ours, pts = timed_batch(gp, float(y.max()), lo, hi, args.batch)
    print(f"ours: greedy EI batch of {args.batch}: {t_ours:.1f} s ({t_ours / args.batch:.2f} s per point)", flush=True)
    gp.requires_grad_(True)
    t_ref, ref_pts = timed_batch(gp, float(y.max()), lo, hi, args.reference_points, StraightforwardBeliever)
    assert np.allclose(ref_pts, pts[: args.reference_points], atol=1e-4), "the two acquisitions disagree"
    per_ref = t_ref / args.reference_points
    print(f"reference (straightforward believer, same EI and candidates): {args.reference_points} points in "
          f"{t_ref:.1f} s ({per_ref:.2f} s per point; a batch of {args.batch}: ~{per_ref * args.batch / 60:.1f} min)")
    print(f"RATIO (per point, reference / ours): {per_ref / (t_ours / args.batch):.1f}x")


if __name__ == "__main__":
    main()
