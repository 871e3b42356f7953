"""Data sets shipped inside the package, gzipped, so the molecule and BO commands work offline
(``files/PROVENANCE.md`` says where each comes from).

A shipped file is decompressed once into the cache (``<cache>/datasets/<name>/``), its sha256
checked against the published one, and used from there; the parse cache is keyed by that sha256,
so the shipped copy and any other byte-identical copy share one parse.
"""
from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..io import atomic_target
from .parsed import cache_root, file_sha256

FILES = Path(__file__).parent / "files"


@dataclass(frozen=True)
class ShippedDataset:
    name: str
    filename: str          # the published file name (what the gzip holds)
    sha256: str            # of the decompressed, published file
    rows: int
    description: str


SHIPPED = {d.name: d for d in (
    ShippedDataset("zinc250k", "250k_rndm_zinc_drugs_clean.smi",
                   "f900b46bb42b77aab37cd827d1ea474e2a037ecab2bd7def2b6027492216d36a", 249_456,
                   "ZINC250k as the GrammarVAE/ChemicalVAE papers use it (one SMILES a line)"),
    ShippedDataset("expressions", "equation2_15_dataset.txt",
                   "ae9850311e884f888491f56dca57ef3c2f9880899e63d26b5da3b71840591ca2", 100_000,
                   "the GrammarVAE arithmetic-expression set (space-separated tokens)"),
)}


class ShippedDataError(RuntimeError, UserError):
    pass


def shipped_path(name: str, cache_dir: str | Path | None = None) -> Path:
    """The decompressed, verified copy of shipped dataset ``name`` in the cache."""
    if name not in SHIPPED:
        raise KeyError(f"no shipped dataset {name!r}; shipped: {sorted(SHIPPED)}")
    d = SHIPPED[name]
    target = cache_root(cache_dir) / "datasets" / name / d.filename
    if target.is_file() and file_sha256(target) == d.sha256:
        return target
    source = FILES / (d.filename + ".gz")
    if not source.is_file():
        raise ShippedDataError(f"the shipped {name} file is missing from this installation ({source}); "
                               f"reinstall grammar-rae or pass --data PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(target) as tmp:
        with gzip.open(source, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        got = file_sha256(tmp)
        if got != d.sha256:
            raise ShippedDataError(f"{source} decompresses to sha256 {got}, not the published {d.sha256}: "
                                   "the installation is damaged; reinstall grammar-rae")
    return target


def resolve_source(source: str | Path, sha256: str | None = None, cache_dir=None) -> Path:
    """The data file a run was trained on: its recorded path when that file still holds the same
    bytes, else the shipped dataset with that name or that sha256 (so shipped pretrained runs, and
    runs moved between machines, find their data)."""
    p = Path(source)
    if p.is_file() and (sha256 is None or file_sha256(p) == sha256):
        return p
    if str(source) in SHIPPED:
        return shipped_path(str(source), cache_dir)
    for d in SHIPPED.values():
        if sha256 == d.sha256:
            return shipped_path(d.name, cache_dir)
    if p.is_file():
        raise ShippedDataError(f"{p} has changed since the run was trained on it (sha256 differs); "
                               "the run's splits would point at other rows")
    raise FileNotFoundError(f"the run's data {source} is not here and is not a shipped dataset; "
                            "place the file at that path")
