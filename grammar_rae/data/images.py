"""Image datasets as uint8 tensors [N, C, H, W] with train/validation/test splits that never overlap.

- ``digits``: scikit-learn's 8×8 digits (ships with scikit-learn: the offline default), 0–16 scaled to 0–255.
- ``mnist``: the IDX files from a folder (``--path``) or the verified download cache.
The official RAE code drew its MNIST/CIFAR validation rows from the training rows; here validation is a
seeded slice of the training file that is removed from training, and test is the separate test file
(digits: a seeded three-way split).
"""
from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class ImageSplits:
    name: str
    train: torch.Tensor  # uint8 [N, C, H, W]
    val: torch.Tensor
    test: torch.Tensor
    labels: dict          # split -> int64 labels (for the feature classifier of the offline FID)
    rows: dict            # split -> row indices in its source (digits: the pooled set; MNIST: its file)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train.shape[1:])


def _split(n: int, seed: int, val_fraction: float, pooled_test: bool):
    """Row indices (train, val, test): disjoint; test is carved from the same pool only when
    ``pooled_test`` (digits), otherwise it is the separate test file."""
    idx = np.random.default_rng(seed).permutation(n)
    test = None
    if pooled_test:
        n_test = int(round(n * val_fraction))
        test, idx = idx[:n_test], idx[n_test:]
    n_val = int(round(len(idx) * val_fraction))
    return np.sort(idx[n_val:]), np.sort(idx[:n_val]), test


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally gzipped): the MNIST format."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).copy()  # writable, for torch
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims}, file holds {arr.size} bytes")
    return arr.reshape(dims)


def load_images(name: str, path: str | Path | None = None, seed: int = 0, val_fraction: float = 0.1,
                cache_dir=None) -> ImageSplits:
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y = np.round(d.images * (255 / 16)).astype(np.uint8)[:, None], d.target
        tr, va, te = _split(len(x), seed, val_fraction, pooled_test=True)
        parts = {"train": (x[tr], y[tr], tr), "val": (x[va], y[va], va), "test": (x[te], y[te], te)}
    elif name == "mnist":
        from .download import dataset_dir

        folder = Path(path) if path else dataset_dir("mnist", cache_dir)
        try:
            xtr = read_idx(folder / "train-images-idx3-ubyte.gz")[:, None]
            ytr = read_idx(folder / "train-labels-idx1-ubyte.gz")
            xte = read_idx(folder / "t10k-images-idx3-ubyte.gz")[:, None]
            yte = read_idx(folder / "t10k-labels-idx1-ubyte.gz")
        except FileNotFoundError as e:
            raise FileNotFoundError(f"MNIST not found in {folder} ({e.filename}); run `grammar-rae data download "
                                    "mnist` or pass --data FOLDER") from None
        tr, va, _ = _split(len(xtr), seed, val_fraction, pooled_test=False)
        parts = {"train": (xtr[tr], ytr[tr], tr), "val": (xtr[va], ytr[va], va),
                 "test": (xte, yte, np.arange(len(xte)))}
    else:
        raise ValueError(f"unknown image dataset {name!r} (digits, mnist)")
    x = {k: torch.from_numpy(np.ascontiguousarray(v[0])) for k, v in parts.items()}
    labels = {k: torch.from_numpy(v[1].astype(np.int64)) for k, v in parts.items()}
    return ImageSplits(name, x["train"], x["val"], x["test"], labels, {k: v[2] for k, v in parts.items()})
