"""Randomized SMILES as encoder inputs: the same molecule written from other starting atoms and in other
atom orders (RDKit's ``MolToRandomSmilesVect``; Bjerrum 2017), so the encoder learns the molecule, not
one spelling of it. The decoder's target stays the data's own SMILES (CDDD, Winter et al., Chem. Sci.
2019: randomized in, canonical out).

Each training row gets ``k`` randomized spellings beside its own (column 0), as rule indices of the run's
grammar; a spelling the grammar cannot hold (more than eight open ring digits, a derivation longer than the
decoder's steps) is replaced by the row's own. The trainer draws one column per row and batch.
"""
from __future__ import annotations

import numpy as np


def randomized_smiles(strings, k: int, seed: int) -> list[list[str]]:
    """``k`` randomized SMILES of each string (seeded; the string itself where RDKit cannot read it)."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    out = []
    for i, s in enumerate(strings):
        m = Chem.MolFromSmiles(s)
        if m is None:
            out.append([s] * k)
            continue
        # MolToRandomSmilesVect takes its own seed (MolToSmiles(doRandom=True) draws from a generator
        # that the process's other RDKit calls move: not reproducible)
        out.append(list(Chem.MolToRandomSmilesVect(m, k, randomSeed=(seed * 1_000_003 + i) % (2 ** 31))))
    return out


def randomized_inputs(grammar, strings, own_rules: np.ndarray, k: int, seed: int = 0, progress: bool = True,
                      log=print) -> np.ndarray:
    """[N, k + 1, T] rule indices: each row's own derivation (``own_rules`` [N, T], column 0) and ``k``
    randomized spellings' (padded to T; the own derivation where a spelling does not fit)."""
    from tqdm import tqdm

    from .parsed import pack

    n, T = own_rules.shape
    out = np.repeat(own_rules[:, None, :], k + 1, axis=1)
    chunk = 5000
    failed = 0
    for a in tqdm(range(0, n, chunk), desc="randomized SMILES", unit="chunk", disable=not progress):
        rows = strings[a:a + chunk]
        variants = randomized_smiles(rows, k, seed + a)
        flat = [v for vs in variants for v in vs]
        parsed, _ = grammar.parse_many(flat, on_error="skip")
        for j, r in enumerate(parsed):
            if r is None or len(r) > T:
                failed += 1
                continue
            out[a + j // k, 1 + j % k] = pack(grammar, [r], max_length=T)[0][0]
    if failed:
        log(f"randomized SMILES: {failed:,} of {n * k:,} spellings did not fit the grammar or the decoder's "
            "steps; those rows use their own SMILES instead")
    return out
