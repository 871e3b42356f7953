"""Learning-rate schedules: lr_multiplier by hand, the rate the optimizer really uses at every step, and
a stopped-and-resumed run that continues the schedule (and the weights) exactly."""
import math
import types

import pytest
import torch

import grammar_rae.trainer as train_mod
from grammar_rae.data.expressions import generate_expressions
from grammar_rae.data.parsed import pack
from grammar_rae.errors import UserError
from grammar_rae.models.grammar_ae import GrammarAE, GrammarAEConfig
from grammar_rae.trainer import TrainConfig, Trainer, lr_multiplier

M = 0.1  # min_lr / lr in the hand-computed cases below


@pytest.fixture(scope="module")
def rules(expr):
    strings = generate_expressions(340, seed=3)
    return torch.from_numpy(pack(expr, [expr.parse(s) for s in strings], max_length=15)[0])


def make_trainer(rules, expr, run_dir, cfg, model="rae-l2", rows=120):
    """A tiny model on ``rows`` training rows (bucket_batches large: one sorted chunk, so an epoch has
    ceil(rows / batch_size) steps); it records (step, lr of the first group) at every optimizer step."""
    torch.manual_seed(0)
    net = GrammarAE(GrammarAEConfig.for_grammar("expr", 15, model, conv_channels=(8, 8, 8), embedding_dim=8,
                                                encoder_hidden=8, decoder_hidden=8), expr)
    t = Trainer(net, rules[:rows], rules[rows:rows + 20], cfg, run_dir, progress=False, log=lambda m: None)
    t.lrs = []
    t.optimizer.register_step_pre_hook(lambda opt, args, kwargs: t.lrs.append((t.global_step - 1,
                                                                               opt.param_groups[0]["lr"])))
    return t


def config(**kw):
    return TrainConfig(**{"epochs": 3, "batch_size": 20, "lr": 1e-3, "min_lr": 1e-4, "bucket_batches": 1000,
                          "recon_rows": 0, "amp": False, **kw})


def test_lr_multiplier_by_hand():
    plain = config(schedule="plateau")
    assert [lr_multiplier(plain, s, 100) for s in (0, 50, 99, 500)] == [1.0, 1.0, 1.0, 1.0]
    warm = config(schedule="plateau", warmup_steps=4)
    assert [lr_multiplier(warm, s, 100) for s in (0, 1, 2, 3, 4, 99)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]

    # cosine over 100 steps (t = step / 100) from 1 to m = min_lr / lr = 0.1
    cos = config(schedule="cosine")
    assert lr_multiplier(cos, 0, 100) == pytest.approx(1.0)
    assert lr_multiplier(cos, 25, 100) == pytest.approx(M + (1 - M) * (1 + math.sqrt(0.5)) / 2)
    assert lr_multiplier(cos, 50, 100) == pytest.approx((1 + M) / 2)
    assert lr_multiplier(cos, 75, 100) == pytest.approx(M + (1 - M) * (1 - math.sqrt(0.5)) / 2)
    assert lr_multiplier(cos, 100, 100) == pytest.approx(M)
    assert lr_multiplier(cos, 150, 100) == pytest.approx(M)  # past the plan: stays at the floor
    # with a 10-step warm-up the cosine starts after it: t = (step - 10) / 100 of 110 steps
    cosw = config(schedule="cosine", warmup_steps=10)
    assert lr_multiplier(cosw, 0, 110) == pytest.approx(0.1)
    assert lr_multiplier(cosw, 4, 110) == pytest.approx(0.5)
    assert lr_multiplier(cosw, 9, 110) == pytest.approx(1.0)
    assert lr_multiplier(cosw, 10, 110) == pytest.approx(1.0)
    assert lr_multiplier(cosw, 60, 110) == pytest.approx((1 + M) / 2)
    assert lr_multiplier(cosw, 110, 110) == pytest.approx(M)

    # wsd over 100 steps with the default decay fraction 0.2: stable up to step 80, then the cosine fall
    wsd = config(schedule="wsd")
    assert [lr_multiplier(wsd, s, 100) for s in (0, 40, 79, 80)] == pytest.approx([1.0, 1.0, 1.0, 1.0])
    assert lr_multiplier(wsd, 85, 100) == pytest.approx(M + (1 - M) * (1 + math.sqrt(0.5)) / 2)
    assert lr_multiplier(wsd, 90, 100) == pytest.approx((1 + M) / 2)
    assert lr_multiplier(wsd, 100, 100) == pytest.approx(M)
    wsdw = config(schedule="wsd", warmup_steps=10, decay_fraction=0.5)  # decays over steps 50..100
    assert lr_multiplier(wsdw, 1, 100) == pytest.approx(0.2)
    assert lr_multiplier(wsdw, 30, 100) == pytest.approx(1.0)
    assert lr_multiplier(wsdw, 50, 100) == pytest.approx(1.0)
    assert lr_multiplier(wsdw, 75, 100) == pytest.approx((1 + M) / 2)
    # a warm-up longer than the stable part: the decay starts where the warm-up ends
    wsdl = config(schedule="wsd", warmup_steps=90, decay_fraction=0.2)
    assert lr_multiplier(wsdl, 89, 100) == pytest.approx(1.0)
    assert lr_multiplier(wsdl, 95, 100) == pytest.approx((1 + M) / 2)


def test_an_unknown_schedule_is_refused(rules, expr, tmp_path):
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'linear'"):
        lr_multiplier(config(schedule="linear"), 0, 10)
    with pytest.raises(UserError, match="unknown learning-rate schedule 'linear'"):
        make_trainer(rules, expr, tmp_path, config(schedule="linear"))


