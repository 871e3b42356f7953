"""The models that ship inside the package: they load, verify, and do what their run.json says."""
import numpy as np
import pytest

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
    from grammar_rae.run import load_split, reconstruct_strings

    _, meta = load_run("expr-grae")
    lines = shipped_path("expressions").read_text().splitlines()
    test = load_split(resolve_run("expr-grae"), meta)[2]
    rows, errors = reconstruct_strings("expr-grae", [lines[i] for i in np.asarray(test)[:300]], device="cpu")
    assert not errors and len(rows) == 300
    assert sum(ok for *_, ok in rows) >= 297
