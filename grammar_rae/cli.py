"""The ``grammar-rae`` command line. Every command is a thin layer over the Python API."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from . import __version__

GRAMMAR_HELP = "Grammar: a shipped name (smiles, expr) or the path of a .cfg file."


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="grammar-rae")
def main():
    """Regularized Autoencoders on grammar-decoded molecules and expressions, and on images.

    Start with `grammar-rae demo`, or `grammar-rae COMMAND --help` for any command.
    """


# ---------------------------------------------------------------------------------------- grammar
@main.group()
def grammar():
    """Inspect grammars and parse strings with them."""


@grammar.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def grammar_show(name, as_json):
    """Rules, left-hand sides with their masks, terminals and parser facts of a grammar.

    NAME is a shipped grammar (smiles, expr) or a .cfg path.
    """
    g = _load(name)
    p = g.parser
    facts = {
        "name": g.name, "path": g.path, "sha256": g.sha256, "start": g.start_symbol,
        "n_rules": g.n_rules, "padding_index": g.padding_index,
        "productions": g.productions,
        "lhs": [{"symbol": s, "rules": [int(r) for r in g.lhs_mask[i].nonzero()[0]]}
                for i, s in enumerate(g.lhs_list)],
        "terminals": g.terminals, "token_separator": g.token_separator,
        "lr_states": p.n_states, "lr_conflict_cells": p.n_conflicts, "c_parser": p.accelerated,
    }
    if as_json:
        click.echo(json.dumps(facts, indent=1))
        return
    click.echo(f"grammar {g.name}  ({g.path})")
    click.echo(f"  start symbol {g.start_symbol}; {g.n_rules} productions "
               f"(padding = rule {g.padding_index}); {len(g.lhs_list)} left-hand sides")
    click.echo(f"  {len(g.terminals)} terminals: " + " ".join(g.terminals))
    click.echo(f"  token separator {g.token_separator!r}; sha256 {g.sha256[:16]}…")
    click.echo(f"  exact parser: LR(1), {p.n_states} states, {p.n_conflicts} conflicting cells "
               f"(explored by backtracking); C driver {'on' if p.accelerated else 'OFF (pure Python)'}")
    click.echo("\nproductions:")
    for i, prod in enumerate(g.productions):
        click.echo(f"  {i:3d}  {prod}")
    click.echo("\nleft-hand sides (mask = the rules each may expand with):")
    for lhs in facts["lhs"]:
        rules = lhs["rules"]
        span = f"{rules[0]}–{rules[-1]}" if rules == list(range(rules[0], rules[-1] + 1)) else str(rules)
        click.echo(f"  {lhs['symbol']:<18} {len(rules):2d} rules  {span}")


@grammar.command("parse")
@click.argument("name")
@click.argument("strings", nargs=-1, required=True)
@click.option("--productions", is_flag=True, help="Print productions instead of indices.")
def grammar_parse(name, strings, productions):
    """Print the leftmost derivation (rule indices) of each STRING."""
    from .grammar import ParseError

    g = _load(name)
    failed = 0
    for s in strings:
        try:
            seq = g.parse(s)
        except ParseError as e:
            click.echo(f"error: {e}", err=True)
            failed += 1
            continue
        if productions:
            click.echo(f"{s}\n" + "\n".join(f"  {r:3d}  {g.productions[r]}" for r in seq))
        else:
            click.echo(" ".join(map(str, seq)))
    sys.exit(1 if failed else 0)


def _load(name):
    from .grammar import GrammarError, load_grammar

    try:
        return load_grammar(name)
    except (FileNotFoundError, GrammarError) as e:
        raise click.ClickException(str(e))


# ---------------------------------------------------------------------------------------- data
@main.group()
def data():
    """Obtain, generate and parse datasets."""


@data.command("prepare")
@click.option("--grammar", "grammar_name", required=True, help=GRAMMAR_HELP)
@click.option("--input", "input_path", type=click.Path(dir_okay=False),
              help="A .smi/.txt file (one string a line) or a .csv file.")
@click.option("--dataset", type=click.Choice(["zinc250k"]), default=None,
              help="A downloaded dataset instead of --input (see `grammar-rae data download`).")
@click.option("--column", default=None, help="CSV column holding the strings (default: 'smiles' or the first).")
@click.option("--workers", default=0, show_default=True, help="Parser processes; 0 = all cores.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache folder (default $GRAMMAR_RAE_CACHE or ~/.cache/grammar-rae).")
@click.option("--no-cache", is_flag=True, help="Parse again even if a cached result exists.")
@click.option("--show-errors", default=20, show_default=True, help="Unparseable lines to print.")
def data_prepare(grammar_name, input_path, dataset, column, workers, cache_dir, no_cache, show_errors):
    """Parse a file into rule indices once and cache them (uint8, keyed by grammar and file hash).

    Unparseable lines are reported as FILE:LINE with the reason, skipped and counted.
    """
    from .data.download import zinc250k_path
    from .data.parsed import DataFormatError, prepare_dataset

    g = _load(grammar_name)
    if (input_path is None) == (dataset is None):
        raise click.UsageError("give exactly one of --input FILE or --dataset NAME")
    if dataset == "zinc250k":
        try:
            input_path = str(zinc250k_path(cache_dir))
        except FileNotFoundError as e:
            raise click.ClickException(str(e))
    if not Path(input_path).is_file():
        raise click.ClickException(f"no such input file: {input_path}")
    t0 = time.time()
    try:
        ds = prepare_dataset(g, input_path, column=column, workers=workers, cache_dir=cache_dir,
                             use_cache=not no_cache, progress=True, show_errors=show_errors)
    except DataFormatError as e:
        raise click.ClickException(str(e))
    click.echo(f"done in {time.time() - t0:.1f}s: {len(ds)} parsed, {len(ds.skipped)} skipped"
               + (f"; cache {ds.cache_path}" if ds.cache_path else ""))


@data.command("download")
@click.argument("dataset", type=click.Choice(["zinc250k", "mnist", "cifar10"]))
@click.option("--path", type=click.Path(exists=True), default=None,
              help="Use a local copy (file or folder) instead of downloading; it is checksum-verified.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Cache folder.")
def data_download(dataset, path, cache_dir):
    """Download a public dataset, verify its checksum and keep it in the cache.

    zinc250k: the GrammarVAE SMILES file; mnist: the four IDX files; cifar10: the binary version
    (unpacked in the cache). CelebA has no stable public URL: pass its aligned-image folder to
    `grammar-rae images train --dataset celeba --data FOLDER`."""
    from .data.download import ChecksumError, fetch

    try:
        out = fetch(dataset, cache_dir=cache_dir, path=path)
    except (ChecksumError, RuntimeError, FileNotFoundError) as e:
        raise click.ClickException(str(e))
    click.echo(f"{dataset}: verified, in {out}")


@data.command("generate-expressions")
@click.option("--n", "n", default=100_000, show_default=True, help="How many distinct expressions.")
@click.option("--seed", default=0, show_default=True)
@click.option("--max-length", default=15, show_default=True, help="Most rules in a derivation (GrammarVAE: 15).")
@click.option("--grammar", "grammar_name", default="expr", show_default=True, help=GRAMMAR_HELP)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output text file.")
def data_generate(n, seed, max_length, grammar_name, out):
    """Sample a fresh, seeded set of strings from a grammar (one a line)."""
    from .data.expressions import generate_expressions

    g = _load(grammar_name)
    try:
        strings = generate_expressions(n, seed=seed, max_length=max_length, grammar=g)
    except (RuntimeError, ValueError) as e:
        raise click.ClickException(str(e))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("".join(s + "\n" for s in strings), encoding="utf-8")
    click.echo(f"wrote {len(strings)} strings to {out}")


# ---------------------------------------------------------------------------------------- models
from .models.family import GRAMMAR_MODELS, IMAGE_MODELS  # noqa: E402  (a table of names: cheap to import)

MODEL_CHOICES = [*GRAMMAR_MODELS, "cvae"]


@main.command()
@click.option("--grammar", "grammar_name", type=click.Choice(["smiles", "expr"]), default="expr", show_default=True,
              help="What to model: SMILES molecules or arithmetic expressions.")
@click.option("--model", type=click.Choice(MODEL_CHOICES), default="rae-l2", show_default=True,
              help="Regulariser family: RAE with L2/GP/SN decoder regularisation, plain RAE, AE, VAE, CV-VAE; "
                   "cvae = the character-level VAE baseline (no grammar in the decoder).")
@click.option("--arch", type=click.Choice(["teacher-forced", "gvae"]), default="teacher-forced", show_default=True,
              help="teacher-forced: conv encoder over rule embeddings + a GRU decoder that reads the previous rule "
                   "and z at every step (learns hundreds of times faster); gvae: the GrammarVAE's networks, to "
                   "reproduce the papers.")
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Training strings (default: the shipped ZINC250k for smiles, generated expressions for expr).")
@click.option("--limit", type=int, default=None, help="Use only the first N rows of the data.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to create.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--init-from", default=None,
              help="Start from the network of a run directory or shipped model (e.g. zinc-grae): continue "
                   "training it, or fine-tune it on --data. Its architecture and sizes are used.")
@click.option("--device", default="auto", show_default=True,
              help="auto, cpu, cuda, cuda:1, ... It also picks the recipe: small batches on a CPU, large on a GPU.")
@click.option("--epochs", type=int, default=None, help="Default: the recipe's (see `grammar-rae recipes`).")
@click.option("--batch-size", type=int, default=None, help="Default: the recipe's.")
@click.option("--lr", type=float, default=None, help="Adam learning rate. Default: the recipe's.")
@click.option("--lr-factor", type=float, default=None, help="ReduceLROnPlateau factor. Default: the recipe's.")
@click.option("--lr-patience", type=int, default=None,
              help="Epochs without a better validation loss before the learning rate drops. Default: the recipe's.")
@click.option("--warmup-steps", type=int, default=None, help="Linear learning-rate warm-up steps. Default: the recipe's.")
@click.option("--grad-clip", type=float, default=None,
              help="Clip the gradient's global norm (0: off). Default: the recipe's (5 for teacher-forced).")
@click.option("--latent-dim", type=int, default=None, help="Default: 25 (expr), 56 (smiles).")
@click.option("--decoder-hidden", type=int, default=None, help="GRU width. Default: the recipe's.")
@click.option("--decoder-layers", type=int, default=None, help="GRU layers. Default: the recipe's.")
@click.option("--encoder-hidden", type=int, default=None, help="Encoder dense width. Default: the recipe's.")
@click.option("--decoder", type=click.Choice(["gvae", "autoregressive"]), default=None,
              help="--arch gvae only: its z-repeated decoder (default), or one that also reads the previous rule.")
@click.option("--beta", type=float, default=None, help="Weight of the latent term (½‖z‖², or KL for VAE).")
@click.option("--lam", type=float, default=None, help="Weight of the decoder regulariser (L2 / GP).")
@click.option("--vae-epsilon-std", type=float, default=None,
              help="vae/cvae: scale of the reparameterisation noise. 1.0 (default) is the textbook VAE; 0.01 is "
                   "the GrammarVAE code's convention (its published baselines), which avoids posterior collapse.")
@click.option("--test-split", type=click.Choice(["first", "random"]), default=None,
              help="Held-out test rows (min(5000, n/10)): the first rows (default for smiles: the GrammarVAE "
                   "protocol) or a seeded random sample (default otherwise: safe for files in a systematic order).")
@click.option("--amp/--no-amp", default=None,
              help="Mixed precision (bf16 autocast). Default: on for CUDA and for the CPU recipes.")
@click.option("--threads", type=int, default=None, help="CPU threads for PyTorch (default: PyTorch's choice).")
@click.option("--max-minutes", type=float, default=0.0,
              help="Stop cleanly before an epoch that would not finish within this many minutes of this command "
                   "(e.g. a lent GPU's command limit); the same command with --resume goes on. 0: no limit.")
@click.option("--seed", default=0, show_default=True)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Data cache folder.")
def train(grammar_name, model, arch, data, limit, out, resume, init_from, device, epochs, batch_size, lr, lr_factor, lr_patience,
          warmup_steps, grad_clip, latent_dim, decoder_hidden, decoder_layers, encoder_hidden, decoder, beta, lam,
          vae_epsilon_std, test_split, amp, threads, max_minutes, seed, cache_dir):
    """Train a grammar autoencoder into a run directory, then fit its ex-post densities.

    Settings not given come from the measured recipe for the grammar, architecture and device
    (`grammar-rae recipes` lists them). A checkpoint is written atomically after every epoch; after a
    kill, the same command with --resume continues from the last finished epoch.
    """
    from .checkpoint import RunError
    from .recipes import train_config
    from .run import train_run
    from .train import TrainingDiverged

    overrides = {k: v for k, v in dict(latent_dim=latent_dim, beta=beta, lam=lam, decoder=decoder,
                                       decoder_hidden=decoder_hidden, decoder_layers=decoder_layers,
                                       encoder_hidden=encoder_hidden, vae_epsilon_std=vae_epsilon_std).items()
                 if v is not None}
    cfg = train_config(grammar_name, arch, device, epochs=epochs, batch_size=batch_size, lr=lr,
                       lr_factor=lr_factor, lr_patience=lr_patience, warmup_steps=warmup_steps, grad_clip=grad_clip,
                       amp=amp, threads=threads, max_minutes=max_minutes, seed=seed)
    try:
        run = train_run(out, grammar_name, model, data=data, limit=limit, train=cfg, resume=resume,
                        cache_dir=cache_dir, log=click.echo, test_split=test_split, arch=arch, init_from=init_from,
                        **overrides)
    except (RunError, TrainingDiverged, FileNotFoundError) as e:
        raise click.ClickException(str(e))
    click.echo(f"done: {run} (sample with `grammar-rae sample --run {run} --n 100 --out samples.txt`)")


@main.group()
def pretrained():
    """Pretrained models shipped inside the package (zinc-grae, expr-grae).

    A shipped NAME works wherever a command takes --run (an existing directory of that name wins):
    `grammar-rae sample --run zinc-grae --n 100 --out mols.smi`."""


@pretrained.command("list")
def pretrained_list():
    """The shipped models, with what each was trained on and what it reaches."""
    from .checkpoint import read_json
    from .pretrained import available, path

    names = available()
    if not names:
        click.echo("no pretrained models are shipped with this installation")
    for name in names:
        meta = read_json(path(name) / "run.json")
        about = meta.get("pretrained", {})
        click.echo(f"{name}: {meta.get('label')} on {meta.get('base_grammar', meta.get('grammar'))} "
                   f"({meta['model'].get('arch', 'gvae')}, {meta['data'].get('rows')} rows)")
        for line in about.get("summary", []):
            click.echo(f"    {line}")


@pretrained.command("path")
@click.argument("name")
def pretrained_path(name):
    """Print the directory of the shipped model NAME."""
    from .checkpoint import RunError
    from .pretrained import path

    try:
        click.echo(str(path(name)))
    except RunError as e:
        raise click.ClickException(str(e))


@main.command()
def recipes():
    """The training recipes `train` uses by default, per grammar, architecture and device."""
    from .recipes import RECIPES

    for (grammar_name, arch, kind), r in RECIPES.items():
        click.echo(f"{grammar_name:<7} {arch:<15} {kind:<5} {r.note}")
        click.echo(f"        network: {r.model or 'the architecture defaults'}")
        click.echo(f"        training: " + ", ".join(f"{k}={v}" for k, v in r.train.items()))


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="A trained run directory.")
@click.option("--n", "n", default=1000, show_default=True)
@click.option("--density", type=click.Choice(["prior", "gaussian", "gmm"]), default="gmm", show_default=True,
              help="Where codes come from: N(0, I), or the Gaussian / GMM fitted on the training codes.")
@click.option("--stochastic", is_flag=True, help="Sample rules (at --temperature) instead of taking the argmax.")
@click.option("--temperature", default=1.0, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Output file: one string a line (an empty line for an invalid decode).")
def sample(run_dir, n, density, stochastic, temperature, seed, device, out):
    """Decode N strings from codes drawn from the run's ex-post density."""
    from .checkpoint import RunError
    from .run import sample_run

    try:
        strings = sample_run(run_dir, n, density, seed=seed, stochastic=stochastic, temperature=temperature,
                             device=device)
    except RunError as e:
        raise click.ClickException(str(e))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("".join((s or "") + "\n" for s in strings), encoding="utf-8")
    valid = sum(s is not None for s in strings)
    click.echo(f"{n} samples ({density}): {valid / max(n, 1):.1%} grammar-complete, "
               f"{len(set(s for s in strings if s)) / max(valid, 1):.1%} unique; written to {out}")