@pytest.mark.parametrize("schedule,warmup", [("plateau", 8), ("cosine", 0), ("cosine", 8), ("wsd", 0), ("wsd", 8)])
def test_the_optimizer_steps_with_lr_times_the_multiplier(rules, expr, tmp_path, schedule, warmup):
    # lr_patience 100: the plateau never lowers its base here, so every step's rate is lr x multiplier
    cfg = config(schedule=schedule, warmup_steps=warmup, decay_fraction=0.5, lr_patience=100)
    t = make_trainer(rules, expr, tmp_path, cfg)
    t.fit()
    total = 3 * 6  # 3 epochs of ceil(120 / 20) steps
    assert [s for s, _ in t.lrs] == list(range(total))
    assert [lr for _, lr in t.lrs] == pytest.approx([1e-3 * lr_multiplier(cfg, s, total) for s in range(total)],
                                                    rel=1e-12)
    assert len({lr for _, lr in t.lrs}) > 5  # the rate really moves (warm-up or decay) in every case


def test_schedule_steps_ends_training_at_that_step(rules, expr, tmp_path):
    cfg = config(schedule="cosine", epochs=5, schedule_steps=8)   # 5 epochs would be 30 steps
    t = make_trainer(rules, expr, tmp_path, cfg)
    history = t.fit()
    assert [s for s, _ in t.lrs] == list(range(8))
    assert [lr for _, lr in t.lrs] == pytest.approx([1e-3 * lr_multiplier(cfg, s, 8) for s in range(8)], rel=1e-12)
    assert t.lrs[-1][1] == pytest.approx(1e-3 * (M + (1 - M) * (1 + math.cos(math.pi * 7 / 8)) / 2))
    assert [(h["epoch"], h["step"]) for h in history] == [(1, 6), (2, 8)]  # the second epoch is cut at step 8
    assert t.global_step == 8


def test_a_warmup_spanning_epochs_keeps_the_plateau_reduction(rules, expr, tmp_path):
    """Warm-up over 18 steps = 3 epochs; the plateau halves the rate after epoch 2 (a worse validation
    loss, patience 0). The rest of the warm-up ramps the halved rate, and the rate after it is halved."""
    cfg = config(epochs=4, warmup_steps=18, lr_factor=0.5, lr_patience=0, min_lr=1e-6)
    t = make_trainer(rules, expr, tmp_path, cfg)
    losses = iter([5.0, 6.0, 4.0, 3.0])
    t.validate = lambda: next(losses)
    t.fit()
    lr, w = 1e-3, 18
    want = ([lr * (s + 1) / w for s in range(12)] + [lr * 0.5 * (s + 1) / w for s in range(12, 18)]
            + [lr * 0.5] * 6)
    assert [s for s, _ in t.lrs] == list(range(24))
    assert [x for _, x in t.lrs] == pytest.approx(want, rel=1e-12)
    assert [h["lr"] for h in t.history] == pytest.approx([lr, lr * 0.5, lr * 0.5, lr * 0.5], rel=1e-12)


def comparable(history):
    return [{k: v for k, v in h.items() if k not in ("seconds", "elapsed")} for h in history]


# (where the first invocation stops, checkpoint_minutes, max_minutes) with a fake clock of 1 s per step and
# 30 steps an epoch: 45 s leave no room for a second 30-s epoch; with checkpoints inside epochs the budget
# is checked every 20 steps, so 15 s stop at batch 20 of epoch 1 and 45 s at batch 20 of epoch 2
STOPS = {"after epoch 1": (0.0, 0.75), "epoch 1, batch 20": (1000.0, 0.25), "epoch 2, batch 20": (1000.0, 0.75)}


@pytest.mark.parametrize("schedule,stop", [("cosine", "after epoch 1"), ("cosine", "epoch 1, batch 20"),
                                           ("cosine", "epoch 2, batch 20"), ("wsd", "epoch 2, batch 20"),
                                           ("plateau", "epoch 1, batch 20")])
def test_a_run_stopped_and_resumed_continues_the_schedule_and_the_weights_exactly(rules, expr, tmp_path,
                                                                                monkeypatch, schedule, stop):
    """The VAE draws noise every step: its torch RNG stream must continue too."""
    clock = [0.0]
    monkeypatch.setattr(train_mod, "time", types.SimpleNamespace(time=lambda: clock[0]))
    every_minutes, budget = STOPS[stop]
    kw = dict(epochs=2, batch_size=10, schedule=schedule, warmup_steps=25, decay_fraction=0.5, lr_patience=0)

    straight = make_trainer(rules, expr, tmp_path / "straight", config(**kw), model="vae", rows=300)
    straight.fit()
    assert [s for s, _ in straight.lrs] == list(range(60))

    first = make_trainer(rules, expr, tmp_path / "stopped", config(**kw, checkpoint_minutes=every_minutes,
                                                                    max_minutes=budget), model="vae", rows=300)
    first.optimizer.register_step_pre_hook(lambda *a: clock.__setitem__(0, clock[0] + 1.0))
    first.fit()
    meta = train_mod.read_json(tmp_path / "stopped" / "checkpoints" / "last.json")
    where = (f"epoch {meta['epoch'] + 1}, batch {meta['partial']['batch']}" if meta["partial"]
             else f"after epoch {meta['epoch']}")
    assert where == stop and first.out_of_time

    resumed = make_trainer(rules, expr, tmp_path / "stopped", config(**kw), model="vae", rows=300)
    resumed.fit(resume=True)
    assert first.lrs + resumed.lrs == straight.lrs
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run's weights differ from the uninterrupted run's"
    assert comparable(resumed.history) == comparable(straight.history)
