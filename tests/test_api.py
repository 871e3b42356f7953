"""The Python object: grammar_rae.load / Model / train, through its public API on the shipped models."""
import ast
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import grammar_rae
from grammar_rae.api import EncodeError, EncodeWarning, Model
from grammar_rae.errors import ConfigError
from grammar_rae.metrics import canonical

README = Path(__file__).resolve().parents[1] / "README.md"
TOO_LONG = " + ".join(["x"] * 9)   # a valid expression of 18 rules: more than expr-grae's 15 decoding steps


@pytest.fixture(scope="module")
def expr_model():
    return grammar_rae.load("expr-grae", device="cpu")


@pytest.fixture(scope="module")
def held_out(expr_model):
    """100 of expr-grae's held-out test expressions."""
    from grammar_rae.data.shipped import shipped_path
    from grammar_rae.run import load_split

    lines = shipped_path("expressions").read_text().splitlines()
    return [lines[i] for i in np.asarray(load_split(expr_model.run_dir, expr_model.meta)[2])[:100]]


def first_python_cell() -> str:
    section = README.read_text().split("\n## Python\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S)[1]


def test_the_readme_cell_loads_zinc_grae_encodes_decodes_and_samples_in_six_lines(capsys, monkeypatch, tmp_path):
    cell = first_python_cell()
    assert len([line for line in cell.splitlines() if line.strip()]) <= 6
    assert 'grammar_rae.load("zinc-grae")' in cell and ".sample(100)" in cell
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EncodeWarning)   # all ten SMILES are in the grammar
        exec(compile(cell, str(README), "exec"), {})
    decoded, validity = capsys.readouterr().out.strip().splitlines()
    decoded = ast.literal_eval(decoded)
    assert len(decoded) == 10 and all(s is None or isinstance(s, str) for s in decoded)
    assert 0.0 < float(validity) <= 1.0


def test_one_load_verifies_the_weights_once_for_encode_decode_and_sample(monkeypatch):
    import grammar_rae.checkpoint as checkpoint

    verified = []
    real = checkpoint.verify_files

    def counting(folder, expected, what=""):
        verified.append(Path(folder).name)
        return real(folder, expected, what)

    monkeypatch.setattr(checkpoint, "verify_files", counting)
    m = grammar_rae.load("expr-grae", device="cpu")
    m.decode(m.encode(["sin( x ) + 1", "x"]))
    m.sample(10, seed=0)
    m.sample(10, seed=1)
    m.reconstruct(["x * x"])
    m.interpolate("x", "sin( x )", steps=3)
    assert verified.count("checkpoints") == 1   # the weights' checksums, at load
    assert verified.count("density") == 1       # the GMM's, read once for both samples


def test_bad_strings_get_nan_rows_and_are_reported_with_their_index(expr_model):
    strings = ["sin( x ) + 1", "sin(", "x", TOO_LONG, 7]
    with pytest.warns(EncodeWarning, match="3 of 5 strings") as caught:
        z = expr_model.encode(strings)
    assert z.shape == (5, expr_model.latent_dim) and z.dtype == np.float32
    assert np.isnan(z).all(1).tolist() == [False, True, False, True, True]
    bad = next(w.message for w in caught if isinstance(w.message, EncodeWarning)).errors
    assert [b.index for b in bad] == [1, 3, 4]
    assert "cannot parse 'sin('" in bad[0].reason and "longer than" in bad[1].reason
    assert "not a string" in bad[2].reason
    back = expr_model.decode(z)
    assert [s is None for s in back] == [False, True, False, True, True]
    with pytest.raises(EncodeError) as e:
        expr_model.encode(strings, errors="raise")
    assert [b.index for b in e.value.errors] == [1, 3, 4]
    with warnings.catch_warnings():
        warnings.simplefilter("error", EncodeWarning)
        assert np.isnan(expr_model.encode(strings, errors="ignore")).all(1).sum() == 3


def test_decode_of_encode_gives_held_out_expressions_back(expr_model, held_out):
    g = expr_model.grammar
    back = expr_model.decode(expr_model.encode(held_out))
    same = [a is not None and a == b for a, b in zip(canonical(held_out, False, g), canonical(back, False, g))]
    assert len(back) == 100 and sum(same) >= 98        # its run.json: 100% of the 5,000 test rows


