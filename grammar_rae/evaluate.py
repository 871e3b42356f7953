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
from .run import decode_strings, load_density, load_split, loaded_model, padded_rules


def evaluate_run(run, n_samples: int = 1000, n_recon: int = 1000, gvae_protocol: bool = False,
                 seed: int = 0, device: str = "auto", cache_dir=None, log=print, out: str | Path | None = None) -> dict:
    """Metrics of a loaded ``grammar_rae.Model`` (decoded as it is set to: its semantics and retries) or
    of a run directory / shipped pretrained NAME (loaded on ``device``, decoding by default), written to
    ``out`` (default RUN/eval, or eval/NAME for a shipped model, whose folder belongs to the
    installation): reconstruction of held-out test and validation rows, and validity / uniqueness /
    novelty (plus MOSES-style metrics and FCD for molecules) of prior, Gaussian and GMM samples."""
    from .pretrained import is_shipped

    net, meta, run_dir = loaded_model(run, device)
    out = Path(out) if out else (Path("eval") / run_dir.name if is_shipped(run_dir) else run_dir / "eval")
    ds = prepare_dataset(net.grammar, resolve_source(meta["data"]["source"], meta["data"].get("sha256"), cache_dir),
                         cache_dir=cache_dir, quiet=True)
    train_rows, val_rows, test_rows = load_split(run_dir, meta)
    molecules = meta.get("base_grammar", net.grammar.name) == "smiles"
    t0 = time.time()
    report = {"run": str(run_dir), "model": meta.get("label", net.config.model), "grammar": net.grammar.name,
              "arch": net.config.arch, "decoder": net.config.decoder,
              "semantics": net.semantic_layer is not None,   # decoded under the SMILES semantic layer
              "retries": net.redecodes if net.semantic_layer is not None else 0,   # copies per cornered row
              "epochs": read_json(run_dir / "checkpoints" / "last.json").get("epoch"),
              "test_split": meta["data"].get("test_split", "first")}
    # Held-out test rows, and held-out validation rows (a random sample of the training distribution,
    # never trained on; used only for model selection). They differ when the test rows are a block of
    # a file in systematic order (run.json: data.test_split = "first" on the expression set).
    val = val_rows[np.random.default_rng(seed).permutation(len(val_rows))[:n_recon]]
    report["reconstruction"] = reconstruction_report(net, ds, {"": (test_rows[:n_recon], "test"),
                                                               "val_": (val, "validation")},
                                                     molecules, gvae_protocol, seed, log)
    test_strings = [ds.strings[i] for i in test_rows[:n_recon]]
    samples, report["samples"] = sample_report(net, run_dir, meta, [ds.strings[i] for i in train_rows], test_strings,
                                               molecules, n_samples, seed, cache_dir, log)
    report["seconds"] = round(time.time() - t0, 1)
    report["out"] = str(out)
    write_report(report, samples, out, molecules)
    return report


def reconstruction_report(net, ds, row_sets: dict, molecules: bool, gvae_protocol: bool, seed: int, log) -> dict:
    """Argmax reconstruction (and the GVAE protocol's 10 x 100) of each named set of rows."""
    out = {}
    for prefix, (rows, name) in row_sets.items():
        rules, strings = padded_rules(ds, net.config.max_length, rows), [ds.strings[i] for i in rows]
        out[f"{prefix}argmax"] = acc = reconstruction_accuracy(net, rules, strings, molecules)
        log(f"reconstruction (argmax) on {len(strings)} {name} rows: {acc:.1%}")
        if gvae_protocol:
            out[f"{prefix}gvae_10x100"] = acc = reconstruction_accuracy(net, rules, strings, molecules, n_encode=10,
                                                                        n_decode=100, sample=True, seed=seed)
            log(f"reconstruction (GVAE protocol, 10 encodes x 100 sampled decodes) on {name} rows: {acc:.1%}")
    return out


