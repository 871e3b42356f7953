"""`grammar-rae demo`: the first command shows the product -- the shipped molecule model's
reconstructions, RDKit-checked samples, an interpolation, a short BO, then training."""
import json

import pytest
from click.testing import CliRunner
from rdkit import Chem

from grammar_rae.cli import main


def canon(s):
    m = Chem.MolFromSmiles(s) if s else None
    return Chem.MolToSmiles(m) if m is not None else None


def test_a_small_demo_writes_what_it_reports(tmp_path):
    from grammar_rae.demo import run_demo

    lines = []
    # an earlier demo's BO state with other settings (another version): the demo starts its BO afresh
    (tmp_path / "demo" / "bo" / "state").mkdir(parents=True)
    (tmp_path / "demo" / "bo" / "state" / "seed-1.json").write_text(json.dumps(
        {"seed": 1, "train": [], "test": [], "iterations": [], "gp_test": None, "settings": {"gp": {"lr": 1.0}}}))
    facts = run_demo(tmp_path / "demo", n_recon=20, n_samples=40, bo_rows=300, expr_rows=1500, expr_epochs=1,
                     cache_dir=tmp_path / "cache", log=lines.append)
    out = tmp_path / "demo"
    rows = [l.split("\t") for l in (out / "reconstructions.tsv").read_text().splitlines()]
    assert len(rows) == 20
    hits = sum(canon(a) is not None and canon(a) == canon(b) for a, b in rows)  # RDKit, independently
    assert facts["reconstruction"] == hits / 20 and hits > 0  # 0 == 0 would hold for a decoder that never finishes
    samples = (out / "samples.smi").read_text().splitlines()
    assert len(samples) == 40
    assert facts["samples"]["validity"] == sum(canon(s) is not None for s in samples) / 40
    # the shipped model's GMM samples hold molecules (21.7% of 1,000 valid), and the grid draws them:
    # up to 24 valid ones, 6 to a row of 220 x 180 pixel cells
    drawn = min(24, round(facts["samples"]["validity"] * 40))
    assert drawn > 0
    png = (out / "samples.png").read_bytes()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (width, height) == (220 * min(6, drawn), 180 * -(-drawn // 6))
    assert (out / "interpolation.png").is_file() and len((out / "interpolation.smi").read_text().splitlines()) == 8
    assert (out / "bo" / "best_vs_evaluations.png").is_file() and (out / "bo" / "report.json").is_file()
    assert (out / "expr-rae" / "density" / "gmm.json").is_file()
    text = "\n".join(lines)
    for name in ("reconstructions.tsv", "samples.png", "interpolation.png", "best_vs_evaluations.png", "expr-rae"):
        assert name in text  # it says where each output is


@pytest.mark.slow
def test_the_demo_command_as_readme_runs_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["demo"])
    assert r.exit_code == 0, r.output
    assert "[5/5]" in r.output and (tmp_path / "runs" / "demo" / "samples.png").is_file()
