"""Parsing many strings: in-process or over worker processes, with a progress bar."""
from __future__ import annotations

import multiprocessing as mp
import os
from typing import Sequence

from .cfg import Grammar, ParseError

_WORKER_GRAMMAR: Grammar | None = None


def _init_worker(text: str, name: str, method: str):
    global _WORKER_GRAMMAR, _WORKER_METHOD
    _WORKER_GRAMMAR = Grammar(text, name=name)
    _WORKER_METHOD = method


def _parse_chunk(args):
    start, strings = args
    g = _WORKER_GRAMMAR
    if _WORKER_METHOD == "nltk":
        from .reference import nltk_parse

        fn = lambda s: nltk_parse(g, s)  # noqa: E731
    else:
        fn = g.parse
    out, errors = [], []
    for i, s in enumerate(strings):
        try:
            out.append(fn(s))
        except ParseError as e:
            out.append(None)
            errors.append((start + i, e))
    return start, out, errors


def resolve_workers(workers: int) -> int:
    """``0`` (or less) means every core this process may use."""
    if workers and workers > 0:
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parse_many(grammar: Grammar, strings: Sequence[str], workers: int = 1, progress: bool = False,
               on_error: str = "raise", chunk_size: int = 2000, method: str = "fast"):
    """See :meth:`Grammar.parse_many`. ``method="nltk"`` runs the NLTK reference instead."""
    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")
    from tqdm import tqdm  # text bars (tqdm.auto wants ipywidgets in notebooks)

    workers = resolve_workers(workers)
    n = len(strings)
    results: list = [None] * n
    errors: list[tuple[int, ParseError]] = []
    chunks = [(i, strings[i:i + chunk_size]) for i in range(0, n, chunk_size)]
    bar = tqdm(total=n, unit="str", desc=f"parse {grammar.name}", disable=not progress, smoothing=0.1)
    try:
        if workers == 1 or n <= chunk_size:
            _init_worker_local(grammar, method)
            it = map(_parse_chunk, chunks)
            pool = None
        else:
            if "fork" in mp.get_all_start_methods():
                # Forked workers inherit the grammar with its built tables: nothing to rebuild.
                _init_worker_local(grammar, method)
                pool = mp.get_context("fork").Pool(workers)
            else:
                pool = mp.get_context("spawn").Pool(
                    workers, initializer=_init_worker, initargs=(grammar.text, grammar.name, method))
            it = pool.imap_unordered(_parse_chunk, chunks)
        for start, out, errs in it:
            results[start:start + len(out)] = out
            if errs and on_error == "raise":
                raise errs[0][1]
            errors.extend(errs)
            bar.update(len(out))
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    if on_error == "skip":
        errors.sort(key=lambda e: e[0])
        return results, errors
    return results


def _init_worker_local(grammar: Grammar, method: str):
    global _WORKER_GRAMMAR, _WORKER_METHOD
    _WORKER_GRAMMAR = grammar
    _WORKER_METHOD = method
