"""Image runs: train an image autoencoder into a run directory, sample it, and evaluate the four
Table-1 columns of the RAE paper as Fréchet distances:

- ``rec``:    reconstructions of test images
- ``n``:      samples from one Gaussian fitted on the training codes (the prior for VAE and WAE; the
              second-stage VAE for the 2s-VAE)
- ``gmm``:    samples from a 10-component GMM fitted on the training codes
- ``interp``: decodes of midpoints between the codes of random test pairs
each against the test images, in the offline classifier feature space or, when the user supplies the
standard Inception weights, as Inception FID (see fid.py). The run directory layout and checkpoint
format are the grammar runs'.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .checkpoint import RUN_FORMAT, RunError, write_json
from .data.images import load_images
from .density import ExPostDensity, make_density
from .models.family import family
from .models.image_ae import LATENT, ImageAE, ImageAEConfig, padded_size
from .plots import plot_history
from .rundir import RunDir
from .trainer import Trainer, TrainConfig

DEFAULT_BACKBONE = {"digits": "small", "mnist": "paper", "cifar10": "paper", "celeba": "celeba"}


def default_image_train(**given) -> TrainConfig:
    """The image recipe (the RAE paper's: batch 100, Adam 5e-4, 20 epochs here) with ``given`` over it."""
    base = dict(epochs=20, batch_size=100, lr=5e-4, lr_factor=0.5, lr_patience=5, min_lr=1e-6, grad_clip=0.0,
                amp=torch.cuda.is_available(), recon_rows=0)
    return TrainConfig(**{**base, **{k: v for k, v in given.items() if v is not None}})


def train_image_run(out, dataset: str = "digits", model: str = "rae-l2", data=None, train: TrainConfig | None = None,
                    backbone: str | None = None, resume: bool = False, progress: bool = True, log=print,
                    limit: int | None = None, cache_dir=None, given: dict | None = None, **overrides) -> Path:
    """Train an image model into ``out`` (or continue it with ``resume``), then fit its densities. A resumed
    run keeps its own dataset, network and training settings (run.json); of ``train`` only the
    per-invocation ones apply (device, threads, --max-minutes, --checkpoint-minutes) and those named in
    ``given`` (the CLI's explicit flags; from the API without ``given``: ``train``'s epochs)."""
    out = Path(out)
    explicit = train is not None
    train = train or default_image_train()
    existing = RunDir.start(out, resume)
    meta = existing.meta if existing is not None else None
    if meta is not None:
        from .trainer import resumed_config

        dataset, model = meta["dataset"], meta["model"]["model"]
        data = meta.get("data") or data
        given = given if given is not None else ({"epochs": train.epochs} if explicit else {})
        train = resumed_config(meta["train"], train, given)
    splits = load_images(dataset, path=data, seed=train.seed, cache_dir=cache_dir)
    if meta is not None:
        limit = meta.get("limit")
    if limit:
        splits.train, splits.rows["train"] = splits.train[:limit], splits.rows["train"][:limit]
    c, h, _ = splits.shape
    if meta is not None:
        config = ImageAEConfig(**meta["model"])
    else:
        config = ImageAEConfig(dataset=dataset, model=model, channels=c, image_size=padded_size(h),
                               latent_dim=overrides.pop("latent_dim", None) or LATENT.get(dataset, 16),
                               backbone=backbone or DEFAULT_BACKBONE.get(dataset, "paper"), **overrides)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "run.json", {"format": RUN_FORMAT, "kind": "image", "dataset": dataset, "data": str(data or ""),
                                  "limit": limit,
                                  "model": config.to_dict(), "train": asdict(train),
                                  "image_shape": list(splits.shape),
                                  "splits": {k: len(v) for k, v in splits.rows.items()}})
    torch.manual_seed(train.seed)
    net = ImageAE(config)
    log(f"{model} on {dataset} ({config.backbone} backbone, latent {config.latent_dim}): "
        f"{sum(p.numel() for p in net.parameters()):,} parameters; {len(splits.train)} train / "
        f"{len(splits.val)} val / {len(splits.test)} test images")
    trainer = Trainer(net, splits.train, splits.val, train, out, progress=progress, log=log)
    trainer.fit(resume=resume)
    plot_history(trainer.history, out / "loss.png")
    run = RunDir.open(out, "image")
    net = load_image_run(run)[0]
    z = encode_images(net, splits.train)
    kinds = ("gaussian", "gmm") + (("two-stage",) if family(config.model).n_column == "two-stage" else ())
    for kind in kinds:
        log(f"fitting the {kind} density on {len(z):,} training codes")
        run.save_density(kind, make_density(kind, k=10, seed=train.seed).fit(z))
    return out


def load_image_run(run, device="cpu"):
    """(network, run.json) of an image run directory or :class:`RunDir`."""
    run = RunDir.open(run, "image")
    try:
        net = ImageAE(ImageAEConfig(**run.meta["model"]))
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"{run.path}/run.json: invalid model description ({e})") from e
    run.load_weights(net)
    return net.eval().to(device), run.meta


@torch.no_grad()
def encode_images(net: ImageAE, images: torch.Tensor, batch: int = 500) -> np.ndarray:
    net.eval()
    return torch.cat([net.encode(images[i:i + batch]) for i in range(0, len(images), batch)]).numpy()


