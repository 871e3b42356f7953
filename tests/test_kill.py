"""`kill -9` of a training process -- during a step, at every write and every rename of a checkpoint,
while the densities are fitted -- followed by `--resume`: the run completes, loses at most what was not
committed, loads (its best, or its last checkpoint before there is a best) at every moment something is
committed, and ends with the weights of an uninterrupted run.

The child is the real command line (`grammar_rae.cli.main`). For the precise moments, DRIVER (one
subprocess) imports the package once and forks a run per job that SIGKILLs itself at the chosen
moment; the resumes are forked from it too, so a kill and its resume cost under two seconds.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from grammar_rae.data.expressions import generate_expressions

EPOCHS = 6
DRIVER = r"""
import json, os, signal, sys
jobs, workers = json.loads(open(sys.argv[1]).read()), int(sys.argv[2])
import grammar_rae.io as io
from grammar_rae.cli import main
# what a training run imports lazily, imported once: each forked run starts warm. The driver itself never
# runs a tensor operation (no thread pools exist yet), so forking it is safe.
import grammar_rae.density, grammar_rae.run, safetensors.torch, sklearn.mixture, torch._dynamo  # noqa
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot  # noqa


def die(job, what):
    with open(job["log"] + ".death", "w") as f:
        f.write(what)
    os.kill(os.getpid(), signal.SIGKILL)


