"""Write notebooks/*.ipynb from the cells below, then execute them in place (outputs kept).

    python scripts/build_notebooks.py [quickstart molecules_bo images] [--no-execute]

The notebooks are generated so that an API change is edited here once; `tests/test_notebooks.py`
(slow) executes the committed notebooks top to bottom.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

QUICKSTART = [
    ("md", """# grammar-rae quickstart: expressions end to end

Grammars as data → exact parsing → a GrammarRAE trained on the CPU → ex-post density sampling → plots.
Then the shipped `expr-grae` (trained on the whole GrammarVAE expression set). Offline; about two
minutes on a 2-core CPU."""),
    ("code", """from grammar_rae import load_grammar

g = load_grammar("expr")
print(g)
for i, p in enumerate(g.productions):
    print(i, p)"""),
    ("md", """## Strings ↔ rule sequences
`parse` gives the leftmost derivation (exactly NLTK's), `derive` turns it back into the string."""),
    ("code", """rules = g.parse("1 / 3 + ( x ) + sin( x * x )")
print(rules)
print(g.derive(rules))"""),
    ("md", """## The GrammarVAE expression set (shipped with the package)
100,000 expressions of at most 15 rules, as the GrammarVAE released them; we train on 30,000 of them here."""),
    ("code", """from pathlib import Path
import numpy as np
from grammar_rae.data.shipped import shipped_path

work = Path("runs/quickstart")
work.mkdir(parents=True, exist_ok=True)
lines = shipped_path("expressions").read_text().splitlines()
pick = np.random.default_rng(0).choice(len(lines), 30_000, replace=False)
expressions = [lines[i] for i in sorted(pick)]
(work / "expr.txt").write_text("\\n".join(expressions) + "\\n")
expressions[:5]"""),
    ("md", """## Train a GrammarRAE (RAE-L2, teacher-forced decoder)
One trainer for every model, with the measured CPU recipe (`grammar-rae recipes`); a checkpoint per epoch
(resumable); the Gaussian and GMM densities are fitted on the training codes at the end. The history holds
the exact (argmax) reconstruction of 500 validation expressions after every epoch."""),
    ("code", """import shutil
import grammar_rae

shutil.rmtree(work / "rae-l2", ignore_errors=True)
model = grammar_rae.train(work / "rae-l2", "expr", "rae-l2", data=work / "expr.txt", epochs=3,
                          progress=False, log=None, cache_dir=work / "cache")
print(model)
for h in model.run.history:
    print(f"epoch {h['epoch']}: validation loss {h['val_rec']:.3f} nats, "
          f"exact reconstruction {h['val_recon']:.1%}, {h['elapsed']:.0f} s")"""),
    ("md", """## Sample from the ex-post densities
The prior N(0, I) is what a VAE would use; the RAE's codes are not N(0, I)-distributed, so the paper fits a
density on the training codes after training (ex-post)."""),
    ("code", """from grammar_rae.metrics import generation_metrics

for density in model.densities:
    strings = model.sample(500, density=density)
    m = generation_metrics(strings, molecules=False, training=expressions)
    print(f"{density:>8}: validity {m['validity']:.1%}, unique {m['uniqueness']:.1%}, novel {m['novelty']:.1%}")"""),
    ("md", """## The shipped model
`expr-grae` was trained on the whole set (README lists its measured numbers); any command or function that
takes a run directory also takes its name."""),
    ("code", """shipped = grammar_rae.load("expr-grae", device="cpu")
_, _, test_rows = shipped.run.split()                           # held out from its training
held_out = [lines[i] for i in test_rows[:1000]]
r = shipped.reconstruct(held_out)
print(f"expr-grae: {sum(row.match for row in r.rows)}/{len(r.rows)} held-out expressions reconstructed exactly")
for row in r.rows[:3]:
    print(f"  {row.input:28} -> {row.output}")
strings = shipped.sample(500, density="gmm", seed=1)
m = generation_metrics(strings, molecules=False, training=lines)
print(f"expr-grae GMM samples: validity {m['validity']:.1%}, unique {m['uniqueness']:.1%}, "
      f"novel (not among the 100,000) {m['novelty']:.1%}")"""),
    ("md", "## Plot some sampled functions"),
    ("code", """%matplotlib inline
import matplotlib.pyplot as plt
from grammar_rae.metrics import expression_curves

shown = [s for s in strings if s][:10]
x, ys = expression_curves(shown)
fig, ax = plt.subplots(figsize=(7, 4))
for s, y in zip(shown, ys):
    if y is not None:
        ax.plot(x, np.clip(y, -30, 30), label=s)
ax.legend(fontsize=6)
ax.set_title("expressions decoded from expr-grae's GMM")
plt.show()"""),
]

