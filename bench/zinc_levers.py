"""Issue 35's levers, each trained for the same wall-clock time on one thread (two at a time on the two
cores) on a seeded 25,000 of ZINC's training rows: train and test reconstruction and NLL side by side.

For each run directory: argmax reconstruction (RDKit canonical match) of a seeded 2,000 of its own
training rows and of all 5,000 standard test rows (the first rows: the GrammarVAE protocol), decoded by
the grammar alone (the compact grammar has no semantic layer yet, so every run is decoded the same way;
with ``--semantics`` the original-grammar runs are also decoded with the default decoder), and the masked
NLL of the data's own derivation from the encoder mean, in nats per molecule (every string has one
derivation in either grammar form, so the NLLs compare). Writes one JSON per run, ``levers.json``,
``levers.md`` (the table) and ``levers.png`` (reconstruction bars and validation NLL against minutes).

    python bench/zinc_levers.py --runs /tmp/lev/runs --out bench/results/zinc-levers
    # or one process per core, then the table:
    python bench/zinc_levers.py --runs RUNS --names base compact kekule --no-table --out OUT &
    python bench/zinc_levers.py --runs RUNS --names noise randomized bigru --no-table --out OUT
    python bench/zinc_levers.py --collect --names base compact kekule noise randomized bigru --out OUT
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench_io import save_json


def measure(net, ds, rows, batch=500) -> dict:
    from grammar_rae.metrics import canonical
    from grammar_rae.run import decode_strings, padded_rules

    rules = padded_rules(ds, net.config.max_length, rows)
    with torch.no_grad():
        z = torch.cat([net.encode(rules[i:i + batch].long()) for i in range(0, len(rules), batch)])
        nll = torch.cat([net.reconstruction_loss(rules[i:i + batch].long()) for i in range(0, len(rules), batch)])
    t0 = time.time()
    back = decode_strings(net, z.numpy())
    seconds = time.time() - t0
    want = [ds.strings[i] for i in rows]
    hits = sum(a is not None and a == b for a, b in zip(canonical(back, True), canonical(want, True)))
    steps = float((rules != net.grammar.padding_index).sum(1).float().mean())
    return {"rows": len(rows), "argmax_reconstruction": hits / len(rows), "masked_nll": float(nll.mean()),
            "rules_per_molecule": round(steps, 2), "decode_seconds": round(seconds, 1)}


def lever(run_dir: Path, n_train: int, semantics: bool) -> dict:
    from grammar_rae.data.parsed import prepare_dataset
    from grammar_rae.data.shipped import resolve_source
    from grammar_rae.run import load_run, load_split
    from grammar_rae.rundir import RunDir

    net, meta = load_run(run_dir)
    ds = prepare_dataset(net.grammar, resolve_source(meta["data"]["source"], meta["data"]["sha256"]), quiet=True)
    tr, _, te = load_split(RunDir.open(run_dir).path, meta)
    train_rows = np.sort(np.random.default_rng(0).choice(tr, size=min(n_train, len(tr)), replace=False))
    hist = json.loads((run_dir / "checkpoints" / "last.json").read_text()).get("history", [])
    net.semantics = False
    report = {"run": run_dir.name, "checkpoint": meta["checkpoint"], "grammar": meta["grammar"],
              "grammar_form": meta.get("grammar_form", "original"), "arch": meta["model"]["arch"],
              "latent_noise": meta["model"].get("latent_noise", 0.0),
              "randomized_inputs": meta["train"].get("randomized_inputs", 0), "data": meta["data"]["source"],
              "train_rows": meta["data"]["train"], "test_rows": len(te),
              "parameters": sum(p.numel() for p in net.parameters()),
              "epochs": hist[-1]["epoch"] if hist else 0, "minutes": round(hist[-1]["elapsed"] / 60, 1) if hist else 0,
              "curve": [{"epoch": h["epoch"], "minutes": round(h["elapsed"] / 60, 2), "val_rec": h["val_rec"],
                         "train_rec": h.get("train_rec"), "val_recon": h.get("val_recon")} for h in hist],
              "train": measure(net, ds, train_rows), "test": measure(net, ds, te)}
    if semantics and net.semantic_layer is None:
        net.semantics = True
        if net.semantic_layer is not None:
            report["test_default_decoder"] = measure(net, ds, te)
        net.semantics = False
    return report


def table(reports: list[dict]) -> str:
    head = ("| lever | rules/mol | epochs | minutes | min/epoch | best val NLL | train recon | test recon | gap "
            "| train NLL | test NLL |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for r in reports:
        tr, te = r["train"], r["test"]
        per = r["minutes"] / max(r["epochs"], 1)
        best = min(h["val_rec"] for h in r["curve"]) if r["curve"] else float("nan")
        rows.append(f"| {r['run']} | {te['rules_per_molecule']:.1f} | {r['epochs']} | {r['minutes']} | {per:.2f} | "
                    f"{best:.2f} | "
                    f"{tr['argmax_reconstruction']:.1%} | {te['argmax_reconstruction']:.1%} | "
                    f"{100 * (tr['argmax_reconstruction'] - te['argmax_reconstruction']):.1f} | "
                    f"{tr['masked_nll']:.2f} | {te['masked_nll']:.2f} |")
    return head + "\n".join(rows) + "\n"


def plot(reports: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [r["run"] for r in reports]
    x = np.arange(len(names))
    a.bar(x - 0.2, [100 * r["train"]["argmax_reconstruction"] for r in reports], 0.4, label="train (2,000)")
    a.bar(x + 0.2, [100 * r["test"]["argmax_reconstruction"] for r in reports], 0.4, label="test (5,000)")
    a.set_xticks(x, names, rotation=30, ha="right")
    a.set_ylabel("argmax reconstruction, %")
    a.set_title("equal wall-clock time, 1 thread, 25k training rows")
    a.legend()
    for r in reports:
        c = r["curve"]
        b.plot([h["minutes"] for h in c], [h["val_rec"] for h in c], marker=".", label=r["run"])
    b.set_xlabel("training minutes (1 thread)")
    b.set_ylabel("validation NLL, nats/molecule")
    b.set_yscale("log")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", help="folder of the lever run directories (not with --collect)")
    ap.add_argument("--names", nargs="*", default=None, help="which runs, in the table's order (default: all)")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--semantics", action="store_true", help="also the default decoder where a semantic layer exists")
    ap.add_argument("--collect", action="store_true",
                    help="measure nothing: build the table and plot from the runs' JSON files already in --out "
                         "(after several measuring processes, one per core)")
    ap.add_argument("--no-table", action="store_true", help="only the runs' JSON files")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    if a.collect:
        names = a.names or sorted(p.stem for p in out.glob("*.json") if p.stem != "levers")
    else:
        names = a.names or sorted(p.name for p in Path(a.runs).iterdir() if (p / "run.json").exists())
    reports = []
    for name in names:
        if a.collect:
            reports.append(json.loads((out / f"{name}.json").read_text()))
            continue
        t0 = time.time()
        r = lever(Path(a.runs) / name, a.n_train, a.semantics)
        r["seconds"] = round(time.time() - t0, 1)
        print(json.dumps({k: r[k] for k in ("run", "epochs", "minutes", "train", "test")}))
        save_json(r, out / f"{name}.json")
        reports.append(r)
    if a.no_table:
        return
    save_json({"runs": reports}, out / "levers.json")
    (out / "levers.md").write_text(table(reports))
    plot(reports, out / "levers.png")
    print(table(reports))


if __name__ == "__main__":
    main()
