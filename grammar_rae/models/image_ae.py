"""The image autoencoder family of the RAE paper (Ghosh et al., ICLR 2020, Sec. 6, Table 1) on one
shared conv backbone; the latent terms and decoder regularisers are the grammar models' own
(``regularisers.py``), plus the WAE's MMD (Tolstikhin et al. 2018), all in ``regularisers.objective``.

Backbone (REFERENCE.md §2): stride-2 4×4 convolutions with BN+ReLU, flatten, dense → z; dense →
s×s×C, stride-2 transposed convolutions with BN+ReLU, a stride-1 convolution to the image.
Images are scaled to [−1, 1] and zero-padded to a power of two (MNIST 28 → 32).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from . import regularisers as R
from .family import IMAGE_MODELS, family


# (β, λ) per dataset from the paper's appendix (REFERENCE.md §2); digits borrows MNIST's.
PAPER_WEIGHTS = {
    "mnist": {"rae-gp": (1e-4, 5e-8), "rae-l2": (1e-4, 1e-7), "rae-sn": (9e-3, 0.0), "rae": (5e-4, 0.0),
              "ae": (0.0, 0.0), "vae": (0.312, 0.0), "cv-vae": (0.039, 0.0), "wae": (3e-2, 0.0)},
    "cifar10": {"rae-gp": (9e-4, 0.0), "rae-l2": (1e-3, 1e-6), "rae-sn": (3e-2, 0.0), "rae": (1e-2, 0.0),
                "ae": (0.0, 0.0), "vae": (0.024, 0.0), "cv-vae": (9e-4, 0.0), "wae": (6e-3, 0.0)},
    "celeba": {"rae-gp": (1e-4, 1e-7), "rae-l2": (1e-4, 1e-7), "rae-sn": (2.4e-3, 0.0), "rae": (1e-4, 0.0),
               "ae": (0.0, 0.0), "vae": (0.090, 0.0), "cv-vae": (0.01, 0.0), "wae": (100.0, 0.0)},
}
for _w in PAPER_WEIGHTS.values():
    _w["2s-vae"] = _w["vae"]  # the first stage is the paper's VAE; the second stage is fitted ex post
PAPER_WEIGHTS["digits"] = PAPER_WEIGHTS["mnist"]

BACKBONES = {
    # the paper's MNIST/CIFAR network
    "paper": dict(enc_channels=(128, 256, 512, 1024), dec_start_channels=1024, dec_channels=(512, 256), kernel=4),
    # the paper's CelebA network: 5×5 kernels, one more transposed convolution (64×64 from 8×8)
    "celeba": dict(enc_channels=(128, 256, 512, 1024), dec_start_channels=1024, dec_channels=(512, 256, 128),
                   kernel=5),
    # a small network for 8×8 digits and quick CPU runs
    "small": dict(enc_channels=(32, 64), dec_start_channels=64, dec_channels=(32,), kernel=4),
}
LATENT = {"digits": 8, "mnist": 16, "cifar10": 128, "celeba": 64}


@dataclass
class ImageAEConfig:
    dataset: str = "digits"
    model: str = "rae-l2"
    channels: int = 1
    image_size: int = 8               # after padding
    latent_dim: int = 8
    backbone: str = "small"
    beta: float | None = None
    lam: float | None = None
    cv_sigma: float = 0.7

    def __post_init__(self):
        if self.model not in IMAGE_MODELS:
            raise ConfigError(f"unknown image model {self.model!r}; choose from {IMAGE_MODELS}")
        beta, lam = PAPER_WEIGHTS.get(self.dataset, PAPER_WEIGHTS["mnist"])[self.model]
        self.beta = beta if self.beta is None else self.beta
        self.lam = lam if self.lam is None else self.lam

    def to_dict(self) -> dict:
        return asdict(self)


def padded_size(h: int) -> int:
    size = 1
    while size < h:
        size *= 2
    return size


class ImageAE(nn.Module):
    def __init__(self, c: ImageAEConfig):
        super().__init__()
        self.config = c
        arch = BACKBONES[c.backbone]
        layers, ch, k = [], c.channels, arch["kernel"]
        # stride-2 convolutions that halve the size exactly: (k, pad) = (4, 1) or (5, 2)
        pad, out_pad = (k - 1) // 2, k % 2
        for out in arch["enc_channels"]:
            layers += [nn.Conv2d(ch, out, k, 2, pad), nn.BatchNorm2d(out), nn.ReLU()]
            ch = out
        size = c.image_size // 2 ** len(arch["enc_channels"])
        if size < 1:
            raise ConfigError(f"image size {c.image_size} is too small for the {c.backbone} backbone")
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        self.to_z = nn.Linear(ch * size * size, c.latent_dim)
        self.to_log_var = nn.Linear(ch * size * size, c.latent_dim) if family(c.model).variational else None
        self.start = c.image_size // 2 ** len(arch["dec_channels"])
        self.start_channels = arch["dec_start_channels"]
        layers, ch = [], self.start_channels
        for out in arch["dec_channels"]:
            layers += [nn.ConvTranspose2d(ch, out, k, 2, pad, output_padding=out_pad), nn.BatchNorm2d(out), nn.ReLU()]
            ch = out
        self.decoder = nn.Sequential(nn.Linear(c.latent_dim, self.start_channels * self.start ** 2),
                                     nn.Unflatten(1, (self.start_channels, self.start, self.start)),
                                     *layers, nn.Conv2d(ch, c.channels, 3, 1, 1), nn.Tanh())
        if family(c.model).decoder_reg == "sn":
            R.apply_spectral_norm(self.decoder)

    # ------------------------------------------------------------------ data
    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] → float in [−1, 1], zero-padded (i.e. −1) to image_size."""
        x = images.float() / 127.5 - 1.0
        pad = self.config.image_size - x.shape[-1]
        if pad:
            x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), value=-1.0)
        return x

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.to_z(self.encoder(self.prepare(images)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [−1, 1] at the padded size."""
        return self.decoder(z)

    # ------------------------------------------------------------------ objective
    def forward(self, images):
        return self.loss(images)

    def loss(self, images: torch.Tensor):
        """L = ‖x − D(z)‖² + β·(latent term) + λ·L_REG (RAE eq. 11), averaged over the batch."""
        c = self.config
        x = self.prepare(images)
        h = self.encoder(x)
        mean = self.to_z(h)
        z, log_var = mean, None
        posterior = family(c.model).posterior
        if posterior == "gaussian":
            log_var = self.to_log_var(h)
            z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        elif posterior == "constant":
            z = mean + c.cv_sigma * torch.randn_like(mean)
        out = self.decoder(z)
        rec = (out - x).pow(2).flatten(1).sum(1).mean()
        return R.objective(c.model, rec, mean, log_var, z, out, self.decoder, c.beta, c.lam)

    def reconstruction_loss(self, images: torch.Tensor) -> torch.Tensor:
        x = self.prepare(images)
        return (self.decoder(self.to_z(self.encoder(x))) - x).pow(2).flatten(1).sum(1)