def _read_lines(path):
    from .data.parsed import read_strings

    try:
        return list(read_strings(path))
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e))


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="A trained run directory.")
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False), help="Strings, one a line.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Codes as .npy (float32 [n, d]) or .csv; rows follow the parseable input lines.")
@click.option("--device", default="auto", show_default=True)
def encode(run_dir, input_path, out, device):
    """Latent codes (encoder means) of the strings in a file. Unparseable lines are reported and skipped."""
    from .checkpoint import RunError
    from .run import encode_strings

    records = _read_lines(input_path)
    try:
        z, keep, errors = encode_strings(run_dir, [s for _, s in records], device=device)
    except RunError as e:
        raise click.ClickException(str(e))
    for i, err in errors:
        click.echo(f"{input_path}:{records[i][0]}: skipped: {err or 'longer than the decoder can produce'}", err=True)
    _write_codes(out, z)
    click.echo(f"{len(keep)} codes written to {out}; {len(errors)} lines skipped")


def _write_codes(path, z):
    import numpy as np

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if str(path).endswith(".csv"):
        np.savetxt(path, z, delimiter=",", fmt="%.7g")
    else:
        np.save(path, z)


def _read_codes(path):
    import numpy as np

    try:
        if str(path).endswith(".csv"):
            return np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float32)
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise click.ClickException(f"cannot read codes from {path}: {e}")


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="A trained run directory.")
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Codes: .npy or .csv, [n, latent_dim].")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Strings, one a line (empty = invalid).")
@click.option("--stochastic", is_flag=True, help="Sample rules instead of taking the argmax.")
@click.option("--temperature", default=1.0, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
def decode(run_dir, input_path, out, stochastic, temperature, seed, device):
    """Strings decoded from latent codes under the grammar's masks."""
    from .checkpoint import RunError
    from .run import decode_codes

    try:
        strings = decode_codes(run_dir, _read_codes(input_path), stochastic, temperature, seed, device)
    except RunError as e:
        raise click.ClickException(str(e))
    Path(out).write_text("".join((s or "") + "\n" for s in strings), encoding="utf-8")
    click.echo(f"{len(strings)} decodes written to {out}; {sum(s is not None for s in strings)} complete")


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="A trained run directory.")
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False), help="Strings, one a line.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="TSV: input, reconstruction, match.")
@click.option("--device", default="auto", show_default=True)
def reconstruct(run_dir, input_path, out, device):
    """Encode and decode (argmax) each string; report the fraction reconstructed exactly."""
    from .checkpoint import RunError
    from .run import decode_codes, encode_strings

    records = _read_lines(input_path)
    strings = [s for _, s in records]
    try:
        z, keep, errors = encode_strings(run_dir, strings, device=device)
        back = decode_codes(run_dir, z, device=device)
    except RunError as e:
        raise click.ClickException(str(e))
    for i, err in errors:
        click.echo(f"{input_path}:{records[i][0]}: skipped: {err or 'longer than the decoder can produce'}", err=True)
    rows = [(strings[i], b or "", strings[i] == b) for i, b in zip(keep, back)]
    if out:
        Path(out).write_text("".join(f"{a}\t{b}\t{int(m)}\n" for a, b, m in rows), encoding="utf-8")
    hits = sum(m for _, _, m in rows)
    click.echo(f"reconstructed {hits}/{len(rows)} exactly ({hits / max(len(rows), 1):.1%}); "
               f"{len(errors)} lines skipped")


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="A trained run directory.")
@click.option("--n-samples", default=1000, show_default=True, help="Samples per density (prior, Gaussian, GMM).")
@click.option("--n-recon", default=1000, show_default=True, help="Test rows for reconstruction accuracy.")
@click.option("--gvae-protocol", is_flag=True,
              help="Also the GrammarVAE protocol: each test row encoded 10x and decoded 100x by sampling (slow).")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Data cache folder.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default RUN/eval; eval/NAME for a shipped pretrained model).")
