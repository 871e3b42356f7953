"""The grammar autoencoder family: each loss term is what its equation says and acts where it should."""
import numpy as np
import pytest
import torch

from grammar_rae.data.expressions import generate_expressions
from grammar_rae.data.parsed import pack
from grammar_rae.models import regularisers as R
from grammar_rae.models.grammar_ae import MODELS, GrammarAE, GrammarAEConfig


def batch(expr, n=32, seed=0):
    rules, _ = pack(expr, [expr.parse(s) for s in generate_expressions(n, seed=seed)], max_length=15)
    return torch.from_numpy(rules)


def small(model="rae-l2", **kw):
    torch.manual_seed(0)
    return GrammarAE(GrammarAEConfig.for_grammar("expr", 15, model, **kw))


def test_masked_nll_is_the_renormalised_softmax_over_the_lhs_rules(expr):
    rules = batch(expr, 4)
    logits = torch.randn(4, 15, expr.n_rules, dtype=torch.float64)
    m = small()
    got = R.masked_nll(logits, rules.long(), m.rule_competitors)
    want = np.zeros(4)
    for b in range(4):
        for t in range(15):
            r = int(rules[b, t])
            allowed = expr.lhs_mask[expr.rule_lhs[r]]
            x = logits[b, t].numpy()[allowed]
            want[b] += -(logits[b, t, r].item() - np.log(np.exp(x).sum()))
    assert np.allclose(got.numpy(), want)
    # padding steps cost nothing whatever the logits
    pad = torch.full((1, 15), expr.padding_index)
    assert R.masked_nll(torch.randn(1, 15, expr.n_rules), pad, m.rule_competitors).item() == 0


@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_a_step_and_reports_its_terms(expr, model):
    m = small(model)
    rules = batch(expr)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    total, terms = m.loss(rules)
    total.backward()
    opt.step()
    assert torch.isfinite(total)
    expected = {"rae-l2": {"rec", "z", "reg"}, "rae-gp": {"rec", "z", "reg"}, "rae-sn": {"rec", "z"},
                "rae": {"rec", "z"}, "ae": {"rec"}, "vae": {"rec", "kl"}, "cv-vae": {"rec", "z"}}[model]
    assert set(terms) == expected
    d = m.decode(torch.randn(8, m.config.latent_dim))
    assert d.rules.shape == (8, 15) and len(d.strings) == 8


def test_l2_penalises_decoder_weights_only(expr):
    m = small("rae-l2")
    reg = R.decoder_l2(m.decoder)
    reg.backward()
    assert all(p.grad is None for p in m.encoder.parameters())
    for p in R.decoder_parameters(m.decoder):
        assert torch.allclose(p.grad, 2 * p.detach())
    biases = [p for n, p in m.decoder.named_parameters() if p.dim() == 1]
    assert biases and all(p.grad is None for p in biases)


def test_gradient_penalty_matches_finite_differences(expr):
    m = small("rae-gp").double()
    m.eval()
    z = torch.randn(3, m.config.latent_dim, dtype=torch.float64, requires_grad=True)
    gp = R.gradient_penalty(m.logits(z), z)
    eps = 1e-5
    f = lambda zz: m.logits(zz).pow(2).flatten(1).sum(1)  # noqa: E731
    fd = torch.zeros_like(z)
    with torch.no_grad():
        for i in range(z.shape[1]):
            e = torch.zeros_like(z)
            e[:, i] = eps
            fd[:, i] = (f(z + e) - f(z - e)) / (2 * eps)
    assert torch.allclose(gp, fd.pow(2).sum(1), rtol=1e-5)
    # and it trains the decoder through the double backward
    gp.sum().backward()
    assert m.decoder.gru.weight_hh_l0.grad.abs().sum() > 0


def test_spectral_norm_bounds_the_top_singular_value_of_every_decoder_matrix(expr):
    m = small("rae-sn")
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    rules = batch(expr)
    for _ in range(5):
        opt.zero_grad()
        m.loss(rules)[0].backward()
        opt.step()
    m.eval()
    mats = [m.decoder.latent_in[0].weight, m.decoder.out.weight] + \
        [getattr(m.decoder.gru, n) for n in ("weight_ih_l0", "weight_hh_l0", "weight_hh_l2")]
    for w in mats:
        assert torch.linalg.matrix_norm(w.detach(), ord=2) < 1.05
    enc = small("rae").encoder.dense[0].weight  # the encoder is left alone
    assert torch.linalg.matrix_norm(enc.detach(), ord=2) != pytest.approx(1.0, abs=0.05)


def test_vae_kl_matches_torch_distributions():
    mean, log_var = torch.randn(5, 4), torch.randn(5, 4)
    q = torch.distributions.Normal(mean, (0.5 * log_var).exp())
    p = torch.distributions.Normal(torch.zeros(4), torch.ones(4))
    want = torch.distributions.kl_divergence(q, p).sum(1)
    assert torch.allclose(R.gaussian_kl(mean, log_var), want, atol=1e-6)


def test_deterministic_models_encode_deterministically_and_vae_samples(expr):
    rules = batch(expr, 8)
    rae, vae = small("rae"), small("vae")
    assert torch.equal(rae.latent(rules)[0], rae.latent(rules)[0])
    assert not torch.equal(vae.latent(rules)[0], vae.latent(rules)[0])
    assert torch.equal(vae.encode(rules), vae.encode(rules))


def test_autoregressive_decoder_trains_and_decodes(expr):
    m = small("rae", decoder="autoregressive")
    rules = batch(expr)
    total, _ = m.loss(rules)
    total.backward()
    d = m.decode(torch.randn(6, m.config.latent_dim), sample=True, generator=torch.Generator().manual_seed(0))
    for row, ok, s in zip(d.rules, d.complete, d.strings):
        if ok:
            k = int((row != expr.padding_index).sum())
            assert expr.parse(s) == row[:k].tolist()


def test_config_checks():
    with pytest.raises(ValueError, match="unknown model"):
        GrammarAEConfig(model="gan")
    c = GrammarAEConfig.for_grammar("smiles", 277, "vae")
    assert c.latent_dim == 56 and c.decoder_hidden == 501 and c.beta == 1.0
    assert GrammarAEConfig.for_grammar("expr", 15, "rae-l2", beta=0.5).beta == 0.5
