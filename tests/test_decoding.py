"""Grammar-masked decoding: batched paths agree exactly with the per-sample loop; masks hold."""
import numpy as np
import pytest
import torch

from grammar_rae.models.decoding import StackMachine, decode, decode_tensor, reference_decode


@pytest.mark.parametrize("name,T", [("expr", 15), ("smiles", 120)])
def test_batched_decoders_match_the_reference_in_argmax_mode(name, T, request):
    g = request.getfixturevalue(name)
    logits = torch.randn(64, T, g.n_rules, generator=torch.Generator().manual_seed(7)) * 3
    ref_rules, ref_ok = reference_decode(g, logits.numpy())
    for fn in (decode, decode_tensor):
        d = fn(g, logits)
        assert np.array_equal(d.rules.numpy(), ref_rules)
        assert np.array_equal(d.complete.numpy(), ref_ok)
    assert 0 < ref_ok.sum() < len(ref_ok)  # both complete and unfinished derivations occur


def test_every_choice_respects_the_mask_and_strings_parse_back(smiles):
    logits = torch.randn(200, 277, smiles.n_rules, generator=torch.Generator().manual_seed(3))
    d = decode(smiles, logits, sample=True, generator=torch.Generator().manual_seed(0))
    for row, ok, s in zip(d.rules.numpy(), d.complete.numpy(), d.strings):
        stack = [smiles.start_index]
        for r in row:
            lhs = stack.pop() if stack else smiles.padding_lhs
            assert smiles.decoding_mask[lhs, r]
            stack.extend(reversed(smiles.rule_rhs_nonterminals[r]))
        assert ok == (not stack)
        if ok:
            k = int((row != smiles.padding_index).sum())
            assert smiles.parse(s) == list(row[:k])  # the string's own parse is the same derivation
        else:
            assert s is None
    # rules that push the production-less `class` are never chosen
    never = [smiles.productions.index(p) for p in ("BACH -> charge class", "BACH -> class")]
    assert not np.isin(d.rules.numpy(), never).any()


def test_sampling_is_seeded_the_same_on_both_paths_and_cold_temperature_is_argmax(expr):
    logits = torch.randn(300, 15, expr.n_rules, generator=torch.Generator().manual_seed(1))
    a = decode(expr, logits, sample=True, generator=torch.Generator().manual_seed(5))
    b = decode_tensor(expr, logits, sample=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.rules, b.rules)
    greedy = decode(expr, logits)
    cold = decode(expr, logits, sample=True, temperature=1e-4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(greedy.rules, cold.rules)
    assert not torch.equal(greedy.rules, a.rules)
    with pytest.raises(ValueError, match="temperature"):
        decode(expr, logits, sample=True, temperature=0)


def test_sampling_follows_the_masked_softmax(expr):
    # one step from S: rule probabilities must be softmax over S's four rules only
    logits = torch.tensor([[0.0, 1.0, 2.0, 0.5] + [9.0] * 8]).repeat(20000, 1)
    m = StackMachine(expr, 20000, 1)
    r = m.step(logits, sample=True, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(r, minlength=12).float() / 20000
    want = torch.softmax(torch.tensor([0.0, 1.0, 2.0, 0.5]), 0)
    assert freq[4:].sum() == 0 and torch.allclose(freq[:4], want, atol=0.015)


@pytest.mark.parametrize("name", ["expr", "smiles"])
def test_min_left_is_a_lower_bound_on_the_steps_a_true_derivation_still_takes(name, request):
    """StackMachine.min_left (each stack entry's shortest derivation, summed) never exceeds the steps a real
    derivation still takes, reaches 0 when it ends, and is tight somewhere (else cannot_finish would end
    nothing early)."""
    from grammar_rae.grammar import load_grammar

    g = load_grammar(name)
    strings = {"expr": ["x", "sin( x ) + 3 * x", "exp( 2 + x / 1 ) * x * x", "( x )"],
               "smiles": ["C", "CCO", "c1ccccc1O", "CC(=O)N[C@@H](C)c1ccc(Cl)cc1", "C[NH3+]"]}[name]
    seqs = [g.parse(s) for s in strings]
    T = max(len(r) for r in seqs)
    m = StackMachine(g, len(seqs), T)
    rules = torch.full((len(seqs), T), g.padding_index, dtype=torch.long)
    for i, r in enumerate(seqs):
        rules[i, :len(r)] = torch.as_tensor(r)
    lengths = torch.tensor([len(r) for r in seqs])
    tight = torch.zeros(len(seqs), dtype=torch.bool)
    for t in range(T):
        left = (lengths - t).clamp(min=0)
        assert bool((m.min_left <= left).all()), (t, m.min_left.tolist(), left.tolist())
        assert not bool(m.cannot_finish(left).any())
        tight |= (m.min_left == left) & (left > 0)
        m.force(rules[:, t])
    assert bool(m.done.all()) and m.min_left.tolist() == [0] * len(seqs)
    assert bool(tight.any())
    # finished stacks need no step; a fresh one cannot finish in none, nor in fewer than its shortest derivation
    fresh = StackMachine(g, 1, T)
    assert not bool(m.cannot_finish(0).any()) and bool(fresh.cannot_finish(0).all())
    assert bool(fresh.cannot_finish(int(fresh.min_left[0]) - 1).all()) and not bool(fresh.cannot_finish(int(fresh.min_left[0])).any())
