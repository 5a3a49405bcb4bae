"""TD3+BC (Fujimoto & Gu, 2021): TD3 whose actor also regresses onto the dataset's actions.

Losses follow sfujim/TD3_BC (TD3_BC.py): TD3's critic update unchanged (zoo.agents.td3) and the actor
(every `policy_delay` steps) on -lambda mean Q_1(s, pi(s)) + MSE(pi(s), a), lambda = alpha / mean|Q_1|
(detached, per batch; the MSE averages over batch and action dimensions).
"""

from __future__ import annotations

from typing import Any

import torch

from zoo.agents.base import Batch
from zoo.agents.td3 import TD3, TD3Policy
from zoo.data.dataset import OfflineDataset
from zoo.nn.members import per_member


class TD3BC(TD3):
    """TD3+BC with Fujimoto's defaults.

    :param alpha: weight of the Q term against behaviour cloning (lambda = alpha / mean|Q|)
    Other arguments: see TD3 and OfflineAlgorithm.
    """

    def __init__(self, dataset: OfflineDataset | None = None, *, alpha: float = 2.5, **kwargs: Any):
        self.alpha = alpha
        super().__init__(dataset, **kwargs)

    def actor_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-lambda * mean Q_1(s, pi(s)) + MSE(pi(s), a), lambda = alpha / mean|Q_1(s, pi(s))| (detached);
        a population's members each on their own batch, with their own alpha, summed."""
        pi = self.actor(batch.observations)
        q = self.actor_q(batch.observations, pi)
        q_mean = q.mean(-1)
        lmbda = per_member(self.alpha, q_mean) / q.abs().mean(-1).detach()
        bc = (pi - batch.actions).pow(2).flatten(-2).mean(-1)  # F.mse_loss per member
        return (-lmbda * q_mean + bc).sum(), {}


__all__ = ["TD3BC", "TD3Policy"]
