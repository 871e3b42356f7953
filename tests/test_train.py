"""The trainer and run directories: resume after a kill, NaN stops, refusing unsafe files, what a resumed
run keeps of its own settings."""
import json
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from grammar_rae.checkpoint import RunError, checkpoint_weights
from grammar_rae.cli import main
from grammar_rae.data.expressions import generate_expressions
from grammar_rae.run import load_run, train_run
from grammar_rae.trainer import TrainConfig, Trainer, TrainingDiverged


@pytest.fixture(scope="module")
def expr_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "expr.txt"
    p.write_text("\n".join(generate_expressions(600, seed=11)) + "\n")
    return p


@pytest.fixture(scope="module")
def half_x_file(tmp_path_factory):
    """Half of its 600 lines are "x": a model one or two epochs old reconstructs those and next to nothing
    else, so its reconstruction rate lies strictly between 0 and 1."""
    lines = generate_expressions(300, seed=11) + ["x"] * 300
    p = tmp_path_factory.mktemp("halfx") / "expr.txt"
    p.write_text("\n".join(lines[i] for i in np.random.default_rng(0).permutation(600)) + "\n")
    return p


def cfg(epochs, **kw):
    return TrainConfig(epochs=epochs, batch_size=100, lr=3e-3, **kw)


def small_run(out, expr_file, epochs, resume=False, model="rae-l2", **kw):
    return train_run(out, "expr", model, data=expr_file, train=cfg(epochs), resume=resume, progress=False,
                     log=lambda m: None, cache_dir=out.parent / "cache", decoder_hidden=32, encoder_hidden=32, **kw)


def weights(run_dir, which="last"):
    """The tensors of checkpoint ``which``: the versioned file its JSON names."""
    from safetensors.torch import load_file

    return load_file(str(checkpoint_weights(run_dir / "checkpoints", which)[0]))


@pytest.mark.parametrize("model", ["rae-l2", "vae"])  # vae: the noise stream must resume too
def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, expr_file, model):
    straight = small_run(tmp_path / "a", expr_file, 4, model=model)
    part = small_run(tmp_path / "b", expr_file, 2, model=model)  # "killed" after epoch 2
    assert json.loads((part / "checkpoints" / "last.json").read_text())["epoch"] == 2
    resumed = small_run(tmp_path / "b", expr_file, 4, resume=True, model=model)
    hist = json.loads((resumed / "checkpoints" / "last.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed training diverged from the uninterrupted run"


def test_a_second_train_into_the_same_folder_needs_resume(tmp_path, expr_file):
    small_run(tmp_path / "r", expr_file, 1)
    with pytest.raises(RunError, match="--resume"):
        small_run(tmp_path / "r", expr_file, 1)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, expr_file, monkeypatch):
    run = small_run(tmp_path / "n", expr_file, 1)
    good = weights(run)
    net, _ = load_run(run)
    calls = {"n": 0}
    real = net.loss

    def poisoned(batch):
        calls["n"] += 1
        total, terms = real(batch)
        return total * float("nan"), terms

    monkeypatch.setattr(net, "loss", poisoned)
    trainer = Trainer(net, torch.zeros(200, 15, dtype=torch.uint8), torch.zeros(20, 15, dtype=torch.uint8),
                      cfg(3), run, progress=False, log=lambda m: None)
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        trainer.fit(resume=True)
    assert calls["n"] >= 1
    assert json.loads((run / "checkpoints" / "last.json").read_text())["epoch"] == 1
    after = weights(run)
    assert all(torch.equal(good[k], after[k]) for k in good)


def test_max_minutes_stops_before_an_epoch_that_would_not_fit_and_resume_goes_on(tmp_path, expr_file, monkeypatch):
    """Each epoch takes 10 s of a fake clock; a 0.5-minute budget fits three, then a clean stop with the
    checkpoint of epoch 3 written; --resume with a new budget continues at epoch 4."""
    import types

    import grammar_rae.trainer as train_mod

    clock = [0.0]
    monkeypatch.setattr(train_mod, "time", types.SimpleNamespace(time=lambda: clock[0]))
    real_epoch = Trainer.train_epoch

    def ten_seconds(self):
        clock[0] += 10.0
        return real_epoch(self)

    monkeypatch.setattr(Trainer, "train_epoch", ten_seconds)
    messages = []
    run = train_run(tmp_path / "t", "expr", "rae-l2", data=expr_file, train=cfg(8, max_minutes=0.5), progress=False,
                    log=messages.append, cache_dir=tmp_path / "cache", decoder_hidden=32, encoder_hidden=32)
    meta = json.loads((run / "checkpoints" / "last.json").read_text())
    assert meta["epoch"] == 3 and not meta["early_stopped"]
    assert any("time budget" in m and "--resume" in m for m in messages)
    assert (run / "density" / "gmm.json").is_file(), "a run stopped for time is still usable"
    train_run(run, train=cfg(8, max_minutes=0.35), resume=True, progress=False, log=messages.append,
              cache_dir=tmp_path / "cache")
    meta = json.loads((run / "checkpoints" / "last.json").read_text())
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3, 4, 5]


