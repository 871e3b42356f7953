"""The default architecture learns: a small expression model reaches high reconstruction quickly.

If teacher forcing were misaligned (the decoder seeing the rule it must predict), the bucketing cut
real rules, the stack machine fed the wrong LHS, or the encoder lost the sequence, the argmax
decodes below would not reproduce their inputs.
"""
import numpy as np
import torch

from grammar_rae import load_grammar
from grammar_rae.checkpoint import checkpoint_weights, load_model_state
from grammar_rae.data.parsed import prepare_dataset
from grammar_rae.data.shipped import shipped_path
from grammar_rae.models.grammar_ae import GrammarAE, GrammarAEConfig
from grammar_rae.recipes import train_config
from grammar_rae.run import padded_rules
from grammar_rae.trainer import Trainer


def test_a_small_expression_model_reconstructs_what_it_was_trained_on(tmp_path):
    g = load_grammar("expr")
    ds = prepare_dataset(g, shipped_path("expressions", tmp_path / "cache"), cache_dir=tmp_path / "cache",
                         progress=False, quiet=True)
    rows = np.sort(np.random.default_rng(0).choice(len(ds), 300, replace=False))
    rules = padded_rules(ds, 15, rows)
    # ~1,200 steps (≈ 40 s on one core): fp32 for a deterministic test; lr as the recipe's scale
    cfg = train_config("expr", "teacher-forced", "cpu", epochs=120, batch_size=32, lr=3e-3, lr_patience=5,
                       recon_rows=0, early_stop_patience=1000, amp=False)
    torch.manual_seed(0)
    net = GrammarAE(GrammarAEConfig.for_grammar("expr", 15, "rae-l2"), g)
    before = float(net.exact_reconstructions(rules).float().mean())
    Trainer(net, rules, rules, cfg, tmp_path / "run", progress=False, log=lambda m: None).fit()
    load_model_state(net, checkpoint_weights(tmp_path / "run" / "checkpoints", "best")[0])
    after = float(net.exact_reconstructions(rules).float().mean())
    decoded = net.decode(net.encode(rules.long())).strings
    strings = [ds.strings[i] for i in rows]
    by_string = np.mean([a == b for a, b in zip(decoded, strings)])
    assert before < 0.05
    assert after >= 0.90, f"reconstruction {after:.1%} after 120 epochs on 300 expressions"
    assert by_string == after  # equal derivations are equal strings, and nothing else matches
