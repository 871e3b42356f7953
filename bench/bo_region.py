"""Why BO searches the training codes' dense region (`--search-region density`, BENCHMARKS.md): the
measurements behind it, on finished BO folders (their cached codes and seed splits).

    python bench/bo_region.py gp BO_DIR [--seed 1] [--inducing 500] [--fits shipped,collapsed,...]
                                                          # GP fits: test fit and the mean over the box
    python bench/bo_region.py decode BO_DIR RUN [--n 50]  # decodes of box points against dense-region points
    python bench/bo_region.py target BO_DIR RUN TARGET    # decodes at and around the best data string's code
    python bench/bo_region.py trust BO_DIR                # a --search-region trust run, seed by seed

gp: the sparse GP of the BO's first iteration (10 epochs at lr 5e-3, the tables' fast schedule) fitted
on the seed's training split in several ways; for each, the test RMSE / log-likelihood and the min / max
of the posterior mean over 10,000 uniform points of the training codes' box (scores lie in the data's
range; the min is the protocol's EI incumbent). decode: ``--n`` uniform points of the box and ``--n``
points of the density region's grid (``regions.fit_density_region`` on all codes, 1% quantile), each decoded 500 times
(the molecule protocol), the most frequent valid string kept. target: the best-scoring data string's
code and points around it at 0.1, 0.3 and 1.0 code standard deviations, decoded 25 times each.
trust: per seed, the trust region's first centre (the best string of the seed's training split),
whether the best string of the whole data is in that split (else BO never saw it), and per iteration
the region's length L, the batch's distinct valid strings and its best.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

from grammar_rae.optimize.gp import SparseGP


def _folder(bo_dir: Path, seed: int):
    caches = sorted(bo_dir.glob("data-*.npz"))
    if not caches:
        raise SystemExit(f"{bo_dir} holds no cached codes (data-*.npz): run `grammar-rae optimize` there first")
    with np.load(caches[0], allow_pickle=False) as f:
        z, y, strings = f["z"], f["y"], f["strings"]
    return z, y, strings, _state(bo_dir, seed)


def _state(bo_dir: Path, seed: int):
    """A seed's BO state (its split and iterations), or None before the run made it."""
    path = bo_dir / "state" / f"seed-{seed}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _collapsed_optimum(gp: SparseGP, x: torch.Tensor, ys: torch.Tensor) -> None:
    """q(v) at the optimum of the collapsed bound for the GP's current hyperparameters (Titsias 2009),
    whitened: cov = (I + A Aᵀ/σ²)⁻¹, mean = cov A y / σ², A = L_mm⁻¹ K_mn."""
    with torch.no_grad():
        l_mm, noise = gp._chol_mm(), gp.log_noise.exp()
        m = len(gp.z)
        aat, ay = torch.zeros(m, m, dtype=x.dtype), torch.zeros(m, dtype=x.dtype)
        for i in range(0, len(x), 10_000):
            a = torch.linalg.solve_triangular(l_mm, gp.kernel(gp.z, x[i:i + 10_000]), upper=False)
            aat += a @ a.T
            ay += a @ ys[i:i + 10_000]
        chol = torch.linalg.cholesky(torch.eye(m, dtype=x.dtype) + aat / noise)
        gp.q_mean.copy_(torch.cholesky_solve((ay / noise)[:, None], chol)[:, 0])
        gp.q_sqrt.copy_(torch.linalg.cholesky(torch.cholesky_inverse(chol)))


FITS = ("shipped", "collapsed", "jitter", "epochs50", "zero")


