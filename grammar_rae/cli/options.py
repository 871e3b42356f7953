"""Options several commands share, defined once."""
from __future__ import annotations

import functools

import click

GRAMMAR_HELP = "Grammar: a shipped name (smiles, expr) or the path of a .cfg file."


def run(help_text: str = "A run directory, or a shipped pretrained model (zinc-grae, expr-grae)."):
    return click.option("--run", "run_dir", required=True, help=help_text)


device = click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:1, …")
threads = click.option("--threads", type=int, default=None,
                       help="CPU threads for PyTorch (default: PyTorch's choice; give each of several jobs "
                            "sharing a CPU --threads 1, or they slow each other down many times over).")
seed = click.option("--seed", default=0, show_default=True, help="Random seed (results are reproducible with it).")
cache_dir = click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                         help="Cache folder (default $GRAMMAR_RAE_CACHE or ~/.cache/grammar-rae).")
strings_input = click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False),
                             help="Strings, one a line (.smi/.txt) or a .csv with a smiles column.")


def out_file(help_text: str, required: bool = True):
    return click.option("--out", required=required, default=None, type=click.Path(dir_okay=False), help=help_text)


def out_dir(help_text: str, required: bool = True, default=None):
    return click.option("--out", required=required, default=default, type=click.Path(file_okay=False),
                        help=help_text, show_default=default is not None)


_semantics = click.option(
    "--semantics/--no-semantics", default=True, show_default=True,
    help="SMILES: decode under the semantic layer as well as the grammar (ring bonds always closed, no closure "
         "onto a bonded atom, valences kept, aromatic atoms on rings, aromatic systems that can be kekulized; "
         "a molecule the masks corner is decoded again by sampling; grammar_rae/models/semantics.py). "
         "--no-semantics: the context-free grammar alone, as the GrammarVAE decodes. No effect on expressions.")

_retries = click.option(
    "--retries", type=click.IntRange(min=0), default=None, metavar="N",
    help="SMILES, under the semantic layer: copies decoded again by sampling for each molecule the masks corner, "
         "the first good one kept [default: 16]. 0: none, the fastest way to many valid molecules (on zinc-grae "
         "68% valid at 1.7x the grammar alone's valid molecules per second, against 83% at 1.0x with 16; "
         "BENCHMARKS.md).")


_rdkit = click.option(
    "--rdkit/--no-rdkit", default=False, show_default=True,
    help="SMILES: a finished molecule RDKit cannot read is decoded again by sampling, as one the masks corner "
         "(up to --retries copies; with or without the semantic layer), so that every returned molecule is valid "
         "where a copy is. Works for the compact grammar form, which has no semantic layer yet.")


def semantics(f):
    """--semantics/--no-semantics, --retries and --rdkit: how molecules are decoded. The command receives
    them as one ``decoding`` argument, a DecodeOptions (models/grammar_ae.py): no process-wide switch."""
    @functools.wraps(f)
    def command(*args, semantics: bool, retries: int | None, rdkit: bool, **kwargs):
        from ..models.grammar_ae import REDECODES, DecodeOptions

        options = DecodeOptions(semantics=semantics, retries=REDECODES if retries is None else retries, rdkit=rdkit)
        return f(*args, decoding=options, **kwargs)

    return _semantics(_retries(_rdkit(command)))


def decoding(f):
    """--stochastic / --temperature: how rules are chosen when decoding."""
    f = semantics(f)
    f = click.option("--temperature", default=1.0, show_default=True,
                     help="Softmax temperature of --stochastic decoding.")(f)
    return click.option("--stochastic", is_flag=True,
                        help="Sample each rule (at --temperature) instead of taking the most likely one.")(f)


def apply(*decorators):
    """Stack option decorators, listed in the order --help shows them."""
    def wrap(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return wrap


def load_model(run_dir, device, decoding=None):
    """The Model the command works on (grammar_rae.load), decoding as ``decoding`` (--semantics/--no-semantics,
    --retries) says."""
    from ..api import load

    return load(run_dir, device=device, decoding=decoding)


def read_records(path):
    """(line, string) records of an input file, bad lines reported as FILE:LINE on stderr and skipped."""
    from ..data.parsed import read_strings

    bad: list = []
    records = list(read_strings(path, bad=bad))
    for line, reason in bad:
        click.echo(f"{path}:{line}: skipped: {reason}", err=True)
    return records, len(bad)


def report_skipped(path, records, errors) -> None:
    """Each (index, reason) of a string the model could not encode, as FILE:LINE on stderr."""
    for i, reason in errors:
        click.echo(f"{path}:{records[i][0]}: skipped: {reason}", err=True)
