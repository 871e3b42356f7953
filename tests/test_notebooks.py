"""The notebooks run top to bottom (slow: they train small models)."""
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.slow
@pytest.mark.parametrize("name, produces", [
    ("quickstart.ipynb", "runs/quickstart/rae-l2/density/gmm.json"),
    ("images.ipynb", "runs/images/rae-l2/eval/interp_strips.png"),
    ("molecules_bo.ipynb", "runs/molecules/bo/report.json"),
])
def test_notebook_executes(name, produces, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert (tmp_path / produces).is_file()


def test_committed_notebooks_are_the_builders_cells():
    """notebooks/*.ipynb are written by scripts/build_notebooks.py: an edit made only in a notebook
    (or only in the builder) would drift apart."""
    import importlib.util

    nbformat = pytest.importorskip("nbformat")
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOKS.parent / "scripts" / "build_notebooks.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    assert set(builder.BOOKS) == {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    for name in builder.BOOKS:
        committed = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        assert [(c.cell_type, c.source) for c in committed.cells] == \
               [(c.cell_type, c.source) for c in builder.build(name).cells], name
