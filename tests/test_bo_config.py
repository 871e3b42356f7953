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


def test_presets_and_what_the_user_gives_over_them():
    from grammar_rae.optimize.config import PRESETS, make_config

    g = make_config("gvae", objective="logp")
    assert g.gp == GPConfig() and not g.new_only and g.decodes_per_point(True) == 500   # the protocol, exactly
    d = make_config("default", objective="logp")
    assert d.gp == GPConfig.from_kw(PRESETS["default"]["gp"]) and d.new_only and d.decodes_per_point(True) == 10
    assert d.decodes_per_point(False) == 25
    assert make_config("default", objective="e", n_decode=3).decodes_per_point(True) == 3
    # a flag given wins over the preset; None means "the preset's"
    c = make_config("default", {"local": 0.0, "epochs": None, "rows": 50}, objective="expr", new_only=False)
    assert c.gp.local == 0.0 and c.gp.epochs == 10 and c.gp.rows == 50 and not c.new_only
    # another EI search than the grid goes without the preset's local proposals instead of an error ...
    assert make_config("default", {"ei_search": "multistart"}, objective="expr").gp.local == 0.0
    assert make_config("default", {"backend": "botorch"}, objective="expr").gp.local == 0.0
    # ... but asking for both is still refused with the reason
    with pytest.raises(ConfigError, match="grid EI search"):
        make_config("default", {"ei_search": "multistart", "local": 0.5}, objective="expr")
    with pytest.raises(ConfigError, match="unknown protocol"):
        make_config("gvea", objective="expr")
    with pytest.raises(ConfigError, match="at least 10"):
        make_config("default", {"rows": 3}, objective="expr")
    # recorded only when set: a protocol run's settings keep the format older states wrote
    assert "new_only" not in g.resume_settings("logp", 10, True) and "rows" not in g.gp.as_kw()
    assert d.resume_settings("logp", 10, True)["new_only"] is True and d.gp.as_kw()["rows"] == 10_000
