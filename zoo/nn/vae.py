"""Conditional VAE of the behaviour policy: a density model of the dataset's actions given the state.

SPOT (Wu et al., 2022) fits it once to the dataset and reads -log pi_beta(a|s) off it; the layout follows
thuml/SPOT vae.py: encoder [s, a] -> 2 hidden ReLU layers -> (mu_z, log sigma_z), log sigma_z clamped to
[-4, 15]; decoder [s, z] -> 2 hidden ReLU layers -> tanh (actions live in [-1, 1] here, so the official
`max_action *` factor is 1). The two encoder heads of the official code (two Linear(hidden, latent)) are one
Linear(hidden, 2 latent) here: the same map with the same default initialisation.

Populations (zoo.agents.population): with `n_members` = P the encoder and decoder are P members of one
batched MLP each, inputs and outputs carry the member axis first ((P, B, d) batches, (P, L, B, d) samples),
and member k's latent noise comes from its own generator (`random`, set by the policy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from zoo.nn.ensemble import EnsembleMLP
from zoo.nn.members import GLOBAL_RANDOM, MemberRandom, per_member

LOG_STD_MIN, LOG_STD_MAX = -4.0, 15.0


class VAE(nn.Module):
    """q(z | s, a) = N(mu_z, sigma_z^2), p(a | s, z) with mean tanh(dec(s, z)), prior N(0, I).

    :param obs_dim: state size
    :param act_dim: action size
    :param hidden: hidden sizes of the encoder and of the decoder (SPOT: 750, 750)
    :param latent_dim: size of z (default 2 * act_dim, as in SPOT)
    :param n_members: 1 for an ordinary agent; P for a population's P VAEs (one per member)

    Shapes: the losses take an agent's batch, (B, obs) and (B, act), and return (B,); a population's
    (P, B, obs) and (P, B, act) give (P, B), member k's rows through member k's networks. `beta` may be a
    population's (P,) tensor (one value per member).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (750, 750),
        latent_dim: int | None = None,
        n_members: int = 1,
    ):
        super().__init__()
        latent_dim = 2 * act_dim if latent_dim is None else int(latent_dim)
        if latent_dim < 1:
            raise ValueError(f"The VAE's latent_dim must be >= 1, got {latent_dim}.")
        self.obs_dim, self.act_dim, self.latent_dim = obs_dim, act_dim, latent_dim
        self.n_members = n_members
        # One member each for an ordinary agent, P for a population (the member axis of every zoo network).
        self.encoder = EnsembleMLP(n_members, obs_dim + act_dim, 2 * latent_dim, tuple(hidden))
        self.decoder = EnsembleMLP(n_members, obs_dim + latent_dim, act_dim, tuple(hidden))
        # The source of the latent noise: torch's global generator, or one generator per population member.
        self.random: MemberRandom = GLOBAL_RANDOM

    def _forward_mlp(self, mlp: EnsembleMLP, x: torch.Tensor) -> torch.Tensor:
        """An MLP on inputs with any leading shape (..., in) -> (..., out); with P members the leading axis
        is the member axis, (P, ..., in) -> (P, ..., out), member k's rows through member k's weights."""
        return mlp(x.reshape(self.n_members, -1, x.shape[-1])).reshape(*x.shape[:-1], -1)

    def encode(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu_z, log sigma_z), each (..., latent_dim); log sigma_z clamped to [-4, 15] as in SPOT."""
        mean, log_std = self._forward_mlp(self.encoder, torch.cat([obs, actions], dim=-1)).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def decode(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The decoder's mean action tanh(dec(s, z)), (..., act_dim)."""
        return torch.tanh(self._forward_mlp(self.decoder, torch.cat([obs, z], dim=-1)))

    def _sample_latents(self, obs, actions, num_samples):
        """Encode once, draw `num_samples` reparameterised z per state: z = mu + sigma * eps, (L, B, latent)
        (a population: (P, L, B, latent), member k's eps from its own generator)."""
        mean, log_std = self.encode(obs, actions)
        std = log_std.exp()
        eps = self.random.randn(num_samples, *mean.shape[-2:], device=mean.device, dtype=mean.dtype)
        z = mean.unsqueeze(-3) + std.unsqueeze(-3) * eps
        recon = self.decode(obs.unsqueeze(-3).expand(*z.shape[:-1], obs.shape[-1]), z)
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
        reconstruction = (recon - actions.unsqueeze(-3)).pow(2).mean(dim=(-3, -1))
        kl = -0.5 * (1.0 + 2.0 * log_std - mean.pow(2) - std.pow(2)).mean(dim=-1)
        return reconstruction + per_member(beta, kl) * kl

    def iwae_loss(
        self, obs: torch.Tensor, actions: torch.Tensor, beta: float, num_samples: int = 10
    ) -> torch.Tensor:
        """Per state (B,): -log pi_beta(a|s) by importance sampling over L = num_samples latents,
        -[logsumexp_l (log p(a|s,z_l) + log p(z_l) - log q(z_l|s,a)) - log L], with the decoder a Gaussian
        of standard deviation sqrt(beta / 4) (thuml/SPOT `importance_sampling_estimator`)."""
        if not isinstance(beta, torch.Tensor) and beta <= 0:  # a population's members were checked one by one
            raise ValueError(
                f"The importance-sampling estimate needs beta > 0 (decoder variance beta/4), got {beta}."
            )
        _, log_std, _, eps, z, recon = self._sample_latents(obs, actions, num_samples)
        half_log_2pi = 0.5 * math.log(2.0 * math.pi)
        if isinstance(beta, torch.Tensor):  # a population's (P,): one decoder deviation per member
            dec_std = per_member(beta / 4.0, recon).sqrt()
            log_dec_std = dec_std.log()
        else:
            dec_std = math.sqrt(beta / 4.0)
            log_dec_std = math.log(dec_std)
        error = (actions.unsqueeze(-3) - recon) / dec_std
        log_p_a = (-0.5 * error.pow(2) - log_dec_std - half_log_2pi).sum(-1)
        log_p_z = (-0.5 * z.pow(2) - half_log_2pi).sum(-1)
        log_q_z = (-0.5 * eps.pow(2) - log_std.unsqueeze(-3) - half_log_2pi).sum(-1)  # (z - mu) / sigma = eps
        log_w = log_p_a + log_p_z - log_q_z  # (L, B), a population's (P, L, B)
        return -(log_w.logsumexp(dim=-2) - math.log(num_samples))
