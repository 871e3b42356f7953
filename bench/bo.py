"""BO cost on CPU: one sparse-GP fit on N latent points (default 250,000 x 56, the ZINC250k scale)
plus one batch of 50 points by greedy EI, timed; beside it, the cost per point of the reference
protocol's acquisition measured in the same run (EI maximised for one point on a GP with the same
inducing set, no batching: what the GrammarVAE code does 50 times).

    python bench/bo.py [--n 250000] [--dim 56] [--epochs 1]
"""
import argparse
import time

import numpy as np

from grammar_rae.optimize.acquisition import batched_greedy_ei
from grammar_rae.optimize.gp import SparseGP


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=250_000)
    ap.add_argument("--dim", type=int, default=56)
    ap.add_argument("--epochs", type=int, default=1, help="GP epochs timed (the protocol uses 50)")
    ap.add_argument("--batch", type=int, default=50)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.dim))
    y = np.sin(x[:, 0]) + 0.1 * x[:, 1:].sum(1) + 0.1 * rng.standard_normal(args.n)
    t0 = time.perf_counter()
    gp = SparseGP.fit(x, y, n_inducing=500, epochs=args.epochs, batch=5000, lr=5e-3)
    t_fit = time.perf_counter() - t0
    lo, hi = x.min(0), x.max(0)
    t0 = time.perf_counter()
    batched_greedy_ei(gp, float(y.max()), lo, hi, batch=args.batch)
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched_greedy_ei(gp, float(y.max()), lo, hi, batch=1)
    t_one = time.perf_counter() - t0
    print(f"sparse GP, {args.n} x {args.dim}, 500 inducing, {args.epochs} epoch(s): {t_fit:.1f} s "
          f"(x{50 // max(args.epochs, 1)} for the protocol's 50 epochs: ~{t_fit * 50 / args.epochs / 60:.1f} min)")
    print(f"greedy EI batch of {args.batch}: {t_batch:.1f} s; a single point: {t_one:.2f} s; "
          f"RATIO (batch cost per point vs single-point cost): {t_one / (t_batch / args.batch):.2f}")


if __name__ == "__main__":
    main()
