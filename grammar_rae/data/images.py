"""Image datasets as uint8 tensors [N, C, H, W] with train/validation/test splits that never overlap.

- ``digits``: scikit-learn's 8×8 digits (ships with scikit-learn: the offline default), 0–16 scaled to 0–255.
- ``mnist``: the IDX files from a folder (``--path``) or the verified download cache.
- ``cifar10``: the binary batches (``data_batch_1..5.bin``, ``test_batch.bin``) from a folder or the
  download cache; the python batches are read too, through an unpickler that admits nothing but
  numpy arrays (they are pickles; we never run arbitrary pickled code).
- ``celeba``: a folder of the aligned 178×218 JPEGs (``img_align_celeba``), centre-cropped to 140×140
  and resized to 64×64 (the WAE/RAE preprocessing); the official partition when
  ``list_eval_partition.txt`` sits in or beside the folder, else a seeded three-way split. The
  decoded array is cached (uint8 ``.npy``, no pickle), so the JPEGs are read once.
The official RAE code drew its MNIST/CIFAR validation rows from the training rows; here validation is a
seeded slice of the training file that is removed from training, and test is the separate test file
(digits: a seeded three-way split).
"""
from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .parsed import DataFormatError


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
        raise DataFormatError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).copy()  # writable, for torch
    if arr.size != int(np.prod(dims)):
        raise DataFormatError(f"{path}: header says {dims}, file holds {arr.size} bytes")
    return arr.reshape(dims)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts/lists/bytes/numbers and numpy arrays; any other global is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _cifar_dir(folder: Path) -> Path:
    for cand in (folder, folder / "cifar-10-batches-bin", folder / "cifar-10-batches-py"):
        if (cand / "test_batch.bin").is_file() or (cand / "test_batch").is_file():
            return cand
    raise FileNotFoundError(f"CIFAR-10 batches not found in {folder}; run `grammar-rae data download cifar10` "
                            "or pass --data FOLDER (cifar-10-batches-bin or cifar-10-batches-py)")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch as (uint8 [N, 3, 32, 32], int labels)."""
    path = Path(path)
    if path.suffix == ".bin":
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size % 3073:
            raise DataFormatError(f"{path} is not a CIFAR-10 binary batch (size {raw.size} is not a multiple of 3073)")
        raw = raw.reshape(-1, 3073)
        return raw[:, 1:].reshape(-1, 3, 32, 32).copy(), raw[:, 0].astype(np.int64)
    with open(path, "rb") as f:
        try:
            d = _ArraysOnly(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            raise DataFormatError(f"{path} is not a CIFAR-10 python batch ({e})") from e
    try:
        return np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(d[b"labels"], np.int64)
    except (KeyError, TypeError, ValueError) as e:
        raise DataFormatError(f"{path} is not a CIFAR-10 python batch ({e})") from e


def _read_cifar(folder: Path):
    folder = _cifar_dir(folder)
    ext = ".bin" if (folder / "test_batch.bin").is_file() else ""
    train = [read_cifar_batch(folder / f"data_batch_{i}{ext}") for i in range(1, 6)]
    xtr, ytr = np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])
    xte, yte = read_cifar_batch(folder / f"test_batch{ext}")
    return xtr, ytr, xte, yte


CELEBA_CROP, CELEBA_SIZE = 140, 64


def _read_celeba(folder: Path, cache_dir=None):
    """uint8 [N, 3, 64, 64] and the official partition (0/1/2) or None, cached once decoded."""
    from PIL import Image
    from tqdm import tqdm  # text bars (tqdm.auto wants ipywidgets in notebooks)

    from .parsed import cache_root

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise FileNotFoundError(f"no images in {folder}; pass --data the img_align_celeba folder")
    key = hashlib.sha256("\n".join(f"{p.name}:{p.stat().st_size}" for p in files).encode()).hexdigest()[:16]
    cache = cache_root(cache_dir) / "datasets" / f"celeba-{CELEBA_SIZE}-{key}.npy"
    if cache.is_file():
        x = np.load(cache, allow_pickle=False)
    else:
        x = np.empty((len(files), 3, CELEBA_SIZE, CELEBA_SIZE), np.uint8)
        for i, p in enumerate(tqdm(files, desc="reading CelebA", unit="img")):
            im = Image.open(p).convert("RGB")
            w, h = im.size
            left, top = (w - CELEBA_CROP) // 2, (h - CELEBA_CROP) // 2
            im = im.crop((left, top, left + CELEBA_CROP, top + CELEBA_CROP)).resize(
                (CELEBA_SIZE, CELEBA_SIZE), Image.BILINEAR)
            x[i] = np.asarray(im).transpose(2, 0, 1)
        from ..io import atomic_target

        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_target(cache) as tmp, open(tmp, "wb") as f:
            np.save(f, x, allow_pickle=False)
    part = None
    for cand in (folder / "list_eval_partition.txt", folder.parent / "list_eval_partition.txt"):
        if cand.is_file():
            table = dict(line.split() for line in cand.read_text().splitlines() if line.strip())
            part = np.array([int(table.get(p.name, -1)) for p in files])
            break
    return x, part


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
    elif name == "cifar10":
        from .download import dataset_dir

        xtr, ytr, xte, yte = _read_cifar(Path(path) if path else dataset_dir("cifar10", cache_dir))
        tr, va, _ = _split(len(xtr), seed, val_fraction, pooled_test=False)
        parts = {"train": (xtr[tr], ytr[tr], tr), "val": (xtr[va], ytr[va], va),
                 "test": (xte, yte, np.arange(len(xte)))}
    elif name == "celeba":
        if not path:
            raise FileNotFoundError("CelebA has no stable download URL: pass --data FOLDER with the aligned images "
                                    "(img_align_celeba, optionally list_eval_partition.txt beside it)")
        x, part = _read_celeba(Path(path), cache_dir)
        y = np.zeros(len(x), np.int64)  # no classes: the offline FD's classifier is not available for CelebA
        if part is not None and (part >= 0).all():
            tr, va, te = (np.flatnonzero(part == i) for i in range(3))
        else:
            tr, va, te = _split(len(x), seed, val_fraction, pooled_test=True)
        parts = {"train": (x[tr], y[tr], tr), "val": (x[va], y[va], va), "test": (x[te], y[te], te)}
    else:
        raise DataFormatError(f"unknown image dataset {name!r} (digits, mnist, cifar10, celeba)")
    x = {k: torch.from_numpy(np.ascontiguousarray(v[0])) for k, v in parts.items()}
    labels = {k: torch.from_numpy(v[1].astype(np.int64)) for k, v in parts.items()}
    return ImageSplits(name, x["train"], x["val"], x["test"], labels, {k: v[2] for k, v in parts.items()})
