"""TD3 (Fujimoto et al., 2018) on a fixed dataset: the base of the TD3 family (TD3+BC, PSQN, OPT).

Losses follow sfujim/TD3 (TD3.py), line for line in meaning:
critic: both Q_i(s, a) regress onto r + gamma (1 - terminated) min_i Q_i'(s', clip(pi'(s') + clipped noise));
actor (every `policy_delay` steps): -mean Q_1(s, pi(s)); then Polyak averaging of all targets.
Offline TD3 is the shared-Q-network paper's base on ExoRL. Zoo convention: the time-limit step of an
episode is kept as a bootstrapped transition (Minari keeps its s'), where d4rl.qlearning_dataset drops it.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.type_aliases import Schedule

from zoo.agents.base import Batch, OfflineAlgorithm, OfflinePolicy
from zoo.agents.losses import ensemble_mse
from zoo.agents.pretraining import member_setting
from zoo.data.dataset import OfflineDataset
from zoo.nn import DeterministicActor, EnsembleLinear, EnsembleQ, SharedQ
from zoo.nn.members import per_member


class TD3Policy(OfflinePolicy):
    """Deterministic actor, twin critics as one batched ensemble, their targets and optimizers."""

    optimizer_names = ("actor_optimizer", "critic_optimizer")

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: tuple[int, ...] | list[int] = (256, 256),
        n_critics: int = 2,
        actor_layer_norm: bool = False,
        critic_layer_norm: bool = False,
        actor_net_arch: tuple[int, ...] | list[int] | None = None,
        shared_q: bool = False,
        actor_lr: float | None = None,
        n_members: int = 1,
    ):
        super().__init__(observation_space, action_space, lr_schedule, net_arch, n_members)
        self.actor_lr = actor_lr  # the actor's Adam learning rate (None: the critics'; SPOT sets its own)
        actor_arch = tuple(actor_net_arch) if actor_net_arch is not None else self.net_arch
        self.actor = DeterministicActor(self.obs_dim, self.act_dim, actor_arch, actor_layer_norm, n_members)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        critic_class = SharedQ if shared_q else EnsembleQ
        self.critic = critic_class(
            self.obs_dim, self.act_dim, n_critics, self.net_arch, critic_layer_norm, n_members=n_members
        )
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)

    def build_optimizers(self, lr: float) -> None:
        self.actor_optimizer = self.make_optimizer(self.actor.parameters(), self.actor_lr or lr)
        self.critic_optimizer = self.make_optimizer(self.critic.parameters(), lr)


class TD3(OfflineAlgorithm):
    """TD3 with Fujimoto's defaults, trained offline.

    :param dataset: the OfflineDataset to learn from
    :param policy_delay: critic updates per actor (and target) update
    :param target_policy_noise: std of the smoothing noise on the target action
    :param target_noise_clip: clip of that noise
    :param exploration_noise: std of the Gaussian noise on online actions, in [-1, 1] units (sfujim/TD3: 0.1)
    :param policy_kwargs: net_arch (hidden sizes), actor_net_arch (the actor's, when it differs), n_critics,
        actor_layer_norm, critic_layer_norm (LayerNorm without affine before each ReLU), shared_q (critics
        with a transition head on their backbone, for pretrain="transition")
    Other arguments: see OfflineAlgorithm.
    """

    policy_aliases: ClassVar[dict[str, type[OfflinePolicy]]] = {"MlpPolicy": TD3Policy}
    policy: TD3Policy
    family = "td3"
    # An online component (OPT's `OnlinePretraining`) that takes over `finetune`'s updates and what the
    # actor climbs; None for plain TD3-family agents. Built in `_setup_model`, never saved.
    online_pretraining: Any = None

    def __init__(
        self,
        dataset: OfflineDataset | None = None,
        policy: str | type[TD3Policy] = "MlpPolicy",
        *,
        learning_rate: float = 3e-4,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        policy_delay: int = 2,
        target_policy_noise: float = 0.2,
        target_noise_clip: float = 0.5,
        exploration_noise: float = 0.1,
        normalize_observations: bool = True,
        precision: str = "float32",
        policy_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        self.policy_delay = policy_delay
        self.target_policy_noise = target_policy_noise
        self.target_noise_clip = target_noise_clip
        self.exploration_noise = exploration_noise
        super().__init__(
            policy,
            dataset,
            learning_rate=learning_rate,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            normalize_observations=normalize_observations,
            precision=precision,
            policy_kwargs=policy_kwargs,
            **kwargs,
        )

    def _setup_model(self) -> None:
        super()._setup_model()
        self.actor, self.critic = self.policy.actor, self.policy.critic
        self._actor_params = list(self.actor.parameters())
        self.target_pairs = (  # (targets, sources) that follow by Polyak averaging
            [*self.policy.actor_target.parameters(), *self.policy.critic_target.parameters()],
            [*self._actor_params, *self.critic.parameters()],
        )
        if self.pretraining is not None and self._n_updates > self.pretrain_until:
            self.pretraining.finish(self)  # a loaded agent past its pretraining phase

    def explore(self, observation: np.ndarray) -> np.ndarray:
        """pi(s) + N(0, exploration_noise^2), clipped to the action bounds (sfujim/TD3 main.py)."""
        if not hasattr(self, "_explore_rng"):
            self._explore_rng = np.random.default_rng(self.seed)
        action, _ = self.predict(observation, deterministic=True)
        scaled = self.policy.scale_action(action) + self._explore_rng.normal(
            0.0, self.exploration_noise, action.shape
        )
        return self.policy.unscale_action(np.clip(scaled, -1.0, 1.0))

    def explore_members(self, observations: np.ndarray) -> np.ndarray:
        """`explore` for each member of a population: one batched policy call, then member k's noise from its
        own generator (seeded with its seed) with its own exploration_noise."""
        if not hasattr(self, "_explore_rngs"):
            self._explore_rngs = [np.random.default_rng(seed) for seed in self.member_seeds]
        actions = self.predict_members(observations[:, None], deterministic=True)[:, 0]
        noise = np.stack([
            rng.normal(0.0, member_setting(self, "exploration_noise", k), actions.shape[1:])
            for k, rng in enumerate(self._explore_rngs)
        ])
        return self.policy.unscale_action(np.clip(self.policy.scale_action(actions) + noise, -1.0, 1.0))

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "actor",
            "critic",
            "_actor_params",
            "target_pairs",
            "_explore_rng",
            "_explore_rngs",
            "online_pretraining",
        ]

    # ------------------------------------------------------------------ the online component's hooks

    def learn(self, *args: Any, **kwargs: Any):
        if self.online_pretraining is not None:
            self.online_pretraining.on_learn_start(self)
        return super().learn(*args, **kwargs)

    def finetune(self, *args: Any, **kwargs: Any):
        if self.online_pretraining is not None:
            self.online_pretraining.check_finetune(self)
        return super().finetune(*args, **kwargs)

    def _on_finetune_start(self) -> None:
        super()._on_finetune_start()
        if self.online_pretraining is not None:
            self.online_pretraining.on_finetune_start(self)

    def train(self, gradient_steps: int, batch_size: int) -> None:
        """The base's update loop, or, while an online component is active, its updates."""
        online = self.online_pretraining
        if online is None or not online.active:
            super().train(gradient_steps, batch_size)
        elif online.before_updates(self, batch_size):
            for _ in range(gradient_steps):
                self._n_updates += 1
                online.update(self, batch_size)

    def initialize_critic(self, critic: torch.nn.Module) -> None:
        """Draw a new critic's weights the way this agent's critics start (TD3: PyTorch's default,
        U(±1/sqrt(fan_in)) per layer), from the agent's own generator(s) (a population's member k from its
        own: zoo.nn.ensemble.member_uniform_); OPT starts its Q_on with it."""
        for module in critic.modules():
            if isinstance(module, EnsembleLinear):
                module.reset_parameters(self.random)

    # ------------------------------------------------------------------ losses

    def td_target(self, batch: Batch, critic_target: torch.nn.Module | None = None) -> torch.Tensor:
        """y = r + gamma (1 - terminated) min_i Q'_i(s', clip(pi'(s') + clipped noise)), with the target
        critics (or another critic's targets: OPT's Q_on)."""
        critic_target = self.policy.critic_target if critic_target is None else critic_target
        with torch.no_grad():
            actions = batch.actions
            clip = per_member(self.target_noise_clip, actions)
            noise = (self.random.randn_like(actions) * per_member(self.target_policy_noise, actions)).clamp(
                -clip, clip
            )
            next_actions = (self.policy.actor_target(batch.next_observations) + noise).clamp(-1.0, 1.0)
            next_q = critic_target(batch.next_observations, next_actions).min(dim=-2).values
            return batch.rewards + per_member(self.gamma, next_q) * (1.0 - batch.terminations) * next_q

    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sum over the twin critics of MSE(Q_i(s, a), y); returns (loss, statistics)."""
        target = self.td_target(batch)
        q = self.critic(batch.observations, batch.actions)
        return ensemble_mse(q, target), {"q_mean": q.mean()}

    def actor_q(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The Q-value the actor climbs: Q_1(s, a), or the online component's mix (OPT: kappa-mix)."""
        q = self.critic(observations, actions, members=slice(0, 1)).squeeze(-2)
        if self.online_pretraining is not None:
            return self.online_pretraining.actor_q(self, observations, actions, q)
        return q

    def q_actor_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-mean Q(s, pi(s)) with Q = actor_q (summed over a population's members); returns (loss, statistics)."""
        return -self.actor_q(batch.observations, self.actor(batch.observations)).mean(-1).sum(), {}

    def actor_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """TD3: -mean Q_1(s, pi(s)); returns (loss, statistics)."""
        return self.q_actor_loss(batch)

    def actor_objective(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """What the delayed actor step minimises: `actor_loss`, or the online component's objective
        (OPT on TD3+BC, phase 3: -mean Q_mix without the BC term)."""
        if self.online_pretraining is not None:
            return self.online_pretraining.actor_objective(self, batch)
        return self.actor_loss(batch)

    # ------------------------------------------------------------------ one update

    def rl_update(self, batch: Batch, critic_loss: torch.Tensor | None = None) -> None:
        """One TD3 update; a pretraining recipe may pass its own critic objective (PSQN does)."""
        # Critic step on the twin TD targets (or the recipe's objective).
        stats: dict[str, torch.Tensor] = {}
        with self.autocast():
            if critic_loss is None:
                critic_loss, stats = self.critic_loss(batch)
        self.critic_step(critic_loss)
        self.record(**stats, critic_loss=critic_loss)

        self.delayed_actor_step(batch)

    def delayed_actor_step(self, batch: Batch, target_pairs: tuple[list, list] | None = None) -> None:
        """Every `policy_delay` updates: an actor step (gradients reach only the actor's weights), then the
        targets follow (`target_pairs`: OPT's include its second critic pair)."""
        if self._n_updates % self.policy_delay != 0:
            return
        with self.autocast():
            actor_loss, stats = self.actor_objective(batch)
        self.actor_step(actor_loss)
        self.update_targets(target_pairs)
        self.record(**stats, actor_loss=actor_loss)
