"""Pretraining recipes: what an agent does in its first `pretrain_steps` gradient steps.

A recipe is a component an agent takes (`pretrain="imitate"`), not a copy of the agent: it may add
columns to the device table (e.g. Monte-Carlo returns) and replaces the agent's update while the
pretraining phase lasts. Pretraining steps count inside `learn`'s total, as in the official code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from zoo.agents.base import Batch
    from zoo.agents.td3 import TD3
    from zoo.data.dataset import OfflineDataset


class Pretraining:
    """Base of the recipes."""

    key: str = ""

    def check(self, agent) -> None:
        """Refuse, at construction, an agent whose networks the recipe cannot train."""

    def columns(self, agent: "TD3", dataset: "OfflineDataset") -> dict[str, torch.Tensor]:
        """Extra per-transition columns the recipe's losses read from batches."""
        return {}

    def update(self, agent: "TD3", batch: "Batch") -> None:
        raise NotImplementedError

    def finish(self, agent: "TD3") -> None:
        """Called once when the agent's own losses take over."""


class Imitation(Pretraining):
    """First imitate, then improve (Jelley et al., 2024; AdamJelley/EfficientOfflineRL `--pretrain AC`).

    Every pretraining step: the actor regresses onto the dataset actions (BC, no policy delay) and both
    critics regress onto the Monte-Carlo return-to-go of the dataset (s, a), with the timeout tail
    r_T / (1 - gamma); targets follow every step. With td_weight = lambda > 0 the critic loss mixes in
    the TD loss, each part divided by its own detached value (scale-free, as the official code does):
    (1 - lambda) L_MC / sg(L_MC) + lambda L_TD / sg(L_TD).
    """

    key = "imitate"

    def __init__(self, td_weight: float = 0.0):
        if not 0.0 <= td_weight <= 1.0:
            raise ValueError(f"The TD weight (lambda) of imitation pretraining lies in [0, 1], got {td_weight}.")
        self.td_weight = td_weight

    def check(self, agent) -> None:
        from zoo.agents.td3 import TD3

        if not isinstance(agent, TD3):
            raise ValueError(
                f"pretrain='imitate' trains a deterministic TD3-family actor and twin critics; "
                f"{type(agent).__name__} is not one (use it with td3 or td3bc)."
            )

    def columns(self, agent: "TD3", dataset: "OfflineDataset") -> dict[str, torch.Tensor]:
        return {"returns_to_go": dataset.returns_to_go(agent.gamma, timeout_tail=True)}

    def critic_loss(self, agent: "TD3", batch: "Batch") -> torch.Tensor:
        q = agent.critic(batch.observations, batch.actions)
        mc_loss = (q - batch.returns_to_go).pow(2).mean(dim=1).sum()
        if self.td_weight == 0.0:
            return mc_loss
        td_loss, _ = agent.critic_loss(batch)
        return (1 - self.td_weight) * mc_loss / mc_loss.detach() + self.td_weight * td_loss / td_loss.detach()

    def actor_loss(self, agent: "TD3", batch: "Batch") -> torch.Tensor:
        return F.mse_loss(agent.actor(batch.observations), batch.actions)

    def update(self, agent: "TD3", batch: "Batch") -> None:
        policy = agent.policy
        with agent.autocast():
            critic_loss = self.critic_loss(agent, batch)
        policy.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        policy.critic_optimizer.step()
        with agent.autocast():
            actor_loss = self.actor_loss(agent, batch)
        policy.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        policy.actor_optimizer.step()
        agent.soft_update(*agent._target_pairs, agent.tau)
        agent._record(pretrain_critic_loss=critic_loss, pretrain_actor_loss=actor_loss)


class TransitionPrediction(Pretraining):
    """Pretraining a shared Q-network (Park, Park & Lee, 2025; daisophila/PSQN TD3_BC_Pretrain.py).

    While the phase lasts, each critic's backbone and transition head regress onto the normalised next
    state, sum_i MSE(g_i(h_i(s, a)), s'), in place of the TD loss; the rest of the update runs as usual
    (the official code keeps training the actor on the untrained Q head and soft-updating the targets,
    and one Adam optimizer serves both phases). Then the TD loss takes over and fine-tunes the backbone,
    or, with freeze_backbone=True (the paper's frozen variant, App. F), trains only the Q heads.
    """

    key = "transition"

    def __init__(self, freeze_backbone: bool = False):
        self.freeze_backbone = freeze_backbone

    def check(self, agent) -> None:
        from zoo.nn import SharedQ

        if not isinstance(getattr(agent.policy, "critic", None), SharedQ):
            raise ValueError(
                "pretrain='transition' needs critics with a transition head: pass "
                "policy_kwargs={'shared_q': True} (the psqn key does)."
            )

    def critic_loss(self, agent: "TD3", batch: "Batch") -> torch.Tensor:
        predicted = agent.critic.predict_next_observation(batch.observations, batch.actions)
        return (predicted - batch.next_observations).pow(2).mean(dim=(1, 2)).sum()

    def update(self, agent: "TD3", batch: "Batch") -> None:
        with agent.autocast():
            loss = self.critic_loss(agent, batch)
        agent.td3_update(batch, critic_loss=loss)

    def finish(self, agent: "TD3") -> None:
        if self.freeze_backbone:
            agent.critic.backbone.requires_grad_(False)


PRETRAINING: dict[str, type[Pretraining]] = {Imitation.key: Imitation, TransitionPrediction.key: TransitionPrediction}


def make_pretraining(key: str | None, **kwargs) -> Pretraining | None:
    if key is None:
        return None
    if key not in PRETRAINING:
        raise ValueError(f"Unknown pretraining recipe '{key}'. Known recipes: {', '.join(sorted(PRETRAINING))}.")
    return PRETRAINING[key](**kwargs)