MOLECULES = [
    ("md", """# grammar-rae molecules: the shipped zinc-grae and a short Bayesian optimisation

SMILES → exact leftmost derivations under the GrammarVAE's 76-rule grammar → the shipped `zinc-grae`
(a teacher-forced GrammarRAE trained on ZINC250k; what it reaches is in its `run.json` and README) →
reconstruction of held-out molecules → ex-post GMM sampling checked with RDKit → an interpolation →
latent-space BO of penalised logP with a sparse GP and batched expected improvement. Offline, a few
minutes on a 2-core CPU."""),
    ("code", """from pathlib import Path
import shutil
import grammar_rae

work = Path("runs/molecules")
shutil.rmtree(work, ignore_errors=True)
work.mkdir(parents=True)
m = grammar_rae.load("zinc-grae", device="cpu")
print(m)
for line in m.meta["pretrained"]["summary"]:
    print(" -", line)"""),
    ("md", "## Parse: exact, fast, and reversible"),
    ("code", """g = m.grammar
smi = "CC(C)(C)c1ccc2occ(CC(=O)Nc3ccccc3F)c2c1"
rules = g.parse(smi)
print(smi, "->", len(rules), "rules; round trip:", g.derive(rules) == smi)"""),
    ("md", """## Reconstruct held-out molecules
The GrammarVAE's test set is the first 5,000 rows of ZINC250k (shipped, gzipped, with its checksum); a
molecule counts when the argmax decode is the same molecule (canonical SMILES)."""),
    ("code", """from grammar_rae.data.shipped import shipped_path

zinc = [s.strip() for s in shipped_path("zinc250k").read_text().splitlines()]
held_out = zinc[:200]
r = m.reconstruct(held_out)
print(f"{sum(row.match for row in r.rows)}/{len(r.rows)} held-out molecules reconstructed exactly ({r.rate:.1%})")
for row in r.rows[:5]:
    print(f"  {row.input}\\n  -> {row.output}")"""),
    ("md", """## New molecules from the ex-post GMM
Validity is RDKit's (a grammar-complete string that RDKit cannot sanitise is invalid); novelty is against
the training molecules (a hashed set of their canonical SMILES ships with the model)."""),
    ("code", """from IPython.display import Image, display
from grammar_rae.evaluate import molecule_grid, training_canonical
from grammar_rae.metrics import generation_metrics

samples = m.sample(500, density="gmm", seed=0)
train_set = training_canonical([], True, run_dir=m.run_dir)
stats = generation_metrics(samples, True, training_canonical=train_set)
print(f"500 GMM samples: {stats['validity']:.1%} valid, {stats['uniqueness']:.1%} unique, "
      f"{stats['novelty']:.1%} novel")
molecule_grid(samples, work / "samples.png", n=12)
display(Image(str(work / "samples.png")))"""),
    ("md", "## An interpolation between two held-out molecules"),
    ("code", """path = m.interpolate(held_out[0], held_out[1], steps=8)
molecule_grid(path, work / "interpolation.png", n=8, per_row=8, keep_order=True)
display(Image(str(work / "interpolation.png")))"""),
    ("md", """## Bayesian optimisation of penalised logP
Three iterations of ten points on one seed, with the GP fitted on the codes of 2,000 ZINC molecules. The
published protocol (`grammar-rae optimize --protocol gvae --objective logp --run zinc-grae --seeds 1,2,3,4,5`:
all of ZINC250k's codes, 5 × 50 points, 500 inducing points) takes hours on a CPU; README gives the numbers.
This cell runs that protocol's rules (`protocol="gvae"`) at a small size; the default preset is README's."""),
    ("code", """report = m.optimize("logp", work / "bo", protocol="gvae", iterations=3, batch=10, seeds=(1,), n_decode=20, inducing=100,
                    gp_epochs=15, gp_lr=5e-3, progress=False, log=None, data_rows=2000)
s = report["summary"]
print(f"best in the GP's data: {report['data_best']:.2f}; fraction valid {s['fraction_valid']['mean']:.2f}")
for t in s["top3"]:
    print(f"  {t['score']:.2f}  {t['string']}")
display(Image(str(work / "bo" / "best_vs_evaluations.png")))
display(Image(str(work / "bo" / "best_molecules.png")))"""),
]

