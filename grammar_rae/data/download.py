"""Explicit downloads of public datasets: fixed URLs, checksums verified (sha256; md5 where the
publisher gives only md5, as CIFAR-10 does), kept in the cache; archives are unpacked safely.

Nothing here runs at import or test time; only ``grammar-rae data download`` (or a call of
:func:`fetch`) touches the network. ``--path`` uses a local copy instead, after the same check.
"""
from __future__ import annotations

import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..io import atomic_target
from .parsed import cache_root, file_sha256


@dataclass(frozen=True)
class RemoteFile:
    name: str
    sha256: str                 # "md5:<hex>" where the publisher gives only an md5
    urls: tuple[str, ...]
    extract: str = ""           # for a .tar.gz: the folder it unpacks to (kept beside it)


DATASETS: dict[str, tuple[RemoteFile, ...]] = {
    "zinc250k": (
        RemoteFile("250k_rndm_zinc_drugs_clean.smi",
                   "f900b46bb42b77aab37cd827d1ea474e2a037ecab2bd7def2b6027492216d36a",
                   ("https://raw.githubusercontent.com/mkusner/grammarVAE/master/data/250k_rndm_zinc_drugs_clean.smi",)),
    ),
    "mnist": tuple(
        RemoteFile(f"{stem}.gz", sha, tuple(f"{base}{stem}.gz" for base in (
            "https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")))
        for stem, sha in [
            ("train-images-idx3-ubyte", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
            ("train-labels-idx1-ubyte", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
            ("t10k-images-idx3-ubyte", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            ("t10k-labels-idx1-ubyte", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        ]
    ),
    # the binary version: fixed-size records, read without unpickling anything (md5 from the CIFAR page)
    "cifar10": (
        RemoteFile("cifar-10-binary.tar.gz", "md5:c32a1d4ab5d03f1284b67883e8d87530",
                   ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",), extract="cifar-10-batches-bin"),
    ),
}


class ChecksumError(RuntimeError, UserError):
    pass


def dataset_dir(dataset: str, cache_dir: str | Path | None = None) -> Path:
    return cache_root(cache_dir) / "datasets" / dataset


def _verify(path: Path, expected: str) -> None:
    if expected.startswith("md5:"):
        import hashlib

        h = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        got, expected, algo = h.hexdigest(), expected[4:], "md5"
    else:
        got, algo = file_sha256(path), "sha256"
    if got != expected:
        raise ChecksumError(f"{path}: {algo} {got} does not match the published {expected}")


def _extract(archive: Path, folder: str) -> None:
    """Unpack a verified .tar.gz beside itself with tarfile's "data" filter (no links out, no
    absolute paths, no device files); atomic: a half-unpacked folder is never left under its name."""
    import tarfile

    target = archive.parent / folder
    if target.is_dir():
        return
    tmp = archive.parent / f".{folder}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    inner = tmp / folder if (tmp / folder).is_dir() else tmp
    inner.rename(target)
    shutil.rmtree(tmp, ignore_errors=True)


def fetch(dataset: str, cache_dir: str | Path | None = None, path: str | Path | None = None,
          progress: bool = True) -> Path:
    """Make ``dataset`` available in the cache and return its folder.

    With ``path`` (a file for one-file sets, a folder otherwise), the local copy is verified and
    linked into the cache; without it, each file is downloaded (trying mirrors in turn), verified
    and moved into place atomically. Files already cached and verified are not fetched again.
    """
    if dataset not in DATASETS:
        raise ChecksumError(f"unknown dataset {dataset!r}; known: {sorted(DATASETS)}")
    out = dataset_dir(dataset, cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    for remote in DATASETS[dataset]:
        target = out / remote.name
        if target.is_file():
            _verify(target, remote.sha256)
            if remote.extract:
                _extract(target, remote.extract)
            continue
        if path is not None:
            src = Path(path)
            src = src / remote.name if src.is_dir() else src
            if not src.is_file():
                raise FileNotFoundError(f"{src} not found (expected {remote.name})")
            _verify(src, remote.sha256)
            with atomic_target(target) as tmp:
                shutil.copyfile(src, tmp)
            if remote.extract:
                _extract(target, remote.extract)
            continue
        errors = []
        for url in remote.urls:
            try:
                _download(url, target, remote.sha256, progress)
                break
            except (OSError, ChecksumError) as e:
                errors.append(f"{url}: {e}")
        else:
            raise ChecksumError(f"could not download {remote.name}:\n  " + "\n  ".join(errors)
                               + f"\nDownload it by hand and pass --path, or place it in {out}")
        if remote.extract:
            _extract(target, remote.extract)
    return out


def _download(url: str, target: Path, sha256: str, progress: bool) -> None:
    from tqdm import tqdm  # text bars (tqdm.auto wants ipywidgets in notebooks)

    with atomic_target(target) as tmp:
        with open(tmp, "wb") as f, urllib.request.urlopen(url, timeout=60) as r:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar:
                while block := r.read(1 << 20):
                    f.write(block)
                    bar.update(len(block))
        _verify(Path(tmp), sha256)


def zinc250k_path(cache_dir: str | Path | None = None, path: str | Path | None = None) -> Path:
    """The ZINC250k ``.smi`` file: ``path`` if given (used as is), else the cached download, else
    the copy shipped inside the package (decompressed into the cache, sha256-checked)."""
    from .shipped import shipped_path

    if path is not None:
        return Path(path)
    f = dataset_dir("zinc250k", cache_dir) / DATASETS["zinc250k"][0].name
    if f.is_file():
        return f
    return shipped_path("zinc250k", cache_dir)
