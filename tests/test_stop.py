"""Stopping a run cleanly: SIGTERM / Ctrl-C checkpoint where the run is and exit; a --max-minutes stop
inside an epoch validates the weights it reached and keeps them as best when they are."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grammar_rae.data.expressions import generate_expressions
from grammar_rae.run import load_run, train_run
from grammar_rae.trainer import TrainConfig


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    p = tmp_path_factory.mktemp("stopdata") / "expr.txt"
    p.write_text("\n".join(generate_expressions(3000, seed=5)) + "\n")
    return p


def test_sigterm_checkpoints_inside_the_epoch_and_resume_goes_on(tmp_path, data):
    out = tmp_path / "run"
    # batches of 4: 600 updates an epoch, seconds even on a fast machine (batches of 8 let a fast CI
    # machine finish all 3 epochs before the signal came, which then killed it while fitting densities)
    args = [sys.executable, "-m", "grammar_rae.cli", "train", "--grammar", "expr", "--data", str(data),
            "--epochs", "3", "--batch-size", "4", "--decoder-hidden", "24", "--encoder-hidden", "16",
            "--threads", "1", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    log = tmp_path / "stdout.txt"
    with open(log, "w") as sink:
        p = subprocess.Popen(args, stdout=sink, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.time() + 120
        # the trainer says when its handler is in place (no guess at how long setup takes on a loaded machine)
        while "SIGTERM or Ctrl-C stops it" not in log.read_text() and time.time() < deadline and p.poll() is None:
            time.sleep(0.05)
        time.sleep(0.5)                                                 # some updates into epoch 1
        p.send_signal(signal.SIGTERM)
        _, stderr = p.communicate(timeout=120)
    stdout = log.read_text()
    assert p.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert "stopped by SIGTERM" in stdout
    last = json.loads((out / "checkpoints" / "last.json").read_text())
    assert last["epoch"] < 3 and last["partial"]["batch"] > 0      # inside an epoch, where it was
    assert not (out / "density").exists()                           # it left at once
    r = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"batch {last['partial']['batch']}" in r.stdout          # resumed from that batch
    done = json.loads((out / "checkpoints" / "last.json").read_text())
    assert [h["epoch"] for h in done["history"]] == [1, 2, 3]
    assert (out / "density" / "gmm.json").is_file()


def test_a_stop_inside_an_epoch_keeps_the_weights_reached_as_best_when_better(tmp_path, data):
    """One epoch of 2,400 rows in batches of 20 (120 updates); a budget that ends after the first check
    (20 updates): no epoch has finished, so the stop's validation is the first and becomes best."""
    cfg = TrainConfig(epochs=1, batch_size=20, lr=3e-3, max_minutes=1e-6, checkpoint_minutes=60.0)
    messages = []
    run = train_run(tmp_path / "t", "expr", "rae-l2", data=data, train=cfg, progress=False, log=messages.append,
                    cache_dir=tmp_path / "cache", decoder_hidden=24, encoder_hidden=16)
    last = json.loads((run / "checkpoints" / "last.json").read_text())
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert last["epoch"] == 0 and last["partial"]["batch"] == 20
    assert best["step"] == last["global_step"] == 20
    assert best["val_rec"] == last["best_val"] < float("inf")
    assert any("the new best checkpoint" in m for m in messages)
    load_run(run)  # and it loads


def test_the_cuda_generator_is_checkpointed_and_restored(tmp_path, data, monkeypatch):
    """Issue 23, point 6: VAE noise on CUDA comes from the CUDA generator, so its state must travel with
    the checkpoint. No GPU here: the trainer is told its device is CUDA and torch.cuda's RNG calls are
    replaced by a fake generator; the state saved must be the fake's, and a resume must set it back."""
    import torch

    from grammar_rae.models.grammar_ae import GrammarAE, GrammarAEConfig
    from grammar_rae.trainer import Trainer

    fake = {"state": torch.arange(16, dtype=torch.uint8), "set": None}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device=None: fake["state"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device=None: fake.__setitem__("set", s.clone()))
    net = GrammarAE(GrammarAEConfig.for_grammar("expr", 15, "vae", decoder_hidden=16, encoder_hidden=16))
    rules = torch.zeros(40, 15, dtype=torch.uint8)
    cfg = TrainConfig(epochs=1, batch_size=20, device="cpu")
    trainer = Trainer(net, rules, rules, cfg, tmp_path / "run", progress=False, log=lambda m: None)
    trainer.device = torch.device("cuda", 0)   # only the RNG calls look at it here
    trainer.save()
    fake["state"] = torch.zeros(16, dtype=torch.uint8)  # the generator moves on after the save
    again = Trainer(GrammarAE(net.config), rules, rules, cfg, tmp_path / "run", progress=False, log=lambda m: None)
    again.device = torch.device("cuda", 0)
    assert again.resume()
    assert torch.equal(fake["set"], torch.arange(16, dtype=torch.uint8))
