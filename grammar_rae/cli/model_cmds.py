"""Grammar models: train, sample, encode, decode, reconstruct, evaluate; recipes and pretrained models."""
from __future__ import annotations

from pathlib import Path

import click

from ..models.architectures import ARCHITECTURES
from ..models.family import GRAMMAR_MODELS
from . import main, options as O

# the network settings `train` can override (GrammarAEConfig fields) and the schedule (TrainConfig fields)
NETWORK = ("latent_dim", "decoder_hidden", "decoder_layers", "encoder_hidden", "decoder", "beta", "lam",
           "vae_epsilon_std", "rule_dropout", "latent_noise")
network_options = O.apply(
    click.option("--latent-dim", type=int, default=None, help="Default: 25 (expr), 56 (smiles)."),
    click.option("--decoder-hidden", type=int, default=None, help="GRU width. Default: the recipe's."),
    click.option("--decoder-layers", type=int, default=None, help="GRU layers. Default: the recipe's."),
    click.option("--encoder-hidden", type=int, default=None, help="Encoder dense width. Default: the recipe's."),
    click.option("--decoder", type=click.Choice(["gvae", "autoregressive"]), default=None,
                 help="--arch gvae only: its z-repeated decoder (default), or one that also reads the previous rule."),
    click.option("--beta", type=float, default=None, help="Weight of the latent term (½‖z‖², or KL for VAE)."),
    click.option("--lam", type=float, default=None, help="Weight of the decoder regulariser (L2 / GP)."),
    click.option("--rule-dropout", type=float, default=None,
                 help="Teacher-forced decoder, in training: the probability that each previous-rule input is "
                      "replaced by the start token (word dropout; a regulariser that makes the decoder lean on z). "
                      "Default 0. With --init-from, this, --beta, --lam and --vae-epsilon-std may differ from the "
                      "starting run's (the network's sizes may not)."),
    click.option("--latent-noise", type=float, default=None,
                 help="RAE/AE, in training: Gaussian noise on each code, this many of the batch's per-dimension "
                      "standard deviations (0.1: a decoder that also reads the codes' neighbourhood). Default 0."),
    click.option("--vae-epsilon-std", type=float, default=None,
                 help="vae/cvae: scale of the reparameterisation noise. 1.0 (default) is the textbook VAE; 0.01 is "
                      "the GrammarVAE code's convention (its published baselines), which avoids posterior collapse."),
)
schedule_options = O.apply(
    click.option("--epochs", type=int, default=None, help="Default: the recipe's (see `grammar-rae recipes`)."),
    click.option("--batch-size", type=int, default=None, help="Default: the recipe's."),
    click.option("--lr", type=float, default=None, help="Adam learning rate. Default: the recipe's."),
    click.option("--lr-factor", type=float, default=None, help="ReduceLROnPlateau factor. Default: the recipe's."),
    click.option("--lr-patience", type=int, default=None,
                 help="Epochs without a better validation loss before the learning rate drops. Default: the recipe's."),
    click.option("--warmup-steps", type=int, default=None, help="Linear learning-rate warm-up steps. Default: the recipe's."),
    click.option("--schedule", type=click.Choice(["plateau", "cosine", "wsd"]), default=None,
                 help="Learning-rate schedule, a function of the update count (a resumed run continues it exactly): "
                      "plateau = ReduceLROnPlateau per epoch; cosine = from --lr down to --min-lr over the planned "
                      "updates; wsd = warm-up, constant, then a cosine fall over the last --decay-fraction. "
                      "Default: the recipe's."),
    click.option("--min-lr", type=float, default=None, help="Lowest learning rate (plateau floor, cosine/wsd end). "
                 "Default: the recipe's."),
    click.option("--decay-fraction", type=float, default=None, help="wsd: the fraction of the updates that decays. "
                 "Default 0.2."),
    click.option("--schedule-steps", type=int, default=None,
                 help="Updates the cosine/wsd schedule plans; training ends there (default: epochs x updates per epoch)."),
    click.option("--checkpoint-minutes", type=float, default=None,
                 help="Also checkpoint inside an epoch every this many minutes (resumable from that batch), and let "
                      "--max-minutes stop inside an epoch. Default: the recipe's (0 = at epoch ends only)."),
    click.option("--grad-clip", type=float, default=None,
                 help="Clip the gradient's global norm (0: off). Default: the recipe's (5 for teacher-forced)."),
    click.option("--amp/--no-amp", default=None,
                 help="bf16 autocast on CUDA and on CPUs with native bf16 (default: on); --no-amp trains in fp32."),
    click.option("--randomized-inputs", type=int, default=None,
                 help="SMILES: K randomized spellings of each training molecule (RDKit), which the encoder reads "
                      "in turn with the molecule's own while the decoder's target stays the data's SMILES "
                      "(randomized in, canonical out). Default 0."),
    O.threads,
    click.option("--max-minutes", type=float, default=None,
                 help="Stop cleanly before an epoch that would not finish within this many minutes of this command "
                      "(e.g. a lent GPU's command limit); the same command with --resume goes on."),
    O.seed,
)