def test_reconstruct_gives_the_rate_and_a_row_per_input(expr_model, held_out):
    g = expr_model.grammar
    strings = held_out[:20] + ["sin("]
    r = expr_model.reconstruct(strings)
    back = expr_model.decode(expr_model.encode(strings, errors="ignore"))
    match = [a is not None and a == b for a, b in zip(canonical(strings, False, g), canonical(back, False, g))]
    assert len(r.rows) == 21 and [row.output for row in r.rows] == back and [row.match for row in r.rows] == match
    assert r.rate == sum(match) / 20 and r.rate >= 0.95   # the bad string is not counted
    assert r.errors == [(20, r.rows[20].error)] and "cannot parse" in r.rows[20].error
    assert r.rows[20].output is None and r.rows[0].error is None


def test_sample_gives_n_strings_the_same_for_the_same_seed(expr_model):
    a, b, c = expr_model.sample(50, seed=1), expr_model.sample(50, seed=1), expr_model.sample(50, seed=2)
    assert len(a) == 50 and a == b and a != c
    assert a.z.shape == (50, expr_model.latent_dim) and np.array_equal(a.z, b.z)
    assert a.metrics["n"] == 50 and a.validity >= 0.9   # its run.json: 99.8% of GMM samples valid
    kw = dict(density="prior", stochastic=True, temperature=0.7, seed=3)
    s = expr_model.sample(30, **kw)
    assert len(s) == 30 and s == expr_model.sample(30, **kw)


def test_densities_are_objects_read_once_and_usable(expr_model, held_out):
    from grammar_rae.density import make_density

    assert {"prior", "gaussian", "gmm"} <= set(expr_model.densities)
    q = expr_model.density("gmm")
    assert expr_model.density("gmm") is q
    assert q.sample(200, seed=0).shape == (200, expr_model.latent_dim)
    assert expr_model.sample(20, density=q, seed=4) == expr_model.sample(20, density="gmm", seed=4)
    z = expr_model.encode(held_out[:50])
    # fitted on the training codes, the GMM rates held-out codes far above what N(0, I) gives them
    assert q.log_prob(z).mean() > expr_model.density("prior").log_prob(z).mean()
    mine = make_density("gaussian").fit(z)
    assert len(expr_model.sample(5, density=mine, seed=0)) == 5


def test_interpolation_runs_from_one_string_to_the_other(expr_model, held_out):
    a, b = held_out[0], held_out[1]
    za, zb = expr_model.encode(a), expr_model.encode(b)
    path = expr_model.interpolate(a, b, steps=6)
    assert len(path) == 6 and path.z.shape == (6, expr_model.latent_dim)
    assert np.allclose(path.z[0], za) and np.allclose(path.z[-1], zb)
    assert np.allclose(path.z[2], za + 0.4 * (zb - za), atol=1e-5)
    assert [path[0], path[-1]] == [expr_model.decode(za), expr_model.decode(zb)]
    assert expr_model.interpolate(za, zb, steps=6) == path
    with pytest.raises(EncodeError, match="sin"):
        expr_model.interpolate("sin(", b)


def test_semantics_false_decodes_zinc_under_the_grammar_alone():
    m = grammar_rae.load("zinc-grae", device="cpu")
    assert m.semantics is True
    z = m.density("gmm").sample(20, seed=3)
    on = m.decode(z)
    m.semantics = False
    off = m.decode(z)
    assert on != off   # without the semantic layer many rings stay open (tests/test_semantics.py)
    assert grammar_rae.load("zinc-grae", device="cpu", semantics=False).decode(z) == off


def test_train_returns_the_trained_model(tmp_path):
    from grammar_rae.data.expressions import generate_expressions

    data = tmp_path / "expressions.txt"
    data.write_text("\n".join(generate_expressions(300, seed=2)) + "\n")
    m = grammar_rae.train(tmp_path / "run", "expr", data=data, epochs=1, decoder_hidden=16, encoder_hidden=16,
                          conv_channels=(8, 8, 8), device="cpu", progress=False, log=None, cache_dir=tmp_path / "cache")
    assert isinstance(m, Model) and m.run_dir == tmp_path / "run"
    assert m.config.decoder_hidden == 16 and m.meta["train"]["epochs"] == 1
    assert "gmm" in m.densities and len(m.sample(4, seed=0)) == 4
    with pytest.raises(ConfigError, match="wingspan"):
        grammar_rae.train(tmp_path / "other", "expr", data=data, wingspan=3)
    assert not (tmp_path / "other").exists()


def test_import_stays_light_and_train_is_the_api_function():
    code = ("import sys, grammar_rae; assert 'torch' not in sys.modules; "
            "import grammar_rae.trainer as t; from grammar_rae import train, load, Model; import grammar_rae.api as a; "
            "assert train is a.train and grammar_rae.train is a.train and hasattr(t, 'Trainer'); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
