"""The command line, through click's runner."""
import json

from click.testing import CliRunner

from grammar_rae.cli import main


def run(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def test_help_everywhere():
    for args in [[], ["grammar"], ["grammar", "show"], ["data"], ["data", "prepare"], ["data", "download"],
                 ["data", "generate-expressions"], ["demo"], ["train"], ["sample"], ["evaluate"], ["encode"],
                 ["decode"], ["reconstruct"], ["optimize"]]:
        r = run(*args, "--help")
        assert r.exit_code == 0 and "Usage:" in r.output


def test_grammar_show(tmp_path):
    r = run("grammar", "show", "smiles")
    assert r.exit_code == 0
    assert "76 productions" in r.output and "aliphatic_organic -> 'Cl'" in r.output
    facts = json.loads(run("grammar", "show", "expr", "--json").output)
    assert facts["n_rules"] == 12 and facts["lhs"][0] == {"symbol": "S", "rules": [0, 1, 2, 3]}
    r = CliRunner().invoke(main, ["grammar", "show", "nope"])
    assert r.exit_code != 0 and "shipped grammars" in r.output


def test_grammar_parse():
    r = run("grammar", "parse", "expr", "x + 1")
    assert r.output.split() == ["0", "3", "7", "8"]
    r = CliRunner().invoke(main, ["grammar", "parse", "smiles", "CC("])
    assert r.exit_code == 1 and "position 3" in r.output


def test_data_prepare_reports_bad_lines(tmp_path):
    f = tmp_path / "m.smi"
    f.write_text("CCO\nC(\nc1ccccc1\n")
    r = CliRunner().invoke(main, ["data", "prepare", "--grammar", "smiles", "--input", str(f),
                                  "--cache-dir", str(tmp_path / "c"), "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert f"{f}:2: skipped" in r.output and "2 parsed, 1 skipped" in r.output
    r = CliRunner().invoke(main, ["data", "prepare", "--grammar", "smiles", "--input", str(tmp_path / "no.smi")])
    assert r.exit_code != 0 and "no such input file" in r.output


def test_generate_and_demo(tmp_path):
    out = tmp_path / "e.txt"
    r = run("data", "generate-expressions", "--n", "50", "--seed", "4", "--out", str(out))
    assert r.exit_code == 0 and len(out.read_text().splitlines()) == 50
    r = run("demo", "--out", str(tmp_path / "demo"), "--n", "400", "--epochs", "1")
    assert r.exit_code == 0 and "400/400 round trips exact" in r.output
    assert (tmp_path / "demo" / "rae-l2" / "eval" / "report.md").is_file()
