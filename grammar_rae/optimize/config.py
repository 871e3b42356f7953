"""What a BO run is asked to do, as one frozen object: the CLI and the Python API build a
:class:`BOConfig`, the loop (bo.py) reads it, and a resumed run compares what it must share with the
run it continues (:meth:`BOConfig.resume_settings`; more iterations or seeds are fine).

The dataclasses' defaults are the GrammarVAE/RAE protocol (REFERENCE.md §5): a sparse GP with 500 inducing
points fitted for 50 epochs at lr 5e-4, EI with the posterior-mean incumbent searched on a grid of the
training codes' bounding box, 5 iterations of 50 points. ``grammar-rae optimize`` and ``Model.optimize``
start from a *preset* (:data:`PRESETS`, :func:`make_config`) and override what the user gives:
``default``, chosen on bench/bo_targets.py's development targets (BENCHMARKS.md, "BO on targets it was
never tuned on"), or ``gvae``, the protocol, for the published Table 3 rows.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..errors import ConfigError
from .regions import REGIONS as SEARCH_REGIONS

REGIONS = tuple(SEARCH_REGIONS)   # regions.py: one class per search region
INCUMBENTS = ("posterior-mean", "observed")
EI_SEARCHES = ("grid", "multistart")
BACKENDS = ("native", "botorch")


@dataclass(frozen=True)
class GPConfig:
    """The surrogate and the acquisition search (bo.py's ``gp`` settings)."""
    n_inducing: int = 500
    epochs: int = 50
    batch: int = 5000                     # minibatch of the sparse-GP fit
    lr: float = 5e-4
    refit_epochs: int | None = None       # warm refits after the first iteration (None: from scratch)
    backend: str = "native"
    incumbent: str = "posterior-mean"
    ei_search: str = "grid"
    region: str = "box"                   # where EI searches: box, density or trust (bo.py, trust.py)
    region_quantile: float = 0.01         # density region: share of training codes left outside
    local: float = 0.0                    # share of each batch chosen near the best points so far
                                          # (acquisition.local_pool; 0: the protocol's EI alone)
    rows: int | None = None               # fit on at most this many training codes (bo.gp_rows: the best
                                          # tenth of them by score, a seeded sample for the rest; None: all)

    def __post_init__(self):
        for name, value, allowed in (("search region", self.region, REGIONS), ("incumbent", self.incumbent, INCUMBENTS),
                                     ("EI search", self.ei_search, EI_SEARCHES), ("GP backend", self.backend, BACKENDS)):
            if value not in allowed:
                raise ConfigError(f"unknown {name} {value!r} ({', '.join(allowed)})")
        for name in ("n_inducing", "epochs", "batch"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"the GP's {name} must be at least 1, got {getattr(self, name)}")
        if self.rows is not None and (not float(self.rows).is_integer() or int(self.rows) < 10):
            raise ConfigError(f"the GP needs a whole number of at least 10 training rows (--gp-rows), got {self.rows}")
        if self.rows is not None:
            object.__setattr__(self, "rows", int(self.rows))
        if not 0.0 <= self.local <= 1.0:
            raise ConfigError(f"the local share of a batch must be in [0, 1], got {self.local}")
        if self.local and (self.ei_search != "grid" or self.backend != "native"):
            raise ConfigError("local proposals (--local-share) are chosen by the grid EI search (--ei-search grid) "
                              "of the native GP (--gp native)")
        if not self.lr > 0:
            raise ConfigError(f"the GP's learning rate must be positive, got {self.lr}")
        if self.region == "density":
            if self.ei_search != "grid" or self.backend != "native":
                raise ConfigError("the density search region is searched by the grid EI search (--ei-search grid) "
                                  "of the native GP (--gp native)")
            if not 0.0 <= self.region_quantile < 1.0:
                raise ConfigError(f"the density region's quantile must be in [0, 1), got {self.region_quantile}")
        if self.region == "trust" and self.backend != "native":
            raise ConfigError("the trust region is sized by the native GP's lengthscales (--gp native)")

    @classmethod
    def from_kw(cls, kw: dict | None) -> "GPConfig":
        """From a dict of some of the fields (None values: the default); an unknown key is refused."""
        kw = {k: v for k, v in (kw or {}).items() if v is not None}
        unknown = sorted(set(kw) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown GP setting(s) {', '.join(unknown)}")
        return cls(**kw)

    def as_kw(self) -> dict:
        """The settings as the loop reads them and a run's state records them: the region's keys only
        for the regions that have them, ``refit_epochs`` only when set (so that the states of runs made
        before these keys existed resume)."""
        kw = asdict(self)
        if self.refit_epochs is None:
            kw.pop("refit_epochs")
        if self.region == "box":
            kw.pop("region")
        if self.region != "density":
            kw.pop("region_quantile")
        if not self.local:
            kw.pop("local")
        if self.rows is None:
            kw.pop("rows")
        return kw


@dataclass(frozen=True)
class BOConfig:
    """One BO run: the objective, the loop's sizes and the GP (:class:`GPConfig`)."""
    objective: str
    target: str | None = None             # --objective expr: the expression to fit
    scoring: str = "ours"                 # expressions: "gvae" scores as the published Python 2 code did
    iterations: int = 5
    batch: int = 50
    seeds: tuple = (1,)
    n_decode: int | None = None           # decodes per point (None: the preset's, DECODES)
    data_rows: int | None = None          # encode and use a seeded sample of the data (None: all)
    new_only: bool = False                # every evaluation a string this run has not evaluated yet
                                          # (bo.decode_new). False: the protocol
    preset: str = "gvae"                  # the preset it was built from (decodes per point by default)
    gp: GPConfig = field(default_factory=GPConfig)

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.seeds:
            raise ConfigError("give at least one seed")
        if self.iterations < 0 or self.batch < 1:
            raise ConfigError(f"iterations must be >= 0 and batch >= 1, got {self.iterations} and {self.batch}")
        if self.n_decode is not None and self.n_decode < 1:
            raise ConfigError(f"--n-decode must be at least 1, got {self.n_decode}")
        if self.data_rows is not None and self.data_rows < 2:
            raise ConfigError(f"--data-rows must be at least 2, got {self.data_rows}")
        if self.scoring not in ("ours", "gvae"):
            raise ConfigError(f"unknown scoring {self.scoring!r} (ours or gvae)")
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown protocol {self.preset!r} ({', '.join(PRESETS)})")
        if not isinstance(self.gp, GPConfig):
            raise ConfigError("BOConfig.gp must be a GPConfig")

    def decodes_per_point(self, molecules: bool) -> int:
        if self.n_decode is not None:
            return self.n_decode
        return DECODES[self.preset][0 if molecules else 1]   # gvae: the GrammarVAE's 500 / 25

    def resume_settings(self, objective_key: str, rows: int, molecules: bool) -> dict:
        """What a resumed run must share with the run it continues (recorded in each seed's state)."""
        settings = {"objective": objective_key, "data_rows": rows, "batch": self.batch,
                    "n_decode": self.decodes_per_point(molecules), "gp": self.gp.as_kw()}
        if self.new_only:   # recorded only when set, so that states made before it resume
            settings["new_only"] = True
        return settings


# Each preset: the BOConfig and GPConfig fields it sets (the rest keep the dataclasses' defaults, the
# protocol's). "default" was chosen on bench/bo_targets.py's development targets only (BENCHMARKS.md):
# a GP fitted for 10 epochs at 5e-3 on 10,000 training codes (the best 1,000 and a sample; from scratch
# every iteration, so that a resumed run proposes what an uninterrupted one would), half of each batch by
# EI in the box and half by EI among perturbations of the 10 best points so far, every evaluation a new
# string, 10 decodes per molecule point (the semantic decoder makes most decodes valid; the protocol's
# 500 were for the grammar-only decoder).
PRESETS = {
    "default": {"new_only": True,
                "gp": {"epochs": 10, "lr": 5e-3, "rows": 10_000, "local": 0.5}},
    "gvae": {},
}
DECODES = {"default": (10, 25), "gvae": (500, 25)}   # decodes per point (molecules, expressions) when
                                                     # n_decode is not given


def make_config(protocol: str = "default", gp_kw: dict | None = None, **loop_kw) -> BOConfig:
    """The BOConfig of ``protocol``'s preset with the given settings over it (None: the preset's).
    ``gp_kw``: GPConfig fields; ``loop_kw``: BOConfig fields (objective, target, iterations, ...)."""
    if protocol not in PRESETS:
        raise ConfigError(f"unknown protocol {protocol!r} ({', '.join(PRESETS)})")
    preset, given = PRESETS[protocol], {k: v for k, v in (gp_kw or {}).items() if v is not None}
    gp_preset = dict(preset.get("gp", {}))
    if given.get("ei_search", "grid") != "grid" or given.get("backend", "native") != "native":
        gp_preset.pop("local", None)   # local proposals are the grid search's: a user's other search goes without
    gp = GPConfig.from_kw({**gp_preset, **given})
    loop = {**{k: v for k, v in preset.items() if k != "gp"}, **{k: v for k, v in loop_kw.items() if v is not None}}
    return BOConfig(gp=gp, preset=protocol, **loop)