def test_loss_scaling_under_autocast_trains_and_its_state_resumes(tmp_path, expr_file, monkeypatch):
    """The mixed-precision path (autocast + GradScaler, on CUDA) exercised on the CPU: steps are taken,
    the scale is saved with the training state and restored on --resume."""
    monkeypatch.setattr(Trainer, "_amp_on", lambda self: True)
    monkeypatch.setattr(Trainer, "_loss_scaling", lambda self: True)
    small_run(tmp_path / "a", expr_file, 2)
    from grammar_rae.checkpoint import load_state

    ckpt = tmp_path / "a" / "checkpoints"
    state = load_state(ckpt / json.loads((ckpt / "last.json").read_text())["state"])
    assert state["scaler"]["scale"] > 0 and "_growth_tracker" in state["scaler"]
    net, _ = load_run(tmp_path / "a")
    trainer = Trainer(net, torch.zeros(200, 15, dtype=torch.uint8), torch.zeros(20, 15, dtype=torch.uint8),
                      cfg(3), tmp_path / "a", progress=False, log=lambda m: None)
    assert trainer.scaler.is_enabled()
    trainer.scaler.load_state_dict({**state["scaler"], "scale": 8.0})
    assert trainer.scaler.get_scale() == 8.0
    assert trainer.resume() and trainer.scaler.get_scale() == state["scaler"]["scale"]
    hist = json.loads((tmp_path / "a" / "checkpoints" / "last.json").read_text())["history"]
    assert all(math.isfinite(h["train_loss"]) for h in hist) and hist[-1]["train_loss"] < hist[0]["train_loss"]


