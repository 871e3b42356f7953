"""Issue 35's training levers: the compact grammar form as a run setting, --train-rows, noise on z in
training, randomized SMILES as encoder inputs, and the BiGRU encoder."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from grammar_rae.errors import ConfigError
from grammar_rae.grammar.compact import CompactGrammar
from grammar_rae.models.grammar_ae import GrammarAE, GrammarAEConfig
from grammar_rae.run import load_run, split_rows, subsample_split, train_run
from grammar_rae.trainer import TrainConfig

ZINC_200 = Path(__file__).parent / "fixtures" / "zinc_train_200.smi"
TINY = dict(decoder_hidden=16, encoder_hidden=16, decoder_layers=1)


def tiny_smiles_run(out, **kw):
    train = kw.pop("train", TrainConfig(epochs=1, batch_size=50, lr=3e-3))
    return train_run(out, "smiles", "rae-l2", data=ZINC_200, train=train, progress=False, log=lambda m: None,
                     cache_dir=out.parent / "cache", **TINY, **kw)


def test_a_compact_run_records_its_form_and_a_resume_keeps_it(tmp_path):
    run = tiny_smiles_run(tmp_path / "c", grammar_form="compact")
    meta = json.loads((run / "run.json").read_text())
    assert meta["grammar_form"] == "compact" and meta["grammar"] == "smiles-compact"
    assert meta["base_grammar"] == "smiles" and meta["model"]["max_length"] == 159
    net, _ = load_run(run)
    assert isinstance(net.grammar, CompactGrammar) and net.grammar.n_rules == 183
    # a resume without the flag goes on in the run's own form
    train_run(run, train=TrainConfig(epochs=2, batch_size=50, lr=3e-3), resume=True, progress=False,
              log=lambda m: None, cache_dir=tmp_path / "cache")
    meta = json.loads((run / "run.json").read_text())
    assert meta["grammar_form"] == "compact"
    assert json.loads((run / "checkpoints" / "last.json").read_text())["epoch"] == 2
    original = json.loads((tiny_smiles_run(tmp_path / "o") / "run.json").read_text())
    assert original["grammar_form"] == "original" and original["model"]["max_length"] == 277


def test_the_character_vae_and_unknown_forms_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="character VAE"):
        train_run(tmp_path / "x", "smiles", "cvae", data=ZINC_200, grammar_form="compact", progress=False,
                  log=lambda m: None, cache_dir=tmp_path / "cache")
    with pytest.raises(ConfigError, match="grammar form"):
        train_run(tmp_path / "y", "smiles", data=ZINC_200, grammar_form="tiny", progress=False,
                  log=lambda m: None, cache_dir=tmp_path / "cache")


def test_train_rows_samples_the_training_rows_and_keeps_the_standard_test_rows(tmp_path):
    tr, va, te = split_rows(10_000, 0, test_rows=1000, test="first")
    small, small_val = subsample_split(tr, va, 2000, 0)
    assert len(small) == 2000 and len(small_val) == 500
    assert set(small) <= set(tr) and set(small_val) <= set(va)
    again = subsample_split(tr, va, 2000, 0)
    assert (again[0] == small).all() and (again[1] == small_val).all()
    assert not (subsample_split(tr, va, 2000, 1)[0] == small).all()
    with pytest.raises(ConfigError):
        subsample_split(tr, va, 0, 0)

    run = tiny_smiles_run(tmp_path / "r", train_rows=60)
    meta = json.loads((run / "run.json").read_text())
    split = np.load(run / "split.npz")
    full_tr, _, full_te = split_rows(200, 0, test="first")
    assert meta["data"]["train_rows"] == 60 and meta["data"]["train"] == 60 == len(split["train"])
    assert set(split["train"]) <= set(full_tr) and (split["test"] == full_te).all()


def test_latent_noise_moves_z_in_training_only():
    cfg = GrammarAEConfig.for_grammar("expr", 15, latent_noise=0.5)
    net = GrammarAE(cfg)
    rules = torch.randint(0, 11, (8, 15))
    net.train()
    a, mean, _ = net.latent(rules)
    b, _, _ = net.latent(rules)
    assert not torch.allclose(a, b) and not torch.allclose(a, mean)
    spread = ((a - mean) / mean.std(0, keepdim=True)).std().detach()
    assert 0.3 < float(spread) < 0.7             # ε scaled by 0.5 · the batch's own spread per dimension
    net.eval()
    c, mean, _ = net.latent(rules)
    assert torch.equal(c, mean)
    quiet = GrammarAE(GrammarAEConfig.for_grammar("expr", 15)).train()
    z, mean, _ = quiet.latent(rules)
    assert torch.equal(z, mean)
    with pytest.raises(ConfigError, match="deterministic"):
        GrammarAEConfig.for_grammar("expr", 15, model="vae", latent_noise=0.1)
    with pytest.raises(ConfigError):
        GrammarAEConfig.for_grammar("expr", 15, latent_noise=-1.0)


def test_randomized_smiles_spell_the_same_molecule_and_are_seeded(smiles):
    from rdkit import Chem

    from grammar_rae.data.augment import randomized_inputs, randomized_smiles

    mols = ZINC_200.read_text().split()[:20]
    spellings = randomized_smiles(mols, 3, seed=5)
    assert spellings == randomized_smiles(mols, 3, seed=5)
    assert spellings != randomized_smiles(mols, 3, seed=6)
    canon = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in mols]
    assert all(Chem.MolToSmiles(Chem.MolFromSmiles(v)) == c for vs, c in zip(spellings, canon) for v in vs)
    assert sum(v != s for vs, s in zip(spellings, mols) for v in vs) > 30

    from grammar_rae.data.parsed import pack

    own, _ = pack(smiles, smiles.parse_many(mols), max_length=277)
    inputs = randomized_inputs(smiles, mols, own, 3, seed=5, progress=False)
    assert inputs.shape == (20, 4, 277) and (inputs[:, 0] == own).all()
    assert (inputs[:, 1:] != own[:, None]).any(2).sum() > 30     # the other columns are other spellings
    for i, row in enumerate(inputs):
        for col in row[1:]:
            s = smiles.derive([int(r) for r in col if r != smiles.padding_index])
            assert Chem.MolToSmiles(Chem.MolFromSmiles(s)) == canon[i]


def test_a_run_with_randomized_inputs_reads_them_in_turn(tmp_path, monkeypatch):
    from grammar_rae import trainer as T

    seen = []
    original = T.Trainer._inputs

    def spy(self, rows):
        out = original(self, rows)
        # each row's input is one of that row's own spellings, cut as its batch is
        cols = self.train_inputs[rows][:, :, :out.shape[1]]
        seen.append(bool((cols == out[:, None]).all(2).any(1).all()))
        seen.append(int((cols[:, 1:] == out[:, None]).all(2).any(1).sum()))
        return out

    monkeypatch.setattr(T.Trainer, "_inputs", spy)
    run = tiny_smiles_run(tmp_path / "a", train=TrainConfig(epochs=1, batch_size=50, lr=3e-3, randomized_inputs=2))
    assert json.loads((run / "run.json").read_text())["train"]["randomized_inputs"] == 2
    assert seen and all(seen[0::2]) and sum(seen[1::2]) > 0   # some batches read a randomized spelling

    # the draw: a function of the seed and the update count (a resumed run draws the same)
    fake = type("Fake", (), {})()
    fake.config, fake.bucketed, fake.device = TrainConfig(seed=0), False, torch.device("cpu")
    fake.train_inputs = torch.arange(100 * 3).view(100, 3, 1)       # value = row * 3 + column
    rows = torch.arange(0, 100, 2)
    draws = {}
    for step in (7, 7, 8):
        fake.global_step = step
        draws.setdefault(step, []).append(original(fake, rows)[:, 0])
    assert torch.equal(draws[7][0], draws[7][1]) and not torch.equal(draws[7][0], draws[8][0])
    assert torch.equal(draws[7][0] // 3, rows) and set((draws[7][0] % 3).tolist()) == {0, 1, 2}


def test_the_bigru_encoder_ignores_padding_and_trains(tmp_path, smiles):
    from grammar_rae.data.parsed import pack

    net = GrammarAE(GrammarAEConfig.for_grammar("smiles", 277, arch="bigru", **TINY)).eval()
    mols = ZINC_200.read_text().split()[:6]
    rules = torch.from_numpy(pack(smiles, smiles.parse_many(mols), max_length=277)[0].astype(np.int64))
    longest = int((rules != smiles.padding_index).sum(1).max())
    with torch.no_grad():
        full, cut, one = net.encode(rules), net.encode(rules[:, :longest]), net.encode(rules[2:3])
    assert torch.allclose(full, cut, atol=1e-5) and torch.allclose(full[2:3], one, atol=1e-5)
    assert not torch.allclose(full[0], full[1])
    run = tiny_smiles_run(tmp_path / "b", arch="bigru")
    assert json.loads((run / "run.json").read_text())["model"]["arch"] == "bigru"
    assert type(load_run(run)[0].encoder).__name__ == "BiGRUEncoder"
