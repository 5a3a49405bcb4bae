"""Policies' networks."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn.ensemble import EnsembleMLP, initialize
from zoo.nn.members import GLOBAL_RANDOM, MemberRandom


def _members_out(out: torch.Tensor, obs: torch.Tensor, n_members: int) -> torch.Tensor:
    """An ordinary agent's (B, d) input gives (B, out); a population's (P, B, d) gives (P, B, out)."""
    return out.squeeze(0) if n_members == 1 and obs.dim() == 2 else out


class DeterministicActor(nn.Module):
    """pi(s) = tanh(MLP(s)) in [-1, 1]^act_dim (actions are rescaled to the env's bounds outside)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256),
        layer_norm: bool = False,
        n_members: int = 1,
    ):
        super().__init__()
        # One member for an ordinary agent; a population's P agents are P members of one MLP.
        self.n_members = n_members
        self.net = EnsembleMLP(n_members, obs_dim, act_dim, hidden, layer_norm)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, obs) -> (B, act); a population's (P, B, obs) -> (P, B, act)."""
        return _members_out(torch.tanh(self.net(obs)), obs, self.n_members)


class TanhGaussianActor(nn.Module):
    """a = tanh(u), u ~ N(mu(s), sigma(s)^2): the SAC-family policy (CQL, Cal-QL, EDAC).

    One MLP outputs mu and log sigma side by side (the same maps as two linear heads on one trunk).
    log sigma is clipped to `log_std_bounds`; with `learnable_log_std_scale` it is first mapped through
    m * log_sigma + o with learnable scalars m (init 1) and o (init -1), as in JaxCQL/Cal-QL and CORL's CQL.
    log pi(a|s) includes the tanh change of variables, computed stably as
    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256),
        layer_norm: bool = False,
        log_std_bounds: tuple[float, float] = (-20.0, 2.0),
        learnable_log_std_scale: bool = False,
        init: str = "default",
        output_bound: float | None = None,
        n_members: int = 1,
    ):
        super().__init__()
        self.act_dim, self.n_members = act_dim, n_members
        self.net = EnsembleMLP(n_members, obs_dim, 2 * act_dim, hidden, layer_norm)
        initialize(self.net, init, output_bound)
        self.log_std_bounds = tuple(log_std_bounds)
        self.learnable_log_std_scale = learnable_log_std_scale
        # The source of the reparameterisation noise (a population gives each member its own generator).
        self.random: MemberRandom = GLOBAL_RANDOM
        if learnable_log_std_scale:
            # Scalars; a population's are (P, 1, 1), one per member, broadcasting over (P, B, act).
            shape = () if n_members == 1 else (n_members, 1, 1)
            self.log_std_multiplier = nn.Parameter(torch.full(shape, 1.0))
            self.log_std_offset = nn.Parameter(torch.full(shape, -1.0))

    def distribution(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, sigma) of the pre-tanh Gaussian, each (batch, act_dim) (a population: (P, batch, act_dim))."""
        mean, log_std = _members_out(self.net(obs), obs, self.n_members).chunk(2, dim=-1)
        if self.learnable_log_std_scale:
            log_std = self.log_std_multiplier * log_std + self.log_std_offset
        return mean, log_std.clamp(*self.log_std_bounds).exp()

    @staticmethod
    def _log_prob(u: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        gaussian = -0.5 * ((u - mean) / std).pow(2) - std.log() - 0.5 * math.log(2 * math.pi)
        tanh_correction = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        return (gaussian - tanh_correction).sum(-1)

    def forward(
        self, obs: torch.Tensor, deterministic: bool = False, n_samples: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised actions and their log-probabilities.

        Shapes: (batch, act_dim) and (batch,); with `n_samples=K`, (K, batch, act_dim) and (K, batch),
        K independent samples per state from one evaluation of the network. A population's outputs carry
        its member axis first: (P, [K,] batch, ...).
        """
        mean, std = self.distribution(obs)
        if n_samples is not None:
            shape = (*mean.shape[:-2], n_samples, *mean.shape[-2:])
            mean, std = mean.unsqueeze(-3).expand(shape), std.unsqueeze(-3).expand(shape)
        u = mean if deterministic else mean + std * self.random.randn_like(mean)
        return torch.tanh(u), self._log_prob(u, mean, std)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """log pi(a|s) of given actions in [-1, 1] (clipped to ±(1 - eps): atanh(±1) is infinite)."""
        mean, std = self.distribution(obs)
        u = torch.atanh(actions.clamp(-1.0 + eps, 1.0 - eps))
        return self._log_prob(u, mean, std)
