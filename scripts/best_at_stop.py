"""Validate the last checkpoint of a run that was stopped inside an epoch (killed, or stopped by an
older trainer), and commit it as ``best`` when it beats every epoch's -- what ``Trainer.fit`` now does
by itself at a --max-minutes stop.

    python scripts/best_at_stop.py RUN_DIR [--threads 2]
"""
import argparse

import torch

from grammar_rae.checkpoint import read_json
from grammar_rae.data.parsed import prepare_dataset
from grammar_rae.data.shipped import resolve_source
from grammar_rae.models.grammar_ae import GrammarAE, GrammarAEConfig
from grammar_rae.run import load_split, padded_rules
from grammar_rae.grammar import Grammar
from grammar_rae.trainer import TrainConfig, Trainer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from pathlib import Path

    run = Path(a.run)
    meta = read_json(run / "run.json")
    g = Grammar((run / "grammar.cfg").read_text(encoding="utf-8"), name=meta["grammar"])
    net = GrammarAE(GrammarAEConfig.from_dict(meta["model"]), g)
    ds = prepare_dataset(g, resolve_source(meta["data"]["source"], meta["data"]["sha256"]), quiet=True)
    tr, va, _ = load_split(run, meta)
    T = net.config.max_length
    known = set(TrainConfig.__dataclass_fields__)
    cfg = TrainConfig(**{k: v for k, v in meta["train"].items() if k in known}, )
    cfg.device, cfg.threads = "cpu", a.threads
    trainer = Trainer(net, padded_rules(ds, T, tr[:64]), padded_rules(ds, T, va), cfg, run, progress=False)
    trainer.resume()
    trainer.best_at_stop()


if __name__ == "__main__":
    main()