@torch.no_grad()
def decode_images(net: ImageAE, z, batch: int = 500) -> torch.Tensor:
    """Decoded images as floats in [−1, 1] at the padded size (see :func:`to_uint8`)."""
    net.eval()
    z = torch.as_tensor(z, dtype=torch.float32)
    out = torch.cat([net.decode(z[i:i + batch]) for i in range(0, len(z), batch)])
    return out


def to_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Floats in [−1, 1], padding cropped back to ``size``, as uint8 images."""
    pad = images.shape[-1] - size
    if pad:
        images = images[..., pad // 2: pad // 2 + size, pad // 2: pad // 2 + size]
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def density_for(run, net: ImageAE, kind: str) -> ExPostDensity:
    """The density behind a column: ``gaussian`` means the "N" column (the prior for VAE/WAE, the
    second stage for the 2s-VAE: the model family's ``n_column``)."""
    if kind == "gaussian":
        kind = family(net.config.model).n_column
    return RunDir.open(run, "image").density(kind, net.config.latent_dim)


def sample_images(run_dir, n: int, density: str = "gmm", seed: int = 0) -> torch.Tensor:
    run = RunDir.open(run_dir, "image")
    net, meta = load_image_run(run)
    size = meta["image_shape"][-1]  # no need to load the data set to sample
    z = density_for(run, net, density).sample(n, seed=seed)
    return to_uint8(decode_images(net, z), size)


def evaluate_image_run(run_dir, n: int = 10_000, seed: int = 0, cache_dir=None, inception=None,
                       log=print) -> dict:
    """The four Table-1 columns as Fréchet distances (offline classifier features, or Inception FID
    with ``inception`` weights; see fid.py), plus image grids and interpolation strips."""
    from .data.parsed import cache_root
    from .fid import feature_extractor, frechet_distance

    run = RunDir.open(run_dir, "image")
    run_dir = run.path
    net, meta = load_image_run(run)
    splits = load_images(meta["dataset"], path=meta["data"] or None, seed=meta["train"]["seed"],
                         cache_dir=cache_dir)
    size = splits.shape[-1]
    features, metric = feature_extractor(splits, cache_root(cache_dir), inception, log=log)
    test = splits.test[:n]
    rng = np.random.default_rng(seed)
    z_test = encode_images(net, test)
    pairs = rng.integers(len(test), size=(len(test), 2))
    images = {
        "rec": to_uint8(decode_images(net, z_test), size),
        "n": to_uint8(decode_images(net, density_for(run, net, "gaussian").sample(len(test), seed)), size),
        "gmm": to_uint8(decode_images(net, density_for(run, net, "gmm").sample(len(test), seed)), size),
        "interp": to_uint8(decode_images(net, (z_test[pairs[:, 0]] + z_test[pairs[:, 1]]) / 2), size),
    }
    test_features = features(test)
    scores = {k: frechet_distance(features(v), test_features) for k, v in images.items()}
    scores["reference_test_vs_val"] = frechet_distance(features(splits.val[:n]), test_features)
    report = {"run": str(run_dir), "model": meta["model"]["model"], "dataset": meta["dataset"],
              "metric": metric, "n": len(test), **scores}
    out = run_dir / "eval"
    out.mkdir(exist_ok=True)
    write_json(out / "metrics.json", report)
    for k, v in images.items():
        save_grid(v[:64], out / f"{k}.png")
    save_grid(interpolation_strips(net, z_test, size, rng), out / "interp_strips.png", per_row=10)
    log(", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    return report


def interpolation_strips(net: ImageAE, z: np.ndarray, size: int, rng, pairs: int = 8, steps: int = 10):
    """``pairs`` rows of ``steps`` decodes along the segment between two test codes."""
    ends = rng.choice(len(z), size=(pairs, 2), replace=len(z) < 2 * pairs)
    t = np.linspace(0, 1, steps)[None, :, None]
    path = (1 - t) * z[ends[:, 0]][:, None] + t * z[ends[:, 1]][:, None]  # [pairs, steps, d]
    return to_uint8(decode_images(net, path.reshape(-1, z.shape[1])), size)


def save_grid(images: torch.Tensor, path: Path, per_row: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    rows = max(1, (n + per_row - 1) // per_row)
    fig, axes = plt.subplots(rows, per_row, figsize=(per_row, rows))
    for ax, i in zip(np.atleast_1d(axes).flat, range(rows * per_row)):
        ax.axis("off")
        if i < n:
            img = images[i].permute(1, 2, 0).numpy()
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
    fig.tight_layout(pad=0.1)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def evaluate_image_runs(run_dirs, out, n: int = 10_000, cache_dir=None, inception=None, log=print) -> str:
    """:func:`evaluate_image_run` for each run, one table in ``out`` (report.json, report.md); returns the markdown."""
    reports = {str(r): evaluate_image_run(r, n=n, cache_dir=cache_dir, inception=inception, log=log) for r in run_dirs}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", reports)
    metric = next(iter(reports.values()))["metric"]
    lines = [f"{metric}, lower is better.", "", "| run | model | REC | N | GMM | Interp |", "|---|---|---|---|---|---|"]
    lines += [f"| {r} | {m['model']} | {m['rec']:.3f} | {m['n']:.3f} | {m['gmm']:.3f} | {m['interp']:.3f} |"
              for r, m in reports.items()]
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text, encoding="utf-8")
    return text
