"""Molecule training throughput: the old loop against the new one, on the same molecules, in one run.

- old: the GrammarVAE architecture (one-hot conv encoder, z repeated into a 3-layer GRU(501)), every
  batch padded to the full 277 steps, the GrammarVAE recipe (batch 500, fp32);
- new: the default teacher-forced architecture with the recipe ``grammar-rae train`` uses on this
  device (CPU: batch 64, bf16 where the CPU has it; GPU: its recipe), length-bucketed batches cut to
  their longest derivation.

Both run one epoch of the trainer itself (``Trainer.train_epoch``) over the same molecules, after an
untimed warm-up epoch; it prints molecules/s of each and the ratio. Throughput is half the story:
the new decoder also learns far more per molecule (BENCHMARKS.md, time to quality).

    python bench/train.py [--molecules 1000] [--device auto] [--data SMILES_FILE] [--old-hidden 501]
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from grammar_rae import load_grammar
from grammar_rae.data.parsed import prepare_dataset
from grammar_rae.models.grammar_ae import GrammarAE, GrammarAEConfig
from grammar_rae.recipes import recipe, train_config
from grammar_rae.run import padded_rules
from grammar_rae.trainer import Trainer, resolve_device

ZINC = Path(__file__).resolve().parents[2] / "shared" / "data" / "zinc" / "250k_rndm_zinc_drugs_clean.smi"
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "molecules.smi"


def epoch_rate(arch: str, rules: torch.Tensor, device: str, g, tmp: Path, **sizes) -> tuple[float, str]:
    """Molecules/s of one timed epoch (after an untimed one) of the trainer with ``arch``'s recipe."""
    kind = resolve_device(device).type
    cfg = train_config("smiles", arch, device, recon_rows=0, epochs=2)
    r = recipe("smiles", arch, kind)
    config = GrammarAEConfig.for_grammar("smiles", 277, "rae-l2", arch=arch, **{**r.model, **sizes})
    torch.manual_seed(0)
    trainer = Trainer(GrammarAE(config, g), rules, rules[:8], cfg, tmp / arch, progress=False, log=lambda m: None)
    trainer.train_epoch()  # warm-up: kernels, allocator
    dev = trainer.device
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    trainer.train_epoch()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    amp = "bf16" if trainer._amp_on() else "fp32"
    how = (f"batch {cfg.batch_size}, {amp}, {'bucketed + cut to the longest' if trainer.bucketed else 'padded to 277'}, "
           f"GRU {config.decoder_layers}x{config.decoder_hidden}")
    return len(rules) / (time.perf_counter() - t0), how


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--molecules", type=int, default=1000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default=None, help="SMILES file (default: ../shared ZINC250k, else the test fixture).")
    ap.add_argument("--old-hidden", type=int, default=501, help="The old decoder's GRU width (GVAE: 501).")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default).")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    source = Path(args.data) if args.data else ZINC if ZINC.is_file() else FIXTURE
    lines = source.read_text().splitlines()[5000:5000 + args.molecules] if source == ZINC else \
        source.read_text().splitlines()[: args.molecules]
    g = load_grammar("smiles")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "mols.smi").write_text("\n".join(lines) + "\n")
        ds = prepare_dataset(g, tmp / "mols.smi", cache_dir=tmp / "cache", progress=False, quiet=True)
        rules = padded_rules(ds, 277, np.arange(len(ds)))
        if len(rules) < 500:  # the fixture is small: tile it to one old-recipe batch at least
            rules = rules.repeat(-(-500 // len(rules)), 1)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
              f"{len(rules)} molecules from {source.name} (mean derivation {float(ds.lengths.mean()):.1f} rules)")
        old, how_old = epoch_rate("gvae", rules, args.device, g, tmp, decoder_hidden=args.old_hidden)
        print(f"old (GrammarVAE architecture, {how_old}): {old:,.1f} molecules/s")
        new, how_new = epoch_rate("teacher-forced", rules, args.device, g, tmp)
        print(f"new (teacher-forced, {how_new}): {new:,.1f} molecules/s")
        print(f"RATIO {new / old:.1f}x molecules/s (same molecules, same device, one run)")


if __name__ == "__main__":
    main()
