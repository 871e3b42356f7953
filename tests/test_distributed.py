"""Multi-process training: torchrun + DistributedDataParallel, here with gloo on 2 CPU processes."""
import json
import socket
import subprocess
import sys

import pytest

from grammar_rae.data.expressions import generate_expressions


def free_port() -> str:
    """A port nobody listens on now (a fixed one can still be held by the previous run's ranks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.parametrize("extra, epochs", [
    ([], [1, 2]),
    # a time budget that runs out after the first epoch: the ranks agree to stop (or one would hang)
    (["--max-minutes", "0.0001"], [1]),
])
def test_torchrun_two_processes_train_one_run(tmp_path, extra, epochs):
    data = tmp_path / "expr.txt"
    data.write_text("\n".join(generate_expressions(400, seed=2)) + "\n")
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(),
           "-m", "grammar_rae.cli", "train", "--grammar", "expr", "--model", "rae-l2", "--epochs", "2",
           "--data", str(data), "--out", str(out), "--batch-size", "50", "--device", "cpu",
           "--cache-dir", str(tmp_path / "cache"), *extra]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    last = json.loads((out / "checkpoints" / "last.json").read_text())
    assert [h["epoch"] for h in last["history"]] == epochs
    assert r.stdout.count(f"epoch {epochs[-1]}:") == 1  # only rank 0 logs
    # 324 training rows in batches of 50 -> 7 batches, 6 shared out (an even number, or DDP would hang):
    # 3 steps per rank per epoch, each rank on its own batches
    assert [h["step"] for h in last["history"]] == [3 * e for e in epochs]
    assert (out / "density" / "gmm.json").is_file()
