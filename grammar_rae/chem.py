"""Molecule metrics computed offline with RDKit (MOSES-style, Polykovskiy et al. 2020) and FCD.

- IntDiv: 1 − mean Tanimoto similarity over all pairs of generated molecules (Morgan r=2, 1024 bits)
- SNN:    mean over generated molecules of the Tanimoto similarity to the nearest reference molecule
- Frag:   cosine similarity of BRICS-fragment count vectors (generated vs reference)
- Scaf:   cosine similarity of Bemis–Murcko scaffold count vectors
- property distributions: Wasserstein-1 distance of logP, SA, QED and MW (generated vs reference)
- FCD:    Fréchet ChemNet Distance via ``fcd_torch`` (its ChemNet weights ship inside the wheel)
All functions take SMILES strings; invalid ones are dropped.
"""
from __future__ import annotations

import os
import sys
from collections import Counter
from functools import lru_cache
from typing import Sequence

import numpy as np

from .errors import ConfigError


def _quiet():
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")


def mols(smiles: Sequence[str | None]):
    from rdkit import Chem

    _quiet()
    out = [Chem.MolFromSmiles(s) for s in smiles if s]
    return [m for m in out if m is not None]


def rdkit_accepts(smiles: Sequence[str]) -> np.ndarray:
    """[n] bool: whether RDKit reads and sanitises each SMILES (valences, aromaticity, kekulization): the
    validity every molecule metric counts, as the decoder's acceptance test (DecodeOptions.rdkit)."""
    from rdkit import Chem

    _quiet()
    return np.fromiter((Chem.MolFromSmiles(s) is not None for s in smiles), dtype=bool, count=len(smiles))


@lru_cache(maxsize=1)
def _sascorer():
    from rdkit.Chem import RDConfig

    path = os.path.join(RDConfig.RDContribDir, "SA_Score")
    if path not in sys.path:
        sys.path.append(path)
    import sascorer  # RDKit Contrib (Ertl & Schuffenhauer 2009), shipped in the rdkit wheel

    return sascorer


def sa_score(mol) -> float:
    """Synthetic accessibility, 1 (easy) to 10 (hard)."""
    return float(_sascorer().calculateScore(mol))


def properties(ms) -> dict[str, np.ndarray]:
    from rdkit.Chem import QED, Crippen, Descriptors

    return {
        "logP": np.array([Crippen.MolLogP(m) for m in ms]),
        "SA": np.array([sa_score(m) for m in ms]),
        "QED": np.array([QED.qed(m) for m in ms]),
        "MW": np.array([Descriptors.MolWt(m) for m in ms]),
    }


def fingerprints(ms):
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    return [gen.GetFingerprint(m) for m in ms]


def internal_diversity(ms) -> float:
    from rdkit import DataStructs

    fps = fingerprints(ms)
    if len(fps) < 2:
        return 0.0
    sims = [np.mean(DataStructs.BulkTanimotoSimilarity(fp, fps)) for fp in fps]
    return float(1.0 - np.mean(sims))


def nearest_neighbour_similarity(gen, ref) -> float:
    from rdkit import DataStructs

    ref_fps = fingerprints(ref)
    if not gen or not ref_fps:
        return 0.0
    return float(np.mean([max(DataStructs.BulkTanimotoSimilarity(fp, ref_fps)) for fp in fingerprints(gen)]))


def _cosine(a: Counter, b: Counter) -> float:
    keys = sorted(set(a) | set(b))
    if not keys:
        return 0.0
    u = np.array([a.get(k, 0) for k in keys], dtype=float)
    v = np.array([b.get(k, 0) for k in keys], dtype=float)
    den = np.linalg.norm(u) * np.linalg.norm(v)
    return float(u @ v / den) if den else 0.0


def fragments(ms) -> Counter:
    from rdkit.Chem import BRICS

    c = Counter()
    for m in ms:
        c.update(BRICS.BRICSDecompose(m))
    return c


def scaffolds(ms) -> Counter:
    from rdkit import Chem
    from rdkit.Chem.Scaffolds import MurckoScaffold

    c = Counter()
    for m in ms:
        s = Chem.MolToSmiles(MurckoScaffold.GetScaffoldForMol(m))
        if s:
            c[s] += 1
    return c


def fcd(gen_smiles: Sequence[str], ref_smiles: Sequence[str], device: str = "cpu") -> float:
    """Fréchet ChemNet Distance (Preuer et al. 2018) with fcd_torch's shipped ChemNet."""
    try:
        from fcd_torch import FCD
    except ImportError as e:
        raise ConfigError("FCD needs the fcd-torch package: pip install fcd-torch") from e
    gen = [s for s in gen_smiles if s]
    ref = [s for s in ref_smiles if s]
    if len(gen) < 2 or len(ref) < 2:
        return float("nan")
    return float(FCD(device=device, n_jobs=1)(gen, ref))


def molecule_metrics(gen_smiles: Sequence[str | None], ref_smiles: Sequence[str], with_fcd: bool = True) -> dict:
    """MOSES-style metrics of valid generated molecules against a reference set."""
    from scipy.stats import wasserstein_distance

    gen, ref = mols(gen_smiles), mols(ref_smiles)
    out = {"n_valid": len(gen)}
    if not gen:
        return out
    out["IntDiv"] = internal_diversity(gen)
    out["SNN"] = nearest_neighbour_similarity(gen, ref)
    out["Frag"] = _cosine(fragments(gen), fragments(ref))
    out["Scaf"] = _cosine(scaffolds(gen), scaffolds(ref))
    pg, pr = properties(gen), properties(ref)
    for k in pg:
        out[f"W1_{k}"] = float(wasserstein_distance(pg[k], pr[k]))
    if with_fcd:
        from rdkit import Chem

        out["FCD"] = fcd([Chem.MolToSmiles(m) for m in gen], [Chem.MolToSmiles(m) for m in ref])
    return out
