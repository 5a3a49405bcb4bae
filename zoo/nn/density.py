"""Density-ratio network of balanced replay (Lee et al., Off2On, 2021), used by OPT.

w(s, a) estimates d_online(s, a) / d_offline(s, a): an MLP over s ⊕ a with a ReLU on its scalar output,
so w >= 0 (Off2On and OPT: 256-256 hidden, ReLU output). Initialisation as in shlee94/Off2OnRL
(examples/ours.py: rlkit's ConcatMlp, last layer U(±3e-3), its bias filled with 1): w starts at about 1
everywhere, so the ReLU starts alive and the first priorities are about 1. Its loss lives with the agent
(zoo.agents.opt.density_ratio_loss). A population's P agents are P members of one batched MLP.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn.ensemble import EnsembleMLP, member_uniform_
from zoo.nn.members import MemberRandom


class DensityRatio(nn.Module):
    """w(s, a) = relu(MLP(s ⊕ a)) >= 0: returns (batch,), or (P, batch) for a population's (P, batch, d)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256),
        output_bound: float = 3e-3,
        n_members: int = 1,
    ):
        super().__init__()
        # One member for an ordinary agent; a population's P agents are P members.
        self.net = EnsembleMLP(n_members, obs_dim + act_dim, 1, hidden)
        self.output_bound = output_bound
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, random: MemberRandom | None = None) -> None:
        """Hidden layers U(±1/sqrt(fan_in)); output weight U(±output_bound), output bias 1 (w ≈ 1). Drawn from
        torch's global generator, or from an agent's `random` (OPT's online re-draw: a population's member k
        from its own generator; zoo.nn.ensemble.member_uniform_)."""
        for layer in self.net.layers:
            layer.reset_parameters(random)
        output = self.net.layers[-1]
        member_uniform_(output.weight, -self.output_bound, self.output_bound, random)
        output.bias.fill_(1.0)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        w = F.relu(self.net(torch.cat([obs, actions], dim=-1)))[..., 0]  # (members, batch)
        return w[0] if obs.dim() == 2 else w
