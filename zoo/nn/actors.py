"""Policies' networks."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from zoo.nn.ensemble import EnsembleMLP


class DeterministicActor(nn.Module):
    """pi(s) = tanh(MLP(s)) in [-1, 1]^act_dim (actions are rescaled to the env's bounds outside)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256), layer_norm: bool = False):
        super().__init__()
        # One member today; the member axis is where several seeds trained together will go.
        self.net = EnsembleMLP(1, obs_dim, act_dim, hidden, layer_norm)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs)).squeeze(0)
