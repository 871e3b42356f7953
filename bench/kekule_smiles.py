"""ZINC250k as Kekulé SMILES, for issue 35's Kekulé lever (BENCHMARKS.md, zinc-grae II): each molecule
kekulized by RDKit and written with explicit single/double bonds (kekuleSmiles, not re-canonicalised),
one line per input line, in the same order, so the GrammarVAE split's test rows are the same molecules.

    python bench/kekule_smiles.py ../shared/data/zinc/250k_rndm_zinc_drugs_clean.smi zinc-kekule.smi
"""
import sys

from rdkit import Chem, RDLogger


def main(src: str, dst: str) -> None:
    RDLogger.DisableLog("rdApp.*")
    written = refused = 0
    with open(src) as f, open(dst, "w") as out:
        for line in f:
            s = line.strip()
            if not s:
                continue
            m = Chem.MolFromSmiles(s)
            if m is None:   # a line RDKit cannot read would shift the rows: stop rather than misalign them
                refused += 1
                print(f"{src}: RDKit cannot read {s!r}", file=sys.stderr)
                continue
            Chem.Kekulize(m, clearAromaticFlags=True)
            out.write(Chem.MolToSmiles(m, kekuleSmiles=True, canonical=False) + "\n")
            written += 1
    print(f"{written} written, {refused} refused")
    if refused:
        sys.exit(1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
