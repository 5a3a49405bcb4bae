"""CQL (Kumar et al., 2020), SAC-based, and Cal-QL (Nakamoto et al., 2023): calibrated CQL.

Both are SAC-N (zoo.agents.sac) with two critics whose loss gets a conservative term. Per critic i, with
K = n_actions samples per state (all sampled without gradient, all evaluated at s):
    a_rand ~ U(-1, 1)^|A|,  a_cur ~ pi(.|s),  a_nxt ~ pi(.|s')
    importance_sample:  X_i = [Q_i(s, a_rand) - log 0.5^|A|,  Q_i(s, a_nxt) - log pi(a_nxt|s'),
                               Q_i(s, a_cur) - log pi(a_cur|s)]
    otherwise:          X_i = [Q_i(s, a_rand),  Q_i(s, a),  Q_i(s, a_nxt),  Q_i(s, a_cur)]
    gap_i = mean_batch clip(T logsumexp(X_i / T) - Q_i(s, a), clip_min, clip_max)
    fixed weight:  L_i = w gap_i;   Lagrange:  L_i = alpha' w (gap_i - target_action_gap),
                   alpha' = clip(exp(log alpha'), 0, 1e6),
                   trained on -mean_i(alpha' w (gap_i - target_action_gap))
    L_Q = sum_i MSE(Q_i(s, a), y) + sum_i L_i
TD target: y = r + gamma (1 - terminated) v', v' = max_k min_i Q'_i(s', a'_k) over K samples a'_k ~ pi(s')
(max_target_backup) or min_i Q'_i(s', a') for one sample; no entropy term unless backup_entropy.
Cal-QL replaces the Q-values of the policy-sampled actions (a_cur and a_nxt, before the importance
weights) by max(Q, G), G the Monte-Carlo return of the dataset transition; random-action and data
Q-values are left as they are.

Semantics follow nakamotoo/Cal-QL (JaxCQL/conservative_sac.py, replay_buffer.py, sampler.py) and CORL's
CQL (algorithms/offline/cql.py, the baseline configuration):
- One critic evaluation covers the data action and the 3K sampled actions (31 x batch rows for K = 10),
  for both critics at once; K + K' actions at s' come from one actor pass (K' backup samples).
- The Lagrange multiplier is stepped from the detached gaps (its gradient does not need the critics'
  graph), so no retain_graph is needed; the critics see alpha' as a constant, as in both references.
- Cal-QL keeps the conservative term and the bound on during fine-tuning, as the official code does
  (CORL's cal_ql.py switches calibration off online and stores MC returns of 0).
- Online MC returns: the official code rolls out a whole trajectory, computes its returns, then runs
  len(trajectory) updates. Here updates run after every env step (UTD 1, interleaved), and an online
  episode's rows become sampleable only when it ends and its returns are written (base
  `online_rows_wait_for_episode_end`).
- Online batches mix offline and online rows 50/50 (base online_mixing_ratio; official Cal-QL scripts 0.5;
  CORL's CQL fine-tuning samples one uniform buffer instead); exploration samples the stochastic policy.
- Dataset actions are not clipped to +-0.99999 (the official code clips them for log pi(a|s) of data
  actions, which only a metric reads).

Populations (zoo.agents.population): the same code with a leading member axis P. Sampled actions are
(P, K, batch, |A|) (the sample axis third to last), their log-densities (P, K, batch), Q-values of sampled
actions (P, n_critics, K, batch), gaps (P, n_critics), alpha' (P, 1); the MC returns G are (P, batch),
broadcast over critics and samples. Member k's loss uses its own w, T, tau, gamma and alpha'; the population's
loss is the sum of its members' losses. The clip bounds choose whether to clip at all, so members share them
(`population_shared`). Members whose gamma or failure_reward differ get one MC-return column each, computed
with their own settings (zoo.agents.pretraining.member_column), member k reading its own.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.type_aliases import Schedule

from zoo import allocator
from zoo.agents.base import Batch, OfflinePolicy
from zoo.agents.losses import ensemble_mse
from zoo.agents.pretraining import member_column, member_setting, own_values
from zoo.agents.sac import SAC, SACPolicy
from zoo.data.dataset import OfflineDataset
from zoo.data.returns import discounted_suffix_sums
from zoo.nn.critics import EnsembleQ
from zoo.nn.members import per_member


class CQLPolicy(SACPolicy):
    """SACPolicy plus the CQL Lagrange multiplier log alpha' and its Adam (at the critics' learning rate).

    :param initial_log_alpha_prime: starting log alpha' (1.0 in CORL and JaxCQL: alpha' = e)
    Other arguments: see SACPolicy.
    """

    optimizer_names = (*SACPolicy.optimizer_names, "alpha_prime_optimizer")

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        initial_log_alpha_prime: float = 1.0,
        **kwargs: Any,
    ):
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)
        # A scalar; a population's is (P, 1), one per member, broadcasting over its (P, n_critics) gaps.
        initial = torch.full(self.member_shape, float(initial_log_alpha_prime))
        self.log_alpha_prime = torch.nn.Parameter(initial)

    def build_optimizers(self, lr: float) -> None:
        super().build_optimizers(lr)
        self.alpha_prime_optimizer = self.make_optimizer([self.log_alpha_prime], lr)


class CQLSamples(NamedTuple):
    """The actions one CQL update samples (no gradient): (K, batch, |A|) actions, (K, batch) log-densities
    (a population's with its member axis first: (P, K, batch, |A|), (P, K, batch))."""

    random: torch.Tensor
    current: torch.Tensor
    current_log_prob: torch.Tensor  # log pi(a_cur|s)
    next: torch.Tensor
    next_log_prob: torch.Tensor  # log pi(a_nxt|s'): the importance weight of actions drawn at s'
    backup: torch.Tensor  # K' actions at s' for the TD target (K' = K with max_target_backup, else 1)
    backup_log_prob: torch.Tensor


class CQL(SAC):
    """Conservative Q-learning on SAC with two critics. Defaults: CORL's Gym-MuJoCo CQL configuration
    (configs/offline/cql/{halfcheetah,hopper,walker2d}/*.yaml): w = 10, no Lagrange, no max backup,
    actor lr 3e-5, critic lr 3e-4, 3 hidden layers of 256 for actor and critics, orthogonal critics, actor
    output layer ~ 1e-2-scaled (CORL: xavier_uniform gain 1e-2 with bias 0; here U(+-1.5e-3), the same
    scale for |A| <= 8, bias included), learnable log-sigma scale/offset, observations normalised.
    (CORL's hopper-medium-v2 config alone also rescales rewards by the dataset's return range.)

    :param dataset: the OfflineDataset to learn from
    :param cql_weight: w, the conservative term's weight (CORL cql_alpha, JaxCQL cql_min_q_weight)
    :param n_actions: K, actions sampled per state for each of random, current-policy and next-policy
    :param importance_sample: subtract the sampling log-density from each sampled Q (data Q then stays
        out of the logsumexp)
    :param cql_temp: T of the logsumexp
    :param cql_clip_diff_min: lower clip of logsumexp - Q(s, a) per transition (AntMaze: -200)
    :param cql_clip_diff_max: upper clip
    :param cql_lagrange: learn alpha' so that the gap stays at cql_target_action_gap (AntMaze)
    :param cql_target_action_gap: the Lagrange threshold tau (AntMaze 0.8); unused without Lagrange
    :param max_target_backup: TD target max over K next-policy samples of min over critics
    :param backup_entropy: subtract alpha log pi(a'|s') in the TD target (off in CORL and JaxCQL)
    :param actor_learning_rate: the actor's Adam learning rate (CORL Gym: 3e-5)
    :param policy_kwargs: see SACPolicy/CQLPolicy; keys given here replace the class defaults
        (`default_policy_kwargs`) one by one
    Other arguments: see SAC and OfflineAlgorithm.
    """

    policy_aliases: ClassVar[dict[str, type[OfflinePolicy]]] = {"MlpPolicy": CQLPolicy}
    policy: CQLPolicy
    # The clip bounds decide whether the gap is clipped at all (a branch): one pair per population.
    population_shared: ClassVar[frozenset[str]] = SAC.population_shared | {
        "cql_clip_diff_min",
        "cql_clip_diff_max",
    }
    default_policy_kwargs: ClassVar[dict[str, Any]] = dict(
        net_arch=[256, 256, 256],
        critic_init="orthogonal",
        actor_output_bound=1.5e-3,
        learnable_log_std_scale=True,
    )

    def __init__(
        self,
        dataset: OfflineDataset | None = None,
        policy: str | type[CQLPolicy] = "MlpPolicy",
        *,
        cql_weight: float = 10.0,
        n_actions: int = 10,
        importance_sample: bool = True,
        cql_temp: float = 1.0,
        cql_clip_diff_min: float = -math.inf,
        cql_clip_diff_max: float = math.inf,
        cql_lagrange: bool = False,
        cql_target_action_gap: float = -1.0,
        max_target_backup: bool = False,
        backup_entropy: bool = False,
        actor_learning_rate: float | None = 3e-5,
        policy_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        if cql_weight < 0:
            raise ValueError(
                f"cql_weight is a non-negative weight of the conservative term, got {cql_weight}."
            )
        if int(n_actions) != n_actions or n_actions < 1:
            raise ValueError(
                f"n_actions is the number of sampled actions per state, a whole number >= 1; got {n_actions}."
            )
        if not cql_temp > 0:
            raise ValueError(f"cql_temp is the logsumexp temperature, > 0; got {cql_temp}.")
        if cql_clip_diff_min > cql_clip_diff_max:
            raise ValueError(
                f"cql_clip_diff_min ({cql_clip_diff_min}) is above cql_clip_diff_max ({cql_clip_diff_max}): "
                "swap them, or use -inf/inf for no clipping."
            )
        self.cql_weight = float(cql_weight)
        self.n_actions = int(n_actions)
        self.importance_sample = importance_sample
        self.cql_temp = float(cql_temp)
        self.cql_clip_diff_min, self.cql_clip_diff_max = float(cql_clip_diff_min), float(cql_clip_diff_max)
        self.cql_lagrange = cql_lagrange
        self.cql_target_action_gap = float(cql_target_action_gap)
        self.max_target_backup = max_target_backup
        super().__init__(
            dataset,
            policy,
            backup_entropy=backup_entropy,
            actor_learning_rate=actor_learning_rate,
            policy_kwargs=policy_kwargs,
            **kwargs,
        )

    def _setup_model(self) -> None:
        super()._setup_model()
        # Before the first CQL-sized temporaries, where they would be fresh tensors: glibc's mmap threshold
        # fixed, so they never fragment the heap (zoo.allocator says why, what it costs and how to turn it
        # off; once per process). The CPU chain of EnsembleQ.many_actions keeps them in reused scratch
        # tensors instead, and needs no setting (calql's peak RSS stays flat on glibc's default allocator).
        critic = self.policy.critic
        scratch = isinstance(critic, EnsembleQ) and not self.compile and critic.many_actions_in_scratch(
            self.device, autocast=self.precision == "bfloat16"
        )
        if not scratch:
            allocator.apply()

    @property
    def alpha_prime(self) -> torch.Tensor:
        """The Lagrange multiplier clip(exp(log alpha'), 0, 1e6), detached (a device scalar; a population's
        (P, 1), one per member)."""
        return self.policy.log_alpha_prime.detach().exp().clamp(0.0, 1e6)

    # ------------------------------------------------------------------ losses

    def sample_actions(self, batch: Batch) -> CQLSamples:
        """K random actions, K actions from pi(.|s), K + K' from pi(.|s') (one actor pass per state);
        (K, batch, |A|) each, or (P, K, batch, |A|) in a population, member k's from its own generator."""
        k = self.n_actions
        n_backup = k if self.max_target_backup else 1
        with torch.no_grad():
            current, current_log_prob = self.actor(batch.observations, n_samples=k)
            at_next, at_next_log_prob = self.actor(batch.next_observations, n_samples=k + n_backup)
            random = self.random.rand_like(current) * 2.0 - 1.0
        # The sample axis is third to last for actions, second to last for log-densities.
        next_actions, backup = at_next.split([k, n_backup], dim=-3)
        next_log_prob, backup_log_prob = at_next_log_prob.split([k, n_backup], dim=-2)
        return CQLSamples(
            random, current, current_log_prob, next_actions, next_log_prob, backup, backup_log_prob
        )

    @staticmethod
    def q_values(critic: torch.nn.Module, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q_i(s_b, a_nb) for N actions per state in one ensemble call:
        (N, batch, |A|) -> (n_critics, N, batch); a population's (P, N, batch, |A|) with its (P, batch, d)
        states -> (P, n_critics, N, batch). The one place where CQL evaluates its sampled actions."""
        if isinstance(critic, EnsembleQ):  # the state half of the first layer once per state (see there)
            return critic.many_actions(observations, actions).float()
        *members, n, b, _ = actions.shape
        states = observations.unsqueeze(-3).expand(*members, n, *observations.shape[-2:])
        states = states.reshape(*members, n * b, -1)
        q = critic(states, actions.reshape(*members, n * b, -1))
        return q.view(*members, -1, n, b).float()

    def backup_value(
        self,
        next_observations: torch.Tensor,
        next_actions: torch.Tensor,
        next_log_prob: torch.Tensor,
        alpha: torch.Tensor,
    ) -> torch.Tensor:
        """v' = max_k min_i Q'_i(s', a'_k) [- alpha log pi(a'_k*|s') at the maximising k*]: (batch,), or
        (P, batch) for a population's (P, K', batch, |A|) actions."""
        with torch.no_grad():
            q = self.q_values(self.policy.critic_target, next_observations, next_actions).min(dim=-3).values
            value, best = q.max(dim=-2)  # over the K' samples: ([P,] K', batch) -> ([P,] batch)
            if self.backup_entropy:
                value = value - alpha * next_log_prob.gather(-2, best.unsqueeze(-2)).squeeze(-2)
            return value

    def td_target(
        self,
        batch: Batch,
        alpha: torch.Tensor,
        next_actions: torch.Tensor | None = None,
        next_log_prob: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """r + gamma (1 - terminated) v' (see backup_value), over the K' backup actions ([P,] K', batch, |A|)
        at s' (drawn here when not given)."""
        if next_actions is None:
            samples = self.sample_actions(batch)
            next_actions, next_log_prob = samples.backup, samples.backup_log_prob
        value = self.backup_value(batch.next_observations, next_actions, next_log_prob, alpha)
        return batch.rewards + per_member(self.gamma, value) * (1.0 - batch.terminations) * value

    def bound_policy_values(
        self, q_next: torch.Tensor, q_current: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The Q-values of the policy-sampled actions as they enter the logsumexp (Cal-QL bounds them), and
        statistics."""
        return q_next, q_current, {}

    def conservative_gap(
        self,
        q_data: torch.Tensor,
        q_random: torch.Tensor,
        q_next: torch.Tensor,
        q_current: torch.Tensor,
        next_log_prob: torch.Tensor,
        current_log_prob: torch.Tensor,
        batch: Batch,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per critic: mean_batch clip(T logsumexp(X / T) - Q(s, a));
        Q's ([P,] n_critics, [K,] batch), log-densities ([P,] K, batch) -> ([P,] n_critics), member k with
        its own T. Returns (gap, statistics)."""
        q_next, q_current, stats = self.bound_policy_values(q_next, q_current, batch)
        # The log-densities broadcast over the critic axis (explicitly: a population's (P, K, batch) must
        # not align P with the critics).
        next_log_prob, current_log_prob = next_log_prob.unsqueeze(-3), current_log_prob.unsqueeze(-3)
        if self.importance_sample:
            random_log_density = self.policy.act_dim * math.log(0.5)  # U(-1, 1)^|A|
            candidates = torch.cat(
                [q_random - random_log_density, q_next - next_log_prob, q_current - current_log_prob], dim=-2
            )
        else:
            candidates = torch.cat([q_random, q_data.unsqueeze(-2), q_next, q_current], dim=-2)
        temp = per_member(self.cql_temp, q_data)
        soft_max = temp * torch.logsumexp(candidates / per_member(self.cql_temp, candidates), dim=-2)
        diff = soft_max - q_data
        if self.cql_clip_diff_min > -math.inf or self.cql_clip_diff_max < math.inf:
            diff = diff.clamp(self.cql_clip_diff_min, self.cql_clip_diff_max)
        return diff.mean(dim=-1), stats

    def critic_loss(self, batch: Batch, alpha: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """sum_i MSE(Q_i(s, a), y) + conservative term (summed over a population's members, each with its
        own w and tau); returns (loss, statistics). The statistics carry the per-critic gaps (`cql_gap`,
        detached, ([P,] n_critics)), which the Lagrange step reads."""
        k = self.n_actions
        # Sampled actions and the TD target (no gradient).
        samples = self.sample_actions(batch)
        target = self.td_target(batch, alpha, samples.backup, samples.backup_log_prob)
        # One ensemble call: the data action, then K random, K next-policy, K current-policy actions,
        # all at s (along the sample axis, third to last).
        actions = torch.cat(
            [batch.actions.unsqueeze(-3), samples.random, samples.next, samples.current], dim=-3
        )
        q_all = self.q_values(self.critic, batch.observations, actions)  # ([P,] n_critics, 1 + 3K, batch)
        q = q_all[..., 0, :]
        bellman = ensemble_mse(q, target)
        # Conservative term per critic.
        gap, stats = self.conservative_gap(
            q,
            q_all[..., 1 : 1 + k, :],
            q_all[..., 1 + k : 1 + 2 * k, :],
            q_all[..., 1 + 2 * k :, :],
            samples.next_log_prob,
            samples.current_log_prob,
            batch,
        )
        weight = per_member(self.cql_weight, gap)
        if self.cql_lagrange:
            conservative = self.alpha_prime * weight * (gap - per_member(self.cql_target_action_gap, gap))
        else:
            conservative = weight * gap
        stats = {
            "q_mean": q.mean(),
            **stats,
            "bellman_loss": bellman,
            "cql_gap": gap.detach(),
            "q_random": q_all[..., 1 : 1 + k, :].mean(),
        }
        return bellman + conservative.sum(), stats

    def alpha_prime_loss(self, gap: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-mean_i(alpha' w (gap_i - target_action_gap)), gaps detached: alpha' grows while gap > tau.
        A population's gaps (P, n_critics) give the sum over members of each member's own loss."""
        alpha_prime = self.policy.log_alpha_prime.exp().clamp(0.0, 1e6)
        gap = gap.detach()
        weight, tau = per_member(self.cql_weight, gap), per_member(self.cql_target_action_gap, gap)
        return -(alpha_prime * weight * (gap - tau)).mean(-1).sum(), {}

    # ------------------------------------------------------------------ one update

    def rl_update(self, batch: Batch, critic_loss: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """SAC's temperature, actor and critic steps (critic loss with the conservative term), then alpha' on
        the gaps that critic loss returned."""
        critic_stats = super().rl_update(batch, critic_loss)
        if self.cql_lagrange and critic_loss is None:
            policy = self.policy
            loss, stats = self.alpha_prime_loss(critic_stats["cql_gap"])
            policy.alpha_prime_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            policy.alpha_prime_optimizer.step()
            self.record(**stats, alpha_prime_loss=loss, alpha_prime=self.alpha_prime)
        return critic_stats


class CalQL(CQL):
    """Cal-QL: CQL whose policy-action Q-values in the logsumexp are bounded below by the Monte-Carlo
    return G of the dataset transition. Defaults: the official code (nakamotoo/Cal-QL,
    ConservativeSAC.get_default_config and conservative_sac_main.py flags): w = 5, no Lagrange (gap 1.0
    if turned on), max target backup, actor (and temperature) lr 1e-4, critic lr 3e-4, 256-256 actor and
    critics with orthogonal init, learnable log-sigma scale/offset.
    Deviation: observations are normalised (the zoo's default, CORL's Gym CQL): the official code never
    normalises (it has only AntMaze/Adroit/Kitchen configs); pass normalize_observations=False for those.
    AntMaze: reward_scale=10, reward_bias=-5, failure_reward=0, cql_lagrange=True, cql_target_action_gap=0.8,
    critics 4x256. Adroit-binary: reward_scale=10, reward_bias=5, failure_reward=-1, cql_weight=1, 512-512
    actor, 3x512 critics (see hyperparams/calql.yml).

    G_t = r_t + gamma G_{t+1} over each complete source episode, G = 0 after its last step (no timeout
    tail), on rewards after reward_scale/reward_bias; with failure_reward, an episode all of whose
    (transformed) rewards equal the (transformed) failure reward gets G = r_fail / (1 - gamma) at every step.
    Online episodes get the same returns when they end (computed on the device).

    :param failure_reward: the env's failure reward in raw units (AntMaze 0, Adroit-binary -1) for the sparse
        rule, or None for dense rewards
    Other arguments: see CQL, SAC and OfflineAlgorithm.
    """

    online_rows_wait_for_episode_end = True
    default_policy_kwargs: ClassVar[dict[str, Any]] = dict(
        net_arch=[256, 256],
        actor_init="orthogonal",
        critic_init="orthogonal",
        learnable_log_std_scale=True,
    )

    def __init__(
        self,
        dataset: OfflineDataset | None = None,
        policy: str | type[CQLPolicy] = "MlpPolicy",
        *,
        failure_reward: float | None = None,
        cql_weight: float = 5.0,
        cql_target_action_gap: float = 1.0,
        max_target_backup: bool = True,
        actor_learning_rate: float | None = 1e-4,
        **kwargs: Any,
    ):
        if failure_reward is not None and not np.isfinite(failure_reward):
            raise ValueError(
                f"failure_reward is a finite reward (AntMaze: 0, Adroit-binary: -1) or None, "
                f"got {failure_reward}."
            )
        self.failure_reward = failure_reward
        super().__init__(
            dataset,
            policy,
            cql_weight=cql_weight,
            cql_target_action_gap=cql_target_action_gap,
            max_target_backup=max_target_backup,
            actor_learning_rate=actor_learning_rate,
            **kwargs,
        )

    # ------------------------------------------------------------------ Monte-Carlo returns

    def _dataset_columns(self, dataset: OfflineDataset) -> dict[str, torch.Tensor]:
        """The base columns and G, (N,); a population whose members differ in gamma or failure_reward gets
        one column per member, (N, P), each computed with that member's own settings."""
        columns = super()._dataset_columns(dataset)

        def mc_returns(gamma: float, failure_reward: float | None) -> torch.Tensor:
            return dataset.returns_to_go(
                gamma,
                failure_reward=failure_reward,
                reward_scale=self.reward_scale,
                reward_bias=self.reward_bias,
            )

        columns["mc_returns"] = member_column(self, mc_returns, "gamma", "failure_reward")
        return columns

    def _online_column_widths(self) -> dict[str, int]:
        return {"mc_returns": 1}

    def _on_online_episode_end(self, start: int, stop: int, member: int | None = None) -> None:
        """Online rows [start, stop) (a population's: member k's) are a finished episode: write their MC
        returns (same rule as offline, with that member's gamma and failure reward)."""
        rewards = self.replay.column("rewards", source="online", member=member)[start:stop]
        gamma, failure_reward = self.gamma, self.failure_reward
        if member is not None:
            gamma = member_setting(self, "gamma", member)
            failure_reward = member_setting(self, "failure_reward", member)
        last = torch.zeros_like(rewards, dtype=torch.bool)
        last[-1] = True
        returns = discounted_suffix_sums(rewards, last, gamma)
        if failure_reward is not None:
            failure = float(self.transform_rewards(float(failure_reward)))  # as _online_row transforms
            returns = torch.where((rewards == failure).all(), failure / (1.0 - gamma), returns)
        self.replay.write_column("mc_returns", returns, rows=slice(start, stop), source="online", member=member)

    # ------------------------------------------------------------------ the calibration

    def bound_policy_values(
        self, q_next: torch.Tensor, q_current: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """max(Q, G) for the next- and current-policy actions; G, (batch,) or a population's (P, batch),
        broadcast over critics and samples of Q ([P,] n_critics, K, batch)."""
        bound = own_values(batch.mc_returns).unsqueeze(-2).unsqueeze(-2)
        stats = {"calql_bound_rate": (q_current < bound).float().mean()}
        return torch.maximum(q_next, bound), torch.maximum(q_current, bound), stats


__all__ = ["CQL", "CQLPolicy", "CalQL"]
