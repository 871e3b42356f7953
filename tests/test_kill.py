"""`kill -9` of a training process -- during a step, while a checkpoint is being written, while the
densities are fitted -- followed by `--resume`: the run completes, loses at most the epoch in
progress, and its final weights load.

The child is the real command line (`python -m grammar_rae.cli train ...`); for the two precise
moments a small wrapper makes the child SIGKILL itself there (after the temporary file of a
checkpoint is written but before its rename; after the first density is saved).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from grammar_rae.data.expressions import generate_expressions

EPOCHS = 6
WRAPPER = r"""
import os, signal, sys
moment, n = sys.argv[1], int(sys.argv[2])
calls = {"n": 0}
if moment == "checkpoint":
    import grammar_rae.io as io
    real_replace = io.os.replace
    class _OS:  # os as io sees it, with a replace that dies on the n-th checkpoint rename
        def __getattr__(self, name):
            return getattr(os, name)
        def replace(self, src, dst):
            if "checkpoints" in str(dst):
                calls["n"] += 1
                if calls["n"] == n:
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_replace(src, dst)
    io.os = _OS()
elif moment == "density":
    import grammar_rae.density as density
    real_save = density._save_files
    def dying_save(*a, **k):
        real_save(*a, **k)
        os.kill(os.getpid(), signal.SIGKILL)  # one density written, the other not
    density._save_files = dying_save
from grammar_rae.cli import main
main(sys.argv[3:], prog_name="grammar-rae")
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    p = tmp_path_factory.mktemp("killdata") / "expr.txt"
    p.write_text("\n".join(generate_expressions(1500, seed=8)) + "\n")
    return p


def train_args(data, out, resume=False):
    return ["train", "--grammar", "expr", "--data", str(data), "--epochs", str(EPOCHS), "--batch-size", "64",
            "--decoder-hidden", "24", "--encoder-hidden", "16", "--out", str(out), "--cache-dir",
            str(out.parent / "cache"), "--threads", "1"] + (["--resume"] if resume else [])


def env():
    return {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def last_epoch(out: Path) -> int:
    try:
        return json.loads((out / "checkpoints" / "last.json").read_text())["epoch"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def resume_to_the_end(data, out):
    r = subprocess.run([sys.executable, "-m", "grammar_rae.cli", *train_args(data, out, resume=True)], env=env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    return r


def check_complete(out: Path):
    from grammar_rae.run import load_density, load_run

    meta = json.loads((out / "checkpoints" / "last.json").read_text())
    assert [h["epoch"] for h in meta["history"]] == list(range(1, EPOCHS + 1))
    net, _ = load_run(out)  # checksums verified
    for kind in ("gaussian", "gmm"):
        assert load_density(out, kind, net.config.latent_dim).sample(3, seed=0).shape == (3, 25)
    leftovers = [p.name for p in out.rglob(".*") if p.is_file()]
    assert not leftovers, f"temporary files left behind: {leftovers}"


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_kill_during_steps_at_random_moments_then_resume(tmp_path, data, seed):
    out = tmp_path / "run"
    rng = np.random.default_rng(seed)
    kills = 0
    while last_epoch(out) < EPOCHS - 1 and kills < 4:
        p = subprocess.Popen([sys.executable, "-m", "grammar_rae.cli",
                              *train_args(data, out, resume=(out / "run.json").is_file())],
                             env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        before = last_epoch(out)
        time.sleep(float(rng.uniform(2.0, 6.0)))  # start-up is ~2 s; an epoch well under a second
        if p.poll() is not None:
            break
        at_kill = last_epoch(out)
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        after = last_epoch(out)
        assert after >= at_kill >= before, "a kill lost a committed epoch"
    assert kills >= 1
    resume_to_the_end(data, out)
    check_complete(out)


@pytest.mark.parametrize("n", [4, pytest.param(1, marks=pytest.mark.slow), pytest.param(8, marks=pytest.mark.slow)])
# the n-th checkpoint rename of the run (each epoch renames 4-6 files)
def test_kill_while_a_checkpoint_is_written_then_resume(tmp_path, data, n):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", WRAPPER, "checkpoint", str(n), *train_args(data, out)], env=env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == -signal.SIGKILL
    before = last_epoch(out)
    assert before < EPOCHS
    r = resume_to_the_end(data, out)
    if before:
        assert f"resumed {out} after epoch {before}" in r.stdout
    check_complete(out)


def test_kill_while_densities_are_fitted_then_resume(tmp_path, data):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", WRAPPER, "density", "1", *train_args(data, out)], env=env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == -signal.SIGKILL
    assert last_epoch(out) == EPOCHS and not (out / "density" / "gmm.json").is_file()
    resume_to_the_end(data, out)
    check_complete(out)
