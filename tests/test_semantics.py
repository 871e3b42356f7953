"""The SMILES semantic layer (grammar_rae/models/semantics.py): it must admit every real molecule's
derivation, refuse the ring, valence and aromaticity errors it claims to rule out, and be used when
strings are decoded (off with --no-semantics)."""
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ZINC, need
from grammar_rae.models.semantics import admitted, semantics_for

FIXTURE = Path(__file__).parent / "fixtures" / "zinc_train_200.smi"


def rules_of(g, smiles_list):
    seqs = [g.parse(s) for s in smiles_list]
    out = torch.full((len(seqs), max(map(len, seqs)) + 1), g.padding_index, dtype=torch.long)
    for i, q in enumerate(seqs):
        out[i, :len(q)] = torch.tensor(q)
    return out


def rdkit_valid(s):
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    return Chem.MolFromSmiles(s) is not None


# (SMILES, admitted?) -- each refused one is a molecule RDKit refuses, for the reason in the comment
HAND_MADE = [
    ("C1CC", False),              # ring 1 never closed
    ("CC1CCC2", False),           # two rings never closed
    ("C1C1", False),              # closure onto the atom it is already bonded to
    ("C11", False),               # closure onto the same atom
    ("C12CC12", False),           # two closures between the same pair
    ("C1C1CC", False), ("C11CC", False), ("C12CC12CC", False),   # the same, with atoms still to follow
    ("C=1CCCCC-1", False),        # the two ends give different bond orders (OpenSMILES forbids it; RDKit
                                  # silently keeps one of them, so it is left out of the RDKit check below)
    ("FC=F", False),              # fluorine with a double bond
    ("CC(=O)(=O)=O", False),      # carbon with seven bonds
    ("CN(C)(C)C", False),         # neutral nitrogen with four bonds
    ("CC(C)(C)(C)C", False),      # carbon with five bonds
    ("C#N=C", False),             # nitrogen with five bonds
    ("Cl(C)C", False),            # chlorine with two bonds
    ("c", False),                 # an aromatic atom that cannot be on a ring
    ("c1ccccc1c", False),         # ... and one hanging off a ring
    ("cC", False),
    ("C1CCCCC1", True), ("c1ccccc1", True), ("C=1CCCCC=1", True), ("C1=CC=CC=C1", True), ("N#N", True),
    ("O=c1cccc[nH]1", True), ("C(C1)CC1", True), ("c12ccccc1cccc2", True), ("Cn1cccc1", True),
    ("C1CC1C1CC1", True),                                   # digit 1 reused after it closed
    ("C1CC2CC3CC4CC5CC6CC7CC8CC8CC7CC6CC5CC4CC3CC2CC1", True),  # rings 1-8 open together and all closed
    ("CC(C)(C)C(=O)[O-]", True), ("C[NH+](C)C", True), ("[C@@H]1(O)CCCC1", True), ("OC(=O)[C@H](N)Cc1ccccc1", True),
    # Kekule parity: a finished aromatic system needs an even number of atoms that take a double bond
    ("c1cccc1", False),           # five c: no Kekule structure
    ("c1cccccc1", False),         # seven
    ("c1ccnc1", False),           # pyrrole without its H: the n (two bonds) needs a double bond too
    ("c1cccc1C", False),          # the system finished by an aliphatic successor
    ("c1ccccc1Cc1cccc1", False),  # a second system finished at the molecule's last atom
    ("c1ccc2cccc2c1", False),     # a fused system of nine c
    ("O=c1ccccc1", False),        # the exocyclic C=O frees its c: five left
    ("c1ccc[nH+]1", False),       # [nH+] with two bonds needs one; five in all
    ("c1cc[nH]c1", True), ("Cn1cccc1", True), ("c1ccoc1", True), ("c1ccsc1", True), ("c1ccncc1", True),
    ("c1ccc2c(c1)CCC2", True), ("c1ccccc1-c1ccccc1", True), ("c1ccccc1c1ccccc1", True),
    ("c1ccc2ccccc2c1", True), ("c1cc[nH+]cc1", True), ("C[n+]1ccccc1", True), ("c1cc[n-]c1", True),
    ("c1ccc2[nH]ccc2c1", True), ("Cn1/c(=N/C)sc2ccccc21", True),   # '/' between aromatic atoms is aromatic
    ("CC(=O)c1ccc(cc1)N", True),
    # an N-oxide written with '=' (as ZINC has one): the exocyclic double bond frees the [n+] from needing one
    ("O=[n+]1c(-c2cccs2)c([O-])n(OCc2c(F)cccc2F)c2ccccc21", True), ("O=[n+]1ccccc1", False),  # the ring closed by the branch's last atom, the chain going on after it
    # an aromatic c or n has at most three neighbours
    ("Cc1(C)ccccc1", False),
    # an aromatic atom on no ring, although it has two aromatic neighbours and the parity is even
    ("c1ccccc1[nH]c1ccccc1", False), ("c1ccccc1[nH]C", False),
    ("c1ccc2c(c1)[nH]c1ccccc12", True),   # carbazole: the same [nH], on the middle ring
    # a charge of +2 leaves N three electrons: B-like, three bonds (RDKit), not five
    ("C[NH3+2]", False), ("C[NH2+2]", True), ("C[OH2+2]", True), ("C[NH3+]", True), ("C[NH-]", True), ("C[NH2-]", False),
]


