"""Metrics compute what their definitions say."""
import numpy as np

from grammar_rae.metrics import canonical_smiles, expression_curves, generation_metrics


def test_molecule_metrics_use_canonical_smiles():
    strings = ["CCO", "OCC", "c1ccccc1", None, "C1CC", "CCN"]  # C1CC: grammar-complete, not a molecule
    m = generation_metrics(strings, molecules=True, training=["OCC"])
    assert m["n"] == 6 and m["grammar_complete"] == 5 / 6
    assert m["validity"] == 4 / 6                    # CCO, OCC, benzene, CCN
    assert m["uniqueness"] == 3 / 4                  # CCO == OCC
    assert m["novelty"] == 2 / 3                     # ethanol is in the training set
    assert canonical_smiles("C1CC") is None and canonical_smiles("OCC") == canonical_smiles("CCO")
    # a training set canonicalised once by the caller scores the same
    pre = generation_metrics(strings, molecules=True, training_canonical={canonical_smiles("CCO")})
    assert pre == m


def test_expression_metrics_compare_strings():
    m = generation_metrics(["x + 1", "x + 1", "1 + x", None], molecules=False, training=["1 + x"])
    assert m["validity"] == 0.75 and m["uniqueness"] == 2 / 3 and m["novelty"] == 0.5


def test_expressions_are_compared_as_derivations_whatever_their_spacing(expr):
    """``x+1`` and ``x + 1`` are one expression: one derivation, written the grammar's way."""
    from grammar_rae.evaluate import training_canonical
    from grammar_rae.metrics import canonical

    assert canonical(["sin(x)+1", "sin( x ) + 1", " x*3", "x +", None], False, expr) == [
        "sin( x ) + 1", "sin( x ) + 1", "x * 3", None, None]
    decodes = ["x + 1", "x+1", "sin( x ) * 2", "( x ) / 3", None]
    m = generation_metrics(decodes, molecules=False, training=["x +1", "sin(x)*2"], grammar=expr)
    assert m["validity"] == 0.8 and m["uniqueness"] == 3 / 4 and m["novelty"] == 1 / 3
    # the training strings themselves, written another way, are not novel
    training = ["x+1", "sin(x)*2", "(x)/3", "exp(x*x)+2"]
    respaced = ["x + 1", "sin( x ) * 2", "( x ) / 3", "exp( x * x ) + 2"]
    assert generation_metrics(respaced, False, training=training, grammar=expr)["novelty"] == 0.0
    once = training_canonical(training, False, grammar=expr)  # as `evaluate` computes it once per run
    assert generation_metrics(respaced, False, training_canonical=once, grammar=expr)["novelty"] == 0.0


def test_expression_curves():
    x, ys = expression_curves(["x * x", "sin( x )", "exp( x * x * x )", "1 / ( x - x )", "__import__('os')", None])
    assert np.allclose(ys[0], x * x) and np.allclose(ys[1], np.sin(x))
    assert ys[2] is None and ys[3] is None      # overflow, division by zero: not finite
    assert ys[4] is None and ys[5] is None      # not an expression of the grammar: never evaluated


def test_reconstruction_accuracy_reuses_logits_but_counts_like_the_naive_loop():
    import torch

    from grammar_rae import load_grammar
    from grammar_rae.data.expressions import generate_expressions
    from grammar_rae.metrics import canonical, reconstruction_accuracy
    from grammar_rae.models.grammar_ae import GrammarAE, GrammarAEConfig

    g = load_grammar("expr")
    strings = generate_expressions(40, seed=3)
    rules = torch.full((40, 15), g.padding_index, dtype=torch.uint8)
    for i, s in enumerate(strings):
        r = g.parse(s)
        rules[i, :len(r)] = torch.tensor(r)
    for model in ("rae-l2", "vae"):
        torch.manual_seed(0)
        # the GrammarVAE decoder: its logits are reused across samples, drawing the same noise as the loop
        net = GrammarAE(GrammarAEConfig.for_grammar("expr", 15, model, arch="gvae", decoder_hidden=16), g).eval()
        # targets the untrained model does hit now and then: its own sampled decodes of these codes
        with torch.no_grad():
            targets = net.decode(net.encode(rules), sample=True, generator=torch.Generator().manual_seed(9)).strings
        targets = [t or "" for t in targets]
        torch.manual_seed(1)
        fast = reconstruction_accuracy(net, rules, targets, False, n_encode=3, n_decode=4, sample=True, batch=16)
        torch.manual_seed(1)  # the naive loop: encode, then a full decode (GRU included) per sample
        gen, hits, want = torch.Generator().manual_seed(0), 0, canonical(targets, False)
        encodes = 3 if model == "vae" else 1  # a deterministic code is the same all 3 times: decoded 4 times once
        for i in range(0, 40, 16):
            x = rules[i:i + 16]
            for _ in range(encodes):
                z = net.latent(x)[0] if model == "vae" else net.encode(x)
                for _ in range(4):
                    got = net.decode(z, sample=True, generator=gen).strings
                    hits += sum(a is not None and a == b for a, b in zip(got, want[i:i + 16]))
        assert fast == hits / (40 * encodes * 4) and hits > 0


def test_repeated_decodes_of_an_autoregressive_decoder_batch_the_repeats():
    import torch

    from grammar_rae import load_grammar
    from grammar_rae.models.grammar_ae import GrammarAE, GrammarAEConfig

    g = load_grammar("expr")
    torch.manual_seed(0)
    net = GrammarAE(GrammarAEConfig.for_grammar("expr", 15, "rae-l2", decoder_hidden=16), g).eval()
    z = torch.randn(7, 25)
    once = net.decode(z)
    outs = list(net.decode_repeated(z, 5, sample=False, max_rows=14))  # 2 repeats per batch: 2 + 2 + 1
    assert len(outs) == 5
    for out in outs:
        assert torch.equal(out.rules, once.rules) and out.strings == once.strings
    sampled = list(net.decode_repeated(z, 4, sample=True, generator=torch.Generator().manual_seed(1)))
    assert len({tuple(map(str, o.strings)) for o in sampled}) > 1  # the repeats are independent samples
