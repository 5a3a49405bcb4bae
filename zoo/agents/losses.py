"""Loss terms several agents share."""

from __future__ import annotations

import torch


def ensemble_mse(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the critics of each one's MSE against the target: q is (n_critics, batch), target (batch,);
    a population's q (P, n_critics, batch) and target (P, batch) give the sum over its members too.
    The critic loss of every zoo agent (TD, Monte-Carlo and soft Monte-Carlo targets alike)."""
    return (q - target.unsqueeze(-2)).pow(2).mean(dim=-1).sum()