def evaluate(run_dir, n_samples, n_recon, gvae_protocol, seed, device, cache_dir, out):
    """Reconstruction accuracy and validity/uniqueness/novelty of prior, Gaussian and GMM samples.

    Writes metrics.json, report.md, the samples and a plot (molecule grid or function plot).
    """
    from .checkpoint import RunError
    from .evaluate import evaluate_run

    try:
        report = evaluate_run(run_dir, n_samples, n_recon, gvae_protocol, seed, device, cache_dir, log=click.echo,
                              out=out)
    except RunError as e:
        raise click.ClickException(str(e))
    click.echo(f"written: {report['out']}/metrics.json, report.md")


@main.command()
@click.option("--objective", required=True,
              help="logp (penalised, normalised), qed, expr (fit to --target), or package.module:function.")
@click.option("--target", default=None, help='For --objective expr: the expression to fit, e.g. "1 / 3 + x + sin( x * x )".')
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="A trained run directory.")
@click.option("--iterations", default=5, show_default=True)
@click.option("--batch", default=50, show_default=True, help="Points per iteration (batched greedy EI).")
@click.option("--seeds", default="1", show_default=True, help="Comma-separated seeds, e.g. 1,2,3,4,5.")
@click.option("--n-decode", type=int, default=None, help="Decodes per point (default 500 molecules / 25 expressions).")
@click.option("--inducing", default=500, show_default=True, help="Sparse-GP inducing points.")
@click.option("--gp-epochs", default=50, show_default=True,
              help="Sparse-GP epochs per fit (protocol: 50 at lr 5e-4; 10 at lr 5e-3 fitted as well and ran "
                   "≈ 4× faster here, see BENCHMARKS.md).")
