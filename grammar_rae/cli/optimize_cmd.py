"""`grammar-rae optimize`: Bayesian optimisation in a run's latent space."""
from __future__ import annotations

from pathlib import Path

import click

from . import main, options as O


def _seeds(ctx, param, value):
    try:
        return [int(s) for s in value.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter("seeds must be integers separated by commas") from None


@main.command()
@click.option("--objective", required=True,
              help="logp (penalised, normalised), qed, expr (fit to --target), or package.module:function.")
@click.option("--target", default=None, help='For --objective expr: the expression to fit, e.g. "1 / 3 + x + sin( x * x )".')
@O.run()
@click.option("--iterations", default=5, show_default=True, help="BO iterations (the protocol: 5), each a GP fit and a batch.")
@click.option("--batch", default=50, show_default=True, help="Points per iteration (batched greedy EI).")
@click.option("--seeds", default="1", show_default=True, callback=_seeds, help="Comma-separated seeds, e.g. 1,2,3,4,5.")
@click.option("--n-decode", type=int, default=None, help="Decodes per point (default 500 molecules / 25 expressions).")
@click.option("--inducing", default=500, show_default=True, help="Sparse-GP inducing points.")
@click.option("--gp-epochs", default=50, show_default=True,
              help="Sparse-GP epochs per fit (protocol: 50 at lr 5e-4; 10 at lr 5e-3 fitted as well and ran "
                   "≈ 4× faster here, see BENCHMARKS.md).")
@click.option("--gp-refit-epochs", type=int, default=None,
              help="After the first iteration, warm-start the GP from the previous one and train this many "
                   "epochs (default: refit from scratch every iteration, as the protocol does).")
@click.option("--gp-lr", default=5e-4, show_default=True, help="Adam learning rate of the sparse-GP fit (the protocol: 5e-4).")
@click.option("--gp", "gp_backend", type=click.Choice(["native", "botorch"]), default="native", show_default=True,
              help="native: our sparse GP + batched greedy EI (the GrammarVAE protocol); botorch: BoTorch's "
                   "SingleTaskVariationalGP + sequential qLogEI (pip install \"grammar-rae[botorch]\").")
@click.option("--incumbent", type=click.Choice(["posterior-mean", "observed"]), default="posterior-mean",
              show_default=True, help="EI's incumbent: the best GP posterior mean over the search box (the GrammarVAE "
                                      "protocol) or the best value observed so far.")
@click.option("--ei-search", type=click.Choice(["grid", "multistart"]), default="grid", show_default=True,
              help="How each batch point is searched for: grid (the GrammarVAE's, the protocol: the best of one "
                   "10,000-point grid of the box, refined by L-BFGS-B on log EI) or multistart (2,000 fresh candidates "
                   "per point, the best 10 refined by Adam: more distinct points per batch; the earlier Table 3 rows).")
@click.option("--search-region", "region", type=click.Choice(["box", "density", "trust"]), default="box",
              show_default=True,
              help="Where EI searches: box (the training codes' bounding box, the protocol); density (only where a "
                   "10-component GMM of the training codes has log-density above its --region-quantile over them: "
                   "there the GP and the decoder were trained; grid search only); or trust (TuRBO's trust region: a "
                   "box around the best point so far, shaped by the GP's lengthscales, halved after batches that "
                   "do not improve, doubled after three that do). See BENCHMARKS.md, Table 3.")
@click.option("--region-quantile", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.01, show_default=True,
              help="With --search-region density: the share of training codes left outside the region.")
@click.option("--local-share", "local", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="The share of each batch chosen by EI among perturbations of the 10 best points so far (the "
                   "data's and the evaluations'; 0.05-0.4 of the codes' std), where small basins are that the "
                   "GP smooths over (grid EI search only; 0: the protocol). See BENCHMARKS.md, 'BO on new targets'.")
@click.option("--scoring", type=click.Choice(["ours", "gvae"]), default="ours", show_default=True,
              help="Expressions: ours (true division), or gvae -- the published code's Python 2 integer division "
                   "(1 / 3 == 0), to put numbers beside the paper's. See README, 'BO protocol'.")
@click.option("--data-rows", type=int, default=None,
              help="Fit the GP on a seeded sample of this many of the run's data rows (default: all, the protocol).")
@O.device
@O.threads
@O.out_dir("Output folder (resumable with the same settings).")
@O.semantics
def optimize(objective, target, run_dir, iterations, batch, seeds, n_decode, inducing, gp_epochs, gp_refit_epochs,
             gp_lr, gp_backend, incumbent, ei_search, region, region_quantile, local, scoring, data_rows, device, threads,
             out):
    """Bayesian optimisation in the latent space of a trained run (the GrammarVAE/RAE protocol).

    Writes OUT/report.json (every evaluation and a summary), report.md, best_vs_evaluations.png and,
    for molecules, best_molecules.png. Re-running the same command resumes after the last iteration.
    """
    from ..optimize.bo import run_bo
    from ..optimize.config import BOConfig, GPConfig

    if threads:
        import torch

        torch.set_num_threads(threads)

    gp = GPConfig(n_inducing=inducing, epochs=gp_epochs, lr=gp_lr, refit_epochs=gp_refit_epochs, backend=gp_backend,
                  incumbent=incumbent, ei_search=ei_search, region=region, region_quantile=region_quantile,
                  local=local)
    config = BOConfig(objective=objective, target=target, scoring=scoring, iterations=iterations, batch=batch,
                      seeds=tuple(seeds), n_decode=n_decode, data_rows=data_rows, gp=gp)
    report = run_bo(run_dir, config, out, device=device, log=click.echo)
    s = report["summary"]
    click.echo(f"fraction valid {s['fraction_valid']['mean']:.2f}, average score {s['average_score']['mean']:.3f} "
               f"(published script's averaging: {s['average_score_published']['mean']:.3f}); "
               f"top: " + ", ".join(f"{t['string']} ({t['score']:.3f})" for t in s["top3"]))
    click.echo(f"report: {Path(out) / 'report.json'}")
