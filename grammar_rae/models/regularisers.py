"""Loss terms of the RAE/VAE family as pure functions (Ghosh et al., ICLR 2020, Sec. 2-3).

L_RAE = L_REC + β·L_Z + λ·L_REG                                         (eq. 11)
  L_Z   = ½‖z‖²                                                         (eq. 10)
  L_REG = ‖θ_dec‖²      (RAE-L2: Tikhonov, decoder only)
        | ‖∇_z ‖D(z)‖²‖² (RAE-GP: the official code's gradient penalty)
        | —              (RAE-SN: spectral normalisation of the decoder's weights)
VAE: L_REC + β·KL(N(μ, σ²) ‖ N(0, I))                     (Kingma & Welling 2014, appendix B)
WAE: L_REC + β·MMD(q(z), N(0, I))                         (Tolstikhin et al. 2018, eq. 4)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

def masked_nll(logits: torch.Tensor, rules: torch.Tensor, rule_competitors: torch.Tensor,
               allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Grammar-masked reconstruction loss per sequence (GrammarVAE, Sec. 3): at each step the logits
    are restricted to the rules of the true rule's left-hand side, renormalised, and the true rule's
    negative log-probability is summed over steps. Padding steps cost exactly 0 (one allowed rule).
    ``allowed`` [B, T, R] bool: a further mask of each step (the semantic layer's, SD-VAE's masked loss:
    semantics.derivation_masks); it must allow the true rule."""
    competitors = rule_competitors[rules]                      # [B, T, R]
    allowed = competitors if allowed is None else competitors & allowed[:, :rules.shape[1]]
    masked = logits.float().masked_fill(~allowed, float("-inf"))
    nll = F.cross_entropy(masked.transpose(1, 2), rules, reduction="none")
    return nll.sum(1)


def latent_l2(z: torch.Tensor) -> torch.Tensor:
    """½‖z‖² per sample (RAE eq. 10; also the CV-VAE's KL up to a constant)."""
    return 0.5 * z.pow(2).sum(1)


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) per sample."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(1)


def decoder_parameters(decoder: nn.Module):
    """The decoder's weights (biases and norms excluded), as Tikhonov regularisation penalises."""
    return [p for n, p in decoder.named_parameters() if p.requires_grad and p.dim() > 1]


def decoder_l2(decoder: nn.Module) -> torch.Tensor:
    """‖θ_dec‖²: the sum of squared decoder weights -- applied to the decoder only, never the encoder."""
    return sum(p.pow(2).sum() for p in decoder_parameters(decoder))


def gradient_penalty(output: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """‖∇_z ‖D(z)‖²‖² per sample: the gradient of the squared output norm with respect to the
    latent (the official RAE code; not with respect to the input as pythae has it). ``z`` must be
    the tensor ``output`` was computed from, with requires_grad."""
    sq = output.float().pow(2).flatten(1).sum(1)
    (grad,) = torch.autograd.grad(sq.sum(), z, create_graph=True)
    return grad.pow(2).sum(1)


def apply_spectral_norm(module: nn.Module) -> None:
    """Spectral normalisation (Miyato et al. 2018) of every weight matrix of ``module``: Linear
    layers and each GRU weight matrix, so each has top singular value ≈ 1."""
    from torch.nn.utils.parametrizations import spectral_norm

    for m in list(module.modules()):
        if isinstance(m, nn.Linear):
            spectral_norm(m)
        elif isinstance(m, nn.RNNBase):
            for name, p in list(m.named_parameters(recurse=False)):
                if name.startswith("weight"):
                    spectral_norm(m, name=name)


def mmd_imq(z: torch.Tensor, prior: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Unbiased MMD² with the inverse multiquadratic kernel k(a,b) = C/(C + ‖a−b‖²), C = 2·d·scale
    (the WAE-MMD choice, Tolstikhin et al. 2018, Sec. 4)."""
    n, d = z.shape
    c = 2.0 * d * scale

    def k(a, b):
        return c / (c + torch.cdist(a, b).pow(2))

    off = 1.0 - torch.eye(n, device=z.device, dtype=z.dtype)
    kzz = (k(z, z) * off).sum() / (n * (n - 1))
    kpp = (k(prior, prior) * off).sum() / (n * (n - 1))
    return kzz + kpp - 2 * k(z, prior).mean()


def loss_terms(model: str, rec: torch.Tensor, mean: torch.Tensor, log_var, z: torch.Tensor, output: torch.Tensor,
               decoder: nn.Module) -> dict[str, torch.Tensor]:
    """The terms of ``model``'s loss (its ``Family`` entry), by the names family.py gives them."""
    from .family import DECODER_TERMS, LATENT_TERMS, family

    f = family(model)
    terms = {"rec": rec}
    if f.latent_term == "l2":
        terms[LATENT_TERMS["l2"]] = latent_l2(mean).mean()
    elif f.latent_term == "kl":
        terms[LATENT_TERMS["kl"]] = gaussian_kl(mean, log_var).mean()
    elif f.latent_term == "mmd":
        terms[LATENT_TERMS["mmd"]] = mmd_imq(z, torch.randn_like(z))
    if f.decoder_reg == "l2":
        terms[DECODER_TERMS["l2"]] = decoder_l2(decoder)
    elif f.decoder_reg == "gp":
        terms[DECODER_TERMS["gp"]] = gradient_penalty(output, z).mean()
    return terms


def objective(model: str, rec: torch.Tensor, mean: torch.Tensor, log_var, z: torch.Tensor, output: torch.Tensor,
              decoder: nn.Module, beta: float, lam: float) -> tuple[torch.Tensor, dict]:
    """L = L_REC + β·(latent term) + λ·L_REG (RAE eq. 11) for every member of the family, shared by the
    grammar and image models: the sum of every term weighted as the model's ``Family`` entry says.
    ``output`` is the decoder output computed from ``z`` (for RAE-GP)."""
    from .family import family

    terms = loss_terms(model, rec, mean, log_var, z, output, decoder)
    weights = family(model).weights(beta, lam)
    if terms.keys() != weights.keys():
        raise RuntimeError(f"{model}: the loss has the terms {sorted(terms)} but family.py weights "
                           f"{sorted(weights)}; give every term a weight in its Family entry")
    return sum(weights[name] * value for name, value in terms.items()), terms
