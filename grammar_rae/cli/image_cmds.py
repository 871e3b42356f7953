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
@click.option("--epochs", default=20, show_default=True, help="Training epochs (the paper: 100 MNIST, 70-100 CIFAR, 70 CelebA).")
@click.option("--batch-size", default=100, show_default=True, help="Images per step (the paper: 100).")
@click.option("--lr", default=5e-4, show_default=True, help="Adam learning rate (the paper: 5e-4 for RAEs on MNIST/CIFAR).")
@click.option("--backbone", type=click.Choice(["paper", "celeba", "small"]), default=None,
              help="paper: the RAE paper's MNIST/CIFAR network; celeba: its CelebA network; small: for "
                   "digits and quick CPU runs. Default: small for digits, celeba for celeba, else paper.")
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=None,
              help="Dataset folder: MNIST IDX files, CIFAR-10 batches, or CelebA's aligned images.")
@O.out_dir("Run directory to create.")
@click.option("--limit", type=int, default=None, help="Train on the first N training images only (quick CPU runs).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@O.device
@O.seed
@O.cache_dir
def images_train(dataset, model, epochs, batch_size, lr, backbone, data, out, limit, resume, device, seed, cache_dir):
    """Train an image autoencoder (β, λ default to the paper's per dataset), then fit its densities."""
    from ..image_runs import train_image_run
    from ..trainer import TrainConfig

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, lr_factor=0.5, lr_patience=5, min_lr=1e-6,
                      device=device, seed=seed, grad_clip=0.0, amp=not device.startswith("cpu"), recon_rows=0)
    run = train_image_run(out, dataset, model, data=data, train=cfg, backbone=backbone, resume=resume, log=click.echo,
                          limit=limit, cache_dir=cache_dir)
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
