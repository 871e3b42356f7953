"""The command line, through click's runner."""
import json

from click.testing import CliRunner

from grammar_rae.cli import main


def run(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def all_commands(group=main, path=()):
    import click

    yield path, group
    if isinstance(group, click.Group):
        for name, cmd in group.commands.items():
            yield from all_commands(cmd, path + (name,))


def test_help_everywhere_explains_every_option():
    """Every command and group (images and pretrained included) answers --help with its own
    description and a help text for each of its options."""
    seen = set()
    for path, cmd in all_commands():
        r = run(*path, "--help")
        assert r.exit_code == 0, (path, r.output)
        summary = (cmd.help or "").strip().splitlines()[0]
        assert summary and summary[:40] in " ".join(r.output.split()), (path, summary)
        for param in cmd.params:
            if param.param_type_name == "option" and param.name not in ("help", "version"):
                assert param.help, f"{' '.join(path)} {param.opts[0]} has no help text"
                assert param.opts[-1] in r.output, (path, param.opts)
        seen.add(path)
    assert {("images", "train"), ("images", "evaluate"), ("pretrained", "list"), ("train",), ("demo",),
            ("optimize",), ("data", "prepare")} <= seen


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


def test_generate_expressions(tmp_path):
    out = tmp_path / "e.txt"
    r = run("data", "generate-expressions", "--n", "50", "--seed", "4", "--out", str(out))
    assert r.exit_code == 0 and len(out.read_text().splitlines()) == 50
    assert len(set(out.read_text().splitlines())) == 50


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, monkeypatch):
    r = CliRunner().invoke(main, ["sample", "--run", str(tmp_path / "none"), "--out", str(tmp_path / "s.txt")])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and r.output.startswith("Error: ")
    assert "neither a run directory nor a shipped pretrained model" in r.output
    import grammar_rae.api

    def bug(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(grammar_rae.api, "load", bug)
    r = CliRunner().invoke(main, ["sample", "--run", "x", "--out", str(tmp_path / "s.txt")])
    assert isinstance(r.exception, ZeroDivisionError)  # not swallowed into a one-line message