def test_hand_made_molecules_are_admitted_or_refused_as_chemistry_says(smiles):
    got = admitted(smiles, rules_of(smiles, [s for s, _ in HAND_MADE]))
    wrong = [(s, want, bool(g)) for (s, want), g in zip(HAND_MADE, got) if bool(g) != want]
    assert not wrong
    # the refusals are real errors, and the admitted ones real molecules (RDKit, independently)
    checked = [(s, want) for s, want in HAND_MADE if s != "C=1CCCCC-1"]
    assert [rdkit_valid(s) for s, _ in checked] == [want for _, want in checked]


def test_every_molecule_of_the_training_fixture_is_admitted(smiles):
    lines = [l.strip() for l in FIXTURE.read_text().splitlines() if l.strip()]
    assert len(lines) == 200
    assert bool(admitted(smiles, rules_of(smiles, lines)).all())


def test_derivation_masks_allow_every_true_rule_and_narrow_the_loss_normaliser(smiles):
    """The masks a training loss can use (SD-VAE's masked loss): each true rule allowed, fewer rules than
    the grammar's mask at some steps, so the masked NLL is never higher and somewhere lower."""
    from grammar_rae.models.regularisers import masked_nll
    from grammar_rae.models.semantics import derivation_masks

    lines = [l.strip() for l in FIXTURE.read_text().splitlines() if l.strip()][:60]
    rules = rules_of(smiles, lines)
    masks = derivation_masks(smiles, rules)
    assert masks.shape == (*rules.shape, smiles.n_rules)
    assert bool(masks.gather(2, rules[..., None]).all())
    competitors = torch.as_tensor(smiles.lhs_mask)[torch.as_tensor(smiles.rule_lhs)]
    grammar_only = competitors[rules]
    narrowed = ((masks & grammar_only).sum(2) < grammar_only.sum(2)).sum(1)
    assert bool((narrowed > 0).all())          # every molecule has steps where the semantic tiers refuse rules
    logits = torch.randn(*rules.shape, smiles.n_rules, generator=torch.Generator().manual_seed(0))
    plain, masked = masked_nll(logits, rules, competitors), masked_nll(logits, rules, competitors, masks)
    assert bool((masked <= plain + 1e-5).all()) and bool((masked < plain - 1e-3).all())


def test_the_per_atom_work_covers_every_atom_made(smiles):
    """Each step's per-atom work looks at the first `width` columns only (SemanticState.width): no atom
    may lie beyond them, at any step of real derivations."""
    from grammar_rae.models.decoding import StackMachine

    lines = [l.strip() for l in FIXTURE.read_text().splitlines() if l.strip()][:80]
    rules = rules_of(smiles, lines)
    machine = StackMachine(smiles, len(lines), rules.shape[1], semantics=semantics_for(smiles))
    state, widest = machine.semantic_state, 0
    for step in range(rules.shape[1]):
        machine.force(rules[:, step])
        assert int(state.n_atoms.max()) <= state.width
        widest = max(widest, int(state.n_atoms.max()))
    assert (state.comp[:, state.width:] == -1).all() and state.width < 96 and widest > 20


