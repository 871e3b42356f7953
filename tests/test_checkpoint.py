"""The checkpoint format: each save a new version under fresh names, committed by its JSON (which records
their sha256); files no commit names are removed; runs from before versioned names still load and resume."""
import json
import re

import pytest
import torch

from grammar_rae import load_grammar
from grammar_rae.checkpoint import RunError, checkpoint_weights, file_sha256, load_weights, prune_checkpoints
from grammar_rae.data.expressions import generate_expressions
from grammar_rae.data.parsed import pack
from grammar_rae.models.grammar_ae import GrammarAE, GrammarAEConfig
from grammar_rae.run import load_run, train_run
from grammar_rae.trainer import TrainConfig, Trainer

TAG = r"\d{9}-[0-9a-f]{6}"


@pytest.fixture(scope="module")
def rules():
    g = load_grammar("expr")
    return torch.from_numpy(pack(g, [g.parse(s) for s in generate_expressions(60, seed=1)], max_length=15)[0])


def trainer(rules, run_dir):
    torch.manual_seed(0)
    net = GrammarAE(GrammarAEConfig.for_grammar("expr", 15, "rae-l2", conv_channels=(8, 8, 8), embedding_dim=8,
                                                encoder_hidden=8, decoder_hidden=8), load_grammar("expr"))
    return Trainer(net, rules[:50], rules[50:], TrainConfig(epochs=1, batch_size=10, recon_rows=0, amp=False),
                   run_dir, progress=False, log=lambda m: None)


def files(ckpt) -> set[str]:
    return {p.name for p in ckpt.iterdir()}


def test_a_save_is_a_new_version_its_json_names_and_the_old_one_goes(tmp_path, rules):
    t = trainer(rules, tmp_path)
    ckpt = tmp_path / "checkpoints"
    t.global_step = 7
    t.save()
    meta = json.loads((ckpt / "last.json").read_text())
    assert re.fullmatch(rf"last-0+7-[0-9a-f]{{6}}\.safetensors", meta["weights"])
    assert meta["state"] == meta["weights"].removesuffix(".safetensors") + ".state"
    assert set(meta["sha256"]) == {meta["weights"], meta["state"] + ".safetensors", meta["state"] + ".json"}
    assert all(file_sha256(ckpt / name) == sha for name, sha in meta["sha256"].items())
    assert files(ckpt) == set(meta["sha256"]) | {"last.json"}
    assert checkpoint_weights(ckpt, "last") == (ckpt / meta["weights"], meta)

    t.global_step = 8
    t.save()
    t.save_best(1.0)
    t.save_best(0.5)
    last, best = (json.loads((ckpt / f"{w}.json").read_text()) for w in ("last", "best"))
    assert not set(meta["sha256"]) & files(ckpt), "the previous version was not removed"
    assert re.fullmatch(rf"best-0+8-[0-9a-f]{{6}}\.safetensors", best["weights"]) and best["val_rec"] == 0.5
    assert files(ckpt) == set(last["sha256"]) | set(best["sha256"]) | {"last.json", "best.json"}


def test_files_no_commit_names_are_removed_on_resume(tmp_path, rules):
    """What a kill leaves: a version written but not committed, and a temporary half written."""
    t = trainer(rules, tmp_path)
    t.save_best(1.0)
    t.save()
    ckpt = tmp_path / "checkpoints"
    committed = files(ckpt)
    stray = ["last-000000099-abcdef.safetensors", "last-000000099-abcdef.state.json", "best-000000099-abcdef.safetensors"]
    for name in stray + [".last.json.k2j4h5"]:
        (ckpt / name).write_bytes(b"partial")
    (ckpt / "notes.txt").write_text("not a checkpoint file: kept")
    assert trainer(rules, tmp_path).resume()
    assert files(ckpt) == committed | {"notes.txt"}
    assert prune_checkpoints(ckpt) == []


def legacy_layout(run) -> None:
    """Turn a run into one written before versioned names and checksums: last.safetensors,
    last.state.{safetensors,json}, best.safetensors, and JSONs that name no files."""
    ckpt = run / "checkpoints"
    for which in ("last", "best"):
        meta = json.loads((ckpt / f"{which}.json").read_text())
        (ckpt / meta["weights"]).rename(ckpt / f"{which}.safetensors")
        if "state" in meta:
            for suffix in (".safetensors", ".json"):
                (ckpt / f"{meta['state']}{suffix}").rename(ckpt / f"{which}.state{suffix}")
            state = json.loads((ckpt / f"{which}.state.json").read_text())
            (ckpt / f"{which}.state.json").write_text(json.dumps({k: v for k, v in state.items() if k != "sha256"}))
        (ckpt / f"{which}.json").write_text(
            json.dumps({k: v for k, v in meta.items() if k not in ("weights", "state", "sha256")}))


def test_a_run_from_before_versioned_names_loads_and_resumes_into_them(tmp_path):
    data = tmp_path / "expr.txt"
    data.write_text("\n".join(generate_expressions(200, seed=2)) + "\n")

    def run(epochs, resume=False):
        return train_run(tmp_path / "old", "expr", "rae-l2", data=data, resume=resume, progress=False,
                         log=lambda m: None, cache_dir=tmp_path / "cache", decoder_hidden=16, encoder_hidden=16,
                         train=TrainConfig(epochs=epochs, batch_size=50, recon_rows=0, amp=False))

    out = run(1)
    before = {k: v.clone() for k, v in load_run(out)[0].state_dict().items()}
    legacy_layout(out)
    ckpt = out / "checkpoints"
    assert files(ckpt) == {"last.json", "best.json", "last.safetensors", "best.safetensors", "last.state.safetensors",
                           "last.state.json"}
    assert checkpoint_weights(ckpt, "best")[0] == ckpt / "best.safetensors"
    net, meta = load_run(out)
    assert meta["checkpoint"] == "best" and all(torch.equal(before[k], v) for k, v in net.state_dict().items())

    run(2, resume=True)
    last = json.loads((ckpt / "last.json").read_text())
    assert last["epoch"] == 2 and re.fullmatch(rf"last-{TAG}\.safetensors", last["weights"])
    assert "last.safetensors" not in files(ckpt) and "last.state.json" not in files(ckpt)
    assert load_run(out, which="last")[1]["checkpoint"] == "last"


def test_a_json_that_names_a_file_outside_its_folder_is_refused(tmp_path, rules):
    t = trainer(rules, tmp_path)
    t.save()
    ckpt = tmp_path / "checkpoints"
    for name in ("../last.safetensors", ".hidden.safetensors", "sub/x.safetensors"):
        (ckpt / "best.json").write_text(json.dumps({"epoch": 1, "weights": name}))
        with pytest.raises(RunError, match="not a file of its folder"):
            checkpoint_weights(ckpt, "best")


def test_without_a_best_the_last_checkpoint_loads(tmp_path):
    data = tmp_path / "expr.txt"
    data.write_text("\n".join(generate_expressions(200, seed=2)) + "\n")
    out = train_run(tmp_path / "r", "expr", "rae-l2", data=data, progress=False, log=lambda m: None,
                    cache_dir=tmp_path / "cache", decoder_hidden=16, encoder_hidden=16,
                    train=TrainConfig(epochs=1, batch_size=50, recon_rows=0, amp=False))
    assert load_run(out)[1]["checkpoint"] == "best"
    (out / "checkpoints" / "best.json").unlink()
    net, meta = load_run(out)
    want = load_weights(checkpoint_weights(out / "checkpoints", "last")[0])
    assert meta["checkpoint"] == "last" and all(torch.equal(want[k], v) for k, v in net.state_dict().items())