@click.option("--gp-refit-epochs", type=int, default=None,
              help="After the first iteration, warm-start the GP from the previous one and train this many "
                   "epochs (default: refit from scratch every iteration, as the protocol does).")
@click.option("--gp-lr", default=5e-4, show_default=True)
@click.option("--gp", "gp_backend", type=click.Choice(["native", "botorch"]), default="native", show_default=True,
              help="native: our sparse GP + batched greedy EI (the GrammarVAE protocol); botorch: BoTorch's "
                   "SingleTaskVariationalGP + sequential qLogEI (pip install \"grammar-rae[botorch]\").")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (resumable).")
def optimize(objective, target, run_dir, iterations, batch, seeds, n_decode, inducing, gp_epochs, gp_refit_epochs,
             gp_lr, gp_backend, device, out):
    """Bayesian optimisation in the latent space of a trained run (the GrammarVAE/RAE protocol).

    Writes OUT/report.json (every evaluation and a summary), report.md, best_vs_evaluations.png and,
    for molecules, best_molecules.png. Re-running the same command resumes after the last iteration.
    """
    from .checkpoint import RunError
    from .optimize.bo import optimize as run_bo

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter("seeds must be integers separated by commas", param_hint="--seeds")
    try:
        report = run_bo(run_dir, objective, out, target=target, iterations=iterations, batch=batch, seeds=seed_list,
                        n_decode=n_decode, device=device,
                        gp_kw={"n_inducing": inducing, "epochs": gp_epochs, "lr": gp_lr,
                               "refit_epochs": gp_refit_epochs, "backend": gp_backend}, log=click.echo)
    except (RunError, ValueError, ImportError) as e:
        raise click.ClickException(str(e))
    s = report["summary"]
    click.echo(f"fraction valid {s['fraction_valid']['mean']:.2f}, average score {s['average_score']['mean']:.3f}; "
               f"top: " + ", ".join(f"{t['string']} ({t['score']:.3f})" for t in s["top3"]))
    click.echo(f"report: {Path(out) / 'report.json'}")