class Planted:
    """A pickle that would create a file when unpickled."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_planted_pickle_is_refused(tmp_path, expr_file):
    run = small_run(tmp_path / "p", expr_file, 1)
    ckpt, sentinel = run / "checkpoints", tmp_path / "pwned"
    last, best = (json.loads((ckpt / f"{w}.json").read_text()) for w in ("last", "best"))
    with open(ckpt / f"{last['state']}.safetensors", "wb") as f:
        pickle.dump({"optimizer": Planted(str(sentinel))}, f)
    with pytest.raises(RunError, match="has changed since it was written"):  # its checksum
        small_run(tmp_path / "p", expr_file, 2, resume=True)
    with open(ckpt / best["weights"], "wb") as f:
        pickle.dump(Planted(str(sentinel)), f)
    with pytest.raises(RunError, match=r"best-\d{9}-[0-9a-f]{6}\.safetensors has changed"):
        load_run(run)
    # Runs from before versioned names and checksums: fixed names, JSONs that name no files; the format
    # check refuses what is not safetensors.
    (ckpt / best["weights"]).rename(ckpt / "best.safetensors")
    (ckpt / "best.json").write_text(json.dumps({"epoch": 1}))
    with pytest.raises(RunError, match="best.safetensors is not a safetensors"):
        load_run(run)
    (ckpt / last["weights"]).rename(ckpt / "last.safetensors")
    for suffix in (".safetensors", ".json"):
        (ckpt / f"{last['state']}{suffix}").rename(ckpt / f"last.state{suffix}")
    for name, meta in (("last.json", last), ("last.state.json", json.loads((ckpt / "last.state.json").read_text()))):
        (ckpt / name).write_text(json.dumps({k: v for k, v in meta.items() if k not in ("weights", "state", "sha256")}))
    with pytest.raises(RunError, match="last.state.safetensors is not a safetensors"):
        small_run(tmp_path / "p", expr_file, 2, resume=True)
    # a run from before the JSON state keeps last.state.pt: it is read with weights_only=True
    (ckpt / "last.state.json").unlink()
    with open(ckpt / "last.state.pt", "wb") as f:
        pickle.dump({"optimizer": Planted(str(sentinel))}, f)
    with pytest.raises(RunError, match="refusing to unpickle"):
        small_run(tmp_path / "p", expr_file, 2, resume=True)
    assert not sentinel.exists()


def test_damaged_or_foreign_run_directories(tmp_path, expr_file):
    run = small_run(tmp_path / "d", expr_file, 1)
    (run / "grammar.cfg").write_text((run / "grammar.cfg").read_text() + "\nT -> '4'\n")
    with pytest.raises(RunError, match="differs"):
        load_run(run)
    (run / "run.json").write_text("{not json")
    with pytest.raises(RunError, match="not valid JSON"):
        load_run(run)
    (run / "run.json").write_text(json.dumps({"format": "someone-else/3"}))
    with pytest.raises(RunError, match="not a grammar-rae run"):
        load_run(run)
    with pytest.raises(RunError, match="neither a run directory nor a shipped pretrained model"):
        load_run(tmp_path / "nowhere")


def rows_of(data_file, run_dir, part):
    """The strings of a run's ``part`` rows ("train", "val", "test"): lines of its data file, every line parsed."""
    lines = Path(data_file).read_text().splitlines()
    assert json.loads((run_dir / "run.json").read_text())["data"]["rows"] == len(lines)
    return [lines[i] for i in np.load(run_dir / "split.npz")[part]]


