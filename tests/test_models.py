"""The grammar autoencoder family: each loss term is what its equation says and acts where it should."""
import numpy as np
import pytest
import torch

from grammar_rae.data.expressions import generate_expressions
from grammar_rae.data.parsed import pack
from grammar_rae.models import regularisers as R
from grammar_rae.models.decoding import StackMachine
from grammar_rae.models.architectures import ARCHITECTURES
from grammar_rae.models.grammar_ae import MODELS, GrammarAE, GrammarAEConfig

ARCHS = tuple(ARCHITECTURES)  # every registered architecture


def batch(expr, n=32, seed=0):
    rules, _ = pack(expr, [expr.parse(s) for s in generate_expressions(n, seed=seed)], max_length=15)
    return torch.from_numpy(rules)


def small(model="rae-l2", arch="teacher-forced", **kw):
    torch.manual_seed(0)
    return GrammarAE(GrammarAEConfig.for_grammar("expr", 15, model, arch=arch, **kw))


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


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_a_step_and_reports_its_terms(expr, model, arch):
    m = small(model, arch)
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


@pytest.mark.parametrize("arch", ARCHS)
def test_gradient_penalty_matches_finite_differences(expr, arch):
    m = small("rae-gp", arch).double()
    m.eval()
    rules = batch(expr, 3)  # the teacher-forced decoder's logits depend on the target rules too
    z = torch.randn(3, m.config.latent_dim, dtype=torch.float64, requires_grad=True)
    gp = R.gradient_penalty(m.logits(z, rules), z)
    eps = 1e-5
    f = lambda zz: m.logits(zz, rules).pow(2).flatten(1).sum(1)  # noqa: E731
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


@pytest.mark.parametrize("arch", ARCHS)
def test_spectral_norm_bounds_the_top_singular_value_of_every_decoder_matrix(expr, arch):
    m = small("rae-sn", arch)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    rules = batch(expr)
    for _ in range(5):
        opt.zero_grad()
        m.loss(rules)[0].backward()
        opt.step()
    with torch.no_grad():  # one power iteration per forward pass: let the estimates of σ_max settle
        for _ in range(100):
            m.loss(rules)
    m.eval()
    first = m.decoder.latent_in[0] if arch == "gvae" else m.decoder.initial
    mats = [first.weight, m.decoder.out.weight] + [getattr(m.decoder.gru, f"weight_{k}_l{layer}")
                                                   for k in ("ih", "hh") for layer in range(m.config.decoder_layers)]
    assert len(mats) >= 4
    for w in mats:
        assert torch.linalg.matrix_norm(w.detach(), ord=2) < 1.05
    from torch.nn.utils import parametrize

    assert not any(parametrize.is_parametrized(mod) for mod in m.encoder.modules())  # the encoder is left alone
    assert sum(parametrize.is_parametrized(mod) for mod in m.decoder.modules()) >= 3


def test_vae_kl_matches_torch_distributions():
    mean, log_var = torch.randn(5, 4), torch.randn(5, 4)
    q = torch.distributions.Normal(mean, (0.5 * log_var).exp())
    p = torch.distributions.Normal(torch.zeros(4), torch.ones(4))
    want = torch.distributions.kl_divergence(q, p).sum(1)
    assert torch.allclose(R.gaussian_kl(mean, log_var), want, atol=1e-6)


# The noise each model adds to the encoder mean in training, in units of: 1 for the deterministic
# models (z is μ itself), the configured σ_CV for the CV-VAE (a constant std, Ghosh et al. 2020 Sec. 2),
# ε_std·σ(x) for the VAE (the reparameterisation z = μ + ε_std·ε·exp(½ log σ²), Kingma & Welling eq. 10).
NOISE_STD = {"rae-l2": 0.0, "rae-gp": 0.0, "rae-sn": 0.0, "rae": 0.0, "ae": 0.0, "cv-vae": 0.3, "vae": 0.5}


