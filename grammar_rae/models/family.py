"""The RAE/VAE/AE family as data: one entry per model says what its loss adds to the reconstruction
term (Ghosh et al., ICLR 2020, eq. 11) and how its encoder is used. Grammar and image models read
this table; adding a model is one ``Family`` line here (and, for a new kind of term, its name in
``LATENT_TERMS`` or ``DECODER_TERMS`` and one function in ``regularisers.py``).

  latent term   "l2"  ½‖z‖² (RAE eq. 10; the CV-VAE's KL up to a constant)
                "kl"  KL(N(μ, σ²) ‖ N(0, I))  (Kingma & Welling 2014)
                "mmd" MMD(q(z), N(0, I))      (Tolstikhin et al. 2018)
  decoder reg.  "l2"  ‖θ_dec‖² (Tikhonov)   "gp" ‖∇_z ‖D(z)‖²‖²   "sn" spectral normalisation
  posterior     "gaussian" z = μ + ε·σ (needs a log-variance head)   "constant" z = μ + ε·σ_CV
                None: deterministic, z = μ
  n_column      the density behind the RAE paper's "N" column: the fitted Gaussian, the prior
                (models trained to match it), or the 2s-VAE's second stage

Each model's loss is the weighted sum of exactly the terms its entry names (``Family.weights``):
``regularisers.objective`` refuses a term that has no weight here instead of logging it and leaving
it out of the total.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


# The term each setting adds to L_REC, by the name it is logged under: the latent term is weighted by
# β, the decoder regulariser by λ (eq. 11); spectral normalisation constrains the weights, no term.
LATENT_TERMS = {"l2": "z", "kl": "kl", "mmd": "mmd"}
DECODER_TERMS = {"l2": "reg", "gp": "reg", "sn": None}


@dataclass(frozen=True)
class Family:
    name: str
    latent_term: str | None = None
    decoder_reg: str | None = None
    posterior: str | None = None
    grammar_weights: tuple | None = (0.0, 0.0)   # (β, λ) defaults for grammar models; None: image-only
    summary: str = ""
    n_column: str = "gaussian"

    @property
    def variational(self) -> bool:
        """Has a log-variance head and samples z in training."""
        return self.posterior == "gaussian"

    @property
    def stochastic(self) -> bool:
        """z differs from the encoder mean in training (so repeated encodes differ)."""
        return self.posterior is not None

    def weights(self, beta: float, lam: float) -> dict[str, float]:
        """The terms of this model's loss, by the name each is logged under, with their weights:
        L = L_REC + β·(latent term) + λ·L_REG (RAE eq. 11)."""
        out = {"rec": 1.0}
        if self.latent_term is not None:
            out[LATENT_TERMS[self.latent_term]] = beta
        if DECODER_TERMS.get(self.decoder_reg) is not None:
            out[DECODER_TERMS[self.decoder_reg]] = lam
        return out


# The grammar experiments of the RAE paper do not list their (β, λ); these follow its image-table
# magnitudes, scaled to a summed-over-steps reconstruction loss.
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("rae-l2", "l2", "l2", None, (1e-3, 1e-6), "RAE with Tikhonov (L2) regularisation of the decoder"),
    Family("rae-gp", "l2", "gp", None, (1e-3, 1e-6), "RAE with a gradient penalty on the decoder"),
    Family("rae-sn", "l2", "sn", None, (1e-3, 0.0), "RAE with spectrally normalised decoder weights"),
    Family("rae", "l2", None, None, (1e-3, 0.0), "RAE, no explicit decoder regulariser"),
    Family("ae", None, None, None, (0.0, 0.0), "plain deterministic autoencoder"),
    Family("vae", "kl", None, "gaussian", (1.0, 0.0), "variational autoencoder", n_column="prior"),
    Family("cv-vae", "l2", None, "constant", (1e-3, 0.0), "VAE with a constant posterior variance"),
    # image-only members (RAE paper, Table 1)
    Family("wae", "mmd", None, None, None, "Wasserstein autoencoder (MMD)", n_column="prior"),
    Family("2s-vae", "kl", None, "gaussian", None, "two-stage VAE (a second VAE fitted on the codes)",
           n_column="two-stage"),
)}

GRAMMAR_MODELS = tuple(name for name, f in FAMILIES.items() if f.grammar_weights is not None)
IMAGE_MODELS = tuple(FAMILIES)


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose from {tuple(FAMILIES)}") from None
