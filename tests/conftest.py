from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ZINC = SHARED_DATA / "zinc" / "250k_rndm_zinc_drugs_clean.smi"
EXPRESSIONS = SHARED_DATA / "expressions" / "equation2_15_dataset.txt"
MNIST = SHARED_DATA / "mnist"


def need(path: Path) -> Path:
    """Skip cleanly when the read-only reference data beside the project is absent."""
    if not path.exists():
        pytest.skip(f"reference data not present: {path}")
    return path


@pytest.fixture(scope="session")
def smiles():
    from grammar_rae import load_grammar

    return load_grammar("smiles")


@pytest.fixture(scope="session")
def expr():
    from grammar_rae import load_grammar

    return load_grammar("expr")


@pytest.fixture(scope="session")
def smiles_compact(smiles):
    from grammar_rae.grammar.compact import compact_grammar

    return compact_grammar(smiles)


def write(tmp_path, text, name="g.cfg"):
    """A file of ``text`` in ``tmp_path`` (a grammar file by default); its path."""
    p = tmp_path / name
    p.write_text(text)
    return p
