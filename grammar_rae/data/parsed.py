"""Parsed datasets: strings turned into rule indices once, then cached compactly.

A dataset is stored as a padded ``uint8`` matrix of rule indices (``uint16`` if a grammar has more
than 256 productions), the sequence lengths, the source line of each row and the strings
themselves; ZINC250k is ~69 MB. The cache key is the grammar's sha256 and the source file's
sha256 (plus the column read), so a file is parsed once, and editing either re-parses it.
Nothing is pickled: arrays go through ``np.load(allow_pickle=False)``, metadata is JSON.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DataFormatError, UserError  # noqa: F401  (DataFormatError: also importable from here)
from ..grammar import Grammar, load_grammar
from ..io import current_umask

FORMAT_VERSION = 1


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$GRAMMAR_RAE_CACHE``, else ``~/.cache/grammar-rae``."""
    if cache_dir:
        return Path(cache_dir)
    env = os.environ.get("GRAMMAR_RAE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "grammar-rae"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


MAX_CHARS = 10_000  # a longer line is not a molecule or an expression: skipped, not parsed


def read_strings(path: str | Path, column: str | None = None, bad: list | None = None,
                 max_chars: int = MAX_CHARS) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, string)`` for each non-empty record of a text or CSV file.

    ``.csv`` files (or any file when ``column`` is given) are read with the csv module and the
    ``column`` field is taken (default: ``smiles`` if present, else the first column); other
    files hold one string a line. Surrounding white space (ZINC's trailing newlines) is removed.

    A line that is not UTF-8, holds a NUL byte, or is longer than ``max_chars`` is appended to
    ``bad`` as ``(line_number, reason)`` and skipped -- no other line is lost; with ``bad=None`` it
    raises :class:`DataFormatError` naming FILE:LINE instead.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such input file: {path}")

    def reject(line: int, reason: str):
        if bad is None:
            raise DataFormatError(f"{path}:{line}: {reason}")
        bad.append((line, reason))

    def lines() -> Iterator[tuple[int, str]]:
        """Decoded lines; a bad one comes back empty (so csv's line count stays right)."""
        with open(path, "rb") as f:
            for i, raw in enumerate(f, 1):
                if len(raw) > max_chars:
                    reject(i, f"line of {len(raw):,} bytes, longer than {max_chars:,}: not read")
                    yield i, "\n"
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    reject(i, f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})")
                    yield i, "\n"
                    continue
                if "\x00" in text:
                    reject(i, "contains a NUL byte")
                    yield i, "\n"
                    continue
                yield i, text

    if path.suffix.lower() == ".csv" or column is not None:
        numbered = lines()
        reader = csv.reader(text for _, text in numbered)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataFormatError(f"{path}:1: not a CSV header ({e})") from e
        names = [h.strip() for h in header]
        want = column or ("smiles" if "smiles" in names else names[0])
        if want not in names:
            raise DataFormatError(f"{path}: no column {want!r}; columns are {names}")
        k = names.index(want)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                reject(reader.line_num, f"not a CSV row ({e})")
                continue
            if len(row) > k and row[k].strip():
                yield reader.line_num, row[k].strip()
        return
    for i, text in lines():
        s = text.strip()
        if s:
            yield i, s


@dataclass
class ParsedDataset:
    """Rule-index sequences of a set of strings under one grammar."""

    grammar: Grammar
    rules: np.ndarray          # [n, max_len] uint8/uint16, padded with grammar.padding_index
    lengths: np.ndarray        # [n] int32, steps before padding
    line_numbers: np.ndarray   # [n] int32, source line of each row
    strings: list[str]
    source: str = ""
    source_sha256: str = ""
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    cache_path: Path | None = None

    def __len__(self) -> int:
        return len(self.strings)

    @property
    def max_length(self) -> int:
        return int(self.rules.shape[1])

    def summary(self) -> str:
        mb = (self.rules.nbytes + self.lengths.nbytes + self.line_numbers.nbytes) / 1e6
        return (f"{len(self)} strings parsed, {len(self.skipped)} skipped; "
                f"max length {self.max_length} rules; {mb:.1f} MB of indices")


