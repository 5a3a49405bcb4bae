"""OPT: Online Pre-Training for offline-to-online RL (Shin, Kim et al., ICML 2025, arXiv 2507.08387).

Spec: research/seed-methods.md §3. Phase 1 is the base algorithm's own offline training, unchanged
(`learn`): TD3+BC (`OPT`, MuJoCo) or SPOT (`OPTSPOT`, AntMaze/Adroit). Online (`finetune`), counted in
environment steps t = 1, 2, ...:

- Phase 2a (t < n_tau): the frozen offline policy (+ its exploration noise) collects n_tau transitions;
  no gradient update at all.
- Phase 2b (t = n_tau, once): a NEW randomly initialised twin critic Q_on (own targets, own Adam) is
  pre-trained for n_pretrain updates on the meta objective
      L_off(psi) + w * L_on(psi - inner_lr * grad L_off(psi)),
  b_off uniform from the offline table, b_on uniform from the online buffer, TD3 targets from Q_on's
  targets and the offline target actor; w = min(L_off, L_on) / L_on (detached).
- Phase 3 (t >= n_tau, online_utd_ratio updates per env step): a density-ratio net w(s, a) learns
  d_on / d_off (Off2On), the batch is drawn by priority from offline ∪ online rows, both Q_off (the
  offline critic) and Q_on take TD3 critic steps on that same batch, and every policy_delay updates the
  actor climbs Q_mix = (1 - kappa) Q_off1 + kappa Q_on1 (TD3 base: -mean Q_mix, no BC term; SPOT base:
  its own normalised loss with the cooled lambda); all targets follow. kappa moves linearly from
  kappa_start to kappa_end.

Sources. The official code (github.com/LGAI-Research/opt) could not be fetched here (no snapshot in the
index). Code-level details follow a public single-file third-party reimplementation that names the
official repository as its source of truth and mirrors its Hot_Plug / OPTLearner structure; what it says:
- gradient weighting: w = min(L_off, L_on).detach() / (L_on.detach() + 1e-10), L_on evaluated at the
  inner-step parameters; the update is grad L_off + w * d/dpsi L_on(psi - a grad L_off(psi)) with the full
  second-order term (backward(create_graph=True) + Hot_Plug). Here: torch.func.functional_call and
  torch.autograd.grad(create_graph=True): the same gradient, with no graph-carrying `.grad` to leak.
- Q_on's targets are soft-updated every policy_delay pretraining steps.
- priorities: w(b)^(1/T) / (mean over the density step's b_off of w^(1/T) + 1e-10), clipped to
  [1e-3, 1e3]; w(b_off) is the density net's output before its optimizer step, w(b) after it. Offline
  rows start at priority 1, every new row gets the running max priority (which starts at 1). The
  reimplementation samples a sum tree by equal-mass segments; here the same stratified draw runs on the
  device as cumsum + searchsorted over a priority tensor.
- optimizer resets: Adam states of the actor and Q_off are reset when the online phase begins
  (`reset_optimizers_online`, on by default); SPOT on AntMaze switches gamma to 0.995 online
  (`online_gamma`).
- kappa: linear in env steps. The reimplementation reaches kappa_end at env step `kappa_steps` counted
  from the start of the online phase (so the ramp lasts kappa_steps - n_tau); we follow the spec's
  wording, "linear over kappa_steps" from the first fine-tuning step (t = n_tau) on. kappa_steps = 0
  means kappa_end from the start.
- the density loss takes log(x + 1e-10) on both terms, and the density net ends in a ReLU. Both match
  Off2On's released trainer (shlee94/Off2OnRL rlkit/torch/sac/ours.py), which we could read; from there
  too the density net's init (output bias 1, see zoo.nn.density), which the reimplementation leaves out.
Zoo conventions that differ from the reimplementation: observations are normalised when
`normalize_observations` is on (the class default, as for TD3+BC; hyperparams/opt*.yml turn it off, as the
reimplementation has it); the priority table holds every offline and online row (no 1e6 ring buffer whose
online rows overwrite offline ones); the base's `online_mixing_ratio` is not used: phase 3 samples the
prioritised union; exploration noise is TD3's unclipped N(0, 0.1) (the reimplementation clips it at 0.5).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch.func import functional_call

from zoo.agents.base import Batch, adam
from zoo.agents.losses import ensemble_mse
from zoo.agents.spot import SPOT, SPOTPolicy
from zoo.agents.td3 import TD3, TD3Policy
from zoo.agents.td3bc import TD3BC
from zoo.data.dataset import OfflineDataset
from zoo.nn.critics import SharedQ
from zoo.nn.density import DensityRatio
from zoo.nn.ensemble import EnsembleLinear

# ---------------------------------------------------------------------------------------------- losses


def meta_critic_loss(
    critic: torch.nn.Module,
    params: dict[str, torch.Tensor],
    offline: Batch,
    offline_target: torch.Tensor,
    online: Batch,
    online_target: torch.Tensor,
    inner_lr: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """OPT's online pre-training objective L_off(psi) + w * L_on(psi - inner_lr * grad L_off(psi)).

    Returns (objective, L_off, L_on at the inner-step parameters, w). Its gradient in `params` is the
    meta-gradient grad L_off + w (I - inner_lr H_off) grad L_on(psi'): the inner gradient keeps its graph.
    """
    # Offline TD loss at psi, and its gradient with the graph kept (second-order term).
    loss_off = ensemble_mse(
        functional_call(critic, params, (offline.observations, offline.actions)), offline_target
    )
    grads = torch.autograd.grad(loss_off, list(params.values()), create_graph=True, allow_unused=True)
    # One differentiable SGD step: psi' = psi - inner_lr * grad L_off(psi) (weights off the Q path, e.g. a
    # shared-Q transition head, have no gradient and stay).
    inner = {name: p if g is None else p - inner_lr * g for (name, p), g in zip(params.items(), grads)}
    # Online TD loss at psi'.
    loss_on = ensemble_mse(functional_call(critic, inner, (online.observations, online.actions)), online_target)
    # Gradient weighting (code-level): scale L_on down to L_off's size when it is larger.
    weight = torch.minimum(loss_off, loss_on).detach() / (loss_on.detach() + 1e-10)
    return loss_off + weight * loss_on, loss_off, loss_on, weight


def density_ratio_loss(w_offline: torch.Tensor, w_online: torch.Tensor) -> torch.Tensor:
    """Off2On's Jensen-Shannon dual for w ~ d_on / d_off:
    mean[-log(2 / (w_off + 1))] - mean[log(2 w_on / (w_on + 1))] (each log of x + 1e-10)."""
    offline_term = -torch.log(2.0 / (w_offline + 1.0) + 1e-10)
    online_term = torch.log(2.0 * w_online / (w_online + 1.0) + 1e-10)
    return offline_term.mean() - online_term.mean()


def balanced_priorities(w_batch: torch.Tensor, w_offline: torch.Tensor, temperature: float) -> torch.Tensor:
    """Balanced-replay priorities: w^(1/T) / mean(w_off^(1/T)), clipped to [1e-3, 1e3]."""
    normaliser = w_offline.pow(1.0 / temperature).mean()
    return (w_batch.pow(1.0 / temperature) / (normaliser + 1e-10)).clamp(1e-3, 1e3)


# ---------------------------------------------------------------------------------------------- policy


class OnlinePretrainingPolicy:
    """Policy mixin: adds Q_on (same architecture as the offline critic), its target and the density-ratio
    net, with their Adam optimizers, to a TD3-family policy (so `save`/`load` carry them).

    :param density_net_arch: hidden sizes of the density-ratio net (Off2On / OPT: 256-256)
    :param density_learning_rate: its Adam learning rate (set by the agent's `density_learning_rate`)
    """

    online_optimizer_names: ClassVar[tuple[str, ...]] = ("online_critic_optimizer", "density_optimizer")

    def __init__(
        self,
        *args: Any,
        density_net_arch: tuple[int, ...] | list[int] = (256, 256),
        density_learning_rate: float = 3e-4,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.density_learning_rate = density_learning_rate
        # Built on a forked RNG: the offline phase draws exactly what the base algorithm alone would.
        # Both networks are drawn afresh when the online phase needs them (the agent's reset_online_networks).
        with torch.random.fork_rng(devices=[]):
            self.online_critic = copy.deepcopy(self.critic)
            self.online_critic_target = copy.deepcopy(self.online_critic).requires_grad_(False)
            self.density = DensityRatio(self.obs_dim, self.act_dim, tuple(density_net_arch))

    def build_optimizers(self, lr: float) -> None:
        super().build_optimizers(lr)
        critic_lr = self.critic_optimizer.param_groups[0]["lr"]  # Q_on learns at Q_off's rate
        self.online_critic_optimizer = adam(self.online_critic.parameters(), critic_lr, self.device)
        self.density_optimizer = adam(self.density.parameters(), self.density_learning_rate, self.device)


class OPTPolicy(OnlinePretrainingPolicy, TD3Policy):
    """TD3's policy (actor, twin Q_off) plus OPT's Q_on and density-ratio net."""

    optimizer_names = (*TD3Policy.optimizer_names, *OnlinePretrainingPolicy.online_optimizer_names)


class OPTSPOTPolicy(OnlinePretrainingPolicy, SPOTPolicy):
    """SPOT's policy (actor, twin Q_off, behaviour VAE) plus OPT's Q_on and density-ratio net."""

    optimizer_names = (*SPOTPolicy.optimizer_names, *OnlinePretrainingPolicy.online_optimizer_names)


# ---------------------------------------------------------------------------------------------- agent


class OnlinePretraining:
    """Agent mixin holding all of OPT's online machinery; combine it with a TD3-family agent
    (`class OPT(OnlinePretraining, TD3BC)`). The offline phase is the base agent's, untouched.

    :param n_tau: env steps collected by the frozen offline policy before any update (N_tau)
    :param n_pretrain: meta-updates of the new critic Q_on at env step n_tau (N_pretrain)
    :param inner_lr: step size of the differentiable inner SGD step on L_off (alpha_in)
    :param kappa_start: weight of Q_on in the actor's Q_mix at the first fine-tuning step
    :param kappa_end: weight of Q_on after kappa_steps fine-tuning env steps
    :param kappa_steps: env steps over which kappa moves linearly from kappa_start to kappa_end (0: kappa_end
        from the start)
    :param temperature: balanced-replay priority temperature T (priority ~ w^(1/T))
    :param density_learning_rate: Adam learning rate of the density-ratio net
    :param reset_optimizers_online: reset the Adam states of the actor and Q_off when fine-tuning starts
    :param online_gamma: discount used from the online phase on (None: keep gamma; SPOT+OPT on AntMaze: 0.995)
    Other arguments: see the base agent. `online_mixing_ratio` is not used online: phase 3 samples the
    prioritised union of offline and online rows, and the density net and Q_on pre-training draw b_off
    and b_on uniformly from each.
    """

    def __init__(
        self,
        dataset: OfflineDataset | None = None,
        *,
        n_tau: int = 25_000,
        n_pretrain: int = 50_000,
        inner_lr: float = 3e-4,
        kappa_start: float = 0.3,
        kappa_end: float = 0.9,
        kappa_steps: int = 150_000,
        temperature: float = 5.0,
        density_learning_rate: float = 3e-4,
        reset_optimizers_online: bool = True,
        online_gamma: float | None = None,
        **kwargs: Any,
    ):
        for name, value in (("kappa_start", kappa_start), ("kappa_end", kappa_end)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"{name} is the weight of the new critic in the actor's Q, in [0, 1]; got {value}."
                )
        for name, value, low in (
            ("kappa_steps", kappa_steps, 0),
            ("n_tau", n_tau, 1),
            ("n_pretrain", n_pretrain, 0),
        ):
            if int(value) != value or value < low:
                raise ValueError(f"{name} is a whole number of steps >= {low}, got {value}.")
        if not temperature > 0:
            raise ValueError(f"temperature (priority ~ w^(1/T)) must be > 0, got {temperature}.")
        if not inner_lr >= 0:
            raise ValueError(f"inner_lr is the inner SGD step size, >= 0 (0: first-order), got {inner_lr}.")
        if not density_learning_rate > 0:
            raise ValueError(f"density_learning_rate must be > 0, got {density_learning_rate}.")
        if online_gamma is not None and not 0.0 < online_gamma <= 1.0:
            raise ValueError(
                f"online_gamma is a discount in (0, 1] (or None to keep gamma), got {online_gamma}."
            )
        self.n_tau, self.n_pretrain, self.inner_lr = int(n_tau), int(n_pretrain), float(inner_lr)
        self.kappa_start, self.kappa_end, self.kappa_steps = (
            float(kappa_start),
            float(kappa_end),
            int(kappa_steps),
        )
        self.temperature = float(temperature)
        self.density_learning_rate = float(density_learning_rate)
        self.reset_optimizers_online = reset_optimizers_online
        self.online_gamma = online_gamma
        super().__init__(dataset, **kwargs)

    def _setup_model(self) -> None:
        self.policy_kwargs = {**self.policy_kwargs, "density_learning_rate": self.density_learning_rate}
        super()._setup_model()
        policy = self.policy
        # Phase 3 targets: actor, Q_off and Q_on in one foreach lerp; phase 2b: Q_on's alone.
        self._online_target_pairs = (
            list(policy.online_critic_target.parameters()),
            list(policy.online_critic.parameters()),
        )
        self._all_target_pairs = (
            [*self._target_pairs[0], *self._online_target_pairs[0]],
            [*self._target_pairs[1], *self._online_target_pairs[1]],
        )
        # Online-phase state (rebuilt by every finetune call, never saved).
        self._online_phase = False  # inside finetune
        self._finetuning = False  # phase 3: Q_mix for the actor, prioritised batches
        self._kappa = self.kappa_start
        self._n_pretrain_updates = 0
        self._pretrained_at: int | None = None  # env step of phase 2b

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "_online_target_pairs",
            "_all_target_pairs",
            "_online_phase",
            "_finetuning",
            "_kappa",
            "_n_pretrain_updates",
            "_pretrained_at",
        ]

    # ------------------------------------------------------------------ phases

    def learn(self, *args: Any, **kwargs: Any):
        """Phase 1: the base algorithm's offline training, unchanged."""
        self._online_phase = self._finetuning = False
        return super().learn(*args, **kwargs)

    def finetune(self, total_timesteps: int, env=None, *args: Any, **kwargs: Any):
        """Phases 2a, 2b and 3 over `total_timesteps` env steps (the budget includes the n_tau collection
        steps; the paper's MuJoCo runs use 300k)."""
        if self.dataset is None:
            raise ValueError(
                "OPT pre-trains its new critic and replays on offline and online data: give the agent its "
                "dataset (load(path, dataset=...))."
            )
        return super().finetune(total_timesteps, env, *args, **kwargs)

    def _on_finetune_start(self) -> None:
        super()._on_finetune_start()
        policy = self.policy
        # Priorities over offline ∪ online rows: offline ones start at 1, online ones are set on arrival.
        self.replay.start_priorities()
        self._online_phase, self._finetuning = True, False
        self._kappa = self.kappa_start
        # 3rd-party reimplementation of the released code: fresh Adam moments for actor and Q_off online.
        if self.reset_optimizers_online:
            policy.actor_optimizer.state.clear()
            policy.critic_optimizer.state.clear()
        if self.online_gamma is not None:
            self.gamma = self.online_gamma

    def kappa_at(self, env_step: int) -> float:
        """kappa at env step t >= n_tau: linear from kappa_start (t = n_tau) to kappa_end (t = n_tau + kappa_steps)."""
        if self.kappa_steps == 0:
            return self.kappa_end
        progress = min(max((env_step - self.n_tau) / self.kappa_steps, 0.0), 1.0)
        return self.kappa_start + progress * (self.kappa_end - self.kappa_start)

    def train(self, gradient_steps: int, batch_size: int) -> None:
        if not self._online_phase:
            super().train(gradient_steps, batch_size)  # phase 1: the base algorithm's update
            return
        self.replay.prioritize_new_rows()
        step = self.num_timesteps  # env steps so far, this one included
        if step < self.n_tau:
            return  # phase 2a: the frozen offline policy collects
        if step == self.n_tau:
            self.pretrain_online_critic(batch_size)  # phase 2b
            self._finetuning = True
        self._kappa = self.kappa_at(step)
        self._record(kappa=torch.tensor(self._kappa))  # a host scalar: no device sync
        for _ in range(gradient_steps):
            self._n_updates += 1
            self.finetune_update(batch_size)

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def _update_priorities(
        self, indices: torch.Tensor, batch: Batch, w_offline: torch.Tensor
    ) -> torch.Tensor:
        """Sampled rows' priorities from the (just updated) density net; the running max follows."""
        w = self.policy.density(batch.observations, batch.actions).float()
        priorities = balanced_priorities(w, w_offline.float(), self.temperature).double()
        self.replay.set_priorities(indices, priorities)
        return priorities

    # ------------------------------------------------------------------ losses

    def online_critic_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Q_on's TD3 critic loss on its own targets; returns (loss, statistics)."""
        q = self.policy.online_critic(batch.observations, batch.actions)
        return ensemble_mse(q, self.td_target(batch, self.policy.online_critic_target)), {"online_q_mean": q.mean()}

    def actor_q(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Phase 3: Q_mix = (1 - kappa) Q_off1 + kappa Q_on1; before: the base's Q."""
        q_off = super().actor_q(observations, actions)
        if not self._finetuning:
            return q_off
        q_on = self.policy.online_critic(observations, actions, members=slice(0, 1))[0]
        return (1.0 - self._kappa) * q_off + self._kappa * q_on

    # ------------------------------------------------------------------ updates

    @torch.no_grad()
    def reset_online_networks(self) -> None:
        """A new random Q_on (target = copy) and density net, with fresh Adam states. Q_on's layers get
        PyTorch's default init (U(±1/sqrt(fan_in))), as TD3's critics start; `_initialize_online_critic`
        adds a base's own scheme."""
        policy = self.policy
        for module in policy.online_critic.modules():
            if isinstance(module, EnsembleLinear):
                module.reset_parameters()
        self._initialize_online_critic(policy.online_critic)
        policy.density.reset_parameters()  # Off2On's init: w ≈ 1 at the start
        policy.online_critic_target.load_state_dict(policy.online_critic.state_dict())
        policy.online_critic_optimizer.state.clear()
        policy.density_optimizer.state.clear()

    def _initialize_online_critic(self, critic: torch.nn.Module) -> None:
        """Hook: a base whose critics start from their own init scheme applies it to Q_on here."""

    def pretrain_online_critic(self, batch_size: int) -> None:
        """Phase 2b: a new Q_on, then n_pretrain meta-updates on b_off (offline) and b_on (online).

        These updates are counted in `_n_pretrain_updates`, not in `_n_updates` (the base's own updates,
        which drive the policy delay and SPOT's lambda cooling)."""
        policy = self.policy
        self.reset_online_networks()
        params = dict(policy.online_critic.named_parameters())
        for k in range(1, self.n_pretrain + 1):
            self._n_pretrain_updates += 1
            # Uniform batches from each source; TD3 targets from Q_on's targets and the offline target actor.
            offline, online = self.replay.sample_offline(batch_size), self.replay.sample_online(batch_size)
            with self.autocast():
                offline_target = self.td_target(offline, policy.online_critic_target)
                online_target = self.td_target(online, policy.online_critic_target)
                loss, loss_off, loss_on, weight = meta_critic_loss(
                    policy.online_critic,
                    params,
                    offline,
                    offline_target,
                    online,
                    online_target,
                    self.inner_lr,
                )
            # Adam step on the meta-gradient (plain .grad tensors: the inner graph dies with `loss`).
            policy.online_critic_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            policy.online_critic_optimizer.step()
            # Q_on's targets follow every policy_delay pretraining steps.
            if k % self.policy_delay == 0:
                self.soft_update(*self._online_target_pairs, self.tau)
            self._record(
                pretrain_loss=loss,
                pretrain_offline_loss=loss_off,
                pretrain_online_loss=loss_on,
                pretrain_weight=weight,
            )
        self._pretrained_at = self.num_timesteps

    def finetune_update(self, batch_size: int) -> None:
        """Phase 3: one OPT fine-tuning update."""
        policy = self.policy

        # 1. Density-ratio step on a uniform offline batch and a uniform online batch.
        offline, online = self.replay.sample_offline(batch_size), self.replay.sample_online(batch_size)
        with self.autocast():
            w_offline = policy.density(offline.observations, offline.actions)
            w_online = policy.density(online.observations, online.actions)
            density_loss = density_ratio_loss(w_offline, w_online)
        policy.density_optimizer.zero_grad(set_to_none=True)
        density_loss.backward()
        policy.density_optimizer.step()

        # 2. A prioritised batch from offline ∪ online; its rows' priorities are refreshed.
        indices, batch = self.replay.sample_prioritized(batch_size)
        priorities = self._update_priorities(indices, batch, w_offline.detach())

        # 3. TD3 critic steps for Q_off (the base's loss) and Q_on, on the same batch (disjoint weights).
        with self.autocast():
            critic_loss, critic_stats = self.critic_loss(batch)
            online_critic_loss, online_stats = self.online_critic_loss(batch)
        policy.critic_optimizer.zero_grad(set_to_none=True)
        policy.online_critic_optimizer.zero_grad(set_to_none=True)
        (critic_loss + online_critic_loss).backward()
        policy.critic_optimizer.step()
        policy.online_critic_optimizer.step()
        self._record(
            density_loss=density_loss,
            priority_mean=priorities.mean(),
            critic_loss=critic_loss,
            online_critic_loss=online_critic_loss,
            **critic_stats,
            **online_stats,
        )

        # 4. Delayed actor step on Q_mix (through `actor_q`), then every target follows.
        self.delayed_actor_step(batch, self._all_target_pairs)


class OPT(OnlinePretraining, TD3BC):
    """OPT on TD3 (the paper's MuJoCo setting): TD3+BC offline, then OPT's online phases with a TD3 actor
    loss on Q_mix (no BC term online), UTD 5.

    :param online_utd_ratio: updates per env step in phase 3 (MuJoCo: 5)
    Other arguments: see OnlinePretraining, TD3BC, TD3 and OfflineAlgorithm.
    """

    policy_aliases: ClassVar[dict[str, type]] = {"MlpPolicy": OPTPolicy}
    policy: OPTPolicy

    def __init__(self, dataset: OfflineDataset | None = None, *, online_utd_ratio: int = 5, **kwargs: Any):
        super().__init__(dataset, online_utd_ratio=online_utd_ratio, **kwargs)

    def actor_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Phase 3: TD3's -mean Q_mix(s, pi(s)); offline: TD3+BC's loss."""
        if self._finetuning:
            return TD3.actor_loss(self, batch)
        return super().actor_loss(batch)


class OPTSPOT(OnlinePretraining, SPOT):
    """OPT on SPOT (the paper's AntMaze and Adroit setting): SPOT offline (VAE, then SPOT-TD3), then OPT's
    online phases; the actor keeps SPOT's loss, -Q_mix / mean|Q_mix| + lambda_t n(s) with lambda cooled over
    the phase-3 updates (SPOT's own cooling: the pretraining updates of Q_on are not counted in it).

    :param online_utd_ratio: updates per env step in phase 3 (AntMaze, Adroit: 1)
    :param kappa_start: see OnlinePretraining (AntMaze, Adroit: 0.1)
    :param kappa_steps: see OnlinePretraining (AntMaze: 100k, large-diverse 200k; Adroit: 250k)
    Other arguments: see OnlinePretraining, SPOT, TD3 and OfflineAlgorithm; per-domain values in
    hyperparams/opt-spot.yml.
    """

    policy_aliases: ClassVar[dict[str, type]] = {"MlpPolicy": OPTSPOTPolicy}
    policy: OPTSPOTPolicy

    def __init__(
        self,
        dataset: OfflineDataset | None = None,
        *,
        online_utd_ratio: int = 1,
        kappa_start: float = 0.1,
        kappa_steps: int = 100_000,
        **kwargs: Any,
    ):
        super().__init__(
            dataset,
            online_utd_ratio=online_utd_ratio,
            kappa_start=kappa_start,
            kappa_steps=kappa_steps,
            **kwargs,
        )

    @torch.no_grad()
    def _initialize_online_critic(self, critic: torch.nn.Module) -> None:
        """Q_on starts like SPOT's critics: output layer from U(±critic_init_w) when that is set."""
        if self.critic_init_w is not None:
            head = critic.q_head if isinstance(critic, SharedQ) else critic.net.layers[-1]
            torch.nn.init.uniform_(head.weight, -self.critic_init_w, self.critic_init_w)
            torch.nn.init.uniform_(head.bias, -self.critic_init_w, self.critic_init_w)


__all__ = [
    "OPT",
    "OPTSPOT",
    "OPTPolicy",
    "OPTSPOTPolicy",
    "OnlinePretraining",
    "OnlinePretrainingPolicy",
    "balanced_priorities",
    "density_ratio_loss",
    "meta_critic_loss",
]
