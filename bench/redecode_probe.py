"""How often re-decoding finds a good copy: 500 GMM codes of the shipped zinc-grae decoded once, the cornered
rows re-decoded 16 copies each in one batch; prints the per-copy success and the index of the first good copy.
    python bench/redecode_probe.py   (tenth session, on the update-42,976 weights: bench/results/semantics/redecode_probe.txt)"""
import sys, time, torch, numpy as np
torch.set_num_threads(1)
import grammar_rae
from grammar_rae.models.grammar_ae import REDECODE_SEED
m = grammar_rae.load("zinc-grae", device="cpu")
net = m.net
z = torch.as_tensor(m.density("gmm").sample(500, seed=5), dtype=torch.float32)
t0 = time.time(); out = net._decode_once(z, False, 1.0, None, True); t1 = time.time()
rows = out.cornered.nonzero().flatten()
print("cornered", len(rows), "of", len(z), f"decode {t1-t0:.1f}s", flush=True)
k = 16
gen = torch.Generator().manual_seed(REDECODE_SEED)
t0 = time.time(); again = net._decode_once(z[rows].repeat_interleave(k, 0), True, 1.0, gen, True); t1 = time.time()
good = (again.complete & ~again.cornered).view(len(rows), k)
print(f"redecode {t1-t0:.1f}s; per-copy success {good.float().mean():.3f}; rows with any {good.any(1).float().mean():.3f}")
first = torch.where(good.any(1), good.long().argmax(1), torch.full((len(rows),), -1))
print("first good copy index histogram:", np.bincount((first + 1).numpy(), minlength=k + 1).tolist())
from rdkit import Chem, RDLogger; RDLogger.DisableLog("rdApp.*")
val = [Chem.MolFromSmiles(s) is not None if s else False for s in again.strings]
v = torch.tensor(val).view(len(rows), k)
print(f"RDKit-valid per copy {v.float().mean():.3f}; valid among good copies {(v & good).sum().item() / max(good.sum().item(),1):.3f}")
vfirst = [bool(v[i, f]) if f >= 0 else False for i, f in enumerate(first.tolist())]
print("valid of the kept copy", np.mean(vfirst))
base_valid = [Chem.MolFromSmiles(s) is not None if s else False for s in out.strings]
print("valid before re-decode, all rows", np.mean(base_valid), "; among not-cornered", np.mean([b for b, c in zip(base_valid, out.cornered.tolist()) if not c]))