def gp_fits(bo_dir: Path, seed: int, inducing: int = 500, which=FITS) -> None:
    z, y, _, split = _folder(bo_dir, seed)
    if split is None:
        raise SystemExit(f"{bo_dir} has no state for seed {seed}")
    tr, te = np.array(split["train"]), np.array(split["test"])
    lo, hi = z[tr].min(0), z[tr].max(0)
    box = lo + np.random.default_rng(0).random((10_000, z.shape[1])) * (hi - lo)
    kw = dict(epochs=10, lr=0.005, seed=seed * 1000 + 1, n_inducing=inducing)

    def jittered(scale):
        def chol(self):
            kmm = self.kernel(self.z, self.z)
            return torch.linalg.cholesky(kmm + scale * kmm.diagonal().mean() * torch.eye(len(self.z), dtype=kmm.dtype))
        return chol

    def collapsed():
        start = SparseGP.fit(z[tr], y[tr], **{**kw, "epochs": 0})
        yt = torch.as_tensor(y[tr], dtype=torch.float64)
        _collapsed_optimum(start, torch.as_tensor(z[tr], dtype=torch.float64), (yt - yt.mean()) / yt.std())
        return SparseGP.fit(z[tr], y[tr], init=start, **kw)

    fits = [("q(u) from the inducing targets (as shipped)", lambda: SparseGP.fit(z[tr], y[tr], **kw)),
            ("q(u) at the collapsed (Titsias) optimum", collapsed),
            ("jitter 1e-2 instead of 1e-6", None),
            ("50 epochs", lambda: SparseGP.fit(z[tr], y[tr], **{**kw, "epochs": 50})),
            ("q(u) from zero", lambda: SparseGP.fit(z[tr], y[tr], init_from_targets=False, **kw))]
    fits = [f for key, f in zip(FITS, fits) if key in which]
    print(f"{inducing} inducing points; scores: min {y.min():.3f}, max {y.max():.3f}, mean {y.mean():.3f}; {len(tr)} training codes of dim {z.shape[1]}")
    higher = json.loads((bo_dir / "report.json").read_text())["summary"]["higher_is_better"]
    best = int(np.argmax(y) if higher else np.argmin(y))
    print(f"best data string: {y[best]:.3f} (row {best}, in the {'training' if best in set(tr.tolist()) else 'test'} split)")
    print("| GP fit | test RMSE | test log-lik. | posterior mean on the box grid: min / max "
          "| on the training codes: min / max | at the best data string's code |")
    print("|---|---|---|---|---|---|")
    for name, make in fits:
        if make is None:
            original = SparseGP._chol_mm
            SparseGP._chol_mm = jittered(1e-2)
            try:
                gp = SparseGP.fit(z[tr], y[tr], **kw)
                row = _row(gp, z, y, tr, te, box, best)
            finally:
                SparseGP._chol_mm = original
        else:
            row = _row(make(), z, y, tr, te, box, best)
        print(f"| {name} | {row}", flush=True)


def _row(gp, z, y, tr, te, box, best) -> str:
    m = gp.test_metrics(z[te], y[te])
    mean, _ = gp.predict(box, include_noise=False)
    on_codes = np.concatenate([gp.predict(z[tr][i:i + 20_000], include_noise=False)[0]
                               for i in range(0, len(tr), 20_000)])
    at_best = gp.predict(z[best:best + 1], include_noise=False)[0][0]
    return (f"{m['rmse']:.3f} | {m['log_likelihood']:.3f} | {mean.min():.1f} / {mean.max():.1f} "
            f"| {on_codes.min():.2f} / {on_codes.max():.2f} | {at_best:.2f} |")


def decodes(bo_dir: Path, run: str, n: int) -> None:
    from grammar_rae.optimize.acquisition import Region
    from grammar_rae.optimize.bo import decode_points
    from grammar_rae.optimize.regions import fit_density_region
    from grammar_rae.optimize.objectives import get_objective
    from grammar_rae.pretrained import resolve_run
    from grammar_rae.run import load_run

    z, _, _, _ = _folder(bo_dir, 1)
    # the region and grid `--search-region density` uses (fitted on all codes here, not a seed's split)
    space = Region(z.min(0), z.max(0), *fit_density_region(z, 0.01, seed=0))
    region = space.grid(n, torch.Generator().manual_seed(1)).numpy()
    box = Region(z.min(0), z.max(0)).grid(n, torch.Generator().manual_seed(0)).numpy()
    net, _ = load_run(resolve_run(run), device="cpu")
    obj = get_objective("logp")
    for name, points in (("uniform in the box", box), ("GMM draws in the 1% region", region)):
        chosen = decode_points(net, points.astype(np.float32), 500, lambda s: bool(obj.valid([s])[0]), 0,
                               torch.device("cpu"))
        valid = [s for s in chosen if s is not None]
        scores = obj(valid) if valid else np.array([np.nan])
        print(f"{name}: {len(valid)}/{n} points with a valid decode, best penalised logP {np.nanmax(scores):.2f}",
              flush=True)


