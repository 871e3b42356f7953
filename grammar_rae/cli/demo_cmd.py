"""`grammar-rae demo`: the product, offline, in a few minutes."""
from __future__ import annotations

import click

from . import main, options as O


@main.command()
@O.out_dir("Folder for everything the demo writes.", required=False, default="runs/demo")
@O.cache_dir
@O.semantics
def demo(out, cache_dir, decoding):
    """Molecules from the shipped zinc-grae, then training a small expression model -- offline.

    Reconstructs held-out ZINC250k molecules, samples new ones from the ex-post GMM (validity,
    uniqueness, novelty with RDKit), draws them and an interpolation, runs a short latent BO on
    penalised logP, and trains an expression GrammarRAE from scratch. About three minutes on a
    laptop CPU; every file it writes is named as it goes.
    """
    from ..demo import run_demo

    run_demo(out, cache_dir=cache_dir, log=click.echo, decoding=decoding)
