"""`grammar-rae images …`: the image RAE family of the RAE paper's Table 1."""
from __future__ import annotations

from pathlib import Path

import click

from ..models.family import IMAGE_MODELS
from . import main, options as O


@main.group()
def images():
    """The image RAE family (RAE paper, Table 1): train, sample, evaluate."""


@images.command("train")
@click.option("--dataset", type=click.Choice(["digits", "mnist", "cifar10", "celeba"]), default="digits",
              show_default=True,
              help="digits ships with scikit-learn (offline); mnist / cifar10 from --data FOLDER or the download "
                   "cache (`grammar-rae data download mnist|cifar10`); celeba from --data FOLDER of aligned images.")
@click.option("--model", type=click.Choice(IMAGE_MODELS), default="rae-l2", show_default=True,
              help="The nine rows of the RAE paper's Table 1; β and λ default to the paper's per dataset.")
@click.option("--epochs", type=int, default=None,
              help="Training epochs [default: 20; a resumed run keeps its own] (the paper: 100 MNIST, 70-100 CIFAR, "
                   "70 CelebA).")
@click.option("--batch-size", type=int, default=None, help="Images per step [default: 100, the paper's].")
@click.option("--lr", type=float, default=None, help="Adam learning rate [default: 5e-4, the paper's for RAEs on "
                                                     "MNIST/CIFAR].")
@click.option("--backbone", type=click.Choice(["paper", "celeba", "small"]), default=None,
              help="paper: the RAE paper's MNIST/CIFAR network; celeba: its CelebA network; small: for "
                   "digits and quick CPU runs. Default: small for digits, celeba for celeba, else paper.")
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=None,
              help="Dataset folder: MNIST IDX files, CIFAR-10 batches, or CelebA's aligned images.")
@O.out_dir("Run directory to create.")
@click.option("--limit", type=int, default=None, help="Train on the first N training images only (quick CPU runs).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last checkpoint, with its own settings (flags given "
                   "explicitly apply; device, threads and the time budget are this command's).")
@click.option("--max-minutes", type=float, default=0.0,
              help="Stop cleanly before an epoch that would not finish within this many minutes (with "
                   "--checkpoint-minutes: inside it); the same command with --resume goes on.")
@click.option("--checkpoint-minutes", type=float, default=0.0,
              help="Also checkpoint inside an epoch every this many minutes (resumable from that batch).")
@O.threads
@O.device
@O.seed
@O.cache_dir
@click.pass_context
def images_train(ctx, dataset, model, epochs, batch_size, lr, backbone, data, out, limit, resume, max_minutes,
                 checkpoint_minutes, threads, device, seed, cache_dir):
    """Train an image autoencoder (β, λ default to the paper's per dataset), then fit its densities.
    A checkpoint is written atomically after every epoch; after a kill, the same command with --resume
    continues."""
    from ..image_runs import default_image_train, train_image_run

    cfg = default_image_train(epochs=epochs, batch_size=batch_size, lr=lr, device=device, seed=seed,
                              amp=not device.startswith("cpu"), max_minutes=max_minutes,
                              checkpoint_minutes=checkpoint_minutes, threads=threads or 0)
    given = {k: v for k, v in dict(epochs=epochs, batch_size=batch_size, lr=lr).items() if v is not None}
    if ctx.get_parameter_source("seed").name != "DEFAULT":
        given["seed"] = seed
    run = train_image_run(out, dataset, model, data=data, train=cfg, backbone=backbone, resume=resume, log=click.echo,
                          limit=limit, cache_dir=cache_dir, given=given)
    click.echo(f"done: {run}")


@images.command("sample")
@O.run("An image run directory.")
@click.option("--n", "n", default=64, show_default=True, help="Images to sample.")
@click.option("--density", type=click.Choice(["prior", "gaussian", "gmm", "two-stage"]), default="gmm",
              show_default=True, help="two-stage: the 2s-VAE's second stage (2s-vae runs only).")
@O.seed
@O.out_file("A PNG grid.")
def images_sample(run_dir, n, density, seed, out):
    """Decode N images from the run's ex-post density into a PNG grid."""
    from ..image_runs import sample_images, save_grid

    save_grid(sample_images(run_dir, n, density, seed), Path(out))
    click.echo(f"{n} samples ({density}) in {out}")


@images.command("evaluate")
@click.option("--run", "run_dirs", required=True, multiple=True, help="One or more image runs (repeat --run).")
@click.option("--n", "n", default=10_000, show_default=True, help="Test images (and samples) per column.")
@O.out_dir("Folder for the table (report.json, report.md).")
@O.cache_dir
@click.option("--inception", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The standard Inception weights as TorchScript (inception-2015-12-05.pt) for Inception "
                   "FID; without it, a Fréchet distance in an offline classifier's feature space.")
def images_evaluate(run_dirs, n, out, cache_dir, inception):
    """REC / N / GMM / Interp as Fréchet distances for each run, in one table (OUT/report.json, .md).

    Also writes, per run, RUN/eval/ with PNG grids per column and interpolation strips."""
    from ..image_runs import evaluate_image_runs

    click.echo(evaluate_image_runs(run_dirs, out, n=n, cache_dir=cache_dir, inception=inception, log=click.echo))
