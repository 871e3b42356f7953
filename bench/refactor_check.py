"""Behaviour unchanged by a refactor (issue 38): run this with the old tree and with the new one on
PYTHONPATH and compare the two JSON files. It decodes 4,000 GMM codes of zinc-grae four ways (argmax and
sampled, with and without the semantic layer) and trains a small ZINC model for 200+ updates, recording
every string and every epoch's losses; ``--compare A B`` says whether two such files are equal.

    PYTHONPATH=/tmp/old python bench/refactor_check.py --out /tmp/before.json
    PYTHONPATH=$PWD    python bench/refactor_check.py --out /tmp/after.json
    python bench/refactor_check.py --compare /tmp/before.json /tmp/after.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def decodes(n: int) -> dict:
    from grammar_rae.run import load_density, load_run

    net, _ = load_run("zinc-grae")
    z = torch.as_tensor(load_density("zinc-grae", "gmm", net.config.latent_dim).sample(n, seed=0), dtype=torch.float32)
    out = {}
    for semantics in (True, False):
        for sample in (False, True):
            net.semantics = semantics
            t0 = time.time()
            gen = torch.Generator().manual_seed(0)
            strings = []
            for i in range(0, n, 1000):
                strings += net.decode(z[i:i + 1000], sample=sample, generator=gen).strings
            name = f"{'sampled' if sample else 'argmax'}-{'semantics' if semantics else 'grammar'}"
            out[name] = {"strings": strings, "seconds": round(time.time() - t0, 1),
                         "sha256": hashlib.sha256(json.dumps(strings).encode()).hexdigest()}
            print(name, out[name]["sha256"][:16], out[name]["seconds"], "s", flush=True)
    return out


def training(data: Path, rows: int, epochs: int) -> list:
    from grammar_rae.run import train_run
    from grammar_rae.trainer import TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        run = train_run(Path(tmp) / "run", "smiles", "rae-l2", data=data, limit=rows,
                        train=TrainConfig(epochs=epochs, batch_size=64, lr=1e-3, threads=1, seed=0),
                        progress=False, log=lambda m: None, cache_dir=Path(tmp) / "cache")
        hist = json.loads((run / "checkpoints" / "last.json").read_text())["history"]
    return [{k: v for k, v in h.items() if k not in ("seconds", "elapsed")} for h in hist]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/zinc/250k_rndm_zinc_drugs_clean.smi"))
    ap.add_argument("--rows", type=int, default=3200, help="ZINC rows of the training check (90%% train, batch 64)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out")
    ap.add_argument("--compare", nargs=2)
    a = ap.parse_args()
    if a.compare:
        x, y = (json.loads(Path(p).read_text()) for p in a.compare)
        same = True
        for k in x["decodes"]:
            eq = x["decodes"][k]["strings"] == y["decodes"][k]["strings"]
            same &= eq
            print(f"{k}: {'equal' if eq else 'DIFFERENT'} ({len(x['decodes'][k]['strings'])} strings)")
        eq = x["training"] == y["training"]
        same &= eq
        steps = x["training"][-1]["step"] if x["training"] else 0
        print(f"training: {'equal' if eq else 'DIFFERENT'} losses over {steps} updates")
        sys.exit(0 if same else 1)
    torch.set_num_threads(1)
    report = {"decodes": decodes(a.n), "training": training(Path(a.data), a.rows, a.epochs)}
    Path(a.out).write_text(json.dumps(report) + "\n")
    print("training steps", report["training"][-1]["step"], "final loss", report["training"][-1]["train_loss"])


if __name__ == "__main__":
    main()