def test_a_finished_molecule_with_an_aromatic_atom_on_no_ring_is_flagged_for_decoding_again(smiles):
    """No mask can see it step by step (the [nH] has two aromatic neighbours, the parity is even); the
    whole molecule's graph does: the closures' tree paths are the atoms on rings."""
    from grammar_rae.models.decoding import StackMachine

    rules = rules_of(smiles, ["c1ccccc1[nH]c1ccccc1", "c1ccc2c(c1)[nH]c1ccccc12", "Cc1ccccc1C1CC1CO"])
    machine = StackMachine(smiles, 3, rules.shape[1], "cpu", semantics=semantics_for(smiles))
    for t in range(rules.shape[1]):
        machine.force(rules[:, t])
    assert bool(machine.done.all()) and not bool(machine.cornered.any())
    assert machine.flagged().tolist() == [True, False, False]
    on = machine.semantic_state.on_a_ring()
    assert on[0, :13].tolist() == [True] * 6 + [False] + [True] * 6        # benzene, the [nH], benzene
    assert on[1, :13].tolist() == [True] * 13                              # carbazole: all on rings
    assert on[2, :12].tolist() == [False] + [True] * 6 + [True] * 3 + [False, False]   # C, toluene ring, cyclopropane, C, O


def test_the_first_thousands_of_zinc_are_admitted(smiles):
    lines = [l.strip() for l in need(ZINC).read_text().splitlines()[:3000] if l.strip()]
    ok = admitted(smiles, rules_of(smiles, lines), batch=1000)
    assert [s for s, g in zip(lines, ok) if not g] == []


@pytest.mark.slow
def test_all_of_zinc250k_is_admitted(smiles):
    lines = [l.strip() for l in need(ZINC).read_text().splitlines() if l.strip()]
    assert len(lines) == 249_456
    bad = []
    for i in range(0, len(lines), 20_000):
        part = lines[i:i + 20_000]
        ok = admitted(smiles, rules_of(smiles, part), batch=2000)
        bad += [s for s, g in zip(part, ok) if not g]
    assert bad == []


def test_expressions_have_no_semantic_layer(expr, smiles):
    assert semantics_for(expr) is None
    assert semantics_for(smiles) is not None


@pytest.fixture(scope="module")
def shipped_samples():
    """200 GMM codes of the shipped zinc-grae decoded with and without the semantic layer."""
    from grammar_rae.run import decode_strings, load_density, load_run

    net, _ = load_run("zinc-grae")
    z = load_density("zinc-grae", "gmm", net.config.latent_dim).sample(200, seed=3)
    net.semantics = False
    plain = decode_strings(net, z)
    net.semantics = True
    semantic = decode_strings(net, z)
    return z, plain, semantic


def failures(strings):
    """RDKit's reasons for refusing each string (captured log), counted."""
    import io

    from rdkit import Chem, rdBase

    why = Counter()
    for s in strings:
        if s is None:
            why["incomplete"] += 1
            continue
        buf = io.StringIO()
        rdBase.LogToPythonStderr()
        old, sys.stderr = sys.stderr, buf
        try:
            ok = Chem.MolFromSmiles(s) is not None
        finally:
            sys.stderr = old
        msg = buf.getvalue().lower()
        why["valid" if ok else "unclosed ring" if "unclosed ring" in msg else "duplicate" if "duplicat" in msg
            else "valence" if "valence" in msg else "other"] += 1
    return why


def test_decoding_under_the_semantic_layer_closes_every_ring_and_raises_validity(shipped_samples):
    _, plain, semantic = shipped_samples
    before, after = failures(plain), failures(semantic)
    assert before["unclosed ring"] >= 40          # the CFG alone leaves many rings open (measured: ~55%)
    assert after["unclosed ring"] == 0 and after["duplicate"] == 0
    assert after["valid"] > before["valid"] + 20