def pack(grammar: Grammar, sequences: list[list[int]], max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pad rule sequences into a compact matrix (padding rule after each sequence)."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int32, count=len(sequences))
    width = int(max_length or (lengths.max() if len(lengths) else 1))
    if len(lengths) and lengths.max() > width:
        raise ValueError(f"a sequence of {lengths.max()} rules exceeds max_length={width}")
    dtype = np.uint8 if grammar.n_rules <= 256 else np.uint16
    rules = np.full((len(sequences), width), grammar.padding_index, dtype=dtype)
    if len(sequences):
        flat = np.fromiter((r for s in sequences for r in s), dtype=dtype, count=int(lengths.sum()))
        rows = np.repeat(np.arange(len(sequences)), lengths)
        cols = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        rules[rows, cols] = flat
    return rules, lengths


def _cache_dir_for(grammar: Grammar, source_sha: str, column: str | None, root: Path) -> Path:
    key = hashlib.sha256(f"{FORMAT_VERSION}:{grammar.sha256}:{source_sha}:{column}".encode()).hexdigest()[:24]
    return root / "parsed" / f"{grammar.name}-{key}"


def _report(msg: str, quiet: bool):
    if not quiet:
        print(msg, file=sys.stderr)


def prepare_dataset(grammar: Grammar | str, path: str | Path, column: str | None = None, workers: int = 0,
                    cache_dir: str | Path | None = None, use_cache: bool = True, progress: bool = True,
                    quiet: bool = False, show_errors: int = 20) -> ParsedDataset:
    """Parse a file of strings (SMILES ``.smi``/``.csv``, expressions) into a cached dataset.

    Unparseable lines are reported with their line number and reason (the first
    ``show_errors`` of them), skipped, and counted in the summary; they are kept in
    ``dataset.skipped``.
    """
    grammar = load_grammar(grammar)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such input file: {path}")
    source_sha = file_sha256(path)
    where = _cache_dir_for(grammar, source_sha, column, cache_root(cache_dir))
    if use_cache and (where / "meta.json").is_file():
        try:
            ds = load_parsed(where, grammar)
            _report(f"using cached parse of {path} ({ds.summary()}) from {where}", quiet)
            return ds
        except DataFormatError as e:
            _report(f"ignoring unreadable cache {where}: {e}; parsing again", quiet)
    unreadable: list = []
    records = list(read_strings(path, column, bad=unreadable))
    strings = [s for _, s in records]
    results, errors = grammar.parse_many(strings, workers=workers, progress=progress and not quiet,
                                         on_error="skip")
    problems = sorted([(line, reason) for line, reason in unreadable] +
                      [(records[i][0], str(err)) for i, err in errors])
    skipped = []
    for line, reason in problems:
        skipped.append((line, reason))
        if len(skipped) <= show_errors:
            _report(f"{path}:{line}: skipped: {reason}", quiet)
    if len(skipped) > show_errors:
        _report(f"... and {len(skipped) - show_errors} more unparseable lines", quiet)
    keep = [i for i, r in enumerate(results) if r is not None]
    rules, lengths = pack(grammar, [results[i] for i in keep])
    ds = ParsedDataset(grammar, rules, lengths, np.asarray([records[i][0] for i in keep], dtype=np.int32),
                       [strings[i] for i in keep], str(path), source_sha, skipped)
    if use_cache:
        save_parsed(ds, where)
    _report(f"{path}: {ds.summary()}" + (f"; cached in {where}" if use_cache else ""), quiet)
    return ds


def save_parsed(ds: ParsedDataset, where: Path) -> None:
    """Write atomically: a temporary folder beside the target, then a rename."""
    where.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=where.parent))
    try:
        np.save(tmp / "rules.npy", ds.rules)
        np.save(tmp / "lengths.npy", ds.lengths)
        np.save(tmp / "line_numbers.npy", ds.line_numbers)
        (tmp / "strings.txt").write_text("".join(s + "\n" for s in ds.strings), encoding="utf-8")
        meta = {"format": FORMAT_VERSION, "grammar": ds.grammar.name, "grammar_sha256": ds.grammar.sha256,
                "source": ds.source, "source_sha256": ds.source_sha256, "n": len(ds),
                "max_length": ds.max_length, "skipped": ds.skipped}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700 folders
        if where.exists():   # an unreadable cache: moved aside (one rename), then removed
            old = Path(tempfile.mkdtemp(prefix=".old-", dir=where.parent))
            try:
                os.replace(where, old / "x")
            except FileNotFoundError:
                pass         # another process moved it first
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, where)
        except OSError:
            # Another process (a torchrun rank, a second run on the same cache) put its parse there
            # between the check and the rename: the key is the grammar and the file's hash, so it holds
            # the same rows. Keep it, drop ours.
            if not (where / "meta.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    ds.cache_path = where


def load_parsed(where: str | Path, grammar: Grammar | str | None = None) -> ParsedDataset:
    """Read a cached dataset; raises DataFormatError if it is not one of ours or is damaged."""
    where = Path(where)
    try:
        meta = json.loads((where / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_VERSION:
            raise DataFormatError(f"format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        g = load_grammar(grammar or meta["grammar"])
        if g.sha256 != meta["grammar_sha256"]:
            raise DataFormatError("parsed with a different version of the grammar")
        rules = np.load(where / "rules.npy", allow_pickle=False)
        lengths = np.load(where / "lengths.npy", allow_pickle=False)
        lines = np.load(where / "line_numbers.npy", allow_pickle=False)
        strings = (where / "strings.txt").read_text(encoding="utf-8").splitlines()
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
        if isinstance(e, DataFormatError):
            raise
        raise DataFormatError(f"{where}: not a readable parsed dataset ({e})") from e
    n = meta["n"]
    if not (len(rules) == len(lengths) == len(lines) == len(strings) == n) or rules.ndim != 2:
        raise DataFormatError(f"{where}: arrays disagree with meta.json (n={n})")
    if len(lengths) and (lengths.max() > rules.shape[1] or int(rules.max()) >= g.n_rules):
        raise DataFormatError(f"{where}: rule indices out of range for grammar {g.name}")
    return ParsedDataset(g, rules, lengths, lines, strings, meta["source"], meta["source_sha256"],
                         [tuple(x) for x in meta["skipped"]], where)
