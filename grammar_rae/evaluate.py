"""`grammar-rae evaluate`: reconstruction and sampling metrics of a run, as JSON, markdown and plots."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .checkpoint import read_json, write_json
from .data.parsed import prepare_dataset
from .data.shipped import resolve_source
from .grammar import ParseError, load_grammar
from .metrics import canonical, expression_curves, generation_metrics, reconstruction_accuracy
from .run import decode_strings, load_density, load_run, padded_rules
from .train import resolve_device


def evaluate_run(run_dir: str | Path, n_samples: int = 1000, n_recon: int = 1000, gvae_protocol: bool = False,
                 seed: int = 0, device: str = "auto", cache_dir=None, log=print, out: str | Path | None = None) -> dict:
    """Metrics of a run (or a shipped pretrained NAME), written to ``out`` (default RUN/eval, or
    eval/NAME for a shipped model, whose folder belongs to the installation)."""
    from .pretrained import is_shipped, resolve_run

    run_dir = resolve_run(run_dir)
    out = Path(out) if out else (Path("eval") / run_dir.name if is_shipped(run_dir) else run_dir / "eval")
    dev = resolve_device(device)
    net, meta = load_run(run_dir, device=dev)
    g = net.grammar
    base_name = meta.get("base_grammar", g.name)
    molecules = base_name == "smiles"
    base = g if base_name == g.name else load_grammar(base_name)
    ds = prepare_dataset(g, resolve_source(meta["data"]["source"], meta["data"].get("sha256"), cache_dir), cache_dir=cache_dir, quiet=True)

    def in_language(strings):
        """Decodes of the character baseline are valid only if the real grammar parses them."""
        return strings if base is g else [s if s is not None and _parses(base, s) else None for s in strings]

    split = np.load(run_dir / "split.npz", allow_pickle=False)
    test = split["test"][:n_recon]
    test_rules = padded_rules(ds, net.config.max_length, test)
    train_strings = [ds.strings[i] for i in split["train"]]
    t0 = time.time()
    report = {"run": str(run_dir), "model": meta.get("label", net.config.model), "grammar": g.name,
              "arch": net.config.arch, "decoder": net.config.decoder,
              "epochs": read_json(run_dir / "checkpoints" / "last.json").get("epoch"),
              "reconstruction": {}, "samples": {}}
    test_strings = [ds.strings[i] for i in test]
    # Held-out test rows, and held-out validation rows (a random sample of the training distribution,
    # never trained on; used only for model selection). They differ when the test rows are a block of
    # a file in systematic order (run.json: data.test_split = "first" on the expression set).
    val = split["val"][np.random.default_rng(seed).permutation(len(split["val"]))[:n_recon]]
    rows = {"": (test_rules, test_strings, "test"),
            "val_": (padded_rules(ds, net.config.max_length, val), [ds.strings[i] for i in val], "validation")}
    report["test_split"] = meta["data"].get("test_split", "first")
    for prefix, (rules, strings, name) in rows.items():
        acc = reconstruction_accuracy(net, rules, strings, molecules)
        report["reconstruction"][f"{prefix}argmax"] = acc
        log(f"reconstruction (argmax) on {len(strings)} {name} rows: {acc:.1%}")
        if gvae_protocol:
            acc = reconstruction_accuracy(net, rules, strings, molecules, n_encode=10, n_decode=100,
                                          sample=True, seed=seed)
            report["reconstruction"][f"{prefix}gvae_10x100"] = acc
            log(f"reconstruction (GVAE protocol, 10 encodes x 100 sampled decodes) on {name} rows: {acc:.1%}")
    samples = {}
    train_canonical = set(canonical(train_strings, molecules)) - {None}  # once, for the three densities
    for kind in ("prior", "gaussian", "gmm"):
        q = load_density(run_dir, kind, net.config.latent_dim)
        samples[kind] = strings = in_language(decode_strings(net, q.sample(n_samples, seed=seed)))
        report["samples"][kind] = generation_metrics(strings, molecules, training_canonical=train_canonical)
        if molecules:  # MOSES-style metrics and FCD against the held-out test molecules
            from .chem import molecule_metrics

            report["samples"][kind].update(molecule_metrics(strings, test_strings))
        m = report["samples"][kind]
        log(f"{kind:>8} samples: validity {m['validity']:.1%}, unique {m['uniqueness']:.1%}, "
            f"novel {m.get('novelty', float('nan')):.1%}")
    report["seconds"] = round(time.time() - t0, 1)
    report["out"] = str(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", report)
    (out / "report.md").write_text(markdown_report(report), encoding="utf-8")
    for kind, strings in samples.items():
        (out / f"samples_{kind}.txt").write_text("".join((s or "") + "\n" for s in strings), encoding="utf-8")
    if molecules:
        molecule_grid(samples["gmm"], out / "samples_gmm.png")
    else:
        expression_plot(samples["gmm"], out / "samples_gmm.png")
    return report


def _parses(grammar, s: str) -> bool:
    try:
        grammar.parse(s)
        return True
    except ParseError:
        return False


def markdown_report(r: dict) -> str:
    arch = r.get("arch", "gvae")
    arch = f"gvae architecture, {r['decoder']} decoder" if arch == "gvae" else f"{arch} architecture"
    lines = [f"# {r['model']} on {r['grammar']} ({arch}, {r['epochs']} epochs)", "",
             "| reconstruction | accuracy |", "|---|---|"]
    lines += [f"| {k} | {v:.1%} |" for k, v in r["reconstruction"].items()]
    lines += ["", "| density | validity | uniqueness | novelty |", "|---|---|---|---|"]
    for k, m in r["samples"].items():
        lines.append(f"| {k} | {m['validity']:.1%} | {m['uniqueness']:.1%} | {m.get('novelty', float('nan')):.1%} |")
    chem_keys = [k for k in ("FCD", "SNN", "IntDiv", "Frag", "Scaf", "W1_logP", "W1_SA", "W1_QED", "W1_MW")
                 if any(k in m for m in r["samples"].values())]
    if chem_keys:
        lines += ["", "| density | " + " | ".join(chem_keys) + " |", "|---" * (len(chem_keys) + 1) + "|"]
        for k, m in r["samples"].items():
            lines.append(f"| {k} | " + " | ".join(f"{m.get(c, float('nan')):.3f}" for c in chem_keys) + " |")
    return "\n".join(lines) + "\n"


def molecule_grid(strings, path: Path, n: int = 24) -> None:
    from rdkit import Chem
    from rdkit.Chem.Draw import rdMolDraw2D

    from .io import atomic_write_bytes

    mols = [m for m in (Chem.MolFromSmiles(s) for s in strings if s) if m is not None][:n]
    if mols:
        # the Cairo drawer directly: Draw.MolsToGridImage returns an IPython image inside notebooks
        per_row, (w, h) = min(6, len(mols)), (220, 180)
        rows = -(-len(mols) // per_row)
        d = rdMolDraw2D.MolDraw2DCairo(per_row * w, rows * h, w, h)
        d.DrawMolecules(mols)
        d.FinishDrawing()
        atomic_write_bytes(Path(path), d.GetDrawingText())


def expression_plot(strings, path: Path, n: int = 12) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, ys = expression_curves(strings)
    fig, ax = plt.subplots(figsize=(7, 4))
    shown = 0
    for s, y in zip(strings, ys):
        if y is not None and shown < n:
            ax.plot(x, np.clip(y, -50, 50), lw=1, label=s if len(s) < 40 else s[:37] + "...")
            shown += 1
    ax.set_xlabel("x")
    ax.set_title("expressions decoded from GMM samples")
    if shown:
        ax.legend(fontsize=6, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