def target(bo_dir: Path, run: str, expression: str) -> None:
    from grammar_rae.optimize.bo import decode_points
    from grammar_rae.optimize.objectives import get_objective
    from grammar_rae.pretrained import resolve_run
    from grammar_rae.run import load_run

    z, y, strings, _ = _folder(bo_dir, 1)
    obj = get_objective("expr", expression)
    net, _ = load_run(resolve_run(run), device="cpu")
    valid = lambda s: bool(obj.valid([s])[0])  # noqa: E731
    best = int(np.argmin(y))
    (own,) = decode_points(net, z[best:best + 1], 25, valid, 0, torch.device("cpu"))
    print(f"best data string {str(strings[best])!r} ({y[best]:.3f}); its code decodes to {own!r} ({obj([own])[0]:.3f})")
    rng = np.random.default_rng(0)
    for r in (0.1, 0.3, 1.0):
        points = z[best] + r * rng.standard_normal((20, z.shape[1])) * z.std(0)
        scores = obj(decode_points(net, points.astype(np.float32), 25, valid, 0, torch.device("cpu")))
        print(f"20 points at {r} code std around it: {int((scores < 1e-9).sum())} decode to a score-0 expression; "
              f"best scores {np.round(np.sort(scores)[:3], 3).tolist()}", flush=True)


def trust(bo_dir: Path) -> None:
    report = json.loads((bo_dir / "report.json").read_text())
    sign = 1.0 if report["summary"]["higher_is_better"] else -1.0
    _, y, strings, _ = _folder(bo_dir, report["seeds"][0])  # the codes' cache, read once
    data_best = int(np.argmax(sign * y))
    print(f"{bo_dir}: best data string {str(strings[data_best])!r} ({y[data_best]:.3f})")
    for seed in report["seeds"]:
        state = _state(bo_dir, seed)
        tr = np.array(state["train"])
        centre = tr[np.argmax(sign * y[tr])]
        print(f"seed {seed}: first centre {str(strings[centre])!r} ({y[centre]:.3f}); the best data string is in "
              f"its {'training' if str(strings[data_best]) in set(strings[tr].tolist()) else 'test (never shown to the GP)'} split")
        for i, it in enumerate(state["iterations"], 1):
            valid = [e for e in it["evaluations"] if e["valid"]]
            top = max(valid, key=lambda e: sign * e["score"]) if valid else None
            print(f"  iteration {i}: L {it['trust']['length']:.3g}, {len(valid)}/{len(it['evaluations'])} valid, "
                  f"{len({e['string'] for e in valid})} distinct, best "
                  + (f"{top['score']:.3f} {top['string']!r}" if top else "none"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    g = sub.add_parser("gp")
    g.add_argument("bo_dir", type=Path)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--inducing", type=int, default=500)
    g.add_argument("--fits", default=",".join(FITS), help=f"comma-separated, of {', '.join(FITS)}")
    d = sub.add_parser("decode")
    d.add_argument("bo_dir", type=Path)
    d.add_argument("run")
    d.add_argument("--n", type=int, default=50)
    t = sub.add_parser("target")
    t.add_argument("bo_dir", type=Path)
    t.add_argument("run")
    t.add_argument("expression")
    sub.add_parser("trust").add_argument("bo_dir", type=Path)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.what == "gp":
        unknown = set(a.fits.split(",")) - set(FITS)
        if unknown:
            p.error(f"unknown fits {sorted(unknown)}; choose from {', '.join(FITS)}")
        gp_fits(a.bo_dir, a.seed, a.inducing, a.fits.split(","))
    elif a.what == "decode":
        decodes(a.bo_dir, a.run, a.n)
    elif a.what == "target":
        target(a.bo_dir, a.run, a.expression)
    else:
        trust(a.bo_dir)


if __name__ == "__main__":
    main()
