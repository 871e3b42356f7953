"""Fréchet distances between image sets (Heusel et al. 2017):

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})

Standard FID uses Inception-v3 pool3 features; no package ships those weights and this project
never downloads at run time, so offline the features come from a small classifier trained on the
dataset's training split and cached per dataset ("classifier FD"). With ``--inception FILE`` the
user supplies the standard Inception weights as the TorchScript file that StyleGAN2-ADA, clean-fid
and others use (``inception-2015-12-05.pt``: uint8 images in, 2048-d pool3 features out with
``return_features=True``; grey images are repeated to 3 channels) and the number is Inception FID.
A number is always labelled with its feature space; the two are never mixed in one table.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from torch import nn

from .errors import ConfigError

FEATURE_VERSION = 1


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """d² between Gaussians fitted to feature sets a [n, d] and b [m, d]."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # ReLU features can have dead units, making Σ singular: a 1e-6 ridge keeps sqrtm well defined
    # (the reference FID code adds the same offset when it must).
    eps = 1e-6 * np.eye(len(s1))
    s1, s2 = s1 + eps, s2 + eps
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


class FeatureNet(nn.Module):
    """A small CNN classifier; its 64-d penultimate layer is the feature space."""

    def __init__(self, channels: int, size: int, n_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(64 * 4, 64), nn.ReLU())
        self.head = nn.Linear(64, n_classes)

    def forward(self, x):
        return self.head(self.body(x))

    @torch.no_grad()
    def features(self, x: torch.Tensor, batch: int = 1000) -> np.ndarray:
        self.eval()
        return torch.cat([self.body(x[i:i + batch]) for i in range(0, len(x), batch)]).numpy()


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images, or floats in [−1, 1], as floats in [−1, 1] at their own size."""
    return images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images.float()


def feature_net(splits, cache_dir: Path, epochs: int = 5, seed: int = 0, log=print) -> FeatureNet:
    """The dataset's classifier, trained once (on training rows only) and cached as safetensors."""
    from .checkpoint import load_weights, save_weights

    c, h, _ = splits.shape
    path = Path(cache_dir) / "fid" / f"{splits.name}-v{FEATURE_VERSION}.safetensors"
    net = FeatureNet(c, h)
    if path.is_file():
        net.load_state_dict(load_weights(path))
        return net.eval()
    log(f"training the {splits.name} feature classifier for the offline Fréchet distance (cached in {path})")
    torch.manual_seed(seed)
    x, y = to_unit(splits.train), splits.labels["train"]
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 128):
            idx = order[i:i + 128]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (net.eval()(to_unit(splits.val)).argmax(1) == splits.labels["val"]).float().mean().item()
    log(f"feature classifier validation accuracy: {acc:.1%}")
    save_weights(path, net.state_dict())
    (path.with_suffix(".json")).write_text(json.dumps({"val_accuracy": acc, "epochs": epochs}))
    return net.eval()


CLASSIFIER_METRIC = "classifier Fréchet distance (offline feature space; not Inception FID)"
INCEPTION_METRIC = "Inception FID (pool3, user-supplied TorchScript weights)"


class InceptionFeatures:
    """Pool3 features from a user-supplied TorchScript Inception-v3 (``torch.jit.load``: a TorchScript
    archive holds no Python code to run, unlike a pickled module)."""

    def __init__(self, path: str | Path, device: str = "cpu", batch: int = 200):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Inception weights {path} not found")
        import warnings

        try:
            with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format FID weights ship in
                warnings.simplefilter("ignore", DeprecationWarning)
                self.model = torch.jit.load(str(path), map_location=device).eval()
        except RuntimeError as e:
            raise ConfigError(f"{path} is not a TorchScript Inception file ({e})") from e
        self.device, self.batch = device, batch

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        if images.dtype != torch.uint8:
            images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        out = [self.model(images[i:i + self.batch].to(self.device), return_features=True).float().cpu()
               for i in range(0, len(images), self.batch)]
        return torch.cat(out).numpy().astype(np.float64)


def feature_extractor(splits, cache_dir: Path, inception: str | Path | None = None, log=print):
    """(features(images) -> array, metric label): Inception when its weights are given, else the
    dataset's cached classifier."""
    if inception:
        return InceptionFeatures(inception), INCEPTION_METRIC
    if splits.name == "celeba":
        raise ConfigError("CelebA has no class labels to train the offline feature classifier on: pass "
                         "--inception inception-2015-12-05.pt for Inception FID")
    net = feature_net(splits, cache_dir, log=log)
    return (lambda images: net.features(to_unit(images))), CLASSIFIER_METRIC
