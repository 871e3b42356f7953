"""How each model's loss is composed: total = rec + β·(latent term) + λ·(decoder regulariser) (RAE,
Ghosh et al. 2020, eq. 11), for every member of the family, and no term logged but left out."""
import pytest
import torch

from grammar_rae.data.parsed import pack
from grammar_rae.models import regularisers as R
from grammar_rae.models.family import FAMILIES
from grammar_rae.models.grammar_ae import GrammarAE, GrammarAEConfig
from grammar_rae.models.image_ae import ImageAE, ImageAEConfig

BETA, LAM = 0.37, 0.053  # unlike each other and unlike 1, so a missing or swapped weight shows

# The weight of each term beside "rec", from the papers: RAE eq. 11 (½‖z‖² by β, the decoder's L2 or
# gradient penalty by λ; spectral normalisation adds no term), the VAE's KL and the WAE's MMD by β.
WEIGHTED = {
    "rae-l2": {"z": BETA, "reg": LAM}, "rae-gp": {"z": BETA, "reg": LAM}, "rae-sn": {"z": BETA},
    "rae": {"z": BETA}, "ae": {}, "vae": {"kl": BETA}, "cv-vae": {"z": BETA}, "cvae": {"kl": BETA},
    "wae": {"mmd": BETA}, "2s-vae": {"kl": BETA},
}
GRAMMAR = ("rae-l2", "rae-gp", "rae-sn", "rae", "ae", "vae", "cv-vae", "cvae")
IMAGE = ("rae-l2", "rae-gp", "rae-sn", "rae", "ae", "vae", "cv-vae", "wae", "2s-vae")


def test_the_tables_here_cover_every_family_member():
    assert set(WEIGHTED) - {"cvae"} == set(FAMILIES) == set(IMAGE)
    assert set(GRAMMAR) - {"cvae"} == {n for n, f in FAMILIES.items() if f.grammar_weights is not None}


def grammar_model_and_batch(name, expr):
    """A small model and a batch; the character VAE baseline (cvae) is the VAE on the character grammar."""
    from grammar_rae.data.expressions import generate_expressions

    g = expr.character_grammar if name == "cvae" else expr
    strings = generate_expressions(16, seed=1)
    rules, _ = pack(g, [g.parse(s) for s in strings], max_length=40)
    torch.manual_seed(0)
    config = GrammarAEConfig.for_grammar("expr", 40, "vae" if name == "cvae" else name, beta=BETA, lam=LAM,
                                         decoder_hidden=16, encoder_hidden=16, conv_channels=(8, 8, 8))
    return GrammarAE(config, g), torch.from_numpy(rules)


def image_model_and_batch(name):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    return ImageAE(ImageAEConfig(model=name, beta=BETA, lam=LAM)), images


def assert_total_by_hand(total, terms, name):
    want = terms["rec"] + sum(w * terms[k] for k, w in WEIGHTED[name].items())
    assert torch.allclose(total, want, rtol=1e-6, atol=0)
    for k in WEIGHTED[name]:  # large enough that a term's missing weight (or the term) would show at rtol 1e-6
        assert abs(float(terms[k].detach())) > 1e-4 * abs(float(total.detach())), (k, terms)


@pytest.mark.parametrize("name", GRAMMAR)
def test_grammar_model_total_is_rec_plus_weighted_terms(name, expr):
    net, rules = grammar_model_and_batch(name, expr)
    total, terms = net.loss(rules)
    assert set(terms) == {"rec", *WEIGHTED[name]}
    assert_total_by_hand(total, terms, name)


@pytest.mark.parametrize("name", IMAGE)
def test_image_model_total_is_rec_plus_weighted_terms(name):
    net, images = image_model_and_batch(name)
    total, terms = net.loss(images)
    assert set(terms) == {"rec", *WEIGHTED[name]}
    assert_total_by_hand(total, terms, name)


LATENT_BY_HAND = {  # per sample, then averaged over the batch
    "z": lambda mean, log_var: 0.5 * (mean ** 2).sum(1),                                      # RAE eq. 10
    "kl": lambda mean, log_var: 0.5 * (log_var.exp() + mean ** 2 - 1 - log_var).sum(1),      # closed-form KL
}


@pytest.mark.parametrize("name,key", [("rae", "z"), ("cv-vae", "z"), ("vae", "kl"), ("cvae", "kl")])
def test_the_latent_term_is_that_of_this_batchs_codes(expr, name, key):
    """½‖μ‖² (the CV-VAE's too: its KL up to a constant) and KL(N(μ, σ²) ‖ N(0, I)) of the encoder's outputs."""
    net, rules = grammar_model_and_batch(name, expr)
    _, terms = net.loss(rules)
    mean, log_var = net.encoder(rules.long())
    assert torch.allclose(terms[key], LATENT_BY_HAND[key](mean, log_var).mean(), rtol=1e-6)


@pytest.mark.parametrize("how", ["added", "dropped"])
def test_a_term_without_a_weight_is_refused_not_left_out(expr, monkeypatch, how):
    """A term the loss computes but the family table does not weight (or the reverse) stops the
    loss, through the models' own loss(), instead of being logged and silently left out of the total."""
    compute = R.loss_terms

    def changed(*args, **kwargs):
        terms = compute(*args, **kwargs)
        if how == "added":
            terms["tv"] = terms["rec"] * 0 + 1.0  # a new kind of term, say total variation
        else:
            del terms["z"]
        return terms

    monkeypatch.setattr(R, "loss_terms", changed)
    net, rules = grammar_model_and_batch("rae-l2", expr)
    with pytest.raises(RuntimeError, match="tv" if how == "added" else "'z'"):
        net.loss(rules)
    image, images = image_model_and_batch("rae-l2")
    with pytest.raises(RuntimeError, match="give every term a weight"):
        image.loss(images)