def sample_report(net, run_dir, meta, train_strings, test_strings, molecules, n_samples, seed, cache_dir, log):
    """Samples from the prior, the Gaussian and the GMM, and their metrics."""
    base_name = meta.get("base_grammar", net.grammar.name)
    base = None if base_name == net.grammar.name else load_grammar(base_name)
    samples, metrics = {}, {}
    # once, for the three densities
    train_canonical = training_canonical(train_strings, molecules, cache_dir, run_dir, grammar=net.grammar)
    for kind in ("prior", "gaussian", "gmm"):
        q = load_density(run_dir, kind, net.config.latent_dim)
        samples[kind] = strings = in_language(decode_strings(net, q.sample(n_samples, seed=seed)), base)
        metrics[kind] = m = generation_metrics(strings, molecules, training_canonical=train_canonical,
                                               grammar=net.grammar)
        if molecules:  # MOSES-style metrics and FCD against the held-out test molecules
            from .chem import molecule_metrics

            m.update(molecule_metrics(strings, test_strings))
        log(f"{kind:>8} samples: validity {m['validity']:.1%}, unique {m['uniqueness']:.1%}, "
            f"novel {m.get('novelty', float('nan')):.1%}")
    return samples, metrics


def write_report(report: dict, samples: dict, out: Path, molecules: bool) -> None:
    from .io import write_lines

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", report)
    (out / "report.md").write_text(markdown_report(report), encoding="utf-8")
    for kind, strings in samples.items():
        write_lines(out / f"samples_{kind}.txt", strings)
    if molecules:
        molecule_grid(samples["gmm"], out / "samples_gmm.png")
    else:
        expression_plot(samples["gmm"], out / "samples_gmm.png")


def training_canonical(train_strings, molecules: bool, cache_dir=None, run_dir=None, grammar=None):
    """The training strings as the novelty metric compares them (:func:`~grammar_rae.metrics.canonical`;
    expressions as ``grammar``'s derivations). For molecules: a shipped run's hashed set when it was
    made with this RDKit version (``novelty.npz``, checked against run.json's sha256), else computed
    and cached on disk under a key of the strings and the RDKit version (ZINC250k: ≈ 25-45 s)."""
    if not molecules:
        return set(canonical(train_strings, False, grammar)) - {None}
    import hashlib

    import rdkit

    from .data.parsed import cache_root
    from .io import write_lines
    from .metrics import HashedStrings

    if run_dir is not None and (Path(run_dir) / "novelty.npz").is_file():
        meta = read_json(Path(run_dir) / "run.json")
        shipped = meta.get("novelty", {})
        if shipped.get("rdkit") == rdkit.__version__:
            from .checkpoint import verify_files

            verify_files(Path(run_dir), {"novelty.npz": shipped["sha256"]})
            with np.load(Path(run_dir) / "novelty.npz", allow_pickle=False) as f:
                return HashedStrings(f["hashes"])
    h = hashlib.sha256(rdkit.__version__.encode())
    for s in train_strings:
        h.update(s.encode() + b"\n")
    path = cache_root(cache_dir) / "canonical" / f"{h.hexdigest()[:24]}.txt"
    if path.is_file():
        return set(path.read_text(encoding="utf-8").splitlines()) - {""}
    out = set(canonical(train_strings, True)) - {None}
    write_lines(path, sorted(out))
    return out


def in_language(strings, grammar=None) -> list:
    """Decodes of the character baseline are valid only if the real ``grammar`` parses them (None
    in their place otherwise); with ``grammar=None`` the strings are kept as they are."""
    if grammar is None:
        return list(strings)
    return [s if s is not None and _parses(grammar, s) else None for s in strings]


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


def molecule_grid(strings, path: Path, n: int = 24, per_row: int = 6, keep_order: bool = False,
                  legends: list[str] | None = None) -> None:
    """A PNG of molecules: the first ``n`` valid ones, or (``keep_order``) the first ``n`` strings in
    order with an empty cell where a string is not a molecule (for interpolation strips)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem.Draw import rdMolDraw2D

    from .io import atomic_write_bytes

    RDLogger.DisableLog("rdApp.*")
    parsed = [Chem.MolFromSmiles(s) if s else None for s in strings]
    if keep_order:
        mols = [m if m is not None else Chem.Mol() for m in parsed[:n]]
        labels = legends[:n] if legends else None
    else:
        mols = [m for m in parsed if m is not None][:n]
        labels = None
    if not mols:
        return
    # the Cairo drawer directly: Draw.MolsToGridImage returns an IPython image inside notebooks
    per_row, (w, h) = min(per_row, len(mols)), (220, 180)
    rows = -(-len(mols) // per_row)
    d = rdMolDraw2D.MolDraw2DCairo(per_row * w, rows * h, w, h)
    d.DrawMolecules(mols, legends=labels) if labels else d.DrawMolecules(mols)
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
