"""The one-command GPU lease script runs end to end (a dry run on the CPU with tiny data): a device
lease is too scarce to find a script bug there. Slow: it trains and evaluates two small models."""
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from grammar_rae.data.expressions import generate_expressions

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_tables_dry_run_packs_every_run_with_its_metrics(tmp_path):
    expr = tmp_path / "expr.txt"
    expr.write_text("\n".join(generate_expressions(300, seed=3)) + "\n")
    smi = ROOT / "tests" / "fixtures" / "molecules.smi"
    out, runs = tmp_path / "out", tmp_path / "runs"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin", RUNS=str(runs),
               GRAMMAR_RAE_CACHE=str(tmp_path / "cache"), RESERVE="30", EXPR_RESERVE="30",
               EXPR_MODELS="rae vae", EXPR_ARGS="--epochs 1 --batch-size 50 --device cpu",
               MOL_ARGS="--model rae-l2 --epochs 1 --batch-size 10 --decoder-hidden 8 --device cpu")
    r = subprocess.run(["bash", "scripts/gpu_tables.sh", str(expr), str(smi), str(out), "200"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=400)
    log = (out / "lease.log").read_text()
    assert r.returncode == 0 and "done (" in log, log[-3000:] + r.stderr[-2000:]
    # the background jobs were waited for (a bare `wait` would have hung on the log's `tee`)
    assert "budget spent" not in log
    pieces = sorted(out.glob("run.tar.*"))
    assert pieces and not (out / "logs").exists()     # everything travels inside the tarball
    unpacked = tmp_path / "back"
    (tmp_path / "run.tar").write_bytes(b"".join(p.read_bytes() for p in pieces))
    with tarfile.open(tmp_path / "run.tar") as tar:
        names = tar.getnames()
        tar.extractall(unpacked, filter="data")
    assert not any(".state." in n for n in names)  # optimiser states left out
    best = json.loads((unpacked / "mol" / "zinc" / "checkpoints" / "best.json").read_text())["weights"]
    assert f"mol/zinc/checkpoints/{best}" in names
    assert not any(n.startswith("mol/zinc/checkpoints/last") and n.endswith(".safetensors") for n in names)
    for m in ("rae", "vae"):
        metrics = json.loads((unpacked / "expr" / m / "eval" / "metrics.json").read_text())
        assert metrics["model"] == m and "gvae_10x100" in metrics["reconstruction"]
        assert (unpacked / "logs" / f"expr-{m}.log").exists()
    assert json.loads((unpacked / "mol" / "zinc" / "eval" / "metrics.json").read_text())["grammar"] == "smiles"