@pytest.mark.parametrize("model", MODELS)
def test_each_model_trains_on_the_code_its_posterior_says(expr, model):
    """z = μ + noise with the noise's std as NOISE_STD says (the VAE's divided by its own σ(x)),
    fresh at every call for the stochastic ones; ``encode`` is μ for all."""
    rules = batch(expr, 64)
    m = small(model, cv_sigma=0.3, vae_epsilon_std=0.5)
    with torch.no_grad():
        mean, log_var = m.encoder(rules.long())
        draws = torch.stack([m.latent(rules)[0] for _ in range(20)])  # [20, 64, d]
        scale = (0.5 * log_var).exp() if model == "vae" else torch.ones_like(mean)
        noise = (draws - mean) / scale
    assert torch.equal(m.encode(rules), mean)
    assert abs(float(noise.std()) - NOISE_STD[model]) <= 0.03 * NOISE_STD[model]
    assert abs(float(noise.mean())) <= 0.03 * NOISE_STD[model]
    assert (not torch.equal(draws[0], draws[1])) == (NOISE_STD[model] > 0)


@pytest.mark.parametrize("arch,kw", [("teacher-forced", {}), ("gvae", {"decoder": "autoregressive"})])
def test_autoregressive_decoders_train_and_decode_strings_of_their_derivations(expr, arch, kw):
    m = small("rae", arch, **kw)
    rules = batch(expr)
    total, _ = m.loss(rules)
    total.backward()
    d = m.decode(torch.randn(64, m.config.latent_dim), sample=True, generator=torch.Generator().manual_seed(0))
    complete = d.complete.nonzero().flatten().tolist()
    assert len(complete) >= 8, "too few complete derivations to check"
    assert all(d.strings[i] is None for i in range(64) if i not in complete)
    for i in complete:
        k = int((d.rules[i] != expr.padding_index).sum())
        assert expr.parse(d.strings[i]) == d.rules[i, :k].tolist()


@pytest.mark.parametrize("arch,kw", [("teacher-forced", {}), ("gvae", {"decoder": "autoregressive"})])
def test_decoding_steps_agree_with_the_teacher_forced_forward_pass(expr, arch, kw):
    """Driven by the true rules, the stack machine exposes each step's LHS, and the decoder's
    one-step path gives the logits its teacher-forced forward pass gives at that step."""
    m = small("rae-l2", arch, **kw).double().eval()
    rules = batch(expr, 5, seed=3).long()
    z = torch.randn(5, m.config.latent_dim, dtype=torch.float64)
    with torch.no_grad():
        forward = m.logits(z, rules)
        machine = StackMachine(expr, 5, 15)
        prev = torch.full((5,), expr.n_rules)
        state = m.decoder.initial_state(z)
        for t in range(15):
            lhs = machine.top()
            assert torch.equal(lhs, torch.as_tensor(expr.rule_lhs)[rules[:, t]])
            step, state = m.decoder.step(z, prev, lhs, state)
            assert torch.allclose(step, forward[:, t], atol=1e-10), f"step {t} differs"
            force = torch.full_like(step, -1e9).scatter(1, rules[:, t:t + 1], 0.0)
            prev = machine.step(force)
            assert torch.equal(prev, rules[:, t])
        assert bool(machine.done.all())


def test_rule_dropout_hides_previous_rules_in_training_only(expr):
    """Word dropout: at rate 1 every previous-rule input is the start token, so in training the logits no
    longer depend on which rules came before (only on z and each step's LHS); at rate 0, and in eval mode
    at any rate, they do."""
    rules = batch(expr, 8, seed=4).long()
    z = torch.randn(8, 25)
    # the same LHS at every step but other rules: the rows' own rules, each replaced by another of its LHS
    lhs = torch.as_tensor(expr.rule_lhs)[rules]
    other = rules.clone()
    for r in range(expr.n_rules):
        same = [q for q in range(expr.n_rules) if expr.rule_lhs[q] == expr.rule_lhs[r] and q != r]
        if same:
            other[rules == r] = same[0]
    assert torch.equal(torch.as_tensor(expr.rule_lhs)[other], lhs) and not torch.equal(other, rules)

    def logits(m, r):
        return m.decoder(z, r)

    hidden = small(rule_dropout=0.999999).train()
    seen = small().train()
    assert torch.allclose(logits(hidden, rules), logits(hidden, other), atol=1e-6)
    assert not torch.allclose(logits(seen, rules), logits(seen, other), atol=1e-3)
    hidden.eval()
    assert torch.allclose(logits(hidden, rules), logits(small().eval(), rules))   # same seed, same weights
    with pytest.raises(ValueError, match="rule_dropout"):
        GrammarAEConfig.for_grammar("expr", 15, rule_dropout=1.0)
    with pytest.raises(ValueError, match="teacher-forced"):
        GrammarAEConfig.for_grammar("expr", 15, arch="gvae", rule_dropout=0.1)


