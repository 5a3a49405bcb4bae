"""Q-function ensembles over s ⊕ a.

An ordinary agent's critics take (B, d) inputs shared by its C critics and return (C, B). A population of
`n_members` = P agents (zoo.agents.population) takes (P, B, d), agent p's rows for its own C critics, and
returns (P, C, B): the critic axis is always second to last.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from zoo.nn.ensemble import EnsembleLinear, EnsembleMLP, initialize


def _population_rows(x: torch.Tensor, n_members: int, n_critics: int, members: slice | None) -> torch.Tensor:
    """(P, B, d) -> (P * c, B, d): each population member's rows repeated for its c selected critics."""
    selected = n_critics if members is None else len(range(n_critics)[members])
    return x.unsqueeze(1).expand(n_members, selected, *x.shape[1:]).flatten(0, 1)


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
        n_members: int = 1,
    ):
        super().__init__()
        self.n_critics, self.n_members = n_critics, n_members
        self.net = EnsembleMLP(n_members * n_critics, obs_dim + act_dim, 1, hidden, layer_norm)
        initialize(self.net, init, output_bound)  # see zoo.nn.ensemble.initialize for the schemes

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        """Q_i(s, a): (C, B) for (B, d) inputs; (P, C, B) for a population's (P, B, d). `members` selects
        critics (of every population member)."""
        x = torch.cat([obs, actions], dim=-1)
        if x.dim() == 2:
            return self.net(x, members).squeeze(-1)
        rows = _population_rows(x, self.n_members, self.n_critics, members)
        return self.net(rows, members, self.n_members).view(self.n_members, -1, x.shape[1])

    def many_actions(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q_i(s_b, a_nb) for N actions at each state: (B, d) states and (N, B, |A|) actions -> (C, N, B);
        a population's (P, B, d) and (P, N, B, |A|) -> (P, C, N, B). The values of `forward` on the states
        repeated N times (equal up to float rounding: sums in another order), arranged for the CPU:
        - the first layer splits, W1 [s; a] + b1 = (W1_s s + b1) + W1_a a: its state half is computed once
          per state instead of N times, and the N-fold copy of the states is never made;
        - each critic is its own chain of addmm (2-D matrix products: their backward ran ~1.2x faster here
          than a batched baddbmm's over 31 x 256 rows), ReLU in place on each product's fresh output.
        With LayerNorm or under autocast (bf16) it evaluates `forward` on the repeated states, whose rounding
        the bf16 path is defined by."""
        *members, n, b, act_dim = actions.shape
        if self.net.layer_norm or torch.is_autocast_enabled(actions.device.type):
            states = obs.unsqueeze(-3).expand(*members, n, *obs.shape[-2:]).reshape(*members, n * b, -1)
            return self(states, actions.reshape(*members, n * b, -1)).view(*members, -1, n, b)
        groups = members[0] if members else 1
        obs = obs.reshape(groups, b, -1)
        actions = actions.reshape(groups, n, b, act_dim)
        obs_dim = obs.shape[-1]
        first, *hidden, head = self.net.layers
        # unbind: one backward node per layer stacks the members' gradients (indexing would zero-fill a
        # full-size gradient per member); in-place ReLU only on fresh products (on a view it would copy).
        layers = [(layer.weight.unbind(0), layer.bias.unbind(0)) for layer in self.net.layers]
        q = []
        for e in range(first.n_members):  # member e: population member e // C, its critic e % C
            p = e // self.n_critics
            (w1, b1), *rest, (w_out, b_out) = ((w[e], bias[e]) for w, bias in layers)
            state_half = torch.addmm(b1, obs[p], w1[:obs_dim])  # (B, H): once per state
            x = torch.baddbmm(state_half.expand(n, b, -1), actions[p], w1[obs_dim:].expand(n, act_dim, -1))
            x = x.relu_().view(n * b, -1)
            for w, bias in rest:
                x = torch.addmm(bias, x, w).relu_()
            q.append(torch.addmm(b_out, x, w_out))
        return torch.stack(q).view(*members, self.n_critics, n, b)


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
        n_members: int = 1,
    ):
        super().__init__()
        if not hidden:
            raise ValueError("A shared Q-network needs at least one hidden layer for its backbone.")
        self.n_critics, self.n_members = n_critics, n_members
        n = n_members * n_critics
        # The backbone is an MLP whose last layer is hidden too: ReLU after it, heads on top.
        self.backbone = EnsembleMLP(n, obs_dim + act_dim, hidden[-1], hidden[:-1], layer_norm, activate_output=True)
        self.q_head = EnsembleLinear(n, hidden[-1], 1)
        self.transition_head = EnsembleLinear(n, hidden[-1], obs_dim)

    def features(
        self, obs: torch.Tensor, actions: torch.Tensor, members: slice | None = None
    ) -> torch.Tensor:
        """The backbone's output z_i: (C, B, h), or (P * C, B, h) for a population's (P, B, d) inputs."""
        x = torch.cat([obs, actions], dim=-1)
        if x.dim() == 2:
            return self.backbone(x, members)
        return self.backbone(_population_rows(x, self.n_members, self.n_critics, members), members, self.n_members)

    def _split(self, out: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """(P * c, B, k) -> (P, c, B, k) for a population; unchanged for an ordinary agent."""
        return out if obs.dim() == 2 else out.view(self.n_members, -1, *out.shape[1:])

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        groups = 1 if obs.dim() == 2 else self.n_members
        q = self.q_head(self.features(obs, actions, members), members, groups).squeeze(-1)
        return self._split(q, obs)

    def predict_next_observation(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(n_critics, batch, obs_dim) (a population: (P, n_critics, batch, obs_dim)): each critic's
        transition head on its own backbone."""
        return self._split(self.transition_head(self.features(obs, actions)), obs)