# ---------------------------------------------------------------------------------------- images
@main.group()
def images():
    """The image RAE family (RAE paper, Table 1): train, sample, evaluate."""


@images.command("train")
@click.option("--dataset", type=click.Choice(["digits", "mnist", "cifar10", "celeba"]), default="digits",
              show_default=True,
              help="digits ships with scikit-learn (offline); mnist / cifar10 from --data FOLDER or the download "
                   "cache (`grammar-rae data download mnist|cifar10`); celeba from --data FOLDER of aligned images.")
@click.option("--model", type=click.Choice(IMAGE_MODELS),
              default="rae-l2", show_default=True,
              help="The nine rows of the RAE paper's Table 1; β and λ default to the paper's per dataset.")
@click.option("--epochs", default=20, show_default=True)
@click.option("--batch-size", default=100, show_default=True)
@click.option("--lr", default=5e-4, show_default=True)
@click.option("--backbone", type=click.Choice(["paper", "celeba", "small"]), default=None,
              help="paper: the RAE paper's MNIST/CIFAR network; celeba: its CelebA network; small: for "
                   "digits and quick CPU runs. Default: small for digits, celeba for celeba, else paper.")
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=None,
              help="Dataset folder: MNIST IDX files, CIFAR-10 batches, or CelebA's aligned images.")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--limit", type=int, default=None, help="Train on the first N training images only (quick CPU runs).")