IMAGES = [
    ("md", """# grammar-rae images: the RAE family on digits

The RAE paper's Table 1 in miniature: a deterministic RAE and a VAE on scikit-learn's 8×8 digits (offline),
ex-post density sampling (one Gaussian, a 10-component GMM), and the four Table-1 columns — REC, N, GMM,
Interp — as Fréchet distances in the feature space of a small classifier trained on the training split
(an offline stand-in for Inception FID; pass `inception=` weights for the real thing). A minute or two on CPU."""),
    ("code", """from pathlib import Path
import shutil
from grammar_rae.data.images import load_images

work = Path("runs/images")
shutil.rmtree(work, ignore_errors=True)
d = load_images("digits")
print({k: len(v) for k, v in d.rows.items()}, d.shape)"""),
    ("md", """## Train two models on the shared backbone
`rae-l2` (decoder weight decay, RAE eq. 11) and the `vae` baseline, with the paper's MNIST β/λ; one trainer,
best-validation checkpoints; the Gaussian and GMM densities are fitted on the training codes afterwards.
fp32 and no gradient clipping, as the paper trained its image models."""),
    ("code", """from grammar_rae.image_runs import train_image_run
from grammar_rae.trainer import TrainConfig

runs = {}
for model in ("rae-l2", "vae"):
    cfg = TrainConfig(epochs=15, batch_size=64, lr=1e-3, lr_factor=0.5, lr_patience=5, min_lr=1e-6,
                      amp=False, grad_clip=0.0)
    runs[model] = train_image_run(work / model, "digits", model, train=cfg, progress=False, log=lambda m: None)
runs"""),
    ("md", "## Samples: prior vs ex-post densities"),
    ("code", """%matplotlib inline
import matplotlib.pyplot as plt
from grammar_rae.image_runs import sample_images

fig, axes = plt.subplots(2, 3, figsize=(9, 6))
for row, model in enumerate(runs):
    for col, density in enumerate(("prior", "gaussian", "gmm")):
        imgs = sample_images(runs[model], 16, density=density, seed=0)
        grid = imgs[:, 0].reshape(4, 4, 8, 8).permute(0, 2, 1, 3).reshape(32, 32)
        axes[row, col].imshow(grid, cmap="gray")
        axes[row, col].set_title(f"{model}: {density}")
        axes[row, col].axis("off")
plt.show()"""),
    ("md", """## The four Table-1 columns
Lower is better; `reference_test_vs_val` (held-out real digits vs the test set) is the floor."""),
    ("code", """from grammar_rae.image_runs import evaluate_image_run

table = {m: evaluate_image_run(r, n=360, cache_dir=work / "cache", log=lambda m: None) for m, r in runs.items()}
print(table["rae-l2"]["metric"])
print(f"{'model':8} {'REC':>7} {'N':>7} {'GMM':>7} {'Interp':>7}")
for m, r in table.items():
    print(f"{m:8} {r['rec']:7.2f} {r['n']:7.2f} {r['gmm']:7.2f} {r['interp']:7.2f}   (floor {r['reference_test_vs_val']:.2f})")"""),
    ("md", "## Interpolations between test digits"),
    ("code", """from PIL import Image

plt.figure(figsize=(8, 6))
plt.imshow(Image.open(runs["rae-l2"] / "eval" / "interp_strips.png"))
plt.axis("off")
plt.show()"""),
]

BOOKS = {"quickstart": QUICKSTART, "molecules_bo": MOLECULES, "images": IMAGES}


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook(metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                                "language_info": {"name": "python"}})
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in BOOKS[name]]
    return nb


def main(argv: list[str]) -> None:
    execute = "--no-execute" not in argv
    names = [a for a in argv if not a.startswith("--")] or list(BOOKS)
    for name in names:
        nb = build(name)
        if execute:
            import time

            import nbclient

            os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
            t0 = time.time()
            nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3",
                                    resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
            print(f"{name}: executed in {time.time() - t0:.0f} s")
        nbformat.write(nb, NOTEBOOKS / f"{name}.ipynb")


if __name__ == "__main__":
    main(sys.argv[1:])
