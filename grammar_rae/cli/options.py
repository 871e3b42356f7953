"""Options several commands share, defined once."""
from __future__ import annotations

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


def _set_semantics(ctx, param, value):
    from ..models.semantics import set_enabled

    set_enabled(value)
    return value


_semantics = click.option(
    "--semantics/--no-semantics", default=True, show_default=True, expose_value=False, callback=_set_semantics,
    help="SMILES: decode under the semantic layer as well as the grammar (ring bonds always closed, no closure "
         "onto a bonded atom, valences kept, aromatic atoms on rings, aromatic systems that can be kekulized; "
         "a molecule the masks corner is decoded again by sampling; grammar_rae/models/semantics.py). "
         "--no-semantics: the context-free grammar alone, as the GrammarVAE decodes. No effect on expressions.")


def _set_retries(ctx, param, value):
    from ..models.grammar_ae import set_default_redecodes

    set_default_redecodes(value)   # None (not given): the library's default, whatever an earlier call set
    return value


_retries = click.option(
    "--retries", type=click.IntRange(min=0), default=None, metavar="N", expose_value=False, callback=_set_retries,
    help="SMILES, under the semantic layer: copies decoded again by sampling for each molecule the masks corner, "
         "the first good one kept [default: 16]. 0: none, the fastest way to many valid molecules (on zinc-grae "
         "68% valid at 1.7x the grammar alone's valid molecules per second, against 83% at 1.0x with 16; "
         "BENCHMARKS.md).")


def semantics(f):
    """--semantics/--no-semantics and --retries: how molecules are decoded."""
    return _semantics(_retries(f))


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


def load_model(run_dir, device):
    """The Model the command works on (grammar_rae.load), decoding as --semantics/--no-semantics says."""
    from ..api import load
    from ..models.semantics import enabled

    return load(run_dir, device=device, semantics=enabled())


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
