"""Q-function ensembles over s ⊕ a."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from zoo.nn.ensemble import EnsembleMLP


class EnsembleQ(nn.Module):
    """`n_critics` Q-networks Q_i(s, a) evaluated together: returns (n_critics, batch)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n_critics: int = 2,
        hidden: Sequence[int] = (256, 256),
        layer_norm: bool = False,
    ):
        super().__init__()
        self.n_critics = n_critics
        self.net = EnsembleMLP(n_critics, obs_dim + act_dim, 1, hidden, layer_norm)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        return self.net(torch.cat([obs, actions], dim=-1), members).squeeze(-1)
