"""RunDir: a run directory opened once (shipped name or folder), its kind checked, every file it hands
out verified against the checksum its commit recorded -- for grammar and image runs alike."""
import json
import shutil

import numpy as np
import pytest

from grammar_rae.errors import RunError
from grammar_rae.pretrained import ROOT
from grammar_rae.rundir import RunDir


@pytest.fixture
def expr_copy(tmp_path):
    """A copy of expr-grae whose run.json records its split's sha256, as runs trained today do."""
    from grammar_rae.checkpoint import file_sha256

    run = tmp_path / "expr-grae"
    shutil.copytree(ROOT / "expr-grae", run)
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**meta, "split_sha256": file_sha256(run / "split.npz")}))
    return run


def test_a_shipped_name_opens_its_directory_with_what_it_holds():
    run = RunDir.open("expr-grae")
    assert run.path == ROOT / "expr-grae" and run.kind == "grammar" and run.shipped
    assert run.densities == ["prior", "gaussian", "gmm"]
    assert run.history and "val_rec" in run.history[-1]
    train, val, test = run.split()
    assert len(train) + len(val) + len(test) == run.meta["data"]["rows"]
    assert run.grammar().sha256 == run.meta["grammar_sha256"]
    q = run.density("gmm")
    assert run.density("gmm") is q                      # read once, then kept
    assert run.density("prior").sample(4, seed=0).shape == (4, run.meta["model"]["latent_dim"])
    assert RunDir.open(run) is run


def test_verify_checks_every_committed_file_and_names_a_changed_one(expr_copy):
    run = RunDir.open(expr_copy)
    checked = run.verify()
    assert {"split.npz", "checkpoints/best.safetensors", "density/gmm.safetensors",
            "density/gaussian.safetensors"} <= set(checked)
    p = expr_copy / "density" / "gaussian.safetensors"
    data = bytearray(p.read_bytes())
    data[-1] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(RunError, match=r"gaussian.safetensors has changed since it was written.*gaussian density"):
        run.verify()
    with pytest.raises(RunError, match="no usable gaussian density"):
        RunDir.open(expr_copy).density("gaussian")
    assert RunDir.open(expr_copy).density("gmm").dim == run.meta["model"]["latent_dim"]


def test_foreign_and_wrong_kind_runs_are_refused(expr_copy, tmp_path):
    with pytest.raises(RunError, match="is an grammar run, not a image run"):
        RunDir.open(expr_copy, "image")
    meta = json.loads((expr_copy / "run.json").read_text())
    (expr_copy / "run.json").write_text(json.dumps({**meta, "format": "someone-else/3"}))
    with pytest.raises(RunError, match="is not a grammar-rae run"):
        RunDir.open(expr_copy)
    with pytest.raises(RunError, match="neither a run directory nor a shipped"):
        RunDir.open(tmp_path / "nothing-here")


def test_start_refuses_to_train_over_a_run_unless_resuming(expr_copy, tmp_path):
    assert RunDir.start(tmp_path / "new", resume=False) is None
    with pytest.raises(RunError, match="already holds a run; pass --resume"):
        RunDir.start(expr_copy, resume=False)
    assert RunDir.start(expr_copy, resume=True).meta["format"] == "grammar-rae-run/1"


def test_a_changed_split_or_grammar_is_refused(expr_copy):
    run = RunDir.open(expr_copy)
    with open(expr_copy / "split.npz", "wb") as f:
        np.savez(f, train=np.arange(3), val=np.arange(3), test=np.arange(3))
    with pytest.raises(RunError, match="split.npz has changed"):
        run.split()
    (expr_copy / "grammar.cfg").write_text((expr_copy / "grammar.cfg").read_text() + "\n# edited\n")
    with pytest.raises(RunError, match="differs from the grammar this run was trained with"):
        run.grammar()