def cli_decode(tmp_path, z, *flags):
    """``grammar-rae decode`` of the codes ``z`` with ``flags``, in this process (click's runner): its strings
    (None where a derivation did not complete), or the runner's result when the command fails."""
    import numpy as np
    from click.testing import CliRunner

    from grammar_rae.cli import main

    codes, out = tmp_path / "z.npy", tmp_path / f"decoded{''.join(flags)}.smi"
    np.save(codes, np.asarray(z, dtype=np.float32))
    r = CliRunner().invoke(main, ["decode", "--run", "zinc-grae", "--input", str(codes), "--out", str(out),
                                  "--device", "cpu", *flags])
    if r.exit_code != 0:
        return r
    return [line or None for line in out.read_text().split("\n")[:len(z)]]


def test_no_semantics_flag_decodes_under_the_grammar_alone(tmp_path, shipped_samples):
    z, plain, semantic = shipped_samples
    outs = {}
    for flag in ("--no-semantics", "--semantics"):   # (in this order: --no-semantics leaves nothing behind)
        outs[flag] = cli_decode(tmp_path, z[:40], flag)
        assert isinstance(outs[flag], list), outs[flag].output
    assert outs["--no-semantics"] == plain[:40]
    # the same 40 codes as one batch in-process (rows the masks corner are re-decoded by sampling, and
    # those draws depend on the batch they are drawn in)
    from grammar_rae.run import decode_strings, load_run

    net, _ = load_run("zinc-grae")
    assert outs["--semantics"] == decode_strings(net, z[:40])
    assert [a for a, b in zip(outs["--semantics"], semantic[:40]) if a == b]   # most rows are not cornered
    assert outs["--semantics"] != outs["--no-semantics"]


def test_retries_sets_the_copies_of_cornered_rows_in_the_api_the_cli_and_reloads(tmp_path, shipped_samples):
    """--retries N / load(retries=N) / Model.retries: 0 decodes with the masks alone (cornered rows keep their
    first decode); a command without --retries is back at the default whatever an earlier one set; evaluate
    and the BO loop decode with the Model they are given, as it is set; options given to one decode apply
    to it alone; bad counts are refused."""
    from click.testing import CliRunner

    import grammar_rae
    from grammar_rae.cli import main
    from grammar_rae.errors import ConfigError
    from grammar_rae.models.grammar_ae import REDECODES
    from grammar_rae.run import decode_strings, load_run

    z = shipped_samples[0][:40]
    net, _ = load_run("zinc-grae")
    net.redecodes = 0
    masks_only = decode_strings(net, z)
    m = grammar_rae.load("zinc-grae", device="cpu", retries=0)
    assert m.retries == 0 and m.decode(z) == masks_only
    m.retries = REDECODES
    default = m.decode(z)
    assert default != masks_only                     # rows the masks cornered were decoded again
    assert grammar_rae.load("zinc-grae", device="cpu").retries == REDECODES
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ConfigError, match="retries"):
            m.retries = bad
    m.retries = 3
    from grammar_rae.models.grammar_ae import DecodeOptions
    from grammar_rae.run import loaded_model

    assert loaded_model(m)[0] is m.net and m.net.redecodes == 3   # evaluate_run and run_bo decode with the Model
    assert loaded_model("zinc-grae")[0].redecodes == REDECODES    # a run directory: the default
    # options given to one decode apply to it alone
    net.redecodes = REDECODES
    assert decode_strings(net, z) == default
    zt = torch.as_tensor(z, dtype=torch.float32)
    assert net.decode(zt, options=DecodeOptions(retries=0)).strings == masks_only
    assert net.decoding == DecodeOptions() and decode_strings(net, z) == default
    plain = net.decode(zt, options=DecodeOptions(semantics=False)).strings
    net.semantics = False
    assert plain == decode_strings(net, z) != default

    outs = {name: cli_decode(tmp_path, z, *flags) for name, flags in (("none", ["--retries", "0"]), ("default", []))}
    assert outs["none"] == masks_only and outs["default"] == default
    r = cli_decode(tmp_path, z, "--retries", "-1")
    assert r.exit_code == 2 and "--retries" in r.output
    assert re.search(rf"\[default:\s+{REDECODES}\]", CliRunner().invoke(main, ["decode", "--help"]).output)  # as --help says


