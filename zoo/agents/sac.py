"""SAC with an ensemble of N critics (SAC-N, An et al., 2021) on a fixed dataset: the base of the
SAC family (CQL, Cal-QL, EDAC).

One update, in the order of CORL's CQL and of the official EDAC trainer, every loss built from the
networks as they were at the start of the step (one policy forward on s serves alpha and actor):
1. temperature: L_alpha = -mean(log_alpha * (log pi(a~|s) + H_target)), H_target = -|A| ("auto");
2. actor:       L_pi = mean(alpha log pi(a~|s) - min_i Q_i(s, a~));
3. critics:     sum_i MSE(Q_i(s, a), r + gamma (1 - terminated) (min_i Q'_i(s', a') - alpha log pi(a'|s'))),
                a' ~ pi(s') (the entropy term only with backup_entropy);
then one Adam step each and Polyak averaging of the target critics. There is no target actor.

Populations (zoo.agents.population) run the same code along a leading member axis: batch columns (P, B, ...),
actions (P, B, |A|), critics (P, N, B) (the critic axis is always second to last), the temperature (P, 1).
Every loss is the sum over members of that member's mean (`.mean(-1).sum()`, which is `.mean()` for an
ordinary agent), so member k's gradient is the one its own loss gives; float settings that differ between
members (gamma, a fixed target entropy) are (P,) tensors applied with zoo.nn.members.per_member.
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
from zoo.data.dataset import OfflineDataset
from zoo.nn import EnsembleQ, SharedQ, TanhGaussianActor
from zoo.nn.members import per_member


class SACPolicy(OfflinePolicy):
    """Tanh-Gaussian actor, N critics as one batched ensemble and their targets, the log temperature,
    and one optimizer each (their learning rates can differ: Cal-QL's actor uses 1e-4, its critics 3e-4).

    :param net_arch: the critics' hidden sizes
    :param actor_net_arch: the actor's hidden sizes (default: net_arch)
    :param n_critics: ensemble size N (2 for CQL/Cal-QL, 10-50 for EDAC)
    :param actor_layer_norm / critic_layer_norm: LayerNorm without affine before each ReLU
    :param actor_init / critic_init: "default", "orthogonal" (JaxCQL) or "edac"; see zoo.nn.initialize
    :param actor_output_bound / critic_output_bound: output layer ~ U(±bound) (EDAC: 1e-3 and 3e-3)
    :param log_std_bounds: clip of the actor's log sigma (JaxCQL (-20, 2), EDAC (-5, 2))
    :param learnable_log_std_scale: JaxCQL's learnable multiplier/offset on log sigma
    :param initial_log_alpha: starting log temperature (0: alpha = 1)
    :param actor_lr / alpha_lr: learning rates of the actor and the temperature (default: the critics')
    :param shared_q: critics with a transition head on their backbone (PSQN's shared Q-network)
    """

    optimizer_names = ("actor_optimizer", "critic_optimizer", "alpha_optimizer")

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: tuple[int, ...] | list[int] = (256, 256),
        actor_net_arch: tuple[int, ...] | list[int] | None = None,
        n_critics: int = 2,
        actor_layer_norm: bool = False,
        critic_layer_norm: bool = False,
        actor_init: str = "default",
        critic_init: str = "default",
        actor_output_bound: float | None = None,
        critic_output_bound: float | None = None,
        log_std_bounds: tuple[float, float] = (-20.0, 2.0),
        learnable_log_std_scale: bool = False,
        initial_log_alpha: float = 0.0,
        actor_lr: float | None = None,
        alpha_lr: float | None = None,
        shared_q: bool = False,
        n_members: int = 1,
    ):
        super().__init__(observation_space, action_space, lr_schedule, net_arch, n_members)
        self.actor_lr, self.alpha_lr = actor_lr, alpha_lr
        actor_arch = tuple(actor_net_arch) if actor_net_arch is not None else self.net_arch
        self.actor = TanhGaussianActor(
            self.obs_dim,
            self.act_dim,
            actor_arch,
            actor_layer_norm,
            tuple(log_std_bounds),
            learnable_log_std_scale,
            actor_init,
            actor_output_bound,
            n_members,
        )
        if shared_q:  # a transition head beside each Q head (pretrain="transition"); PyTorch's default init
            self.critic = SharedQ(
                self.obs_dim, self.act_dim, n_critics, self.net_arch, critic_layer_norm, n_members=n_members
            )
        else:
            self.critic = EnsembleQ(
                self.obs_dim,
                self.act_dim,
                n_critics,
                self.net_arch,
                critic_layer_norm,
                critic_init,
                critic_output_bound,
                n_members,
            )
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # A scalar; a population's is (P, 1), one per member, broadcasting over its (P, batch) terms.
        self.log_alpha = torch.nn.Parameter(torch.full(self.member_shape, float(initial_log_alpha)))

    def build_optimizers(self, lr: float) -> None:
        self.actor_optimizer = self.make_optimizer(self.actor.parameters(), self.actor_lr or lr)
        self.critic_optimizer = self.make_optimizer(self.critic.parameters(), lr)
        self.alpha_optimizer = self.make_optimizer([self.log_alpha], self.alpha_lr or lr)

    def _predict(self, observation: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        actions, _ = self.actor(self.normalize_observations(observation.float()), deterministic=deterministic)
        return actions


class SAC(OfflineAlgorithm):
    """Offline SAC with N critics (SAC-N: the minimum over all N in target and actor loss).

    :param dataset: the OfflineDataset to learn from
    :param learning_rate: the critics' Adam learning rate
    :param actor_learning_rate: the actor's (default: learning_rate)
    :param alpha_learning_rate: the temperature's (default: actor_learning_rate)
    :param ent_coef: "auto" (learned, starting at 1; "auto_0.1" starts at 0.1) or a fixed float, as in SB3
    :param target_entropy: "auto" (-|A|) or a float
    :param backup_entropy: subtract alpha log pi(a'|s') in the TD target (SAC, EDAC: yes; CQL: no)
    :param policy_kwargs: see SACPolicy (n_critics, net_arch, actor_net_arch, LayerNorm, init schemes)
    Other arguments: see OfflineAlgorithm.
    """

    policy_aliases: ClassVar[dict[str, type[OfflinePolicy]]] = {"MlpPolicy": SACPolicy}
    policy: SACPolicy
    family = "sac"

    def __init__(
        self,
        dataset: OfflineDataset | None = None,
        policy: str | type[SACPolicy] = "MlpPolicy",
        *,
        learning_rate: float = 3e-4,
        actor_learning_rate: float | None = None,
        alpha_learning_rate: float | None = None,
        ent_coef: str | float = "auto",
        target_entropy: str | float = "auto",
        backup_entropy: bool = True,
        **kwargs: Any,
    ):
        self.actor_learning_rate = actor_learning_rate
        self.alpha_learning_rate = alpha_learning_rate
        self.ent_coef = ent_coef
        self.target_entropy = target_entropy
        self.backup_entropy = backup_entropy
        self._learn_alpha, self._initial_alpha = self._parse_ent_coef(ent_coef)
        super().__init__(policy, dataset, learning_rate=learning_rate, **kwargs)

    @staticmethod
    def _parse_ent_coef(ent_coef: str | float) -> tuple[bool, float]:
        if isinstance(ent_coef, str):
            if ent_coef == "auto":
                return True, 1.0
            if ent_coef.startswith("auto_"):
                try:
                    return True, float(ent_coef[5:])
                except ValueError:
                    pass
            raise ValueError(f"ent_coef is 'auto', 'auto_<initial value>' or a float, got {ent_coef!r}.")
        if ent_coef <= 0:
            raise ValueError(f"A fixed ent_coef must be positive, got {ent_coef}.")
        return False, float(ent_coef)

    def policy_settings(self) -> dict[str, Any]:
        actor_lr = self.actor_learning_rate
        return {
            "actor_lr": actor_lr,
            "alpha_lr": self.alpha_learning_rate or actor_lr,
            "initial_log_alpha": float(np.log(self._initial_alpha)),
        }

    def _setup_model(self) -> None:
        super()._setup_model()
        self.actor, self.critic = self.policy.actor, self.policy.critic
        self.policy.log_alpha.requires_grad_(self._learn_alpha)
        self._actor_params = list(self.actor.parameters())
        self._critic_params = list(self.critic.parameters())
        self.target_pairs = (list(self.policy.critic_target.parameters()), self._critic_params)
        # H_target: -|A| ("auto"), or the given number (a population's (P,) tensor when its members differ).
        if isinstance(self.target_entropy, str):
            self._target_entropy = -float(self.policy.act_dim)
        elif isinstance(self.target_entropy, torch.Tensor):
            self._target_entropy = self.target_entropy
        else:
            self._target_entropy = float(self.target_entropy)
        if self.pretraining is not None and self._n_updates > self.pretrain_until:
            self.pretraining.finish(self)  # a loaded agent past its pretraining phase

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "actor",
            "critic",
            "_actor_params",
            "_critic_params",
            "target_pairs",
        ]

    def explore(self, observation: np.ndarray) -> np.ndarray:
        """An action sampled from pi(.|s) (SAC explores with its own stochastic policy)."""
        action, _ = self.predict(observation, deterministic=False)
        return action

    def explore_members(self, observations: np.ndarray) -> np.ndarray:
        """A population's sampled actions, member k's noise from its own generator: (K, obs) -> (K, act)."""
        return self.predict_members(observations[:, None], deterministic=False)[:, 0]

    @property
    def alpha(self) -> torch.Tensor:
        """The entropy temperature exp(log_alpha), detached (a device scalar: no host sync); a population's
        is (P, 1), member k's in row k, broadcasting over its (P, B) terms."""
        return self.policy.log_alpha.detach().exp()

    # ------------------------------------------------------------------ losses

    def alpha_loss(self, log_prob: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-mean(log_alpha * (log pi(a~|s) + H_target)), log pi detached (summed over a population's members,
        each with its own log_alpha and H_target); returns (loss, statistics)."""
        log_prob = log_prob.detach()
        target_entropy = per_member(self._target_entropy, log_prob)
        return -(self.policy.log_alpha * (log_prob + target_entropy)).mean(-1).sum(), {}

    def actor_loss(
        self, batch: Batch, actions: torch.Tensor, log_prob: torch.Tensor, alpha: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """mean(alpha log pi(a~|s) - min_i Q_i(s, a~)) for a~ ~ pi(s), reparameterised (summed over a
        population's members)."""
        q = self.critic(batch.observations, actions).min(dim=-2).values
        return (alpha * log_prob - q).mean(-1).sum(), {}

    def td_target(
        self,
        batch: Batch,
        alpha: torch.Tensor,
        next_actions: torch.Tensor | None = None,
        next_log_prob: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """r + gamma (1 - terminated) (min_i Q'_i(s', a') [- alpha log pi(a'|s')]), a' ~ pi(s') unless given.

        The SAC family's one signature: CQL passes its K' backup actions ([P,] K', batch, |A|) and takes a
        max. (batch,), or (P, batch) for a population (each member with its own gamma and alpha).
        """
        with torch.no_grad():
            if next_actions is None:
                next_actions, next_log_prob = self.actor(batch.next_observations)
            next_q = self.policy.critic_target(batch.next_observations, next_actions).min(dim=-2).values
            if self.backup_entropy:
                next_q = next_q - alpha * next_log_prob
            return batch.rewards + per_member(self.gamma, next_q) * (1.0 - batch.terminations) * next_q

    def q_and_penalty(
        self, observations: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Q_i(s, a) of every critic, (N, batch) (a population's (P, N, batch)), and the agent's extra critic
        term at these pairs, already weighted and summed over members (SAC-N: none, 0; EDAC: eta * gradient
        diversity). Pretraining recipes add it to their loss."""
        return self.critic(observations, actions), torch.zeros((), device=observations.device)

    def critic_loss(self, batch: Batch, alpha: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """sum_i MSE(Q_i(s, a), y); returns (loss, statistics)."""
        target = self.td_target(batch, alpha)
        q = self.critic(batch.observations, batch.actions)
        return ensemble_mse(q, target), {"q_mean": q.mean()}

    # ------------------------------------------------------------------ one update

    def alpha_step(self, log_prob: torch.Tensor) -> None:
        """One step of the temperature on L_alpha (nothing when ent_coef is fixed)."""
        if not self._learn_alpha:
            return
        alpha_loss, stats = self.alpha_loss(log_prob)
        self.policy.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.policy.alpha_optimizer.step()
        self.record(**stats, alpha_loss=alpha_loss)

    def rl_update(self, batch: Batch, critic_loss: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Temperature, actor and critics from the same pre-update networks, then one step each; a
        pretraining recipe may pass its own critic objective (PSQN's transition prediction). Returns the
        critic loss's statistics (empty for a recipe's objective)."""
        critic_stats: dict[str, torch.Tensor] = {}
        with self.autocast():
            actions, log_prob = self.actor(batch.observations)
            alpha = self.alpha
            actor_loss, actor_stats = self.actor_loss(batch, actions, log_prob, alpha)
            if critic_loss is None:
                critic_loss, critic_stats = self.critic_loss(batch, alpha)
        self.alpha_step(log_prob)
        self.actor_step(actor_loss)  # the critics' gradients come from their own loss
        self.critic_step(
            critic_loss
        )  # only critic weights are in this graph (a frozen PSQN backbone is left out)
        self.update_targets()
        self.record(**critic_stats, **actor_stats)
        self.record(actor_loss=actor_loss, critic_loss=critic_loss, alpha=alpha, entropy=-log_prob.mean())
        return critic_stats
