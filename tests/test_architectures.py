"""The encoder/decoder registry: an architecture is one class and one register() line, and everything
downstream (config sizes, recipes, the trainer's length buckets, run directories, loading) reads it."""
import pytest
import torch
from torch import nn

import grammar_rae
from grammar_rae.errors import ConfigError
from grammar_rae.models import architectures as A
from grammar_rae.models.grammar_ae import GrammarAE, GrammarAEConfig
from grammar_rae.recipes import recipe


class BagOfRulesEncoder(nn.Module):
    """A toy encoder: the mean embedding of a derivation's rules (order ignored) → μ."""

    reads_padding = False

    def __init__(self, c, g):
        super().__init__()
        self.padding_index = g.padding_index
        self.embedding = nn.Embedding(g.n_rules, 16)
        self.mean = nn.Linear(16, c.latent_dim)

    def forward(self, rules):
        keep = (rules != self.padding_index)[..., None].float()
        h = (self.embedding(rules) * keep).sum(1) / keep.sum(1).clamp(min=1)
        return self.mean(h), None


class NoInterface(nn.Module):
    def __init__(self, c, g):
        super().__init__()

    def forward(self, rules):
        return rules


@pytest.fixture
def toy(monkeypatch):
    """The toy architecture registered for one test (the registry is put back after it)."""
    monkeypatch.setattr(A, "ARCHITECTURES", dict(A.ARCHITECTURES))
    # the one line a new encoder needs:
    A.register(A.Architecture("bag", BagOfRulesEncoder, "grammar_rae.models.teacher_forced:TeacherForcedDecoder",
                              summary="mean rule embedding + the teacher-forced decoder"))
    return A.ARCHITECTURES["bag"]


def test_a_toy_encoder_trains_saves_and_loads_through_one_registry_line(toy, tmp_path):
    from grammar_rae.data.expressions import generate_expressions

    data = tmp_path / "expressions.txt"
    data.write_text("\n".join(generate_expressions(300, seed=3)) + "\n")
    m = grammar_rae.train(tmp_path / "run", "expr", data=data, arch="bag", epochs=1, decoder_hidden=16,
                          device="cpu", progress=False, log=None, cache_dir=tmp_path / "cache")
    assert isinstance(m.net.encoder, BagOfRulesEncoder) and m.config.arch == "bag"
    assert m.net.cuts_padding                               # read from the classes: both ignore padding
    # the run directory records the architecture and loads it again through the registry
    again = grammar_rae.load(tmp_path / "run", device="cpu")
    assert isinstance(again.net.encoder, BagOfRulesEncoder)
    z = again.encode(["x + 1", "sin( x )"])
    assert z.shape == (2, m.config.latent_dim)
    torch.testing.assert_close(torch.as_tensor(z), torch.as_tensor(m.encode(["x + 1", "sin( x )"])))
    assert len(again.decode(z)) == 2
    # without its own recipes it trains on those of recipe_from
    assert recipe("expr", "bag", "cpu") is recipe("expr", "teacher-forced", "cpu")


def test_what_an_architecture_needs_is_read_from_its_classes(toy, expr, monkeypatch):
    monkeypatch.setattr(BagOfRulesEncoder, "reads_padding", True)
    c = GrammarAEConfig.for_grammar("expr", 15, arch="bag")
    assert not GrammarAE(c, expr).cuts_padding              # an encoder that reads padding: no cut batches
    assert GrammarAE(GrammarAEConfig.for_grammar("expr", 15), expr).cuts_padding
    assert not GrammarAE(GrammarAEConfig.for_grammar("expr", 15, arch="gvae"), expr).cuts_padding


def test_a_class_without_the_interface_is_refused_by_name(monkeypatch, expr):
    monkeypatch.setattr(A, "ARCHITECTURES", dict(A.ARCHITECTURES))
    A.register(A.Architecture("broken", NoInterface, "grammar_rae.models.teacher_forced:TeacherForcedDecoder"))
    with pytest.raises(ConfigError, match=r"encoder NoInterface does not implement the Encoder interface.*reads_padding"):
        GrammarAE(GrammarAEConfig.for_grammar("expr", 15, arch="broken"), expr)
    with pytest.raises(ConfigError, match="unknown architecture 'nope'; choose from teacher-forced, bigru, gvae"):
        GrammarAEConfig.for_grammar("expr", 15, arch="nope")


def test_the_cli_offers_every_registered_architecture():
    from click.testing import CliRunner

    from grammar_rae.cli import main

    out = CliRunner().invoke(main, ["train", "--help"]).output
    for a in A.ARCHITECTURES.values():
        assert a.name in out
    assert "GrammarVAE's networks" in out
    r = CliRunner().invoke(main, ["train", "--arch", "bag", "--out", "x"])
    assert r.exit_code == 2 and "'bag' is not one of" in r.output


def test_the_shipped_architectures_implement_both_interfaces(expr):
    for name in ("teacher-forced", "gvae"):
        c = GrammarAEConfig.for_grammar("expr", 15, arch=name, decoder="autoregressive")
        enc, dec = A.architecture(name).build(c, expr)
        assert isinstance(enc, A.Encoder) and isinstance(dec, A.Decoder), name
        assert dec.autoregressive