def test_rows_the_masks_cornered_are_decoded_again_and_no_others(shipped_samples):
    """A row where a tier had to give way is decoded again by sampling; the first copy no mask gave way in
    replaces it. Rows decoded without giving way are untouched, and the same codes give the same strings."""
    from grammar_rae.run import load_run

    z, _, semantic = shipped_samples
    net, _ = load_run("zinc-grae")
    zt = torch.as_tensor(z, dtype=torch.float32)
    net.redecodes = 0
    once = net.decode(zt)
    assert int(once.cornered.sum()) >= 5           # the shipped model gets cornered (measured: ~12%)
    net.redecodes = 16
    again = net.decode(zt)
    assert again.strings == semantic               # the fixture's decode of the same batch, earlier: seeded
    kept = ~once.cornered
    assert [s for s, k in zip(again.strings, kept.tolist()) if k] == [s for s, k in zip(once.strings, kept.tolist()) if k]
    assert bool((again.rules[kept] == once.rules[kept]).all())
    fixed = once.cornered & ~again.cornered
    assert int(fixed.sum()) >= int(once.cornered.sum()) // 3
    assert all(again.strings[i] != once.strings[i] for i in fixed.nonzero().flatten().tolist())
    assert bool(again.complete[fixed].all())


def test_dropping_finished_rows_from_the_decoding_loop_changes_no_decode(shipped_samples, monkeypatch):
    """Rows whose derivation ended leave the working set (their stacks, semantic state and GRU state);
    argmax decodes, completeness and the flags for decoding again are those of the loop that keeps them."""
    import grammar_rae.models.grammar_ae as ga
    from grammar_rae.models.decoding import StackMachine
    from grammar_rae.run import load_run

    z, _, _ = shipped_samples
    net, _ = load_run("zinc-grae")
    net.redecodes = 0
    zt = torch.as_tensor(z, dtype=torch.float32)
    cuts, real = [], StackMachine.select

    def counting(self, keep):
        cuts.append((len(keep), int(keep.sum())))
        return real(self, keep)

    monkeypatch.setattr(StackMachine, "select", counting)
    for semantics in (True, False):
        net.semantics = semantics
        monkeypatch.setattr(ga, "COMPACT_AT", 0)
        whole = net.decode(zt)
        assert cuts == []
        monkeypatch.setattr(ga, "COMPACT_AT", 4)
        cut = net.decode(zt)
        assert len(cuts) >= 2 and all(k <= 3 * n // 4 for n, k in cuts)      # it did drop rows, a quarter at a time
        cuts.clear()
        assert torch.equal(cut.rules, whole.rules) and torch.equal(cut.complete, whole.complete)
        assert torch.equal(cut.cornered, whole.cornered) and cut.strings == whole.strings
    assert int(whole.cornered.sum()) == 0 and int(cut.complete.sum()) > 150


def test_cornered_rows_get_copies_inside_the_decoding_loop_until_each_has_a_good_one(shipped_samples, monkeypatch):
    """A flagged row gets REDECODE_ROUND sampled copies added to the working set of the same loop, and
    each failed copy REDECODE_AGAIN more while the row has copies left; a row with a good copy stops getting
    them, so far fewer copies are made than `redecodes` of every cornered row, and the loop runs far fewer
    steps than rounds of whole decodes would."""
    from grammar_rae.models.decoding import StackMachine
    from math import gcd

    from grammar_rae.models.grammar_ae import REDECODE_AGAIN, REDECODE_ROUND
    from grammar_rae.run import load_run

    z, _, _ = shipped_samples
    net, _ = load_run("zinc-grae")
    zt = torch.as_tensor(z, dtype=torch.float32)
    added, steps, real_extend, real_choose = [], [], StackMachine.extend, StackMachine.choose

    def extending(self, k):
        added.append(k)
        return real_extend(self, k)

    def choosing(self, scores):
        steps.append(len(scores))
        return real_choose(self, scores)

    net.redecodes = 0
    once = net.decode(zt)
    cornered = int(once.cornered.sum())
    first_steps = int((once.rules != net.grammar.padding_index).sum(1).max())
    net.redecodes = 16
    monkeypatch.setattr(StackMachine, "extend", extending)
    monkeypatch.setattr(StackMachine, "choose", choosing)
    again = net.decode(zt)
    assert cornered >= 5 and added and all(k % gcd(REDECODE_ROUND, REDECODE_AGAIN) == 0 for k in added)
    assert sum(added) < net.redecodes * cornered / 2                   # under half of 16 copies of each
    assert int(again.cornered.sum()) < cornered // 2
    # one loop: fewer steps than the first decode plus one whole decode per round of copies
    assert len(steps) < first_steps * (1 + net.redecodes // REDECODE_ROUND)
    assert max(steps) <= len(zt) + sum(added)


def test_looking_every_16th_step_as_on_a_gpu_keeps_every_good_decode(shipped_samples, monkeypatch):
    """On a GPU the decoding loop looks at ended and cornered rows only every 16th step (a host sync each):
    rows finish up to 15 steps late, and cornered ones get their copies up to 15 steps late. Rows never
    cornered decode exactly as when looking at every step, and the cornered ones are mended as well."""
    import grammar_rae.models.grammar_ae as ga
    from grammar_rae.run import load_run

    z, _, _ = shipped_samples
    net, _ = load_run("zinc-grae")
    zt = torch.as_tensor(z[:100], dtype=torch.float32)
    net.redecodes = 0
    once = net.decode(zt)
    net.redecodes = 16
    every = net.decode(zt)
    monkeypatch.setattr(ga, "CHECK_EVERY", {"cpu": 16})
    sixteenth = net.decode(zt)
    kept = ~once.cornered
    assert int(once.cornered.sum()) >= 5
    assert bool((sixteenth.rules[kept] == every.rules[kept]).all())
    assert [s for s, k in zip(sixteenth.strings, kept.tolist()) if k] == [s for s, k in zip(every.strings, kept.tolist()) if k]
    assert int(sixteenth.cornered.sum()) < int(once.cornered.sum()) // 2
    mended = once.cornered & ~sixteenth.cornered
    assert bool(sixteenth.complete[mended].all())
    why = failures([sixteenth.strings[i] for i in mended.nonzero().flatten().tolist()])
    assert why["valid"] >= int(mended.sum()) // 2 and why["valence"] == why["unclosed ring"] == 0


@pytest.mark.parametrize("semantics", [False, True])
def test_rdkit_acceptance_decodes_refused_molecules_again_and_leaves_the_rest(shipped_samples, semantics):
    """DecodeOptions(rdkit=True): a finished molecule RDKit refuses (or a derivation that never finished) is
    flagged like a cornered one and decoded again; rows whose first decode passed are untouched, and every
    row that is not still flagged at the end is valid. ``retried`` marks the rows whose first decode failed."""
    from grammar_rae.chem import rdkit_accepts
    from grammar_rae.models.grammar_ae import DecodeOptions
    from grammar_rae.run import load_run

    z, plain, semantic = shipped_samples
    net, _ = load_run("zinc-grae")
    zt = torch.as_tensor(z, dtype=torch.float32)
    first = plain if not semantics else semantic
    out = net.decode(zt, options=DecodeOptions(semantics=semantics, rdkit=True))
    ok = lambda strings: rdkit_accepts([s or "" for s in strings]) & np.array([bool(s) for s in strings])
    was, now = ok(first), ok(out.strings)
    # measured on these 200 codes: the grammar alone 27% -> 80%; the semantic layer's decodes 85.5% -> 100%
    assert was.mean() < 0.95 and now.mean() > was.mean() + (0.1 if semantics else 0.3)
    assert now.mean() >= (0.97 if semantics else 0.7)
    kept = ~out.cornered.numpy()
    assert now[kept].all()                                  # every row not still flagged is valid
    retried = out.retried.numpy()
    assert retried.sum() > 0
    if not semantics:   # the grammar alone flags nothing else: retried rows are exactly the refused first decodes
        assert (retried == ~was).all()
    assert [s for s, r in zip(out.strings, retried) if not r] == [s for s, r in zip(first, retried) if not r]
    # the model's own options are untouched, and without rdkit the decode is the plain one
    assert net.decoding == DecodeOptions()
    assert net.decode(zt, options=DecodeOptions(semantics=semantics)).strings == first
    from grammar_rae.errors import ConfigError

    with pytest.raises(ConfigError, match="SMILES"):
        load_run("expr-grae")[0].decode(torch.zeros(2, 25), options=DecodeOptions(rdkit=True))
