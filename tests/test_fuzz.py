"""Hostile input through the command line: random bytes, truncated and bit-flipped copies of valid
files, empty files, huge lines, NaN codes, planted pickles, damaged run directories.

For every command that reads a file the outcome must be a clean result or a clean refusal: exit
status 0 with a consistent result, or non-zero with a message -- never an uncaught exception (which
a real process would print as a traceback), never a file written outside the output path and the
cache, never a pickle loaded (a planted one would create a sentinel file).

Bounded by default (a few examples per command); `pytest -m slow tests/test_fuzz.py` runs the deep version.
"""
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from grammar_rae.cli import main
from grammar_rae.data.expressions import generate_expressions

FAST = settings(max_examples=6, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
DEEP = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
SMILES = b"CCO\nc1ccccc1\nCC(=O)Nc1ccc(O)cc1\nClCBr\nC1CC1\n"


class Planted:
    """Unpickling this creates the sentinel file: proof that a pickle was loaded."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def mutations(valid: bytes):
    """Random bytes, and truncated / bit-flipped / huge-line / empty variants of a valid file."""
    def flip(data, positions):
        b = bytearray(valid)
        for p in positions:
            if b:
                b[p % len(b)] ^= 1 << (p % 8)
        return bytes(b)

    return st.one_of(
        st.binary(max_size=3000),
        st.integers(0, max(len(valid) - 1, 0)).map(lambda k: valid[:k]),
        st.lists(st.integers(0, 10 ** 6), min_size=1, max_size=20).map(lambda ps: flip(valid, ps)),
        st.just(valid + b"C" * 30_000 + b"\n"),
        st.just(b""),
        st.just(b"\xff\xfe\x00\x00" + valid),
    )


@pytest.fixture(scope="module")
def expr_run(tmp_path_factory):
    from grammar_rae.recipes import train_config
    from grammar_rae.run import train_run

    d = tmp_path_factory.mktemp("fuzzrun")
    data = d / "expr.txt"
    data.write_text("\n".join(generate_expressions(300, seed=2)) + "\n")
    return train_run(d / "run", "expr", "rae-l2", data=data, train=train_config("expr", epochs=1), progress=False,
                     log=lambda m: None, cache_dir=d / "cache", decoder_hidden=16, encoder_hidden=16,
                     conv_channels=(8, 8, 8))


class Sandbox:
    """A working directory with the cache inside; checks what a command wrote and that no pickle loaded."""

    def __init__(self, root: Path, monkeypatch):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.sentinel = root.parent / f"{root.name}-pwned"
        monkeypatch.chdir(root)
        monkeypatch.setenv("GRAMMAR_RAE_CACHE", str(root / "cache"))

        def refuse(*a, **k):
            raise AssertionError("a pickle was about to be loaded")

        monkeypatch.setattr(pickle, "load", refuse)
        monkeypatch.setattr(pickle, "loads", refuse)

    def planted(self) -> bytes:
        return pickle.dumps(Planted(str(self.sentinel)))

    def files(self):
        return {p for p in self.root.rglob("*") if p.is_file() and "cache" not in p.relative_to(self.root).parts}

    def invoke(self, args, inputs=(), outputs=()):
        before = self.files()
        r = CliRunner().invoke(main, [str(a) for a in args])
        assert r.exception is None or isinstance(r.exception, SystemExit), \
            f"{args}: uncaught {type(r.exception).__name__}: {r.exception}"
        assert "Traceback" not in r.output
        if r.exit_code:
            assert r.stderr.strip(), f"{args}: failed without saying why"
        new = self.files() - before - {Path(self.root / o).resolve() for o in outputs}
        new = {p for p in new if not any(str(p).startswith(str((self.root / o).resolve())) for o in outputs)}
        assert not new, f"{args} wrote outside its output: {sorted(map(str, new))}"
        assert not self.sentinel.exists(), "a planted pickle was loaded"
        return r


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------- text inputs
def check_text_commands(box: Sandbox, run, data: bytes, name: str):
    f = write(box.root / name, data)
    lines = [l for l in data.split(b"\n") if l.strip()]
    r = box.invoke(["data", "prepare", "--grammar", "smiles", "--input", f, "--workers", "1"])
    if r.exit_code == 0:  # every non-empty line parsed or reported
        parsed, skipped = (int(w) for w in r.output.split("done in")[1].replace(",", "").split()[1:4:2])
        assert parsed + skipped == len(lines) or f.suffix == ".csv"
    r = box.invoke(["encode", "--run", run, "--input", f, "--out", "z.npy"], outputs=["z.npy"])
    if r.exit_code == 0:
        assert np.load("z.npy").shape[1] == 25
    box.invoke(["reconstruct", "--run", run, "--input", f, "--out", "rec.tsv"], outputs=["rec.tsv"])


@FAST
@given(data=mutations(SMILES), name=st.sampled_from(["in.smi", "in.csv"]))
def test_text_inputs_fail_cleanly(tmp_path, monkeypatch, expr_run, data, name):
    box = Sandbox(tmp_path / "box", monkeypatch)
    check_text_commands(box, expr_run, data, name)


@pytest.mark.slow
@DEEP
@given(data=mutations(SMILES), name=st.sampled_from(["in.smi", "in.csv", "in.txt"]))
def test_text_inputs_fail_cleanly_deep(tmp_path, monkeypatch, expr_run, data, name):
    box = Sandbox(tmp_path / "box", monkeypatch)
    check_text_commands(box, expr_run, data, name)


@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=mutations("\n".join(generate_expressions(60, seed=4)).encode() + b"\n"))
def test_training_on_hostile_data_fails_cleanly_or_trains(tmp_path, monkeypatch, data):
    box = Sandbox(tmp_path / "box", monkeypatch)
    f = write(box.root / "train.txt", data)
    shutil.rmtree(box.root / "out", ignore_errors=True)
    r = box.invoke(["train", "--grammar", "expr", "--data", f, "--epochs", "1", "--decoder-hidden", "8",
                    "--encoder-hidden", "8", "--out", "out"], outputs=["out"])
    if r.exit_code == 0:
        assert (box.root / "out" / "density" / "gmm.json").is_file()
    else:
        assert "too few to train on" in r.output or "no such" in r.output.lower()


# ------------------------------------------------------------------------------------- codes
@FAST
@given(kind=st.sampled_from(["random", "truncated", "flipped", "nan", "shape", "planted", "objects"]),
       seed=st.integers(0, 1000), ext=st.sampled_from([".npy", ".csv"]))
def test_codes_fail_cleanly(tmp_path, monkeypatch, expr_run, kind, seed, ext):
    box = Sandbox(tmp_path / "box", monkeypatch)
    rng = np.random.default_rng(seed)
    f = box.root / f"z{ext}"
    z = rng.normal(size=(5, 25)).astype(np.float32)
    if kind == "nan":
        z[rng.integers(5), rng.integers(25)] = np.nan
    if kind == "shape":
        z = z[:, :7]
    if ext == ".npy":
        if kind == "objects":
            np.save(f, np.array([Planted(str(box.sentinel))], dtype=object), allow_pickle=True)
        else:
            np.save(f, z)
    else:
        np.savetxt(f, z, delimiter=",")
    raw = f.read_bytes()
    if kind == "random":
        write(f, rng.bytes(int(rng.integers(0, 500))))
    elif kind == "truncated":
        write(f, raw[: int(rng.integers(0, len(raw)))])
    elif kind == "flipped":
        b = bytearray(raw)
        for p in rng.integers(0, len(b), size=8):
            b[p] ^= 1 << int(rng.integers(8))
        write(f, bytes(b))
    elif kind == "planted":
        write(f, box.planted())
    r = box.invoke(["decode", "--run", expr_run, "--input", f, "--out", "s.txt"], outputs=["s.txt"])
    if kind in ("nan", "shape", "planted", "objects"):
        assert r.exit_code != 0
    if kind == "nan" and ext == ".npy":
        assert "NaN or inf" in r.output
    if r.exit_code == 0:
        assert len((box.root / "s.txt").read_text().splitlines()) == len(np.atleast_2d(
            np.load(f) if ext == ".npy" else np.loadtxt(f, delimiter=",", ndmin=2)))


# ------------------------------------------------------------------------------------- run directories
RUN_FILES = ["run.json", "grammar.cfg", "split.npz", "checkpoints/best.safetensors", "checkpoints/best.json",
             "checkpoints/last.json", "density/gmm.safetensors", "density/gmm.json", "density/gaussian.safetensors"]


def on_disk(run: Path, target: str) -> Path:
    """The file of ``run`` a RUN_FILES entry names: the best weights under the versioned name best.json gives."""
    if target == "checkpoints/best.safetensors":
        import json

        return run / "checkpoints" / json.loads((run / "checkpoints" / "best.json").read_text())["weights"]
    return run / target


def damage(box: Sandbox, path: Path, how: str, rng) -> None:
    raw = path.read_bytes()
    if how == "truncate":
        write(path, raw[: int(rng.integers(0, max(len(raw), 1)))])
    elif how == "flip":
        b = bytearray(raw)
        for p in rng.integers(0, len(b), size=int(rng.integers(1, 100))):
            b[p] ^= 1 << int(rng.integers(8))
        write(path, bytes(b))
    elif how == "random":
        write(path, rng.bytes(len(raw)))
    elif how == "planted":
        write(path, box.planted())
    elif how == "empty":
        write(path, b"")
    else:
        path.unlink()


@FAST
@given(target=st.sampled_from(RUN_FILES), how=st.sampled_from(["truncate", "flip", "random", "planted", "empty",
                                                                "delete"]),
       seed=st.integers(0, 10 ** 6))
def test_damaged_run_directories_are_refused_or_still_correct(tmp_path, monkeypatch, expr_run, target, how, seed):
    box = Sandbox(tmp_path / "box", monkeypatch)
    run = box.root / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(expr_run, run)
    damage(box, on_disk(run, target), how, np.random.default_rng(seed))
    r = box.invoke(["sample", "--run", run, "--n", "20", "--out", "s.txt"], outputs=["s.txt"])
    if target in ("checkpoints/best.safetensors", "density/gmm.safetensors"):  # what `sample` reads
        assert r.exit_code != 0, f"sample accepted a damaged {target}"  # the checksum or the format refuses it
    z = np.random.default_rng(0).normal(size=(3, 25)).astype(np.float32)
    np.save(box.root / "z.npy", z)
    box.invoke(["decode", "--run", run, "--input", "z.npy", "--out", "d.txt"], outputs=["d.txt"])
    r = box.invoke(["evaluate", "--run", run, "--n-samples", "20", "--n-recon", "10", "--out", "ev"], outputs=["ev"])
    if target.endswith(".safetensors"):  # evaluate reads every tensor file
        assert r.exit_code != 0, f"evaluate accepted a damaged {target}"


@pytest.mark.slow
@DEEP
@given(target=st.sampled_from(RUN_FILES), how=st.sampled_from(["truncate", "flip", "random", "planted", "empty",
                                                                "delete"]),
       seed=st.integers(0, 10 ** 6))
def test_damaged_run_directories_deep(tmp_path, monkeypatch, expr_run, target, how, seed):
    test_damaged_run_directories_are_refused_or_still_correct.hypothesis.inner_test(
        tmp_path, monkeypatch, expr_run, target, how, seed)


def test_a_changed_byte_in_any_tensor_file_is_refused_by_name(tmp_path, expr_run):
    """Same length, valid header, one changed byte: the checksum names the file."""
    from grammar_rae.checkpoint import RunError
    from grammar_rae.density import DensityError
    from grammar_rae.run import load_density, load_run

    for target in ["checkpoints/best.safetensors", "density/gmm.safetensors", "density/gaussian.safetensors"]:
        run = tmp_path / target.replace("/", "-")
        shutil.copytree(expr_run, run)
        path = on_disk(run, target)
        b = bytearray(path.read_bytes())
        b[-5] ^= 0x01  # inside the tensor data, far from the header
        path.write_bytes(bytes(b))
        with pytest.raises((RunError, DensityError), match=rf"{path.name} has changed since it was written"):
            load_run(run)
            load_density(run, Path(target).stem, 25)


# ------------------------------------------------------------------------------------- optimize, images
def optimize_once(box: Sandbox, run, target: str):
    """One BO iteration of two points towards ``target``, small enough for a fuzz example."""
    shutil.rmtree(box.root / "bo", ignore_errors=True)
    return box.invoke(["optimize", "--objective", "expr", "--target", target, "--run", run, "--iterations", "1",
                       "--batch", "2", "--n-decode", "2", "--inducing", "10", "--gp-epochs", "1", "--device", "cpu",
                       "--out", "bo"], outputs=["bo"])


def check_bo_report(box: Sandbox, target: str):
    import json

    report = json.loads((box.root / "bo" / "report.json").read_text())
    assert report["target"] == target and len(report["evaluations"]) == 2
    assert all(np.isfinite(e["score"]) and 0 <= e["score"] <= np.log(1001) + 1e-12 for e in report["evaluations"])


@FAST
@given(target=st.text(max_size=40) | st.sampled_from(["x +", "sin( x", "1 / 0", "exp( exp( exp( x * x ) ) )", "x"]))
def test_optimize_targets_fail_cleanly(tmp_path, monkeypatch, expr_run, target):
    """Whatever the target, the BO runs its iteration and reports it, or refuses the target saying why."""
    box = Sandbox(tmp_path / "box", monkeypatch)
    r = optimize_once(box, expr_run, target)
    if r.exit_code == 0:
        check_bo_report(box, target)
    else:
        assert "target" in r.output and "expression" in r.output, r.output


@pytest.mark.parametrize("target,refusal", [
    ("x +", "not an expression of the expr grammar"), ("1 / 0", "not an expression of the expr grammar"),
    ("exp( exp( exp( x * x ) ) )", "not finite everywhere")])
def test_optimize_refuses_targets_it_cannot_fit(tmp_path, monkeypatch, expr_run, target, refusal):
    box = Sandbox(tmp_path / "box", monkeypatch)
    r = optimize_once(box, expr_run, target)
    assert r.exit_code == 1 and refusal in r.output and not (box.root / "bo" / "report.json").exists()


@pytest.mark.parametrize("target", ["x", "1/(x+x)", "sin(x*x)*3"])  # a pole between grid points; no spaces
def test_optimize_runs_an_iteration_for_any_target_it_accepts(tmp_path, monkeypatch, expr_run, target):
    box = Sandbox(tmp_path / "box", monkeypatch)
    r = optimize_once(box, expr_run, target)
    assert r.exit_code == 0, r.output
    check_bo_report(box, target)


@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.binary(max_size=2000) | st.just(b""), which=st.sampled_from(["train-images-idx3-ubyte.gz",
                                                                             "train-labels-idx1-ubyte.gz"]))
def test_image_data_fails_cleanly(tmp_path, monkeypatch, data, which):
    box = Sandbox(tmp_path / "box", monkeypatch)
    folder = box.root / "mnist"
    folder.mkdir(exist_ok=True)
    for name in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"]:
        write(folder / name, data if name == which else b"")
    shutil.rmtree(box.root / "img", ignore_errors=True)
    r = box.invoke(["images", "train", "--dataset", "mnist", "--data", folder, "--epochs", "1", "--limit", "20",
                    "--backbone", "small", "--out", "img"], outputs=["img"])
    assert r.exit_code != 0
    box.invoke(["images", "evaluate", "--run", folder, "--n", "10", "--out", "ev"], outputs=["ev"])


def test_empty_training_file_says_so(tmp_path, monkeypatch):
    box = Sandbox(tmp_path / "box", monkeypatch)
    f = write(box.root / "empty.smi", b"")
    r = box.invoke(["train", "--grammar", "smiles", "--data", f, "--out", "out"], outputs=["out"])
    assert r.exit_code == 1 and "0 parseable rows" in r.output and "too few to train on" in r.output
    assert "KeyError" not in r.output


def test_undecodable_line_is_reported_by_line_and_the_rest_kept(tmp_path, monkeypatch, expr_run):
    box = Sandbox(tmp_path / "box", monkeypatch)
    f = write(box.root / "bad.txt", b"x + 1\nx\xff+ 2\nsin( x )\n")
    r = box.invoke(["encode", "--run", expr_run, "--input", f, "--out", "z.npy"], outputs=["z.npy"])
    assert r.exit_code == 0 and f"{f}:2: skipped: not UTF-8" in r.stderr and "2 codes written" in r.output
    r = box.invoke(["data", "prepare", "--grammar", "smiles", "--input", f, "--workers", "1"])
    assert f"{f}:2: skipped: not UTF-8" in r.stderr


def test_grammar_defects_are_named(tmp_path, monkeypatch):
    box = Sandbox(tmp_path / "box", monkeypatch)
    cases = {"S -> 'a' S |\n": "empty right-hand side", "S -> T\nT -> U\n": "can never derive",
             "S -> 'a'\nT -> 'b'\n": "cannot be reached", "": "no productions"}
    for text, message in cases.items():
        f = write(box.root / "g.cfg", text.encode())
        r = box.invoke(["grammar", "show", f])
        assert r.exit_code == 1 and message in r.output, (text, r.output)


def test_unpickling_happens_in_two_guarded_places_only():
    """The package unpickles nowhere but CIFAR-10's arrays-only Unpickler and torch.load(weights_only=True)
    for checkpoints from before the JSON state (both tested against planted pickles elsewhere)."""
    import re

    root = Path(__file__).resolve().parents[1] / "grammar_rae"
    found = {}
    for p in root.rglob("*.py"):
        text = p.read_text()
        calls = re.findall(r"pickle\.loads?\(|pickle\.Unpickler\b|torch\.load\([^)]*\)|allow_pickle=True", text)
        if calls:
            found[str(p.relative_to(root))] = calls
    assert set(found) == {os.path.join("data", "images.py"), "checkpoint.py"}, found
    assert found[os.path.join("data", "images.py")] == ["pickle.Unpickler"]
    assert all("weights_only=True" in c for c in found["checkpoint.py"])
