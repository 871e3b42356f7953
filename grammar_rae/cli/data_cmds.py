"""`grammar-rae grammar …` and `grammar-rae data …`: grammars, parsing, data sets."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from . import main, options as O


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
    from ..grammar import load_grammar

    g = load_grammar(name)
    p = g.parser
    lhs = [{"symbol": s, "rules": [int(r) for r in g.lhs_mask[i].nonzero()[0]]} for i, s in enumerate(g.lhs_list)]
    if as_json:
        click.echo(json.dumps({
            "name": g.name, "path": g.path, "sha256": g.sha256, "start": g.start_symbol, "n_rules": g.n_rules,
            "padding_index": g.padding_index, "productions": g.productions, "lhs": lhs, "terminals": g.terminals,
            "token_separator": g.token_separator, "lr_states": p.n_states, "lr_conflict_cells": p.n_conflicts,
            "c_parser": p.accelerated}, indent=1))
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
    for item in lhs:
        rules = item["rules"]
        span = f"{rules[0]}–{rules[-1]}" if rules == list(range(rules[0], rules[-1] + 1)) else str(rules)
        click.echo(f"  {item['symbol']:<18} {len(rules):2d} rules  {span}")


@grammar.command("parse")
@click.argument("name")
@click.argument("strings", nargs=-1, required=True)
@click.option("--productions", is_flag=True, help="Print productions instead of indices.")
def grammar_parse(name, strings, productions):
    """Print the leftmost derivation (rule indices) of each STRING; exit 1 if any does not parse."""
    from ..grammar import ParseError, load_grammar

    g = load_grammar(name)
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


@main.group()
def data():
    """Obtain, generate and parse datasets."""


@data.command("prepare")
@click.option("--grammar", "grammar_name", required=True, help=O.GRAMMAR_HELP)
@click.option("--input", "input_path", type=click.Path(dir_okay=False),
              help="A .smi/.txt file (one string a line) or a .csv file.")
@click.option("--dataset", type=click.Choice(["zinc250k", "expressions"]), default=None,
              help="A shipped (or downloaded) dataset instead of --input.")
@click.option("--column", default=None, help="CSV column holding the strings (default: 'smiles' or the first).")
@click.option("--workers", default=0, show_default=True, help="Parser processes; 0 = all cores.")
@O.cache_dir
@click.option("--no-cache", is_flag=True, help="Parse again even if a cached result exists.")
@click.option("--show-errors", default=20, show_default=True, help="Unparseable lines to print.")
def data_prepare(grammar_name, input_path, dataset, column, workers, cache_dir, no_cache, show_errors):
    """Parse a file into rule indices once and cache them (uint8, keyed by grammar and file hash).

    Unreadable and unparseable lines are reported as FILE:LINE with the reason, skipped and counted;
    a file with no parseable line is an error.
    """
    from ..data.download import zinc250k_path
    from ..data.parsed import DataFormatError, prepare_dataset
    from ..data.shipped import shipped_path

    if (input_path is None) == (dataset is None):
        raise click.UsageError("give exactly one of --input FILE or --dataset NAME")
    if dataset:
        input_path = zinc250k_path(cache_dir) if dataset == "zinc250k" else shipped_path(dataset, cache_dir)
    t0 = time.time()
    ds = prepare_dataset(grammar_name, input_path, column=column, workers=workers, cache_dir=cache_dir,
                         use_cache=not no_cache, progress=True, show_errors=show_errors)
    if not len(ds):
        raise DataFormatError(f"{input_path} holds no parseable string ({len(ds.skipped)} lines skipped)")
    click.echo(f"done in {time.time() - t0:.1f}s: {len(ds)} parsed, {len(ds.skipped)} skipped"
               + (f"; cache {ds.cache_path}" if ds.cache_path else ""))


@data.command("download")
@click.argument("dataset", type=click.Choice(["zinc250k", "mnist", "cifar10"]))
@click.option("--path", type=click.Path(exists=True), default=None,
              help="Use a local copy (file or folder) instead of downloading; it is checksum-verified.")
@O.cache_dir
def data_download(dataset, path, cache_dir):
    """Download a public dataset, verify its checksum and keep it in the cache.

    zinc250k: the GrammarVAE SMILES file (also shipped inside the package: nothing to download for
    the molecule commands); mnist: the four IDX files; cifar10: the binary version (unpacked in the
    cache). CelebA has no stable public URL: pass its aligned-image folder to
    `grammar-rae images train --dataset celeba --data FOLDER`."""
    from ..data.download import fetch

    click.echo(f"{dataset}: verified, in {fetch(dataset, cache_dir=cache_dir, path=path)}")


@data.command("generate-expressions")
@click.option("--n", "n", default=100_000, show_default=True, help="How many distinct expressions.")
@O.seed
@click.option("--max-length", default=15, show_default=True, help="Most rules in a derivation (GrammarVAE: 15).")
@click.option("--grammar", "grammar_name", default="expr", show_default=True, help=O.GRAMMAR_HELP)
@O.out_file("Output text file.")
def data_generate(n, seed, max_length, grammar_name, out):
    """Sample a fresh, seeded set of strings from a grammar (one a line)."""
    from ..data.expressions import generate_expressions
    from ..grammar import load_grammar
    from ..io import write_lines

    strings = generate_expressions(n, seed=seed, max_length=max_length, grammar=load_grammar(grammar_name))
    write_lines(Path(out), strings)
    click.echo(f"wrote {len(strings)} strings to {out}")