@main.command()
@click.option("--grammar", "grammar_name", type=click.Choice(["smiles", "expr"]), default="expr", show_default=True,
              help="What to model: SMILES molecules or arithmetic expressions.")
@click.option("--model", type=click.Choice([*GRAMMAR_MODELS, "cvae"]), default="rae-l2", show_default=True,
              help="Regulariser family: RAE with L2/GP/SN decoder regularisation, plain RAE, AE, VAE, CV-VAE; "
                   "cvae = the character-level VAE baseline (no grammar in the decoder).")
@click.option("--arch", type=click.Choice(list(ARCHITECTURES)), default="teacher-forced", show_default=True,
              help="; ".join(f"{a.name}: {a.summary}" for a in ARCHITECTURES.values()) + ".")
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Training strings (default: the shipped ZINC250k for smiles, the shipped GrammarVAE expression "
                   "set for expr).")
@click.option("--grammar-form", type=click.Choice(["original", "compact"]), default="original", show_default=True,
              help="original: the grammar file as written (the papers' protocols); compact: its unit productions "
                   "folded into their users (derived, not hand-written: the same strings in about half the "
                   "decoder steps; recorded in run.json).")
@click.option("--limit", type=int, default=None, help="Use only the first N rows of the data.")
@click.option("--train-rows", type=int, default=None,
              help="Train on a seeded sample of N of the split's training rows (validation: N/10, at least 500); "
                   "the test rows stay the standard ones. For quick experiments where overfitting shows.")
@O.out_dir("Run directory to create.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--init-from", default=None,
              help="Start from the network of a run directory or shipped model (e.g. zinc-grae): continue "
                   "training it, or fine-tune it on --data. Its architecture and sizes are used.")
@click.option("--test-split", type=click.Choice(["first", "random"]), default=None,
              help="Held-out test rows (min(5000, n/10)): the first rows (default for smiles: the GrammarVAE "
                   "protocol) or a seeded random sample (default otherwise: safe for files in a systematic order).")
@O.device
@schedule_options
@network_options
@O.cache_dir
def train(grammar_name, model, arch, data, grammar_form, limit, train_rows, out, resume, init_from, test_split, device, cache_dir, **settings):
    """Train a grammar autoencoder into a run directory, then fit its ex-post densities.

    Settings not given come from the measured recipe for the grammar, architecture and device
    (`grammar-rae recipes` lists them: small batches on a CPU, large ones on a GPU). A checkpoint is
    written atomically after every epoch; after a kill, the same command with --resume continues
    from the last finished epoch.
    """
    from ..recipes import train_config
    from ..run import train_run

    network = {k: settings.pop(k) for k in NETWORK if settings[k] is not None}
    for k in NETWORK:
        settings.pop(k, None)
    # the flags typed (not click's defaults, such as --seed 0): on --resume only these override the run's own
    ctx = click.get_current_context()
    given = {k: v for k, v in settings.items()
             if v is not None and ctx.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT}
    settings["max_minutes"] = settings["max_minutes"] or 0.0
    cfg = train_config(grammar_name, arch, device, **settings)
    run = train_run(out, grammar_name, model, data=data, limit=limit, train=cfg, resume=resume, cache_dir=cache_dir,
                    log=click.echo, test_split=test_split, arch=arch, init_from=init_from, given=given,
                    train_rows=train_rows, grammar_form=grammar_form, **network)
    click.echo(f"done: {run} (sample with `grammar-rae sample --run {run} --n 100 --out samples.txt`)")


@main.command()
def recipes():
    """The training recipes `train` uses by default, per grammar, architecture and device."""
    from ..recipes import RECIPES

    for (grammar_name, arch, kind), r in RECIPES.items():
        click.echo(f"{grammar_name:<7} {arch:<15} {kind:<5} {r.note}")
        click.echo(f"        network: {r.model or 'the architecture defaults'}")
        click.echo("        training: " + ", ".join(f"{k}={v}" for k, v in r.train.items()))


@main.group()
def pretrained():
    """Pretrained models shipped inside the package (zinc-grae, expr-grae).

    A shipped NAME works wherever a command takes --run (an existing directory of that name wins):
    `grammar-rae sample --run zinc-grae --n 100 --out mols.smi`."""


@pretrained.command("list")
def pretrained_list():
    """The shipped models, with what each was trained on and what it reaches."""
    from ..checkpoint import read_json
    from ..pretrained import available, path

    if not available():
        click.echo("no pretrained models are shipped with this installation")
    for name in available():
        meta = read_json(path(name) / "run.json")
        click.echo(f"{name}: {meta.get('label')} on {meta.get('base_grammar', meta.get('grammar'))} "
                   f"({meta['model'].get('arch', 'gvae')}, {meta['data'].get('rows')} rows)")
        for line in meta.get("pretrained", {}).get("summary", []):
            click.echo(f"    {line}")