def test_train_and_sample_from_the_cli(tmp_path, half_x_file):
    out = tmp_path / "cli"
    r = CliRunner().invoke(main, ["train", "--grammar", "expr", "--model", "rae", "--epochs", "2", "--data",
                                  str(half_x_file), "--out", str(out), "--batch-size", "100",
                                  "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    assert "epoch 2:" in r.output and (out / "loss.png").is_file()
    assert {p.name for p in (out / "density").iterdir()} >= {"gmm.json", "gmm.safetensors", "gaussian.json"}
    for density in ("prior", "gaussian", "gmm"):
        samples = tmp_path / f"{density}.txt"
        r = CliRunner().invoke(main, ["sample", "--run", str(out), "--n", "50", "--density", density,
                                      "--out", str(samples)])
        assert r.exit_code == 0, r.output
        assert len(samples.read_text().split("\n")) == 51
    r = CliRunner().invoke(main, ["evaluate", "--run", str(out), "--n-samples", "40", "--n-recon", "60",
                                  "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "eval" / "metrics.json").read_text())
    assert set(report["samples"]) == {"prior", "gaussian", "gmm"}
    # --n-recon 60 covers all 60 test and 54 validation rows: each rate is the fraction of those rows that
    # `reconstruct` gives back exactly
    for key, part in (("argmax", "test"), ("val_argmax", "val")):
        strings = rows_of(half_x_file, out, part)
        (tmp_path / f"{part}.txt").write_text("\n".join(strings) + "\n")
        r = CliRunner().invoke(main, ["reconstruct", "--run", str(out), "--input", str(tmp_path / f"{part}.txt"),
                                      "--out", str(tmp_path / f"{part}.tsv")])
        assert r.exit_code == 0, r.output
        exact = [int(row.split("\t")[2]) for row in (tmp_path / f"{part}.tsv").read_text().splitlines()]
        assert len(exact) == len(strings) and report["reconstruction"][key] == sum(exact) / len(strings)
        assert 0 < report["reconstruction"][key] < 1
    assert (out / "eval" / "report.md").is_file() and (out / "eval" / "samples_gmm.txt").is_file()
    import grammar_rae

    strings = grammar_rae.load(out).sample(20, "gmm", stochastic=True, seed=3)
    assert strings == grammar_rae.load(out).sample(20, "gmm", stochastic=True, seed=3)  # seeded
    r = CliRunner().invoke(main, ["sample", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "neither a run directory nor a shipped" in r.output


def test_character_vae_baseline_trains_and_is_judged_by_the_real_grammar(tmp_path, half_x_file):
    from grammar_rae.evaluate import evaluate_run
    import grammar_rae

    run = small_run(tmp_path / "cvae", half_x_file, 1, model="cvae")
    meta = json.loads((run / "run.json").read_text())
    assert meta["label"] == "cvae" and meta["grammar"] == "expr-chars" and meta["model"]["model"] == "vae"
    net, _ = load_run(run)
    assert net.grammar.n_rules == 2 * 11 + 1  # S -> t S | t for 11 terminals, and padding
    report = evaluate_run(run, n_samples=50, n_recon=60, cache_dir=tmp_path / "cache", log=lambda m: None)
    assert report["model"] == "cvae" and report["test_split"] == "random"
    assert set(report["reconstruction"]) == {"argmax", "val_argmax"}
    for key, part in (("argmax", "test"), ("val_argmax", "val")):  # all 60 test and 54 validation rows
        r = grammar_rae.load(run, device="cpu").reconstruct(rows_of(half_x_file, run, part))
        assert not r.errors and report["reconstruction"][key] == r.rate
        assert 0 < report["reconstruction"][key] < 1
    from grammar_rae import load_grammar
    from grammar_rae.evaluate import in_language

    expr = load_grammar("expr")
    lines = (run / "eval" / "samples_gmm.txt").read_text().splitlines()
    assert len(lines) == 50 and report["samples"]["gmm"]["validity"] == sum(map(bool, lines)) / 50
    valid = [s for s in lines if s]
    assert valid                                   # the model (half its data is "x") decodes some valid strings
    assert all(expr.parse(s) for s in valid)       # and every string counted valid is in the expression language
    # what a character decoder can emit that the real grammar refuses is not counted
    assert in_language(["x + 1", "x + + 1", None, ") x (", "sin( x )"], expr) == ["x + 1", None, None, None,
                                                                                 "sin( x )"]


def test_encode_decode_reconstruct_commands(tmp_path, expr_file):
    import numpy as np

    run = small_run(tmp_path / "edr", expr_file, 1)
    inp = tmp_path / "in.txt"
    inp.write_text("x + 1\nsin( x\n( x ) * 2\n")
    for ext in ("npy", "csv"):
        codes = tmp_path / f"z.{ext}"
        r = CliRunner().invoke(main, ["encode", "--run", str(run), "--input", str(inp), "--out", str(codes)])
        assert r.exit_code == 0, r.output
        assert f"{inp}:2: skipped" in r.output and "2 codes written" in r.output
        z = np.load(codes) if ext == "npy" else np.loadtxt(codes, delimiter=",", ndmin=2)
        assert z.shape == (2, 25)
        out = tmp_path / f"dec-{ext}.txt"
        r = CliRunner().invoke(main, ["decode", "--run", str(run), "--input", str(codes), "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert len(out.read_text().split("\n")) == 3
    r = CliRunner().invoke(main, ["reconstruct", "--run", str(run), "--input", str(inp), "--out", str(tmp_path / "r.tsv")])
    assert r.exit_code == 0 and "/2 exactly" in r.output
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 7), dtype=np.float32))
    r = CliRunner().invoke(main, ["decode", "--run", str(run), "--input", str(bad), "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "shape [n, 25]" in r.output


# FCD of two molecules: their covariance is singular, which fcd_torch's matrix square root warns about
@pytest.mark.filterwarnings("ignore:Matrix is singular", "ignore:invalid value encountered in scalar divide")
def test_molecule_run_reports_chemistry_metrics(tmp_path, monkeypatch):
    from rdkit import Chem

    import grammar_rae.evaluate as evaluate

    data = Path(__file__).parent / "fixtures" / "molecules.smi"
    run = train_run(tmp_path / "mol", "smiles", "rae", data=data, train=cfg(1), progress=False, log=lambda m: None,
                    cache_dir=tmp_path / "cache", decoder_hidden=16, encoder_hidden=16, decoder_layers=1)
    assert json.loads((run / "run.json").read_text())["model"]["max_length"] == 277
    report = evaluate.evaluate_run(run, n_samples=20, n_recon=5, cache_dir=tmp_path / "cache", log=lambda m: None)
    lines = (run / "eval" / "samples_gmm.txt").read_text().splitlines()
    valid = sum(bool(s) and Chem.MolFromSmiles(s) is not None for s in lines)
    gmm = report["samples"]["gmm"]
    assert len(lines) == 20 and gmm["n_valid"] == valid and gmm["validity"] == valid / 20
    assert "| gmm |" in (run / "eval" / "report.md").read_text()

    # A model this small decodes few molecules, so the chemistry is checked on known ones: a decoder that
    # gives back the held-out test molecules themselves, the set the metrics compare against -- the first
    # min(5000, 28 // 10) = 2 rows of the 28 that parse (the first unparseable line is line 22)
    assert np.load(run / "split.npz")["test"].tolist() == [0, 1]
    test = data.read_text().split()[:2]
    monkeypatch.setattr(evaluate, "decode_strings", lambda net, z, *a, **k: [test[i % 2] for i in range(len(z))])
    m = evaluate.evaluate_run(run, n_samples=2, n_recon=5, cache_dir=tmp_path / "cache", log=lambda m: None)
    m = m["samples"]["gmm"]
    assert m["n_valid"] == 2 and m["uniqueness"] == 1.0
    assert m["SNN"] == pytest.approx(1.0)
    assert m["Frag"] == pytest.approx(1.0)
    assert m["Scaf"] == pytest.approx(1.0)
    assert all(m[f"W1_{k}"] == pytest.approx(0.0, abs=1e-9) for k in ("logP", "SA", "QED", "MW"))
    assert m["FCD"] == pytest.approx(0.0, abs=1e-3)
    assert m["IntDiv"] > 0.3  # ethanol and benzene: 1 - (1 + 1 + 2 x their similarity) / 4
    md = (run / "eval" / "report.md").read_text()
    assert "| density | FCD | SNN | IntDiv | Frag | Scaf | W1_logP | W1_SA | W1_QED | W1_MW |" in md
    # three copies of propanol, which is not in the set: no diversity, its nearest test molecule (ethanol)
    # similar but not the same, far from the set's distribution
    monkeypatch.setattr(evaluate, "decode_strings", lambda net, z, *a, **k: ["CCCO"] * len(z))
    m = evaluate.evaluate_run(run, n_samples=3, n_recon=5, cache_dir=tmp_path / "cache", log=lambda m: None)
    m = m["samples"]["gmm"]
    assert test[0] == "CCO" and m["n_valid"] == 3 and m["uniqueness"] == pytest.approx(1 / 3)
    assert m["IntDiv"] == pytest.approx(0.0)
    assert 0.0 < m["SNN"] < 1.0
    assert m["FCD"] > 1.0


def test_large_tensor_files_are_sharded_and_read_back(tmp_path):
    from grammar_rae.checkpoint import load_weights, save_weights

    g = torch.Generator().manual_seed(0)
    sd = {f"w{i}": torch.randn(100, 100, generator=g) for i in range(5)}  # 40 kB each
    path = tmp_path / "best.safetensors"
    save_weights(path, sd, max_bytes=100_000)
    shards = sorted(p.name for p in tmp_path.glob("best.*-of-*.safetensors"))
    assert len(shards) == 3 and path.stat().st_size < 1000
    assert all((tmp_path / n).stat().st_size <= 100_000 + 1000 for n in shards)
    back = load_weights(path)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    save_weights(path, {k: v + 1 for k, v in sd.items()}, max_bytes=100_000)  # a new version replaces the old
    assert not set(shards) & {p.name for p in tmp_path.glob("best.*-of-*.safetensors")}
    assert torch.equal(load_weights(path)["w0"], sd["w0"] + 1)
    save_weights(path, sd)  # small enough again: one file, the shards go
    assert not list(tmp_path.glob("best.*-of-*.safetensors")) and torch.equal(load_weights(path)["w4"], sd["w4"])
    save_weights(path, sd, max_bytes=100_000)
    next(tmp_path.glob("best.*-00002-of-*.safetensors")).unlink()
    with pytest.raises(RunError, match="missing"):
        load_weights(path)


def test_training_state_round_trips_without_pickle(tmp_path):
    from grammar_rae.checkpoint import load_state, save_state

    state = {"optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
                           "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}]},
             "scheduler": {"best": float("inf"), "num_bad_epochs": 1}, "rng": torch.arange(4, dtype=torch.uint8)}
    save_state(tmp_path / "last.state", state)
    back = load_state(tmp_path / "last.state")
    assert back["optimizer"]["state"][0]["step"].item() == 3.0 and 0 in back["optimizer"]["state"]
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["scheduler"]["best"] == float("inf") and torch.equal(back["rng"], state["rng"])


def test_split_rows_first_and_random_are_disjoint_and_seeded():
    import numpy as np

    from grammar_rae.run import split_rows

    tr, va, te = split_rows(1000, 0, test="first")
    assert np.array_equal(te, np.arange(100))
    # the published behaviour is kept for "first": train/val drawn from rows 100.. exactly as before
    rest = np.random.default_rng(0).permutation(np.arange(100, 1000))
    assert np.array_equal(va, np.sort(rest[:90])) and np.array_equal(tr, np.sort(rest[90:]))
    tr2, va2, te2 = split_rows(1000, 0, test="random")
    assert len(te2) == 100 and te2.max() > 500 and not np.array_equal(te2, np.arange(100))
    for a, b in ((tr2, va2), (tr2, te2), (va2, te2)):
        assert not set(a.tolist()) & set(b.tolist())
    assert len(tr2) + len(va2) + len(te2) == 1000
    assert np.array_equal(split_rows(1000, 0, test="random")[2], te2)
    with pytest.raises(ValueError):
        split_rows(10, 0, test="last")


def test_expression_runs_hold_out_a_random_test_sample_and_resume_keeps_the_split(tmp_path, expr_file):
    import numpy as np

    run = small_run(tmp_path / "s", expr_file, 1)
    meta = json.loads((run / "run.json").read_text())
    split = dict(np.load(run / "split.npz"))
    assert meta["data"]["test_split"] == "random" and split["test"].max() >= len(split["test"])
    small_run(tmp_path / "s", expr_file, 2, resume=True)
    again = dict(np.load(run / "split.npz"))
    assert all(np.array_equal(split[k], again[k]) for k in ("train", "val", "test"))


def test_bucketed_batches_cover_every_row_once_and_never_cut_a_real_rule(tmp_path, expr):
    from grammar_rae.data.parsed import pack
    from grammar_rae.models.grammar_ae import GrammarAE, GrammarAEConfig

    strings = generate_expressions(700, seed=5)
    rules = torch.from_numpy(pack(expr, [expr.parse(s) for s in strings], max_length=15)[0])
    net = GrammarAE(GrammarAEConfig.for_grammar("expr", 15, "rae", decoder_hidden=8), expr)
    t = Trainer(net, rules, rules[:10], TrainConfig(batch_size=32, bucket_batches=4), tmp_path, progress=False)
    plan = t.plan_batches()
    seen = torch.cat([rows for rows, _ in plan])
    assert sorted(seen.tolist()) == list(range(700))
    lengths = (rules != expr.padding_index).sum(1)
    assert all(cut == int(lengths[rows].max()) for rows, cut in plan)
    spread = [int(lengths[rows].max() - lengths[rows].min()) for rows, _ in plan]
    unsorted = [int(lengths[r].max() - lengths[r].min()) for r in torch.randperm(700).split(32)]
    assert np.mean(spread) < np.mean(unsorted) / 2  # bucketing groups similar lengths
    assert t.plan_batches()[0][0].tolist() != plan[0][0].tolist()  # a fresh order each epoch


# ---------------------------------------------------------------------------------------- what a resume keeps
def train_cli(*args):
    """`grammar-rae train ARGS` in this process: (exit code, stdout, stderr)."""
    r = CliRunner().invoke(main, ["train", *map(str, args)])
    return r.exit_code, r.stdout, r.stderr


def first_command(data, out, cache):
    """One epoch with a batch size and learning rate of its own (the expression recipe: 12 epochs, 64, 2e-3)."""
    return ["--grammar", "expr", "--data", data, "--epochs", "1", "--batch-size", "100", "--lr", "0.004",
            "--decoder-hidden", "24", "--encoder-hidden", "16", "--out", out, "--cache-dir", cache]


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory, expr_file):
    root = tmp_path_factory.mktemp("settings")
    code, out, err = train_cli(*first_command(expr_file, root / "run", root / "cache"))
    assert code == 0, err
    return root / "run"


def copy_of(run: Path, tmp_path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def the_error(stderr: str) -> str:
    """The one line a refused command prints."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and stderr.rstrip().endswith(lines[0]), stderr
    return lines[0]


def test_a_resume_keeps_the_runs_own_settings_unless_given(tmp_path, one_epoch_run):
    run, cache = copy_of(one_epoch_run, tmp_path), one_epoch_run.parent / "cache"
    code, out, err = train_cli("--out", run, "--resume", "--cache-dir", cache)  # no --grammar, no --epochs
    assert code == 0, err
    assert f"resumed {run} after epoch 1" in out
    history = json.loads((run / "checkpoints" / "last.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1]  # not the recipe's 12
    train = json.loads((run / "run.json").read_text())["train"]
    assert (train["epochs"], train["batch_size"], train["lr"]) == (1, 100, 0.004)

    code, out, err = train_cli("--out", run, "--resume", "--epochs", "2", "--cache-dir", cache)
    assert code == 0, err
    history = json.loads((run / "checkpoints" / "last.json").read_text())["history"]
    steps = math.ceil(json.loads((run / "run.json").read_text())["data"]["train"] / 100)  # batches of the run's 100
    assert [(h["epoch"], h["step"]) for h in history] == [(1, steps), (2, 2 * steps)]
    train = json.loads((run / "run.json").read_text())["train"]
    assert (train["epochs"], train["batch_size"], train["lr"]) == (2, 100, 0.004)


def test_a_resume_keeps_its_seed_when_none_is_typed(tmp_path, expr_file):
    """click's default (--seed 0) is not a flag the user gave: a resume keeps the run's own seed."""
    run, cache = tmp_path / "seeded", tmp_path / "cache"
    code, out, err = train_cli(*first_command(expr_file, run, cache), "--seed", "3")
    assert code == 0, err
    code, out, err = train_cli("--out", run, "--resume", "--epochs", "2", "--cache-dir", cache)
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["train"]["seed"] == 3


def test_a_resume_refuses_another_network_and_takes_the_same_command(tmp_path, one_epoch_run, expr_file):
    run, cache = copy_of(one_epoch_run, tmp_path), one_epoch_run.parent / "cache"
    before = (run / "checkpoints" / "last.json").read_bytes()
    code, out, err = train_cli("--out", run, "--resume", "--decoder-hidden", "32", "--cache-dir", cache)
    assert code == 1
    assert "decoder_hidden=32 (the run has 24)" in the_error(err)
    assert (run / "checkpoints" / "last.json").read_bytes() == before
    code, out, err = train_cli(*first_command(expr_file, run, cache), "--resume")  # the same sizes
    assert code == 0, err
    assert f"resumed {run} after epoch 1" in out


def test_init_from_keeps_its_network_and_a_resume_keeps_init_from(tmp_path, one_epoch_run, expr_file):
    start, cache = one_epoch_run, one_epoch_run.parent / "cache"
    new = tmp_path / "new"
    tuned = ["--init-from", start, "--data", expr_file, "--epochs", "1", "--out", new, "--cache-dir", cache]
    code, out, err = train_cli(*tuned, "--decoder-hidden", "32")
    assert code == 1
    assert "decoder_hidden=32 (it has 24)" in the_error(err)
    assert not (new / "run.json").exists()
    code, out, err = train_cli(*tuned, "--decoder-hidden", "24")  # its own size: fine
    assert code == 0, err
    assert f"starting from the weights of {start}" in out
    assert json.loads((new / "run.json").read_text())["init_from"] == str(start)
    code, out, err = train_cli("--out", new, "--resume", "--epochs", "2", "--cache-dir", cache)
    assert code == 0, err
    meta = json.loads((new / "run.json").read_text())
    assert meta["init_from"] == str(start) and meta["model"]["decoder_hidden"] == 24
    assert [h["epoch"] for h in json.loads((new / "checkpoints" / "last.json").read_text())["history"]] == [1, 2]
    code, out, err = train_cli(*tuned, "--decoder-hidden", "24", "--epochs", "2", "--resume")  # the same command
    assert code == 0, err
    code, out, err = train_cli("--out", new, "--resume", "--init-from", tmp_path, "--cache-dir", cache)
    assert code == 1 and "--init-from" in the_error(err)


def test_init_from_may_train_its_network_with_other_loss_weights(tmp_path, one_epoch_run, expr_file):
    """--lam, --beta and --rule-dropout say how the network is trained, not its shape: a run started from
    another may choose its own (recorded in its run.json), and a resume keeps them."""
    start, cache = one_epoch_run, one_epoch_run.parent / "cache"
    new = tmp_path / "tuned"
    own = json.loads((start / "run.json").read_text())["model"]
    code, out, err = train_cli("--init-from", start, "--data", expr_file, "--epochs", "1", "--out", new,
                               "--cache-dir", cache, "--lam", "0.001", "--rule-dropout", "0.25")
    assert code == 0, err
    assert f"lam = 0.001 (the starting run had {own['lam']!r})" in out
    meta = json.loads((new / "run.json").read_text())["model"]
    assert meta["lam"] == 0.001 and meta["rule_dropout"] == 0.25 and own["lam"] != 0.001
    assert {k: v for k, v in meta.items() if k not in ("lam", "rule_dropout")} == \
        {k: v for k, v in own.items() if k not in ("lam", "rule_dropout")}
    code, out, err = train_cli("--out", new, "--resume", "--epochs", "2", "--cache-dir", cache)
    assert code == 0, err
    again = json.loads((new / "run.json").read_text())["model"]
    assert again["lam"] == 0.001 and again["rule_dropout"] == 0.25
