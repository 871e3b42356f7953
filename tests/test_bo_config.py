"""BOConfig (grammar_rae/optimize/config.py): the one object the CLI and the API build, the BO loop reads
and a resume compares."""
import dataclasses

import pytest

from grammar_rae.errors import ConfigError
from grammar_rae.optimize.config import BOConfig, GPConfig


def test_a_bo_config_cannot_be_changed_once_made():
    c = BOConfig("logp", seeds=[3, 1])
    assert c.seeds == (3, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.batch = 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.gp.lr = 1.0


@pytest.mark.parametrize("kw, message", [
    ({"region": "trsut"}, "unknown search region 'trsut'"),
    ({"incumbent": "best"}, "unknown incumbent"),
    ({"region": "density", "ei_search": "multistart"}, "grid EI search"),
    ({"region": "density", "region_quantile": 1.0}, r"\[0, 1\)"),
    ({"region": "trust", "backend": "botorch"}, "lengthscales"),
    ({"n_inducing": 0}, "n_inducing"),
    ({"lr": 0.0}, "learning rate"),
    ({"regoin": "box"}, "unknown GP setting"),
])
def test_impossible_gp_settings_are_refused_with_the_reason(kw, message):
    with pytest.raises(ConfigError, match=message):
        GPConfig.from_kw(kw)


@pytest.mark.parametrize("kw, message", [
    ({"seeds": ()}, "at least one seed"), ({"batch": 0}, "batch"), ({"n_decode": 0}, "n-decode"),
    ({"scoring": "python2"}, "unknown scoring"),
])
def test_impossible_loop_settings_are_refused(kw, message):
    with pytest.raises(ConfigError, match=message):
        BOConfig("expr", **kw)


def test_the_settings_a_state_records_keep_the_format_earlier_runs_wrote():
    # a run's state records these dicts and a resume compares them: states written before BOConfig
    # (the CLI's defaults: no region keys for the box, refit_epochs only when set) must still match
    assert GPConfig().as_kw() == {"n_inducing": 500, "epochs": 50, "batch": 5000, "lr": 5e-4, "backend": "native",
                                  "incumbent": "posterior-mean", "ei_search": "grid"}
    assert GPConfig(region="trust").as_kw()["region"] == "trust"
    assert "region_quantile" not in GPConfig(region="trust").as_kw()
    assert GPConfig(region="density", region_quantile=0.05).as_kw()["region_quantile"] == 0.05
    assert GPConfig(refit_epochs=3).as_kw()["refit_epochs"] == 3
    c = BOConfig("expr", batch=7, gp=GPConfig(epochs=10))
    assert c.resume_settings("expr:x", 100, molecules=False) == {
        "objective": "expr:x", "data_rows": 100, "batch": 7, "n_decode": 25, "gp": GPConfig(epochs=10).as_kw()}
    assert c.resume_settings("logp", 100, molecules=True)["n_decode"] == 500   # the GrammarVAE's choices
    # more iterations or seeds do not change what a resume compares
    assert BOConfig("expr", iterations=9, seeds=(1, 2)).resume_settings("e", 5, False) == \
        BOConfig("expr", iterations=1).resume_settings("e", 5, False)