@click.option("--resume", is_flag=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Cache folder.")
def images_train(dataset, model, epochs, batch_size, lr, backbone, data, out, limit, resume, device, seed, cache_dir):
    """Train an image autoencoder (β, λ default to the paper's per dataset), then fit its densities."""
    from .checkpoint import RunError
    from .image_runs import train_image_run
    from .train import TrainConfig, TrainingDiverged

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, lr_factor=0.5, lr_patience=5, min_lr=1e-6,
                      device=device, seed=seed, grad_clip=0.0, amp=not device.startswith("cpu"), recon_rows=0)
    try:
        run = train_image_run(out, dataset, model, data=data, train=cfg, backbone=backbone, resume=resume,
                              log=click.echo, limit=limit, cache_dir=cache_dir)
    except (RunError, TrainingDiverged, FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e))
    click.echo(f"done: {run}")


@images.command("sample")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False))
@click.option("--n", "n", default=64, show_default=True)
@click.option("--density", type=click.Choice(["prior", "gaussian", "gmm", "two-stage"]), default="gmm",
              show_default=True, help="two-stage: the 2s-VAE's second stage (2s-vae runs only).")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="A PNG grid.")
def images_sample(run_dir, n, density, seed, out):
    """Decode N images from the run's ex-post density into a PNG grid."""
    from .checkpoint import RunError
    from .density import DensityError
    from .image_runs import sample_images, save_grid

    try:
        imgs = sample_images(run_dir, n, density, seed)
    except (RunError, DensityError) as e:
        raise click.ClickException(str(e))
    save_grid(imgs, Path(out))
    click.echo(f"{n} samples ({density}) in {out}")


