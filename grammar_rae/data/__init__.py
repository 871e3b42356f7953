"""Datasets: SMILES files, ZINC250k, expressions; parsed once and cached as rule indices."""
from __future__ import annotations

from pathlib import Path

from .download import fetch, zinc250k_path
from .expressions import generate_expressions, load_expressions
from .parsed import DataFormatError, ParsedDataset, load_parsed, prepare_dataset, read_strings


def load_zinc250k(path: str | Path | None = None, cache_dir: str | Path | None = None, **kw) -> ParsedDataset:
    """ZINC250k under the SMILES grammar: a local ``path``, else the cached download
    (``grammar-rae data download zinc250k``). Keyword arguments go to :func:`prepare_dataset`."""
    return prepare_dataset("smiles", zinc250k_path(cache_dir, path), cache_dir=cache_dir, **kw)


def load_smiles_file(path: str | Path, column: str | None = None, **kw) -> ParsedDataset:
    """Any ``.smi``/``.csv`` file of SMILES under the SMILES grammar."""
    return prepare_dataset("smiles", path, column=column, **kw)


def load_expression_dataset(path: str | Path, **kw) -> ParsedDataset:
    """A file of expressions (one a line) under the expression grammar."""
    return prepare_dataset("expr", path, **kw)


__all__ = [
    "DataFormatError", "ParsedDataset", "fetch", "generate_expressions", "load_expression_dataset",
    "load_expressions", "load_parsed", "load_smiles_file", "load_zinc250k", "prepare_dataset",
    "read_strings", "zinc250k_path",
]
