"""Pack a trained run directory as a shipped pretrained model: grammar_rae/pretrained/NAME.

Copies run.json (its data source rewritten to the shipped dataset's name when the sha256 matches),
grammar.cfg, split.npz, the best weights as fp16 safetensors, the training history, and the
densities refitted on the codes of the fp16 model (so they describe exactly what ships). Adds a
"pretrained" block to run.json: how it was trained (command, device, wall time, epochs), the
measured summary lines `grammar-rae pretrained list` prints and, for a model with a fixture of
training molecules (FIXTURES), the fraction of them the shipped weights reconstruct by argmax
("fixture_reconstruction", which tests/test_pretrained.py holds the model to). A missing fixture is
written first: a seeded sample of 200 of the run's training rows.

    python scripts/ship_pretrained.py RUN NAME --command "grammar-rae train ..." --device "2-core CPU" \
        [--summary "line" ...] [--no-refit]
"""
import argparse
import shutil
from pathlib import Path

import numpy as np

from grammar_rae.checkpoint import checkpoint_weights, file_sha256, load_weights, read_json, save_weights, write_json
from grammar_rae.data.parsed import prepare_dataset
from grammar_rae.data.shipped import SHIPPED, resolve_source
from grammar_rae.pretrained import ROOT
from grammar_rae.run import fit_densities, load_run, load_split, padded_rules

FIXTURES = {"zinc-grae": Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "zinc_train_200.smi"}


def training_fixture(run_dir: Path, meta: dict, path: Path, n: int = 200) -> list[str]:
    """The fixture's strings, all checked to be training rows of the run (written first, from a seeded
    sample of its training rows, when ``path`` does not exist)."""
    net, _ = load_run(run_dir)
    ds = prepare_dataset(net.grammar, resolve_source(meta["data"]["source"], meta["data"]["sha256"]), quiet=True)
    train = load_split(run_dir, meta)[0]
    if not path.is_file():
        rows = np.sort(np.random.default_rng(0).choice(train, size=n, replace=False))
        path.write_text("".join(ds.strings[i] + "\n" for i in rows), encoding="utf-8")
    lines = path.read_text(encoding="utf-8").splitlines()
    outside = set(lines) - {ds.strings[i] for i in train}
    if outside:
        raise SystemExit(f"{path}: {len(outside)} strings are not training rows of {run_dir} (another split?); "
                         "delete the file to draw a new fixture from this run's training rows")
    return lines


def fixture_reconstruction(run_dir: Path, strings: list[str]) -> float:
    """The fraction of ``strings`` the run reconstructs by argmax (canonical forms equal), on the CPU."""
    import grammar_rae

    r = grammar_rae.load(run_dir, device="cpu").reconstruct(strings)
    if r.errors or len(r.rows) != len(strings):
        raise SystemExit(f"{len(r.errors)} fixture strings could not be encoded: {r.errors[:3]}")
    return sum(row.match for row in r.rows) / len(strings)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("name")
    ap.add_argument("--command", required=True, help="The command that trained it.")
    ap.add_argument("--device", required=True, help="Where it was trained, in words.")
    ap.add_argument("--summary", action="append", default=[], help="A measured line for `pretrained list`.")
    ap.add_argument("--no-refit", action="store_true", help="Copy the densities instead of refitting them.")
    args = ap.parse_args()
    run, out = Path(args.run), ROOT / args.name
    tmp = ROOT / f".{args.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "checkpoints").mkdir(parents=True)
    meta = read_json(run / "run.json")
    last = read_json(run / "checkpoints" / "last.json")
    best = read_json(run / "checkpoints" / "best.json")
    for d in SHIPPED.values():
        if meta["data"].get("sha256") == d.sha256:
            meta["data"]["source"] = d.name
    history = last.get("history", [])
    meta["pretrained"] = {
        "command": args.command, "device": args.device, "epochs": last.get("epoch"), "best_epoch": best.get("epoch"),
        "wall_seconds": round(sum(h.get("seconds", 0.0) for h in history), 1),
        "weights": "fp16 copy of the best-validation checkpoint", "summary": args.summary,
    }
    shutil.copyfile(run / "grammar.cfg", tmp / "grammar.cfg")
    with np.load(run / "split.npz", allow_pickle=False) as f:  # compressed: sorted indices pack well
        np.savez_compressed(tmp / "split.npz", **{k: f[k].astype(np.int32) for k in f.files})
    meta["split_sha256"] = file_sha256(tmp / "split.npz")
    write_json(tmp / "run.json", meta)
    sums = save_weights(tmp / "checkpoints" / "best.safetensors",
                        load_weights(checkpoint_weights(run / "checkpoints", "best")[0]), half=True)
    write_json(tmp / "checkpoints" / "best.json", {**best, "weights": "best.safetensors", "sha256": sums})
    write_json(tmp / "checkpoints" / "last.json", {"epoch": last.get("epoch"), "history": history})
    if args.no_refit:
        shutil.copytree(run / "density", tmp / "density")
    else:
        net, _ = load_run(tmp)
        ds = prepare_dataset(net.grammar, resolve_source(meta["data"]["source"], meta["data"]["sha256"]), quiet=True)
        train_rows = load_split(tmp, meta)[0]
        fit_densities(net, padded_rules(ds, net.config.max_length, train_rows), tmp)
    if meta.get("base_grammar", meta["grammar"]) == "smiles":  # novelty without canonicalising 220k molecules
        import rdkit

        from grammar_rae.metrics import HashedStrings, canonical

        net, _ = load_run(tmp)
        ds = prepare_dataset(net.grammar, resolve_source(meta["data"]["source"], meta["data"]["sha256"]), quiet=True)
        train = [ds.strings[i] for i in load_split(tmp, meta)[0]]
        hashes = sorted(HashedStrings.of(set(canonical(train, True)) - {None}).hashes)
        np.savez_compressed(tmp / "novelty.npz", hashes=np.array(hashes, dtype=np.int64))
        meta["novelty"] = {"rdkit": rdkit.__version__, "sha256": file_sha256(tmp / "novelty.npz")}
        write_json(tmp / "run.json", meta)
    if args.name in FIXTURES:
        strings = training_fixture(tmp, meta, FIXTURES[args.name])
        meta["pretrained"]["fixture_reconstruction"] = rate = fixture_reconstruction(tmp, strings)
        write_json(tmp / "run.json", meta)
        print(f"{FIXTURES[args.name].name}: {rate:.1%} reconstructed by argmax")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    for f in sorted(out.rglob("*")):
        if f.is_file():
            size = f.stat().st_size
            assert size < 16 * 2 ** 20, f"{f} is {size} bytes: too large to ship"
            print(f"{f.relative_to(ROOT)}  {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