def arm(job):
    # kill {"at": "write"}: the n-th checkpoint file is half written to its temporary, not renamed;
    # {"at": "rename"}: the n-th checkpoint file has just been renamed into place, nothing after it ran;
    # {"at": "density"}: the first density is saved, the second not. "names": log every checkpoint rename.
    kill, seen, real = job.get("kill") or {}, [0], os.replace

    class _OS:  # os as grammar_rae.io sees it
        def __getattr__(self, name):
            return getattr(os, name)

        def replace(self, src, dst):
            ours = os.path.basename(os.path.dirname(str(dst))) == "checkpoints"
            seen[0] += ours
            if ours and job.get("names"):
                with open(job["names"], "a") as f:
                    f.write(os.path.basename(str(dst)) + "\n")
            hit = ours and seen[0] == kill.get("n")
            if hit and kill["at"] == "write":
                os.truncate(src, os.path.getsize(src) // 2)
                die(job, os.path.basename(str(dst)))
            real(src, dst)
            if hit and kill["at"] == "rename":
                die(job, os.path.basename(str(dst)))

    io.os = _OS()
    if kill.get("at") == "density":
        real_save = grammar_rae.density._save_files

        def dying_save(*a, **k):
            real_save(*a, **k)
            die(job, "density")

        grammar_rae.density._save_files = dying_save


def start(job):
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        arm(job)
        try:
            main(job["args"], prog_name="grammar-rae")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


codes, running, pending = [None] * len(jobs), {}, list(range(len(jobs)))
while pending or running:
    while pending and len(running) < workers:
        i = pending.pop(0)
        running[start(jobs[i])] = i
    pid, status = os.wait()
    codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
print(json.dumps(codes))
"""


def env():
    return {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def drive(jobs, folder: Path) -> list[int]:
    """Run the jobs in DRIVER, at most two at a time; their exit statuses (-9: killed)."""
    spec = folder / f"jobs-{time.time_ns()}.json"
    spec.write_text(json.dumps(jobs))
    r = subprocess.run([sys.executable, "-c", DRIVER, str(spec), str(min(2, os.cpu_count() or 1))], env=env(),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    p = tmp_path_factory.mktemp("killdata") / "expr.txt"
    p.write_text("\n".join(generate_expressions(1500, seed=8)) + "\n")
    return p


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """400 expressions (324 training rows), parsed once into the cache every run of the module shares."""
    from grammar_rae.data.parsed import prepare_dataset

    p = tmp_path_factory.mktemp("smalldata") / "expr.txt"
    p.write_text("\n".join(generate_expressions(400, seed=8)) + "\n")
    prepare_dataset("expr", p, cache_dir=p.parent / "cache", progress=False, quiet=True)
    return p


def train_args(data, out, resume=False, epochs=EPOCHS, extra=()):
    return ["train", "--grammar", "expr", "--data", str(data), "--epochs", str(epochs), "--batch-size", "64",
            "--decoder-hidden", "24", "--encoder-hidden", "16", "--out", str(out), "--cache-dir",
            str(Path(data).parent / "cache"), "--threads", "1", *extra] + (["--resume"] if resume else [])


def last_epoch(out: Path) -> int:
    try:
        return json.loads((out / "checkpoints" / "last.json").read_text())["epoch"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def resume_to_the_end(data, out):
    r = subprocess.run([sys.executable, "-m", "grammar_rae.cli", *train_args(data, out, resume=True)], env=env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    return r


def check_complete(out: Path, epochs=EPOCHS):
    from grammar_rae.run import load_density, load_run

    meta = json.loads((out / "checkpoints" / "last.json").read_text())
    assert [h["epoch"] for h in meta["history"]] == list(range(1, epochs + 1))
    net, loaded = load_run(out)  # checksums verified
    assert loaded["checkpoint"] == "best"
    for kind in ("gaussian", "gmm"):
        assert load_density(out, kind, net.config.latent_dim).sample(3, seed=0).shape == (3, 25)
    leftovers = [p.name for p in out.rglob(".*") if p.is_file()]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    names = {p.name for p in (out / "checkpoints").iterdir()}
    named = set(meta["sha256"]) | set(json.loads((out / "checkpoints" / "best.json").read_text())["sha256"])
    assert names == named | {"last.json", "best.json"}, "files no commit names were left behind"


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_kill_during_steps_at_random_moments_then_resume(tmp_path, data, seed):
    out = tmp_path / "run"
    rng = np.random.default_rng(seed)
    kills = 0
    while last_epoch(out) < EPOCHS - 1 and kills < 4:
        p = subprocess.Popen([sys.executable, "-m", "grammar_rae.cli",
                              *train_args(data, out, resume=(out / "run.json").is_file())],
                             env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        before = last_epoch(out)
        time.sleep(float(rng.uniform(2.0, 6.0)))  # start-up is ~2 s; an epoch well under a second
        if p.poll() is not None:
            break
        at_kill = last_epoch(out)
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        after = last_epoch(out)
        assert after >= at_kill >= before, "a kill lost a committed epoch"
    assert kills >= 1
    resume_to_the_end(data, out)
    check_complete(out)


# ---------------------------------------------------------------------------------------- every write and rename
# the files a save renames into place, in order ({tag}: the version's global step and a random suffix)
EPOCH_END_SAVE = ["best-{tag}.safetensors", "best.json",                                  # save_best
                  "last-{tag}.safetensors", "last-{tag}.state.safetensors", "last-{tag}.state.json", "last.json"]
IN_EPOCH_SAVE = EPOCH_END_SAVE[2:]                                                        # save, inside an epoch
STEPS = 6          # an epoch of the small data: 400 rows - 40 test - 36 validation = 324 training rows, batches of 64
IN_EPOCH_STEPS = 41  # the same rows in batches of 8
# fp32: the resumed runs are compared bit for bit with the uninterrupted one, and bf16 autocast on a CPU
# (on by default where the CPU has native bf16) was seen to diverge from run to run in a second epoch
EXACT = ["--no-amp"]
IN_EPOCH_ARGS = [*EXACT, "--batch-size", "8", "--model", "vae", "--checkpoint-minutes", "0.00001"]  # one due every 20 steps


def matches(template: str, name: str) -> bool:
    return re.fullmatch(re.escape(template).replace(re.escape("{tag}"), r"\d{9}-[0-9a-f]{6}"), name) is not None


def shape(name: str) -> str:
    """A version's file name without its random suffix: comparable between runs."""
    return re.sub(r"-[0-9a-f]{6}\.", "-*.", name)


def shapes(save: list[str], step: int) -> list[str]:
    return [t.format(tag=f"{step:09d}-*") for t in save]


def renames_of_one_save(tmp_path, monkeypatch, in_epoch=False) -> list[str]:
    """The checkpoint files one save renames into place, in order, counted on a small Trainer: an epoch end
    (save_best, then save) or a checkpoint inside an epoch (save with where the epoch stands)."""
    import grammar_rae.io as io
    from grammar_rae import load_grammar
    from grammar_rae.models.grammar_ae import GrammarAE, GrammarAEConfig
    from grammar_rae.trainer import TrainConfig, Trainer

    names, real = [], os.replace

    class Counting:  # os as grammar_rae.io sees it
        def __getattr__(self, name):
            return getattr(os, name)

        def replace(self, src, dst):
            if Path(dst).parent.name == "checkpoints":
                names.append(Path(dst).name)
            real(src, dst)

    net = GrammarAE(GrammarAEConfig.for_grammar("expr", 15, "rae-l2", decoder_hidden=8), load_grammar("expr"))
    t = Trainer(net, torch.zeros(40, 15, dtype=torch.uint8), torch.zeros(8, 15, dtype=torch.uint8),
                TrainConfig(batch_size=8), tmp_path / f"count-{in_epoch}", progress=False, log=lambda m: None)
    with monkeypatch.context() as m:
        m.setattr(io, "os", Counting())
        if in_epoch:
            t.save(partial={"batch": 2, "sums": {"loss": 1.0}, "generator": t.generator.get_state(),
                            "seconds": 0.0})
        else:
            t.save_best(1.0)
            t.save()
    return names


def test_a_save_renames_its_files_one_by_one_and_its_json_last(tmp_path, monkeypatch):
    for in_epoch, save in ((False, EPOCH_END_SAVE), (True, IN_EPOCH_SAVE)):
        names = renames_of_one_save(tmp_path, monkeypatch, in_epoch)
        assert len(names) == len(save) and all(matches(t, n) for t, n in zip(save, names)), names


def committed(out: Path) -> tuple:
    """(epochs in last.json, its batch inside an epoch or None, epoch of best.json); 0 where there is none."""
    def read(name):
        p = out / "checkpoints" / name
        return json.loads(p.read_text()) if p.is_file() else {}

    last, best = read("last.json"), read("best.json")
    return last.get("epoch", 0), (last.get("partial") or {}).get("batch"), best.get("epoch", 0)


def after_kill(before: tuple, commits: dict, k: int, at: str) -> tuple:
    """What is committed after a kill at file ``k`` (1-based) of a save, by the protocol: a JSON commits
    once its rename is done (``commits``: file index -> {field of ``committed``: value})."""
    state = list(before)
    for i, change in commits.items():
        if i < k or (i == k and at == "rename"):
            for field, value in change.items():
                state[field] = value
    return tuple(state)


def resume_line(log: Path) -> str | None:
    lines = [m for m in log.read_text().splitlines() if m.startswith("resumed ")]
    assert len(lines) <= 1, lines
    return re.sub(r", step .*", "", lines[0]) if lines else None


def weights_of(out: Path, which: str) -> dict:
    from safetensors.torch import load_file

    from grammar_rae.checkpoint import checkpoint_weights

    return load_file(str(checkpoint_weights(out / "checkpoints", which)[0]))


def differing_weights(a: Path, b: Path) -> list[str]:
    out = []
    for which in ("last", "best"):
        x, y = weights_of(a, which), weights_of(b, which)
        out += [f"{which}:{k}" for k in sorted(set(x) | set(y)) if k not in x or k not in y or not torch.equal(x[k], y[k])]
    return out


def kill_resume_and_check(tmp_path, args, points, reference_names, epochs=2):
    """A reference run, and one run killed at each point (n: its n-th checkpoint rename, at: "write" |
    "rename", state: what must be committed then, line: the resume's first words). Each killed run: the
    committed state, a model that loads whenever a checkpoint is committed; then --resume: the run completes with the
    reference's last and best weights."""
    from grammar_rae.checkpoint import RunError
    from grammar_rae.run import load_run

    ref = tmp_path / "reference"
    runs = [tmp_path / f"{at}-{n}" for n, at, _, _ in points]
    jobs = [{"args": args(ref), "log": f"{ref}.log", "names": str(tmp_path / "names")}]
    jobs += [{"args": args(out), "log": f"{out}.log", "kill": {"at": at, "n": n}} for out, (n, at, _, _) in zip(runs, points)]
    codes = drive(jobs, tmp_path)
    assert codes == [0] + [-signal.SIGKILL] * len(points), Path(f"{ref}.log").read_text()[-2000:]
    names = (tmp_path / "names").read_text().split()
    assert [shape(n) for n in names] == reference_names
    for out, (n, at, state, _) in zip(runs, points):
        died_at = Path(f"{out}.log.death").read_text()
        assert shape(died_at) == shape(names[n - 1]), f"{out.name} died at {died_at}, not at {names[n - 1]}"
        assert committed(out) == state, f"after a kill at the {at} of {died_at}"
        try:
            loaded = load_run(out)[1]["checkpoint"]
        except RunError:
            loaded = None
        # load_run takes the best, or the last checkpoint while there is no best (one inside epoch 1)
        want = "best" if state[2] else "last" if state[0] or state[1] else None
        assert loaded == want, f"after a kill at the {at} of {died_at}"

    codes = drive([{"args": args(out) + ["--resume"], "log": f"{out}.resume.log"} for out in runs], tmp_path)
    for out, code, (n, at, state, line) in zip(runs, codes, points):
        log = Path(f"{out}.resume.log")
        assert code == 0, log.read_text()[-2000:]
        assert resume_line(log) == (line.format(out=out) if line else None), out.name
        check_complete(out, epochs)
        assert not differing_weights(out, ref), f"{out.name}: the resumed weights differ from the uninterrupted run's"


def epoch_end_points(files: int, epochs, moments=("write", "rename")):
    """Kill points in the epoch-end saves of ``epochs`` of a run without checkpoints inside epochs: the save of
    epoch e is checkpoint renames (e - 1) * files + 1 .. e * files."""
    points = []
    for e in epochs:
        commits = {2: {2: e}, files: {0: e}}   # best.json: the best is epoch e's; last.json: e epochs are done
        for k in range(1, files + 1):
            for at in moments:
                state = after_kill((e - 1, None, e - 1), commits, k, at)
                points.append(((e - 1) * files + k, at, state, "resumed {out} after epoch %d" % state[0] if state[0]
                               else None))
    return points


def run_epoch_end_kills(tmp_path, small_data, monkeypatch, epochs, moments=("write", "rename")):
    files = len(renames_of_one_save(tmp_path, monkeypatch))   # counted, not assumed
    assert files == len(EPOCH_END_SAVE)
    reference = shapes(EPOCH_END_SAVE, STEPS) + shapes(EPOCH_END_SAVE, 2 * STEPS)  # both epochs improve
    kill_resume_and_check(tmp_path, lambda out: train_args(small_data, out, epochs=2, extra=EXACT),
                          epoch_end_points(files, epochs, moments), reference)


def test_a_kill_at_every_write_and_rename_of_an_epoch_end_save_resumes(tmp_path, small_data, monkeypatch):
    """Every file of the first save (nothing committed before it) and of the second (epoch 1 committed),
    killed while its temporary is half written and just after its rename: 24 kills, 24 resumes."""
    run_epoch_end_kills(tmp_path, small_data, monkeypatch, epochs=(1, 2))


def in_epoch_points(files: int, which):
    """Kill points in the first checkpoint inside epoch e (at batch 20) for (e, k, at) in ``which``. Before it
    the run renamed, per earlier epoch, its two checkpoints inside it (batches 20 and 40) and its epoch end."""
    points = []
    for e, k, at in which:
        state = after_kill((e - 1, None, e - 1), {files: {1: 20}}, k, at)  # last.json: at batch 20
        line = (f"resumed {{out}} inside epoch {e} (batch 20)" if state[1]
                else f"resumed {{out}} after epoch {e - 1}" if e > 1 else None)
        points.append(((e - 1) * (2 * files + len(EPOCH_END_SAVE)) + k, at, state, line))
    return points


def run_in_epoch_kills(tmp_path, small_data, monkeypatch, which):
    files = len(renames_of_one_save(tmp_path, monkeypatch, in_epoch=True))
    assert files == len(IN_EPOCH_SAVE)
    reference = []
    for e in (1, 2):
        start = (e - 1) * IN_EPOCH_STEPS
        reference += shapes(IN_EPOCH_SAVE, start + 20) + shapes(IN_EPOCH_SAVE, start + 40)
        reference += shapes(EPOCH_END_SAVE, start + IN_EPOCH_STEPS)
    kill_resume_and_check(tmp_path, lambda out: train_args(small_data, out, epochs=2, extra=IN_EPOCH_ARGS),
                          in_epoch_points(files, which), reference)


def test_a_kill_at_the_commit_of_a_checkpoint_inside_an_epoch_resumes_from_its_batch(tmp_path, small_data,
                                                                                      monkeypatch):
    """The commit (last.json) of the checkpoint at batch 20 of epochs 1 and 2: killed before its rename, the
    run resumes after the last epoch; after it, inside the epoch at batch 20 -- with the same batch plan and
    the same noise (a VAE), so it ends with the uninterrupted run's weights."""
    run_in_epoch_kills(tmp_path, small_data, monkeypatch, [(1, 4, "rename"), (2, 4, "write"), (2, 4, "rename")])


@pytest.mark.slow
def test_a_kill_at_every_write_and_rename_of_a_checkpoint_inside_an_epoch_resumes(tmp_path, small_data,
                                                                                   monkeypatch):
    run_in_epoch_kills(tmp_path, small_data, monkeypatch,
                       [(e, k, at) for e in (1, 2) for k in range(1, 5) for at in ("write", "rename")])


def test_kill_while_densities_are_fitted_then_resume(tmp_path, small_data):
    out = tmp_path / "run"
    args = train_args(small_data, out, epochs=2)
    assert drive([{"args": args, "log": f"{out}.log", "kill": {"at": "density"}}], tmp_path) == [-signal.SIGKILL]
    assert last_epoch(out) == 2 and not (out / "density" / "gmm.json").is_file()
    assert drive([{"args": args + ["--resume"], "log": f"{out}.resume.log"}], tmp_path) == [0]
    assert resume_line(Path(f"{out}.resume.log")) == f"resumed {out} after epoch 2"
    check_complete(out, epochs=2)
