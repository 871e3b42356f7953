"""The BO loop end to end on a tiny expression model: report format, exact re-scoring, resume."""
import json

import pytest
from click.testing import CliRunner

from grammar_rae.cli import main
from grammar_rae.data.expressions import generate_expressions
from grammar_rae.optimize.bo import most_frequent_valid
from grammar_rae.optimize.objectives import get_objective
from grammar_rae.run import train_run
from grammar_rae.train import TrainConfig


def test_most_frequent_valid_decode():
    ok = lambda s: s != "bad"  # noqa: E731
    assert most_frequent_valid([["a", "b", "b", None], ["bad", "bad", "c"], [None, "bad"]], ok) == ["b", "c", None]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bo")
    data = d / "expr.txt"
    data.write_text("\n".join(generate_expressions(300, seed=5)) + "\n")
    return train_run(d / "run", "expr", "rae", data=data, train=TrainConfig(epochs=1, batch_size=100),
                     progress=False, log=lambda m: None, cache_dir=d / "cache", decoder_hidden=16, encoder_hidden=16)


def test_optimize_cli_report_rescores_exactly_and_resumes(run, tmp_path):
    args = ["optimize", "--objective", "expr", "--run", str(run), "--iterations", "2", "--batch", "3",
            "--seeds", "1,2", "--n-decode", "3", "--inducing", "20", "--gp-epochs", "2", "--gp-refit-epochs", "1",
            "--gp-lr", "0.01",
            "--device", "cpu", "--out", str(tmp_path / "bo")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "bo" / "report.json").read_text())
    ev = report["evaluations"]
    assert len(ev) == 2 * 2 * 3 and {e["seed"] for e in ev} == {1, 2} and {e["iteration"] for e in ev} == {1, 2}
    assert all(set(e) == {"seed", "iteration", "string", "score", "valid"} for e in ev)
    obj = get_objective("expr")
    for e in ev:
        if e["valid"]:
            assert obj([e["string"]])[0] == e["score"]
    s = report["summary"]
    assert 0 <= s["fraction_valid"]["mean"] <= 1 and len(s["gp_test"]) == 2
    assert (tmp_path / "bo" / "best_vs_evaluations.png").is_file() and (tmp_path / "bo" / "report.md").is_file()
    # resume: a second call with more iterations continues after iteration 2
    r = CliRunner().invoke(main, args[:4] + [str(run), "--iterations", "3"] + args[7:])
    assert r.exit_code == 0, r.output
    assert "resuming after iteration 2" in r.output
    report2 = json.loads((tmp_path / "bo" / "report.json").read_text())
    assert report2["evaluations"][:6] == [e for e in ev if e["seed"] == 1]
    assert len(report2["evaluations"]) == 2 * 3 * 3


def test_optimize_with_the_botorch_route(run, tmp_path):
    pytest.importorskip("botorch")
    args = ["optimize", "--objective", "expr", "--run", str(run), "--iterations", "1", "--batch", "2", "--seeds", "1",
            "--n-decode", "2", "--inducing", "10", "--gp-epochs", "2", "--gp-lr", "0.05", "--gp", "botorch",
            "--device", "cpu", "--out", str(tmp_path / "bo")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "bo" / "report.json").read_text())
    assert report["gp"]["backend"] == "botorch" and len(report["evaluations"]) == 2
    assert report["summary"]["gp_test"][0]["rmse"] > 0
