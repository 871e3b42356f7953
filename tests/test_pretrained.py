"""The models that ship inside the package: they load, verify, and do what their run.json says."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from grammar_rae.pretrained import ROOT, available, resolve_run
from grammar_rae.run import load_run


def test_both_models_ship_and_load_with_their_provenance():
    assert {"expr-grae", "zinc-grae"} <= set(available())
    for name in ("expr-grae", "zinc-grae"):
        net, meta = load_run(name)           # weights checked against the sha256 in best.json
        about = meta["pretrained"]
        assert about["command"].startswith("grammar-rae train") and about["summary"] and about["epochs"] >= 1
        assert sum(p.numel() for p in net.parameters()) > 100_000


def test_a_folder_sharing_a_models_name_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "expr-grae").mkdir()                      # e.g. a BO run's --out folder
    (tmp_path / "expr-grae" / "report.json").write_text("{}")
    assert resolve_run("expr-grae") == ROOT / "expr-grae"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "run.json").write_text("{}")
    (tmp_path / "zinc-grae").mkdir()
    (tmp_path / "zinc-grae" / "run.json").write_text("{}")   # a run directory of the same name wins
    assert resolve_run("zinc-grae").resolve() == (tmp_path / "zinc-grae").resolve()
    assert resolve_run("mine").resolve() == (tmp_path / "mine").resolve()


def test_expr_grae_reconstructs_its_held_out_expressions():
    """Its run.json claims 100% on the 5,000 test rows; 300 of them, argmax, must all come back."""
    from grammar_rae.data.shipped import shipped_path
    import grammar_rae

    m = grammar_rae.load("expr-grae", device="cpu")
    lines = shipped_path("expressions").read_text().splitlines()
    test = m.run.split()[2]
    r = m.reconstruct([lines[i] for i in np.asarray(test)[:300]])
    assert not r.errors and len(r.rows) == 300
    assert sum(row.match for row in r.rows) >= 297


def held_out_expressions(n=200):
    from grammar_rae.data.shipped import shipped_path
    from grammar_rae.run import load_split

    _, meta = load_run("expr-grae")
    lines = shipped_path("expressions").read_text().splitlines()
    return [lines[i] for i in np.asarray(load_split(resolve_run("expr-grae"), meta)[2])[:n]]


def respaced(s: str, how: str) -> str:
    """An expression written another way: without spaces, or with spaces only after each token pair."""
    tokens = s.split()
    return "".join(tokens) if how == "none" else "".join(t + (" " if i % 2 else "") for i, t in enumerate(tokens))


def test_expr_grae_reconstructs_expressions_however_they_are_spaced(tmp_path):
    """`grammar-rae reconstruct` compares derivations: ``sin(x)+1`` comes back as ``sin( x ) + 1``
    and counts, so a file written without spaces reconstructs at the rate of the spaced one."""
    from grammar_rae.cli import main

    spaced = held_out_expressions()
    matches = {}
    for how in ("spaced", "none", "odd"):
        lines = spaced if how == "spaced" else [respaced(s, how) for s in spaced]
        assert how == "spaced" or sum(a != b for a, b in zip(lines, spaced)) > 190
        (tmp_path / f"{how}.txt").write_text("\n".join(lines) + "\n")
        r = CliRunner().invoke(main, ["reconstruct", "--run", "expr-grae", "--input", str(tmp_path / f"{how}.txt"),
                                      "--out", str(tmp_path / f"{how}.tsv"), "--device", "cpu"])
        assert r.exit_code == 0, r.output
        assert re.search(r"reconstructed (\d+)/200", r.output)[1] == str(sum(
            l.endswith("\t1") for l in (tmp_path / f"{how}.tsv").read_text().splitlines()))
        matches[how] = [l.split("\t")[2] for l in (tmp_path / f"{how}.tsv").read_text().splitlines()]
        decodes = [l.split("\t")[1] for l in (tmp_path / f"{how}.tsv").read_text().splitlines()]
        assert sum(d == s for d, s in zip(decodes, spaced)) >= 197  # run.json: 100% of the test rows
    assert matches["none"] == matches["spaced"] == matches["odd"] and matches["spaced"].count("1") >= 197


def test_evaluating_on_a_training_file_written_without_spaces_changes_nothing(tmp_path):
    """The shipped expr-grae evaluated against its data as shipped, and a copy of it whose data file
    is the same expressions without spaces: reconstruction, uniqueness and novelty agree (novelty
    compares derivations, so the training strings written differently are not novel)."""
    import shutil

    from grammar_rae.checkpoint import file_sha256
    from grammar_rae.data.shipped import shipped_path
    from grammar_rae.evaluate import evaluate_run

    data = tmp_path / "unspaced.txt"
    data.write_text("".join(respaced(s, "none") + "\n" for s in shipped_path("expressions").read_text().splitlines()))
    copy = tmp_path / "expr-unspaced"
    shutil.copytree(resolve_run("expr-grae"), copy)
    meta = json.loads((copy / "run.json").read_text())
    meta["data"].update(source=str(data), sha256=file_sha256(data))
    (copy / "run.json").write_text(json.dumps(meta))
    reports = [evaluate_run(run, n_samples=300, n_recon=200, cache_dir=tmp_path / "cache", log=lambda m: None,
                            out=tmp_path / name) for name, run in (("shipped", "expr-grae"), ("unspaced", copy))]
    shipped, unspaced = reports
    assert shipped["reconstruction"]["argmax"] >= 0.98
    assert unspaced["reconstruction"] == shipped["reconstruction"]
    for kind in ("prior", "gaussian", "gmm"):
        assert unspaced["samples"][kind] == shipped["samples"][kind], kind
    assert 0 < shipped["samples"]["gmm"]["novelty"] < 0.5  # run.json: 18% of 1,000 GMM samples novel


def test_zinc_grae_reconstructs_its_training_fixture_at_its_recorded_rate():
    """200 training molecules (tests/fixtures/zinc_train_200.smi, drawn by scripts/ship_pretrained.py)
    come back by argmax at the rate recorded when the weights shipped, within one molecule, counted
    here with RDKit. Argmax decoding is deterministic on the CPU: a molecule decodes the same alone
    as in the batch of 200."""
    from rdkit import Chem

    import grammar_rae

    def canon(s):
        m = Chem.MolFromSmiles(s) if s else None
        return Chem.MolToSmiles(m) if m is not None else None

    lines = (Path(__file__).parent / "fixtures" / "zinc_train_200.smi").read_text().splitlines()
    assert len(lines) == 200
    m = grammar_rae.load("zinc-grae", device="cpu")
    recorded = m.meta["pretrained"]["fixture_reconstruction"]
    r = m.reconstruct(lines)
    assert not r.errors and [row.input for row in r.rows] == lines
    same = [canon(row.input) is not None and canon(row.input) == canon(row.output) for row in r.rows]
    assert [row.match for row in r.rows] == same
    assert sum(same) > 0 and abs(sum(same) - 200 * recorded) <= 1, (sum(same), recorded)
    alone = [m.reconstruct([s]).rows[0].output for s in lines[:10]]
    assert alone == [row.output for row in r.rows[:10]]
