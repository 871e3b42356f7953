"""Training throughput of the compact grammar against the original, on the same molecules, in one run.

Both train the default teacher-forced network with the CPU recipe (batch 64, length buckets) through the
trainer itself (``Trainer.train_epoch``); the only difference is the grammar form: the original
GrammarVAE grammar (129.6 rules a ZINC molecule) or its compact form with unit productions folded
(grammar/compact.py, 68.5). After an untimed warm-up epoch each, the two alternate for ``--rounds`` timed
epochs; the ratio of their median molecules/s is printed (these machines are noisy: interleaving keeps
drift out of the ratio).

    python bench/compact_train.py --molecules 3000 --threads 2 --rounds 3 --out bench/results/compact/train-2threads.json
"""
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench_io import save_json
from grammar_rae import load_grammar
from grammar_rae.data.parsed import pack
from grammar_rae.grammar.compact import compact_grammar
from grammar_rae.models.grammar_ae import GrammarAE, GrammarAEConfig
from grammar_rae.recipes import train_config
from grammar_rae.trainer import Trainer

ZINC = Path(__file__).resolve().parents[2] / "shared" / "data" / "zinc" / "250k_rndm_zinc_drugs_clean.smi"


def trainer_for(g, strings, tmp: Path, name: str) -> tuple[Trainer, float]:
    rules, _ = pack(g, g.parse_many(strings), max_length=None)
    rules = torch.from_numpy(rules)
    config = GrammarAEConfig.for_grammar("smiles", rules.shape[1], "rae-l2")
    torch.manual_seed(0)
    cfg = train_config("smiles", "teacher-forced", "cpu", recon_rows=0, epochs=100)
    t = Trainer(GrammarAE(config, g), rules, rules[:8], cfg, tmp / name, progress=False, log=lambda m: None)
    return t, float((rules != g.padding_index).sum(1).float().mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--molecules", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", default=str(ZINC))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with open(a.data) as f:   # rows after the GrammarVAE's 5,000 test molecules
        strings = [s.strip() for s in f if s.strip()][5000:5000 + a.molecules]
    original = load_grammar("smiles")
    forms = {"original": original, "compact": compact_grammar(original)}
    rates: dict = {k: [] for k in forms}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {k: trainer_for(g, strings, Path(tmp), k) for k, g in forms.items()}
        for t, _ in trainers.values():
            t.train_epoch()   # warm-up
        for _ in range(a.rounds):
            for k, (t, _) in trainers.items():
                t0 = time.perf_counter()
                t.train_epoch()
                rates[k].append(len(strings) / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in rates.items()}
    report = {"molecules": len(strings), "threads": a.threads, "rounds": a.rounds,
              "rules_per_molecule": {k: round(v[1], 1) for k, v in trainers.items()},
              "parameters": {k: sum(p.numel() for p in v[0].model.parameters()) for k, v in trainers.items()},
              "molecules_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
              "median_molecules_per_s": {k: round(v, 1) for k, v in med.items()},
              "ratio_compact_over_original": round(med["compact"] / med["original"], 3)}
    print(json.dumps(report, indent=1))
    save_json(report, a.out)


if __name__ == "__main__":
    main()
