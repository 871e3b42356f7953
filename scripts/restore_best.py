"""Recreate ``checkpoints/best.*`` of a run packed without it (scripts/gpu_molecules.sh leaves best out
when the best epoch is the last one): best = last, with the epoch and validation loss from last.json.

    python scripts/restore_best.py RUN_DIR
"""
import sys
from pathlib import Path

from grammar_rae.checkpoint import checkpoint_weights, load_weights, read_json, save_weights, write_json


def main(run: Path) -> None:
    ck = run / "checkpoints"
    meta = read_json(ck / "last.json")
    if (ck / "best.json").is_file():
        sys.exit(f"{ck} already has best.json; nothing to do")
    if meta["best_val"] != meta["history"][-1]["val_rec"]:
        sys.exit(f"{ck}: the best epoch is not the last one, so last cannot stand in for best")
    save_weights(ck / "best.safetensors", load_weights(checkpoint_weights(ck, "last")[0]))
    write_json(ck / "best.json", {"epoch": meta["epoch"], "val_rec": meta["best_val"]})
    print(f"{ck}/best.* = epoch {meta['epoch']} (val rec {meta['best_val']:.4f})")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