@images.command("evaluate")
@click.option("--run", "run_dirs", required=True, multiple=True, type=click.Path(file_okay=False),
              help="One or more runs (repeat --run).")
@click.option("--n", "n", default=10_000, show_default=True, help="Test images (and samples) per column.")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None)
@click.option("--inception", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The standard Inception weights as TorchScript (inception-2015-12-05.pt) for Inception "
                   "FID; without it, a Fréchet distance in an offline classifier's feature space.")
def images_evaluate(run_dirs, n, out, cache_dir, inception):
    """REC / N / GMM / Interp as Fréchet distances for each run, in one table (DIR/report.json, .md).

    Also writes, per run, RUN/eval/ with PNG grids per column and interpolation strips."""
    from .checkpoint import RunError, write_json
    from .image_runs import evaluate_image_run

    reports = {}
    for r in run_dirs:
        try:
            reports[r] = evaluate_image_run(r, n=n, cache_dir=cache_dir, inception=inception, log=click.echo)
        except (RunError, FileNotFoundError, ValueError) as e:
            raise click.ClickException(str(e))
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json(Path(out) / "report.json", reports)
    metric = next(iter(reports.values()))["metric"]
    lines = [f"{metric}, lower is better.", "",
             "| run | model | REC | N | GMM | Interp |", "|---|---|---|---|---|---|"]
    for r, m in reports.items():
        lines.append(f"| {r} | {m['model']} | {m['rec']:.3f} | {m['n']:.3f} | {m['gmm']:.3f} | {m['interp']:.3f} |")
    (Path(out) / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    click.echo("\n".join(lines))


# ---------------------------------------------------------------------------------------- demo
@main.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--n", "n", default=20_000, show_default=True, help="Expressions to generate.")
@click.option("--epochs", default=10, show_default=True, help="Training epochs of the small model.")
def demo(out, n, epochs):
    """The offline end-to-end job: generate expressions, parse them, train a GrammarRAE, sample, evaluate.

    Needs no network and no data files; a few minutes on a laptop CPU.
    """
    from .data.expressions import generate_expressions
    from .data.parsed import prepare_dataset
    from .evaluate import evaluate_run
    from .grammar import load_grammar
    from .run import train_run
    from .train import TrainConfig

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    g = load_grammar("expr")
    click.echo(f"[1/4] generating {n} expressions (seed 0, <= 15 rules)")
    path = out / "expressions.txt"
    path.write_text("".join(s + "\n" for s in generate_expressions(n, seed=0)), encoding="utf-8")
    click.echo(f"[2/4] parsing {path} into rule indices, checking every round trip")
    t0 = time.time()
    ds = prepare_dataset(g, path, cache_dir=out / "cache", workers=1, progress=False)
    bad = sum(g.derive(r[:k]) != s for r, k, s in zip(ds.rules, ds.lengths, ds.strings))
    click.echo(f"      {len(ds)} parsed in {time.time() - t0:.2f}s; {len(ds) - bad}/{len(ds)} round trips exact")
    if bad:
        raise click.ClickException(f"{bad} round trips failed")
    run = out / "rae-l2"
    click.echo(f"[3/4] training a GrammarRAE (rae-l2) for {epochs} epochs into {run}")
    from .checkpoint import RunError

    try:
        train_run(run, "expr", "rae-l2", data=path, train=TrainConfig(epochs=epochs), resume=True,
                  cache_dir=out / "cache", log=click.echo)
    except RunError as e:
        raise click.ClickException(str(e))
    click.echo("[4/4] sampling from the prior, the Gaussian and the GMM fitted on the training codes")
    evaluate_run(run, n_samples=1000, n_recon=1000, cache_dir=out / "cache", log=click.echo)
    click.echo(f"report: {run / 'eval' / 'report.md'}; plot: {run / 'eval' / 'samples_gmm.png'}; "
               f"loss curves: {run / 'loss.png'}")


if __name__ == "__main__":
    main()
