"""Datasets: parsing files once into compact cached indices, bad lines, downloads, expressions."""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from grammar_rae import load_grammar
from grammar_rae.data import download
from grammar_rae.data.expressions import generate_expressions, load_expressions, min_derivation_lengths
from grammar_rae.data.parsed import DataFormatError, load_parsed, pack, prepare_dataset, read_strings

GOOD = ["CCO", "c1ccccc1", "CC(=O)Nc1ccc(O)cc1", "C[C@@H](N)C(=O)O", "ClCBr"]


def write_smi(tmp_path, lines, name="mols.smi"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def test_bad_lines_are_reported_skipped_and_counted(tmp_path, capsys, smiles):
    path = write_smi(tmp_path, ["CCO", "C1CC(", "", "c1ccccc1", "CXC", "ClCBr  "])
    ds = prepare_dataset(smiles, path, cache_dir=tmp_path / "cache", workers=1, progress=False)
    err = capsys.readouterr().err
    assert f"{path}:2: skipped" in err and f"{path}:5: skipped" in err and "unknown character 'X'" in err
    assert "3 strings parsed, 2 skipped" in err
    assert ds.strings == ["CCO", "c1ccccc1", "ClCBr"]
    assert ds.line_numbers.tolist() == [1, 4, 6]
    assert [line for line, _ in ds.skipped] == [2, 5]
    for row, k, s in zip(ds.rules, ds.lengths, ds.strings):
        assert list(row[:k]) == smiles.parse(s) and (row[k:] == smiles.padding_index).all()
    assert ds.rules.dtype == np.uint8


def test_cache_is_reused_and_keyed_by_content(tmp_path, smiles, monkeypatch):
    path = write_smi(tmp_path, GOOD)
    first = prepare_dataset(smiles, path, cache_dir=tmp_path / "c", workers=1, quiet=True)

    def boom(*a, **k):
        raise AssertionError("parsed again although cached")

    monkeypatch.setattr(type(smiles), "parse_many", boom)
    again = prepare_dataset(smiles, path, cache_dir=tmp_path / "c", workers=1, quiet=True)
    assert again.cache_path == first.cache_path
    assert np.array_equal(again.rules, first.rules) and again.strings == first.strings
    monkeypatch.undo()
    write_smi(tmp_path, GOOD + ["CCCC"])  # new content, new key
    changed = prepare_dataset(smiles, path, cache_dir=tmp_path / "c", workers=1, quiet=True)
    assert changed.cache_path != first.cache_path and len(changed) == len(GOOD) + 1


def test_two_processes_writing_the_same_cache_at_once_both_succeed(tmp_path, smiles, monkeypatch):
    """Two torchrun ranks (or two runs) on one cache directory: both find no cache, both parse, and the
    second rename meets the first one's folder. The second keeps that folder (the same key, the same
    rows) instead of failing. Here the other writer finishes inside this one's rename."""
    import grammar_rae.data.parsed as parsed

    path = write_smi(tmp_path, GOOD)
    real_replace, raced = os.replace, []

    def replace(src, dst):
        if Path(src).name.startswith(".tmp-") and not raced:
            raced.append(dst)
            monkeypatch.setattr(parsed.os, "replace", real_replace)
            other = prepare_dataset(smiles, path, cache_dir=tmp_path / "c", workers=1, quiet=True)
            assert other.cache_path == Path(dst)
        return real_replace(src, dst)

    monkeypatch.setattr(parsed.os, "replace", replace)
    ds = prepare_dataset(smiles, path, cache_dir=tmp_path / "c", workers=1, quiet=True)
    assert raced and ds.cache_path == Path(raced[0])
    assert load_parsed(ds.cache_path).strings == GOOD
    assert [p.name for p in ds.cache_path.parent.iterdir()] == [ds.cache_path.name]   # no temporary left


def test_damaged_or_foreign_cache_is_refused(tmp_path, smiles):
    path = write_smi(tmp_path, GOOD)
    ds = prepare_dataset(smiles, path, cache_dir=tmp_path / "c", workers=1, quiet=True)
    where = ds.cache_path
    np.save(where / "rules.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(DataFormatError):
        load_parsed(where)
    # prepare notices the damage and parses again
    again = prepare_dataset(smiles, path, cache_dir=tmp_path / "c", workers=1, quiet=True)
    assert again.strings == GOOD
    meta = json.loads((where / "meta.json").read_text())
    meta["grammar_sha256"] = "0" * 64
    (where / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataFormatError, match="different version"):
        load_parsed(where)


def test_undecodable_nul_and_huge_lines_are_reported_by_line_and_skipped(tmp_path, capsys, smiles):
    p = tmp_path / "bad.smi"
    p.write_bytes(b"CCO\nC\xffC\nc1ccccc1\nC\x00O\n" + b"C" * 20_000 + b"\nClCBr\n")
    ds = prepare_dataset(smiles, p, cache_dir=tmp_path / "c", workers=1, progress=False)
    err = capsys.readouterr().err
    assert ds.strings == ["CCO", "c1ccccc1", "ClCBr"] and ds.line_numbers.tolist() == [1, 3, 6]
    assert [line for line, _ in ds.skipped] == [2, 4, 5]
    assert f"{p}:2: skipped: not UTF-8 text (byte 0xff at column 2)" in err
    assert f"{p}:4: skipped: contains a NUL byte" in err and f"{p}:5: skipped: line of 20,001 bytes" in err
    assert "3 strings parsed, 3 skipped" in err
    with pytest.raises(DataFormatError, match=rf"{p.name}:2: not UTF-8"):
        list(read_strings(p))  # without a list to collect them, a bad line is an error naming it
    c = tmp_path / "bad.csv"
    c.write_bytes(b"smiles,y\nCCO,1\n\xfe\xff,2\nc1ccccc1,3\n")
    bad = []
    assert list(read_strings(c, bad=bad)) == [(2, "CCO"), (4, "c1ccccc1")] and [b[0] for b in bad] == [3]


def test_csv_column(tmp_path, smiles):
    p = tmp_path / "m.csv"
    p.write_text('id,smiles,logP\n1,CCO,0.1\n2,"c1ccccc1",2.0\n3,C1CC(,0\n')
    assert list(read_strings(p)) == [(2, "CCO"), (3, "c1ccccc1"), (4, "C1CC(")]
    ds = prepare_dataset(smiles, p, cache_dir=tmp_path / "c", workers=1, quiet=True)
    assert ds.strings == ["CCO", "c1ccccc1"] and ds.skipped[0][0] == 4
    with pytest.raises(DataFormatError, match="no column 'smi'"):
        list(read_strings(p, column="smi"))


def test_pack_uses_uint16_beyond_256_rules(tmp_path):
    rules = " | ".join(f"'t{i}'" for i in range(300))
    g = load_grammar(write_smi(tmp_path, [f"S -> {rules}"], "big.cfg"))
    m, lengths = pack(g, [[3], [299]])
    assert m.dtype == np.uint16 and m.tolist() == [[3], [299]] and lengths.tolist() == [1, 1]


def test_datasets_are_kept_as_one_byte_per_rule(tmp_path, smiles):
    """What a prepared dataset holds -- in memory and in the cache -- is one uint8 per rule step,
    not one-hots (a float32 one-hot ZINC250k would be 19.6 GiB; REFERENCE.md §4)."""
    path = write_smi(tmp_path, GOOD * 40)
    ds = prepare_dataset(smiles, path, cache_dir=tmp_path / "c", workers=1, quiet=True)
    assert ds.rules.dtype == np.uint8 and ds.rules.shape == (200, max(len(smiles.parse(s)) for s in GOOD))
    cached = np.load(ds.cache_path / "rules.npy", allow_pickle=False)
    assert cached.dtype == np.uint8 and cached.nbytes == ds.rules.size
    assert (ds.cache_path / "rules.npy").stat().st_size < ds.rules.size + 200  # header + bytes, nothing else


def test_expression_generation_is_seeded_valid_and_bounded(expr):
    a = generate_expressions(500, seed=1)
    assert a == generate_expressions(500, seed=1) and a != generate_expressions(500, seed=2)
    assert len(set(a)) == 500
    lengths = [len(expr.parse(s)) for s in a]
    assert max(lengths) <= 15 and min(lengths) >= 2
    assert min_derivation_lengths(expr).tolist()[:2] == [2, 1]  # S -> T -> 'x'
    with pytest.raises(ValueError, match="distinct"):
        generate_expressions(100, max_length=2)  # only 7 strings have 2-rule derivations


def test_load_expressions(tmp_path):
    p = tmp_path / "e.txt"
    p.write_text("x + 1\n\n  sin( x )  \n")
    assert load_expressions(p) == ["x + 1", "sin( x )"]


# ------------------------------------------------------------------ downloads (no network)
def fake_remote(monkeypatch, tmp_path, content: bytes, published_sha: str | None = None):
    src = tmp_path / "remote.smi"
    src.write_bytes(content)
    sha = published_sha or hashlib.sha256(content).hexdigest()
    remote = download.RemoteFile("zinc.smi", sha, ("file:///nonexistent/mirror.smi", src.as_uri()))
    monkeypatch.setitem(download.DATASETS, "zinc250k", (remote,))
    return src


def test_download_verifies_and_caches(tmp_path, monkeypatch):
    fake_remote(monkeypatch, tmp_path, b"CCO\n")
    out = download.fetch("zinc250k", cache_dir=tmp_path / "cache", progress=False)
    assert (out / "zinc.smi").read_bytes() == b"CCO\n"
    assert download.fetch("zinc250k", cache_dir=tmp_path / "cache", progress=False) == out


def test_download_rejects_a_wrong_checksum(tmp_path, monkeypatch):
    fake_remote(monkeypatch, tmp_path, b"CCO\n", published_sha="f" * 64)
    with pytest.raises(RuntimeError, match="does not match"):
        download.fetch("zinc250k", cache_dir=tmp_path / "cache", progress=False)
    assert not any((tmp_path / "cache" / "datasets" / "zinc250k").iterdir()), "no partial file left"


def test_local_path_is_verified(tmp_path, monkeypatch):
    src = fake_remote(monkeypatch, tmp_path, b"CCO\n")
    out = download.fetch("zinc250k", cache_dir=tmp_path / "c1", path=src)
    assert (out / "zinc.smi").is_file()
    bad = tmp_path / "bad.smi"
    bad.write_bytes(b"CCN\n")
    with pytest.raises(download.ChecksumError):
        download.fetch("zinc250k", cache_dir=tmp_path / "c2", path=bad)
    # nothing downloaded: the copy shipped inside the package, decompressed into the cache and verified
    shipped = download.zinc250k_path(cache_dir=tmp_path / "c3")
    assert shipped.parent == tmp_path / "c3" / "datasets" / "zinc250k"
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == \
        "f900b46bb42b77aab37cd827d1ea474e2a037ecab2bd7def2b6027492216d36a"


def test_shipped_datasets_are_verified_and_a_damaged_copy_is_refused(tmp_path, monkeypatch):
    import gzip

    from grammar_rae.data import shipped

    p = shipped.shipped_path("expressions", tmp_path / "c")
    lines = p.read_text().splitlines()
    assert len(lines) == 100_000 and lines[99_908] == "1 / 3 + ( x ) + sin( x * x )"
    p.write_text("x\n")  # a damaged cached copy is replaced by a fresh, verified one
    assert shipped.shipped_path("expressions", tmp_path / "c").read_text().splitlines() == lines
    fake = tmp_path / "files"
    fake.mkdir()
    (fake / "equation2_15_dataset.txt.gz").write_bytes(gzip.compress(b"x + 1\n"))
    monkeypatch.setattr(shipped, "FILES", fake)
    with pytest.raises(shipped.ShippedDataError, match="not the published"):
        shipped.shipped_path("expressions", tmp_path / "c2")
    assert not (tmp_path / "c2" / "datasets" / "expressions" / "equation2_15_dataset.txt").exists()
    # a run's recorded source is found again by sha256 when its path is gone
    monkeypatch.undo()
    sha = "ae9850311e884f888491f56dca57ef3c2f9880899e63d26b5da3b71840591ca2"
    assert shipped.resolve_source("/gone/expr.txt", sha, tmp_path / "c").read_text().splitlines() == lines
    with pytest.raises(FileNotFoundError, match="not a shipped dataset"):
        shipped.resolve_source("/gone/other.txt", "0" * 64, tmp_path / "c")


def test_zinc250k_fits_in_100_mb_and_is_read_back_from_cache(tmp_path, smiles):
    from conftest import ZINC, need
    from grammar_rae.data import load_zinc250k

    ds = load_zinc250k(path=need(ZINC), cache_dir=tmp_path, workers=0, quiet=True)
    assert len(ds) == 249_456 and not ds.skipped and ds.max_length == 277
    in_memory = ds.rules.nbytes + ds.lengths.nbytes + ds.line_numbers.nbytes + sum(map(len, ds.strings))
    on_disk = sum(f.stat().st_size for f in ds.cache_path.iterdir())
    print(f"ZINC250k: {in_memory / 1e6:.1f} MB in memory, {on_disk / 1e6:.1f} MB on disk")
    assert in_memory <= 100e6 and on_disk <= 100e6
    again = load_parsed(ds.cache_path)
    assert np.array_equal(again.rules, ds.rules) and again.strings[-1] == ds.strings[-1]
    k = 12345
    assert smiles.derive(ds.rules[k]) == ds.strings[k]