@pretrained.command("path")
@click.argument("name")
def pretrained_path(name):
    """Print the directory of the shipped model NAME."""
    from ..pretrained import path

    click.echo(str(path(name)))


@main.command()
@O.run()
@click.option("--n", "n", default=1000, show_default=True, help="Strings to sample.")
@click.option("--density", type=click.Choice(["prior", "gaussian", "gmm"]), default="gmm", show_default=True,
              help="Where codes come from: N(0, I), or the Gaussian / GMM fitted on the training codes.")
@O.decoding
@O.seed
@O.device
@O.out_file("Output file: one string a line (an empty line for an invalid decode).")
def sample(run_dir, n, density, stochastic, temperature, seed, device, out, decoding):
    """Decode N strings from codes drawn from the run's ex-post density."""
    from ..io import write_lines

    strings = O.load_model(run_dir, device, decoding).sample(n, density, seed=seed, stochastic=stochastic,
                                                             temperature=temperature)
    write_lines(out, strings)
    valid = sum(s is not None for s in strings)
    click.echo(f"{n} samples ({density}): {valid / max(n, 1):.1%} grammar-complete, "
               f"{len(set(s for s in strings if s)) / max(valid, 1):.1%} unique; written to {out}")


@main.command()
@O.run()
@O.strings_input
@O.out_file("Codes as .npy (float32 [n, d]) or .csv; rows follow the parseable input lines.")
@O.device
def encode(run_dir, input_path, out, device):
    """Latent codes (encoder means) of the strings in a file. Bad lines are reported and skipped."""
    import numpy as np

    from ..io import write_codes

    records, unreadable = O.read_records(input_path)
    z, bad = O.load_model(run_dir, device).encode_checked([s for _, s in records])
    O.report_skipped(input_path, records, [(b.index, b.reason) for b in bad])
    z = z[~np.isnan(z).all(1)]       # rows follow the parseable input lines
    write_codes(out, z)
    click.echo(f"{len(z)} codes written to {out}; {len(bad) + unreadable} lines skipped")


@main.command()
@O.run()
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help="Codes: .npy or .csv, [n, latent_dim].")
@O.out_file("Strings, one a line (empty = invalid).")
@O.decoding
@O.seed
@O.device
def decode(run_dir, input_path, out, stochastic, temperature, seed, device, decoding):
    """Strings decoded from latent codes under the grammar's masks."""
    from ..io import check_codes, read_codes, write_lines

    m = O.load_model(run_dir, device, decoding)
    strings = m.decode(check_codes(read_codes(input_path), m.latent_dim), stochastic, temperature, seed)
    write_lines(out, strings)
    click.echo(f"{len(strings)} decodes written to {out}; {sum(s is not None for s in strings)} complete")


@main.command()
@O.run()
@O.strings_input
@O.out_file("TSV: input, reconstruction, match.", required=False)
@O.semantics
@O.device
def reconstruct(run_dir, input_path, out, device, decoding):
    """Encode and decode (argmax) each string; report the fraction reconstructed exactly."""
    from ..io import write_lines

    records, unreadable = O.read_records(input_path)
    result = O.load_model(run_dir, device, decoding).reconstruct([s for _, s in records])
    rows = [r for r in result.rows if r.error is None]
    O.report_skipped(input_path, records, result.errors)
    if out:
        write_lines(out, [f"{r.input}\t{r.output or ''}\t{int(r.match)}" for r in rows])
    hits = sum(r.match for r in rows)
    click.echo(f"reconstructed {hits}/{len(rows)} exactly ({hits / max(len(rows), 1):.1%}); "
               f"{len(result.rows) - len(rows) + unreadable} lines skipped")


@main.command()
@O.run()
@click.option("--n-samples", default=1000, show_default=True, help="Samples per density (prior, Gaussian, GMM).")
@click.option("--n-recon", default=1000, show_default=True, help="Test rows for reconstruction accuracy.")
@click.option("--gvae-protocol", is_flag=True,
              help="Also the GrammarVAE protocol: each test row encoded 10x and decoded 100x by sampling (slow).")
@O.seed
@O.semantics
@O.device
@O.cache_dir
@O.out_dir("Output folder (default RUN/eval; eval/NAME for a shipped pretrained model).", required=False)
def evaluate(run_dir, n_samples, n_recon, gvae_protocol, seed, device, cache_dir, out, decoding):
    """Reconstruction accuracy and validity/uniqueness/novelty of prior, Gaussian and GMM samples.

    Writes metrics.json, report.md, the samples and a plot (molecule grid or function plot).
    """
    from ..evaluate import evaluate_run

    report = evaluate_run(O.load_model(run_dir, device, decoding), n_samples, n_recon, gvae_protocol, seed,
                          cache_dir=cache_dir, log=click.echo, out=out)
    click.echo(f"written: {report['out']}/metrics.json, report.md")
