"""README's Python examples run as written, and its two commands are the ones CI uses."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_molecules.smi").write_text("CCO\nC1CC(\nc1ccccc1\n")
    monkeypatch.setenv("GRAMMAR_RAE_CACHE", str(tmp_path / "cache"))
    for code in blocks("python"):
        exec(compile(code, str(README), "exec"), {})


def test_ci_runs_the_readme_commands():
    setup, tests = [l.split("#")[0].strip() for l in blocks("bash")[0].strip().splitlines()]
    ci = (README.parent / ".ci" / "run").read_text()
    assert setup.startswith("bash scripts/setup.sh") and "bash scripts/setup.sh" in ci
    assert tests in ci