def zinc_batch(smiles, n=12):
    from grammar_rae.data.parsed import pack

    strings = ["CC(=O)Nc1ccc(O)cc1", "CCO", "c1ccccc1", "CC(C)Cc1ccc(C(C)C(=O)O)cc1", "O=C(O)c1ccccc1O",
               "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "C#N", "ClC(Cl)Cl", "CC[NH+](C)C", "OCC(O)CO", "N#Cc1ccccc1",
               "CC(=O)OC1=CC=CC=C1C(=O)O"][:n]
    rules, lengths = pack(smiles, [smiles.parse(s) for s in strings], max_length=277)
    return torch.from_numpy(rules.astype(np.int64)), lengths


@pytest.mark.parametrize("model", ["rae-l2", "rae-gp", "vae"])
def test_cutting_a_batch_to_its_longest_derivation_keeps_loss_and_gradients(smiles, model):
    rules, lengths = zinc_batch(smiles)
    cut = rules[:, :int(lengths.max())]
    assert cut.shape[1] < 277 / 3
    m = GrammarAE(GrammarAEConfig.for_grammar("smiles", 277, model, decoder_hidden=32, conv_channels=(16, 16, 16),
                                              encoder_hidden=16), smiles).double()
    assert m.cuts_padding

    def loss_and_grads(x):
        torch.manual_seed(1)  # the same VAE noise both times
        m.zero_grad()
        total, _ = m.loss(x)
        total.backward()
        return total.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    full, g_full = loss_and_grads(rules)
    short, g_cut = loss_and_grads(cut)
    assert torch.allclose(full, short, rtol=1e-10)
    assert g_full.keys() == g_cut.keys() and len(g_full) > 10
    for n in g_full:
        # the masked NLL is summed in float32: only summation order may differ
        assert torch.allclose(g_full[n], g_cut[n], rtol=1e-5, atol=1e-7), n
    # and the code of a sequence does not depend on how much padding its batch carries
    assert torch.allclose(m.encode(rules), m.encode(cut), rtol=1e-10)
    assert torch.allclose(m.encode(rules[:1, :int(lengths[0]) + 3]), m.encode(rules[:1]), rtol=1e-10)


def test_encode_rules_in_length_order_gives_every_row_its_own_code(smiles):
    """encode_rules sorts rows by length and cuts each batch: the codes come back in the input order,
    equal to encoding each row with its full padding."""
    from grammar_rae.run import encode_rules

    rules, lengths = zinc_batch(smiles)
    assert len(set(lengths.tolist())) > 3                     # lengths differ, so the sort reorders
    m = GrammarAE(GrammarAEConfig.for_grammar("smiles", 277, "rae-l2", decoder_hidden=32, conv_channels=(16, 16, 16),
                                              encoder_hidden=16), smiles)
    z = encode_rules(m, rules, batch=5)
    with torch.no_grad():
        want = torch.cat([m.encode(rules[i:i + 1]) for i in range(len(rules))]).numpy()
    np.testing.assert_allclose(z, want, rtol=1e-5, atol=1e-6)


def test_config_checks():
    with pytest.raises(ValueError, match="unknown model"):
        GrammarAEConfig(model="gan")
    with pytest.raises(ValueError, match="unknown architecture"):
        GrammarAEConfig(arch="transformer")
    c = GrammarAEConfig.for_grammar("smiles", 277, "vae", arch="gvae")
    assert c.latent_dim == 56 and c.decoder_hidden == 501 and c.beta == 1.0
    assert GrammarAEConfig.for_grammar("smiles", 277, "vae").arch == "teacher-forced"
    assert GrammarAEConfig.for_grammar("expr", 15, "rae-l2", beta=0.5).beta == 0.5
    # run.json files from before the teacher-forced architecture load as gvae
    old = GrammarAEConfig.for_grammar("expr", 15, arch="gvae").to_dict()
    del old["arch"], old["embedding_dim"], old["dropout"]
    assert GrammarAEConfig.from_dict(old).arch == "gvae"
    with pytest.raises(ValueError, match="unknown model settings"):
        GrammarAEConfig.from_dict({**old, "colour": 1})
