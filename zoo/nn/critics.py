"""Q-function ensembles over s ⊕ a."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from zoo.nn.ensemble import EnsembleLinear, EnsembleMLP, initialize


class EnsembleQ(nn.Module):
    """`n_critics` Q-networks Q_i(s, a) evaluated together: returns (n_critics, batch)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n_critics: int = 2,
        hidden: Sequence[int] = (256, 256),
        layer_norm: bool = False,
        init: str = "default",
        output_bound: float | None = None,
    ):
        super().__init__()
        self.n_critics = n_critics
        self.net = EnsembleMLP(n_critics, obs_dim + act_dim, 1, hidden, layer_norm)
        initialize(self.net, init, output_bound)  # see zoo.nn.ensemble.initialize for the schemes

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        return self.net(torch.cat([obs, actions], dim=-1), members).squeeze(-1)


class SharedQ(nn.Module):
    """Shared Q-networks (Park, Park & Lee, PSQN): per critic, a backbone over s ⊕ a feeds two linear heads.

    z_i = h_i(s ⊕ a) (hidden layers with ReLU, the last one included), Q_i = f_i(z_i) (linear -> 1) and
    s'_i = g_i(z_i) (linear -> obs_dim, the predicted normalised next state). Each critic has its own
    backbone and heads; "shared" means Q and the transition head share one backbone
    (daisophila/PSQN TD3_BC_Pretrain.py: l1, l2 -> l3 and l31 for Q1; l4, l5 -> l6 and l62 for Q2).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n_critics: int = 2,
        hidden: Sequence[int] = (256, 256),
        layer_norm: bool = False,
    ):
        super().__init__()
        if not hidden:
            raise ValueError("A shared Q-network needs at least one hidden layer for its backbone.")
        self.n_critics = n_critics
        # The backbone is an MLP whose last layer is hidden too: ReLU after it, heads on top.
        self.backbone = EnsembleMLP(
            n_critics, obs_dim + act_dim, hidden[-1], hidden[:-1], layer_norm, activate_output=True
        )
        self.q_head = EnsembleLinear(n_critics, hidden[-1], 1)
        self.transition_head = EnsembleLinear(n_critics, hidden[-1], obs_dim)

    def features(
        self, obs: torch.Tensor, actions: torch.Tensor, members: slice | None = None
    ) -> torch.Tensor:
        return self.backbone(torch.cat([obs, actions], dim=-1), members)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        return self.q_head(self.features(obs, actions, members), members).squeeze(-1)

    def predict_next_observation(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(n_critics, batch, obs_dim): each critic's transition head on its own backbone."""
        return self.transition_head(self.features(obs, actions))
