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
@click.option("--protocol", type=click.Choice(["default", "gvae"]), default="default", show_default=True,
              help="The preset every setting below starts from (a flag given overrides it): default, chosen on "
                   "bench/bo_targets.py's development targets (a GP on 10,000 codes, 10 epochs at 5e-3; half of "
                   "each batch by EI in the box, half near the 10 best points so far; every "
                   "evaluation a new string; 10 decodes per molecule point), or gvae, the GrammarVAE/RAE protocol "
                   "of Table 3 (a GP on all codes, 50 epochs at 5e-4, EI in the box, 500 decodes per molecule "
                   "point). See BENCHMARKS.md, 'BO on targets it was never tuned on'.")
@click.option("--iterations", default=5, show_default=True, help="BO iterations (the protocol: 5), each a GP fit and a batch.")
@click.option("--batch", default=50, show_default=True, help="Points per iteration (batched greedy EI).")
@click.option("--seeds", default="1", show_default=True, callback=_seeds, help="Comma-separated seeds, e.g. 1,2,3,4,5.")
@click.option("--n-decode", type=int, default=None,
              help="Decodes per point (default: 10 molecules / 25 expressions; gvae: 500 / 25).")
@click.option("--inducing", type=int, default=None, help="Sparse-GP inducing points (both presets: 500).")
@click.option("--gp-epochs", type=int, default=None,
              help="Sparse-GP epochs per fit (default 10 at lr 5e-3; gvae: 50 at lr 5e-4, which fits no better "
                   "and runs ≈ 4× slower here, see BENCHMARKS.md).")
@click.option("--gp-refit-epochs", type=int, default=None,
              help="After the first iteration, warm-start the GP from the previous one and train this many "
                   "epochs (default: refit from scratch every iteration, as the protocol does; a resumed run then "
                   "proposes what an uninterrupted one would).")
@click.option("--gp-rows", type=int, default=None,
              help="Fit the GP on at most this many training codes: the best tenth of them by score and a seeded "
                   "sample for the rest (default 10000; gvae: all). Local proposals still start from all codes.")
@click.option("--gp-lr", type=float, default=None, help="Adam learning rate of the sparse-GP fit (default 5e-3; gvae: 5e-4).")
@click.option("--gp", "gp_backend", type=click.Choice(["native", "botorch"]), default=None,
              help="native: our sparse GP + batched greedy EI (the GrammarVAE protocol); botorch: BoTorch's "
                   "SingleTaskVariationalGP + sequential qLogEI (pip install \"grammar-rae[botorch]\").")
@click.option("--incumbent", type=click.Choice(["posterior-mean", "observed"]), default=None,
              help="EI's incumbent: the best GP posterior mean over the search box (the GrammarVAE "
                                      "protocol) or the best value observed so far.")
@click.option("--ei-search", type=click.Choice(["grid", "multistart"]), default=None,
              help="How each batch point is searched for: grid (the GrammarVAE's, the protocol: the best of one "
                   "10,000-point grid of the box, refined by L-BFGS-B on log EI) or multistart (2,000 fresh candidates "
                   "per point, the best 10 refined by Adam: more distinct points per batch; the earlier Table 3 rows).")
@click.option("--search-region", "region", type=click.Choice(["box", "density", "trust"]), default=None,
              help="Where EI searches: box (the training codes' bounding box, the protocol); density (only where a "
                   "10-component GMM of the training codes has log-density above its --region-quantile over them: "
                   "there the GP and the decoder were trained; grid search only); or trust (TuRBO's trust region: a "
                   "box around the best point so far, shaped by the GP's lengthscales, halved after batches that "
                   "do not improve, doubled after three that do). See BENCHMARKS.md, Table 3.")
@click.option("--region-quantile", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              help="With --search-region density: the share of training codes left outside the region (0.01).")
@click.option("--local-share", "local", type=click.FloatRange(0.0, 1.0), default=None,
              help="The share of each batch chosen by EI among perturbations of the 10 best points so far (the "
                   "data's and the evaluations'; 0.05-0.4 of the codes' std), where small basins are that the "
                   "GP smooths over (grid EI search of the native GP only: with --ei-search multistart or --gp botorch "
                   "the default preset goes without them; default 0.5; gvae: 0). See BENCHMARKS.md, 'BO on targets "
                   "it was never tuned on'.")
@click.option("--new-only/--repeats", "new_only", default=None,
              help="Every evaluation a string this run has not evaluated yet: a point whose decodes are all "
                   "earlier evaluations is moved to a perturbation of it that decodes to a new one (default); "
                   "--repeats: the protocol's most frequent valid decode, known or not (gvae).")
@click.option("--scoring", type=click.Choice(["ours", "gvae"]), default="ours", show_default=True,
              help="Expressions: ours (true division), or gvae -- the published code's Python 2 integer division "
                   "(1 / 3 == 0), to put numbers beside the paper's. See README, 'BO protocol'.")
@click.option("--data-rows", type=int, default=None,
              help="Use a seeded sample of this many of the run's data rows (encoded, scored, the GP's data and "
                   "the local proposals' anchors; default: all). --gp-rows thins only the GP's data.")
@O.device
@O.threads
@O.out_dir("Output folder (resumable with the same settings).")
@O.semantics
def optimize(objective, target, run_dir, protocol, iterations, batch, seeds, n_decode, inducing, gp_epochs, gp_refit_epochs,
             gp_rows, gp_lr, gp_backend, incumbent, ei_search, region, region_quantile, local, new_only, scoring,
             data_rows, device, threads, out, decoding):
    """Bayesian optimisation in the latent space of a trained run: the benchmarked default, or the
    GrammarVAE/RAE protocol with --protocol gvae.

    Writes OUT/report.json (every evaluation and a summary), report.md, best_vs_evaluations.png and,
    for molecules, best_molecules.png. Re-running the same command resumes after the last iteration.
    """
    from ..optimize.bo import run_bo
    from ..optimize.config import make_config

    if threads:
        import torch

        torch.set_num_threads(threads)

    gp_kw = dict(n_inducing=inducing, epochs=gp_epochs, lr=gp_lr, refit_epochs=gp_refit_epochs, rows=gp_rows,
                 backend=gp_backend, incumbent=incumbent, ei_search=ei_search, region=region,
                 region_quantile=region_quantile, local=local)
    config = make_config(protocol, gp_kw, objective=objective, target=target, scoring=scoring, iterations=iterations,
                         batch=batch, seeds=tuple(seeds), n_decode=n_decode, data_rows=data_rows, new_only=new_only)
    report = run_bo(O.load_model(run_dir, device, decoding), config, out, log=click.echo)
    s = report["summary"]
    click.echo(f"fraction valid {s['fraction_valid']['mean']:.2f}, average score {s['average_score']['mean']:.3f} "
               f"(published script's averaging: {s['average_score_published']['mean']:.3f}); "
               f"top: " + ", ".join(f"{t['string']} ({t['score']:.3f})" for t in s["top3"]))
    click.echo(f"report: {Path(out) / 'report.json'}")
