"""Conditional VAE of the behaviour policy: a density model of the dataset's actions given the state.

SPOT (Wu et al., 2022) fits it once to the dataset and reads -log pi_beta(a|s) off it; the layout follows
thuml/SPOT vae.py: encoder [s, a] -> 2 hidden ReLU layers -> (mu_z, log sigma_z), log sigma_z clamped to
[-4, 15]; decoder [s, z] -> 2 hidden ReLU layers -> tanh (actions live in [-1, 1] here, so the official
`max_action *` factor is 1). The two encoder heads of the official code (two Linear(hidden, latent)) are one
Linear(hidden, 2 latent) here: the same map with the same default initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from zoo.nn.ensemble import EnsembleMLP

LOG_STD_MIN, LOG_STD_MAX = -4.0, 15.0


class VAE(nn.Module):
    """q(z | s, a) = N(mu_z, sigma_z^2), p(a | s, z) with mean tanh(dec(s, z)), prior N(0, I).

    :param obs_dim: state size
    :param act_dim: action size
    :param hidden: hidden sizes of the encoder and of the decoder (SPOT: 750, 750)
    :param latent_dim: size of z (default 2 * act_dim, as in SPOT)
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (750, 750), latent_dim: int | None = None
    ):
        super().__init__()
        latent_dim = 2 * act_dim if latent_dim is None else int(latent_dim)
        if latent_dim < 1:
            raise ValueError(f"The VAE's latent_dim must be >= 1, got {latent_dim}.")
        self.obs_dim, self.act_dim, self.latent_dim = obs_dim, act_dim, latent_dim
        # One member each (the member axis of every zoo network); outputs are squeezed back to (..., d).
        self.encoder = EnsembleMLP(1, obs_dim + act_dim, 2 * latent_dim, tuple(hidden))
        self.decoder = EnsembleMLP(1, obs_dim + latent_dim, act_dim, tuple(hidden))

    @staticmethod
    def _forward_mlp(mlp: EnsembleMLP, x: torch.Tensor) -> torch.Tensor:
        """An MLP on inputs with any leading shape (..., in) -> (..., out)."""
        return mlp(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)

    def encode(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu_z, log sigma_z), each (..., latent_dim); log sigma_z clamped to [-4, 15] as in SPOT."""
        mean, log_std = self._forward_mlp(self.encoder, torch.cat([obs, actions], dim=-1)).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def decode(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The decoder's mean action tanh(dec(s, z)), (..., act_dim)."""
        return torch.tanh(self._forward_mlp(self.decoder, torch.cat([obs, z], dim=-1)))

    def _sample_latents(self, obs, actions, num_samples):
        """Encode once, draw `num_samples` reparameterised z per state: z = mu + sigma * eps,
        (L, B, latent)."""
        mean, log_std = self.encode(obs, actions)
        std = log_std.exp()
        eps = torch.randn(num_samples, *mean.shape, device=mean.device, dtype=mean.dtype)
        z = mean + std * eps
        recon = self.decode(obs.expand(num_samples, *obs.shape), z)
        return mean, log_std, std, eps, z, recon

    def elbo_loss(
        self, obs: torch.Tensor, actions: torch.Tensor, beta: float, num_samples: int = 1
    ) -> torch.Tensor:
        """Per state (B,): mean over samples and action dims of (dec(s, z_l) - a)^2 + beta * mean over latent
        dims of KL(q(z|s,a) || N(0, I)).

        SPOT's "elbo_loss": an affine function of -ELBO with a Gaussian decoder of variance beta/4, so a
        scaled stand-in for -log pi_beta(a|s). Its batch mean with one sample is the VAE's training loss
        (thuml/SPOT train_vae.py: MSE over batch and action dims + beta * KL averaged over batch and latent).
        """
        mean, log_std, std, _, _, recon = self._sample_latents(obs, actions, num_samples)
        reconstruction = (recon - actions).pow(2).mean(dim=(0, 2))
        kl = -0.5 * (1.0 + 2.0 * log_std - mean.pow(2) - std.pow(2)).mean(dim=-1)
        return reconstruction + beta * kl

    def iwae_loss(
        self, obs: torch.Tensor, actions: torch.Tensor, beta: float, num_samples: int = 10
    ) -> torch.Tensor:
        """Per state (B,): -log pi_beta(a|s) by importance sampling over L = num_samples latents,
        -[logsumexp_l (log p(a|s,z_l) + log p(z_l) - log q(z_l|s,a)) - log L], with the decoder a Gaussian
        of standard deviation sqrt(beta / 4) (thuml/SPOT `importance_sampling_estimator`)."""
        if beta <= 0:
            raise ValueError(
                f"The importance-sampling estimate needs beta > 0 (decoder variance beta/4), got {beta}."
            )
        _, log_std, _, eps, z, recon = self._sample_latents(obs, actions, num_samples)
        half_log_2pi = 0.5 * math.log(2.0 * math.pi)
        dec_std = math.sqrt(beta / 4.0)
        log_p_a = (-0.5 * ((actions - recon) / dec_std).pow(2) - math.log(dec_std) - half_log_2pi).sum(-1)
        log_p_z = (-0.5 * z.pow(2) - half_log_2pi).sum(-1)
        log_q_z = (-0.5 * eps.pow(2) - log_std - half_log_2pi).sum(-1)  # (z - mu) / sigma = eps
        log_w = log_p_a + log_p_z - log_q_z  # (L, B)
        return -(log_w.logsumexp(dim=0) - math.log(num_samples))
