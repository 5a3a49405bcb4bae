"""OPT: Online Pre-Training for offline-to-online RL (Shin, Kim et al., ICML 2025, arXiv 2507.08387).

Phase 1 is the base algorithm's offline training, unchanged (`learn`): TD3+BC (`OPT`, MuJoCo) or SPOT
(`OPTSPOT`, AntMaze/Adroit). Online (`finetune`), in environment steps t = 1, 2, ...:

- Phase 2a (t < n_tau): the frozen offline policy (+ its exploration noise) collects; no update at all.
- Phase 2b (t = n_tau, once): a NEW randomly initialised twin critic Q_on (own targets, own Adam) is
  pre-trained for n_pretrain updates on the meta objective
      L_off(psi) + w * L_on(psi - inner_lr * grad L_off(psi)),   w = min(L_off, L_on) / L_on (detached),
  b_off uniform from the offline rows, b_on uniform from the online rows, TD3 targets from Q_on's targets
  and the offline target actor; Q_on's targets follow every policy_delay pretraining steps.
- Phase 3 (t >= n_tau, online_utd_ratio updates per env step): a density-ratio net w(s, a) ~ d_on / d_off
  learns Off2On's Jensen-Shannon dual
      mean[-log(2 / (w_off + 1))] - mean[log(2 w_on / (w_on + 1))],
  the batch is drawn from offline ∪ online rows with priority w^(1/T) / mean_{b_off} w^(1/T) (clipped to
  [1e-3, 1e3]; new rows enter at the running maximum), Q_off and Q_on take TD3 critic steps on that batch,
  and every policy_delay updates the actor climbs Q_mix = (1 - kappa) Q_off1 + kappa Q_on1 (TD3+BC base:
  -mean Q_mix, no BC term; SPOT base: its own normalised loss with the cooled lambda); all targets follow.
  kappa moves linearly from kappa_start (t = n_tau) to kappa_end (t = n_tau + kappa_steps).

Everything online lives in one component, `OnlinePretraining`, which a TD3-family agent takes through its
`online_pretraining` hook; `OPT` and `OPTSPOT` are TD3+BC and SPOT with that component.

Populations (zoo.agents.population): K OPT agents as one, member k training as a population of one with
seed k, offline and online. Phase 1 is the base's population. Online, every member's env runs side by side
(OfflineAlgorithm.finetune) and each member has its own Q_on and density net (members of the batched
networks, re-drawn at n_tau from the member's own generator), its own meta-objective (the inner SGD step on
its own slices with its own inner_lr, its own weight w = min(L_off, L_on) / L_on), its own priorities over
offline ∪ its own online rows (zoo.agents.replay) from its own density net with its own temperature, and its
own kappa schedule (kappa_start, kappa_end); losses are sums over members of each member's means. What picks
a phase or shapes a loop must agree within a population (whole numbers and switches: n_tau, n_pretrain,
kappa_steps, reset_optimizers_online; zoo.agents.population refuses members that differ, naming the setting);
the float settings (inner_lr, kappa_start, kappa_end, temperature, density_learning_rate, online_gamma) may
differ per member.

Differs from the official code (read through a public reimplementation; see the README):
- observations are normalised when `normalize_observations` is on (hyperparams/opt*.yml turn it off);
- the priorities cover every offline and online row (no 1e6 ring buffer overwriting offline rows), and the
  sum tree's stratified draw runs on the device as cumsum + searchsorted;
- kappa reaches kappa_end kappa_steps after n_tau (the reimplementation: at env step kappa_steps);
- `online_mixing_ratio` is not used: phase 3 samples the prioritised union;
- exploration noise is TD3's unclipped N(0, 0.1) (the reimplementation clips it at 0.5).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch.func import functional_call

from zoo.agents.losses import ensemble_mse
from zoo.agents.pretraining import member_values, per_member_mse
from zoo.agents.replay import Batch
from zoo.agents.spot import SPOT, SPOTPolicy
from zoo.agents.td3 import TD3Policy
from zoo.agents.td3bc import TD3BC
from zoo.data.dataset import OfflineDataset
from zoo.nn.density import DensityRatio
from zoo.nn.members import member_rows, per_member

# ---------------------------------------------------------------------------------------------- losses


def meta_critic_loss(
    critic: torch.nn.Module,
    params: dict[str, torch.Tensor],
    offline: Batch,
    offline_target: torch.Tensor,
    online: Batch,
    online_target: torch.Tensor,
    inner_lr: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """OPT's online pre-training objective L_off(psi) + w * L_on(psi - inner_lr * grad L_off(psi)).

    Returns (objective, L_off, L_on at the inner-step parameters, w). Its gradient in `params` is the
    meta-gradient grad L_off + w (I - inner_lr H_off) grad L_on(psi'): the inner gradient keeps its graph.

    A population's critic (stacked parameters, batches and targets with a leading member axis) gives
    L_off, L_on and w per member, (P,), and the objective sum_k [L_off_k + w_k L_on_k(psi'_k)]: member k's
    losses depend on its own slices psi_k only, so the inner gradient of sum_k L_off_k in psi_k is
    grad L_off_k(psi_k), the inner step psi'_k = psi_k - inner_lr_k grad L_off_k (inner_lr: a float, or the
    members' (P,) values) is member k's own, and the objective's gradient in psi_k is member k's
    meta-gradient.
    """
    # Offline TD loss at psi, and its gradient with the graph kept (second-order term).
    q_off = functional_call(critic, params, (offline.observations, offline.actions))
    loss_off = per_member_mse(q_off, offline_target)
    grads = torch.autograd.grad(loss_off.sum(), list(params.values()), create_graph=True, allow_unused=True)

    def step(p: torch.Tensor) -> float | torch.Tensor:
        if isinstance(inner_lr, torch.Tensor) and inner_lr.dim() == 1:  # per member: its rows of the stack
            return member_rows(inner_lr, p, inner_lr.numel())
        return inner_lr

    # One differentiable SGD step: psi' = psi - inner_lr * grad L_off(psi) (weights off the Q path, e.g. a
    # shared-Q transition head, have no gradient and stay).
    inner = {name: p if g is None else p - step(p) * g for (name, p), g in zip(params.items(), grads)}
    # Online TD loss at psi'.
    loss_on = per_member_mse(functional_call(critic, inner, (online.observations, online.actions)), online_target)
    # Gradient weighting (code-level), per member: scale L_on down to L_off's size when it is larger.
    weight = torch.minimum(loss_off, loss_on).detach() / (loss_on.detach() + 1e-10)
    return (loss_off + weight * loss_on).sum(), loss_off, loss_on, weight


def density_ratio_loss(w_offline: torch.Tensor, w_online: torch.Tensor) -> torch.Tensor:
    """Off2On's Jensen-Shannon dual for w ~ d_on / d_off:
    mean[-log(2 / (w_off + 1))] - mean[log(2 w_on / (w_on + 1))] (each log of x + 1e-10); a population's
    (P, batch) values give the sum over members of each member's loss."""
    offline_term = -torch.log(2.0 / (w_offline + 1.0) + 1e-10)
    online_term = torch.log(2.0 * w_online / (w_online + 1.0) + 1e-10)
    return (offline_term.mean(-1) - online_term.mean(-1)).sum()


def balanced_priorities(
    w_batch: torch.Tensor, w_offline: torch.Tensor, temperature: float | torch.Tensor
) -> torch.Tensor:
    """Balanced-replay priorities: w^(1/T) / mean(w_off^(1/T)), clipped to [1e-3, 1e3]. A population's
    (P, n) and (P, batch) values: member k's rows normalised by its own offline batch, with its own T
    (`temperature` a float, or the members' (P,) values)."""
    exponent = 1.0 / temperature
    if isinstance(exponent, torch.Tensor):
        exponent = per_member(exponent.to(w_batch.dtype), w_batch)
    normaliser = w_offline.pow(exponent).mean(-1, keepdim=True)
    return (w_batch.pow(exponent) / (normaliser + 1e-10)).clamp(1e-3, 1e3)


# ---------------------------------------------------------------------------------------------- networks

ONLINE_OPTIMIZER_NAMES = ("online_critic_optimizer", "density_optimizer")


def add_online_networks(policy: TD3Policy, density_net_arch: tuple[int, ...] | list[int]) -> None:
    """Register Q_on (the offline critic's architecture), its target and the density-ratio net on `policy`,
    so that save/load carry them. Built on a forked RNG: the offline phase draws exactly what the base
    algorithm alone would; both are drawn afresh when the online phase starts (`reset_networks`). A
    population's policy gets them with its member axis (one Q_on and one density net per member)."""
    with torch.random.fork_rng(devices=[]):
        policy.online_critic = copy.deepcopy(policy.critic)
        policy.online_critic_target = copy.deepcopy(policy.online_critic).requires_grad_(False)
        policy.density = DensityRatio(
            policy.obs_dim, policy.act_dim, tuple(density_net_arch), n_members=policy.n_members
        )


def build_online_optimizers(policy: TD3Policy, critic_lr: float, density_learning_rate: float) -> None:
    """Adam for Q_on (at Q_off's learning rate, `critic_lr`) and for the density-ratio net (a population's:
    MemberAdam, whose per-member rates zoo.agents.population sets from its members')."""
    policy.online_critic_optimizer = policy.make_optimizer(policy.online_critic.parameters(), critic_lr)
    policy.density_optimizer = policy.make_optimizer(policy.density.parameters(), density_learning_rate)


class OPTPolicy(TD3Policy):
    """TD3's policy (actor, twin Q_off) plus OPT's Q_on and density-ratio net.

    :param density_net_arch: hidden sizes of the density-ratio net (Off2On / OPT: 256-256)
    :param density_learning_rate: its Adam learning rate (set by the agent's `density_learning_rate`)
    """

    optimizer_names = (*TD3Policy.optimizer_names, *ONLINE_OPTIMIZER_NAMES)

    def __init__(
        self, *args: Any, density_net_arch=(256, 256), density_learning_rate: float = 3e-4, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.density_learning_rate = density_learning_rate
        add_online_networks(self, density_net_arch)

    def build_optimizers(self, lr: float) -> None:
        super().build_optimizers(lr)
        build_online_optimizers(self, lr, self.density_learning_rate)


class OPTSPOTPolicy(SPOTPolicy):
    """SPOT's policy (actor, twin Q_off, behaviour VAE) plus OPT's Q_on and density-ratio net
    (see OPTPolicy)."""

    optimizer_names = (*SPOTPolicy.optimizer_names, *ONLINE_OPTIMIZER_NAMES)

    def __init__(
        self, *args: Any, density_net_arch=(256, 256), density_learning_rate: float = 3e-4, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.density_learning_rate = density_learning_rate
        add_online_networks(self, density_net_arch)

    def build_optimizers(self, lr: float) -> None:
        super().build_optimizers(lr)
        build_online_optimizers(self, lr, self.density_learning_rate)


# ---------------------------------------------------------------------------------------------- the component


def check_online_settings(
    n_tau,
    n_pretrain,
    inner_lr,
    kappa_start,
    kappa_end,
    kappa_steps,
    temperature,
    density_learning_rate,
    online_gamma,
) -> None:
    """Refuse settings of the online phases that cannot work, naming the setting and its range."""
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
        raise ValueError(f"online_gamma is a discount in (0, 1] (or None to keep gamma), got {online_gamma}.")


class OnlinePretraining:
    """OPT's online phases (2a, 2b, 3; see the module docstring) for a TD3-family agent.

    It owns Q_on's and the density net's training (the networks sit on the agent's policy so checkpoints
    carry them), the replay priorities and the kappa schedule. The agent calls it through TD3's hooks:
    `on_learn_start`, `check_finetune`, `on_finetune_start`, `before_updates` and `update` (while `active`),
    `actor_q` and `actor_objective`.

    :param online_actor_loss: the actor's objective in phase 3: "q" (-mean Q_mix: OPT on TD3+BC drops the
        BC term) or "own" (the agent's actor loss on Q_mix: OPT on SPOT)
    Other arguments: see OPT; in a population, the float settings its members differ in are (P,) float64
    tensors of their exact values (`member_values`), read again when fine-tuning starts (`read_settings`).
    """

    def __init__(
        self,
        *,
        n_tau: int,
        n_pretrain: int,
        inner_lr: float | torch.Tensor,
        kappa_start: float | torch.Tensor,
        kappa_end: float | torch.Tensor,
        kappa_steps: int,
        temperature: float | torch.Tensor,
        reset_optimizers_online: bool,
        online_gamma: float | torch.Tensor | None,
        online_actor_loss: str,
    ):
        if online_actor_loss not in ("q", "own"):
            raise ValueError(f"online_actor_loss is 'q' or 'own', got {online_actor_loss!r}.")

        def number(value):  # a float, or a population's (P,) per-member values
            return value if isinstance(value, torch.Tensor) else float(value)

        self.n_tau, self.n_pretrain, self.inner_lr = int(n_tau), int(n_pretrain), number(inner_lr)
        self.kappa_start, self.kappa_end, self.kappa_steps = (
            number(kappa_start),
            number(kappa_end),
            int(kappa_steps),
        )
        self.temperature = number(temperature)
        self.reset_optimizers_online, self.online_gamma = reset_optimizers_online, online_gamma
        self.online_actor_loss = online_actor_loss
        # State of the online phase (rebuilt by every finetune call, never saved).
        self.active = False  # inside finetune
        self.finetuning = False  # phase 3: Q_mix for the actor, prioritised batches
        self.kappa = self.kappa_start
        self.n_pretrain_updates = 0  # Q_on meta-updates (not counted in the agent's _n_updates)
        self.pretrained_at: int | None = None  # env step of phase 2b

    @classmethod
    def of(cls, agent, online_actor_loss: str) -> "OnlinePretraining":
        """The component with the settings an OPT agent keeps under their constructor names (a population's
        float settings that differ between members: their (P,) values, see `member_values`)."""
        return cls(
            n_tau=agent.n_tau,
            n_pretrain=agent.n_pretrain,
            inner_lr=member_values(agent, "inner_lr"),
            kappa_start=member_values(agent, "kappa_start"),
            kappa_end=member_values(agent, "kappa_end"),
            kappa_steps=agent.kappa_steps,
            temperature=member_values(agent, "temperature"),
            reset_optimizers_online=agent.reset_optimizers_online,
            online_gamma=agent.online_gamma,
            online_actor_loss=online_actor_loss,
        )

    def read_settings(self, agent) -> None:
        """The agent's current float settings (a population gets its per-member values after its set-up)."""
        self.inner_lr = member_values(agent, "inner_lr")
        self.kappa_start = member_values(agent, "kappa_start")
        self.kappa_end = member_values(agent, "kappa_end")
        self.temperature = member_values(agent, "temperature")
        self.online_gamma = agent.online_gamma

    # ------------------------------------------------------------------ phases

    def kappa_at(self, env_step: int) -> float | torch.Tensor:
        """kappa at env step t >= n_tau: linear from kappa_start (t = n_tau) to kappa_end
        (t = n_tau + kappa_steps); a population whose members' kappa_start or kappa_end differ: (P,)
        float64, member k's computed as a population of one computes its float (the same float64 steps)."""
        if self.kappa_steps == 0:
            return self.kappa_end
        progress = min(max((env_step - self.n_tau) / self.kappa_steps, 0.0), 1.0)
        return self.kappa_start + progress * (self.kappa_end - self.kappa_start)

    def on_learn_start(self, agent) -> None:
        """Phase 1: the base algorithm's offline training, unchanged."""
        self.active = self.finetuning = False

    def check_finetune(self, agent) -> None:
        """Refuse, before any env step, a fine-tuning that cannot run: OPT needs the offline rows."""
        if agent.dataset is None:
            raise ValueError(
                "OPT pre-trains its new critic and replays on offline and online data: give the agent its "
                "dataset (load(path, dataset=...))."
            )

    def on_finetune_start(self, agent) -> None:
        """Phases 2a, 2b and 3 start: priorities over offline ∪ online rows, fresh Adam moments for the actor
        and Q_off (`reset_optimizers_online`), the online discount."""
        policy = agent.policy
        self.read_settings(agent)
        agent.replay.start_priorities()
        self.active, self.finetuning = True, False
        self.kappa = self.kappa_start
        if self.reset_optimizers_online:
            policy.actor_optimizer.state.clear()
            policy.critic_optimizer.state.clear()
        if self.online_gamma is not None:
            agent.gamma = self.online_gamma

    def before_updates(self, agent, batch_size: int) -> bool:
        """Once per env step, before its updates: new rows get their priority, phase 2b runs at t = n_tau,
        kappa follows its schedule. False in phase 2a (no update this env step)."""
        agent.replay.prioritize_new_rows()
        step = agent.num_timesteps  # env steps so far, this one included
        if step < self.n_tau:
            return False
        if step == self.n_tau:
            self.pretrain_online_critic(agent, batch_size)
            self.finetuning = True
        self.kappa = self.kappa_at(step)
        # a host scalar (no device sync), or the members' kappas (logged as their mean)
        kappa = self.kappa
        agent.record(kappa=kappa.float() if isinstance(kappa, torch.Tensor) else torch.tensor(kappa))
        return True

    # ------------------------------------------------------------------ what the actor climbs

    def actor_q(
        self, agent, observations: torch.Tensor, actions: torch.Tensor, q_off: torch.Tensor
    ) -> torch.Tensor:
        """Phase 3: Q_mix = (1 - kappa) Q_off1 + kappa Q_on1; before: Q_off1. A population's (P, batch)
        values mix with each member's kappa."""
        if not self.finetuning:
            return q_off
        q_on = agent.policy.online_critic(observations, actions, members=slice(0, 1)).squeeze(-2)
        kappa = self.kappa
        if isinstance(kappa, torch.Tensor):  # float64 per member, each factor rounded once (as a float is)
            keep = per_member((1.0 - kappa).to(q_off.dtype), q_off)
            return keep * q_off + per_member(kappa.to(q_on.dtype), q_on) * q_on
        return (1.0 - kappa) * q_off + kappa * q_on

    def actor_objective(self, agent, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Phase 3 with online_actor_loss="q": -mean Q_mix(s, pi(s)); otherwise the agent's actor loss."""
        if self.finetuning and self.online_actor_loss == "q":
            return agent.q_actor_loss(batch)
        return agent.actor_loss(batch)

    # ------------------------------------------------------------------ updates

    @torch.no_grad()
    def reset_networks(self, agent) -> None:
        """A new random Q_on (target = copy) and density net, with fresh Adam states. Q_on starts the way
        the agent's critics start (`agent.initialize_critic`); both are drawn from the agent's generator(s),
        a population's member k from its own."""
        policy = agent.policy
        agent.initialize_critic(policy.online_critic)
        policy.density.reset_parameters(agent.random)  # Off2On's init: w ≈ 1 at the start
        policy.online_critic_target.load_state_dict(policy.online_critic.state_dict())
        policy.online_critic_optimizer.state.clear()
        policy.density_optimizer.state.clear()

    def online_critic_loss(self, agent, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Q_on's TD3 critic loss on its own targets; returns (loss, statistics)."""
        policy = agent.policy
        q = policy.online_critic(batch.observations, batch.actions)
        return ensemble_mse(q, agent.td_target(batch, policy.online_critic_target)), {
            "online_q_mean": q.mean()
        }

    def pretrain_online_critic(self, agent, batch_size: int) -> None:
        """Phase 2b: a new Q_on, then n_pretrain meta-updates on b_off (offline) and b_on (online)."""
        policy, replay = agent.policy, agent.replay
        self.reset_networks(agent)
        params = dict(policy.online_critic.named_parameters())
        online_pairs = (
            list(policy.online_critic_target.parameters()),
            list(policy.online_critic.parameters()),
        )
        for k in range(1, self.n_pretrain + 1):
            self.n_pretrain_updates += 1
            offline, online = replay.sample_offline(batch_size), replay.sample_online(batch_size)
            with agent.autocast():
                offline_target = agent.td_target(offline, policy.online_critic_target)
                online_target = agent.td_target(online, policy.online_critic_target)
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
            if k % agent.policy_delay == 0:
                agent.update_targets(online_pairs)  # Polyak with tau (a population: each member's own)
            agent.record(
                pretrain_loss=loss,
                pretrain_offline_loss=loss_off,
                pretrain_online_loss=loss_on,
                pretrain_weight=weight,
            )
        self.pretrained_at = agent.num_timesteps

    @torch.no_grad()
    def update_priorities(
        self, agent, indices: torch.Tensor, batch: Batch, w_offline: torch.Tensor
    ) -> torch.Tensor:
        """Sampled rows' priorities from the (just updated) density net; the running max follows (a
        population: member k's rows from its own density net, against its own offline batch)."""
        w = agent.policy.density(batch.observations, batch.actions).float()
        priorities = balanced_priorities(w, w_offline.float(), self.temperature).double()
        agent.replay.set_priorities(indices, priorities)
        return priorities

    def update(self, agent, batch_size: int) -> None:
        """Phase 3: one OPT fine-tuning update."""
        policy, replay = agent.policy, agent.replay

        # 1. Density-ratio step on a uniform offline batch and a uniform online batch.
        offline, online = replay.sample_offline(batch_size), replay.sample_online(batch_size)
        with agent.autocast():
            w_offline = policy.density(offline.observations, offline.actions)
            w_online = policy.density(online.observations, online.actions)
            density_loss = density_ratio_loss(w_offline, w_online)
        policy.density_optimizer.zero_grad(set_to_none=True)
        density_loss.backward()
        policy.density_optimizer.step()

        # 2. A prioritised batch from offline ∪ online; its rows' priorities are refreshed.
        indices, batch = replay.sample_prioritized(batch_size)
        priorities = self.update_priorities(agent, indices, batch, w_offline.detach())

        # 3. TD3 critic steps for Q_off (the agent's loss) and Q_on, on the same batch (disjoint weights).
        with agent.autocast():
            critic_loss, critic_stats = agent.critic_loss(batch)
            online_critic_loss, online_stats = self.online_critic_loss(agent, batch)
        policy.critic_optimizer.zero_grad(set_to_none=True)
        policy.online_critic_optimizer.zero_grad(set_to_none=True)
        (critic_loss + online_critic_loss).backward()
        policy.critic_optimizer.step()
        policy.online_critic_optimizer.step()
        agent.record(
            density_loss=density_loss,
            priority_mean=priorities.mean(),
            critic_loss=critic_loss,
            online_critic_loss=online_critic_loss,
            **critic_stats,
            **online_stats,
        )

        # 4. Delayed actor step on Q_mix (through `actor_q`), then every target (Q_on's too) follows.
        online_pairs = (
            list(policy.online_critic_target.parameters()),
            list(policy.online_critic.parameters()),
        )
        targets, sources = agent.target_pairs
        agent.delayed_actor_step(batch, ([*targets, *online_pairs[0]], [*sources, *online_pairs[1]]))


# ---------------------------------------------------------------------------------------------- agents


class OPT(TD3BC):
    """OPT on TD3 (the paper's MuJoCo setting): TD3+BC offline, then OPT's online phases with a TD3 actor
    loss on Q_mix (no BC term online), UTD 5.

    :param n_tau: env steps collected by the frozen offline policy before any update (N_tau)
    :param n_pretrain: meta-updates of the new critic Q_on at env step n_tau (N_pretrain)
    :param inner_lr: step size of the differentiable inner SGD step on L_off (alpha_in)
    :param kappa_start: weight of Q_on in the actor's Q_mix at the first fine-tuning step
    :param kappa_end: weight of Q_on after kappa_steps fine-tuning env steps
    :param kappa_steps: env steps over which kappa moves linearly (0: kappa_end from the start)
    :param temperature: balanced-replay priority temperature T (priority ~ w^(1/T))
    :param density_learning_rate: Adam learning rate of the density-ratio net
    :param reset_optimizers_online: reset the Adam states of the actor and Q_off when fine-tuning starts
    :param online_gamma: discount from the online phase on (None: keep gamma; SPOT+OPT on AntMaze: 0.995)
    :param online_utd_ratio: updates per env step in phase 3 (MuJoCo: 5)
    Other arguments: see TD3BC, TD3 and OfflineAlgorithm. `online_mixing_ratio` is not used online.
    """

    policy_aliases: ClassVar[dict[str, type]] = {"MlpPolicy": OPTPolicy}
    policy: OPTPolicy
    online_actor_loss: ClassVar[str] = "q"

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
        online_utd_ratio: int = 5,
        **kwargs: Any,
    ):
        check_online_settings(
            n_tau,
            n_pretrain,
            inner_lr,
            kappa_start,
            kappa_end,
            kappa_steps,
            temperature,
            density_learning_rate,
            online_gamma,
        )
        self.n_tau, self.n_pretrain, self.inner_lr = int(n_tau), int(n_pretrain), float(inner_lr)
        self.kappa_start, self.kappa_end, self.kappa_steps = (
            float(kappa_start),
            float(kappa_end),
            int(kappa_steps),
        )
        self.temperature, self.density_learning_rate = float(temperature), float(density_learning_rate)
        self.reset_optimizers_online, self.online_gamma = reset_optimizers_online, online_gamma
        super().__init__(dataset, online_utd_ratio=online_utd_ratio, **kwargs)

    def policy_settings(self) -> dict[str, Any]:
        return {**super().policy_settings(), "density_learning_rate": self.density_learning_rate}

    def _setup_model(self) -> None:
        super()._setup_model()
        self.online_pretraining = OnlinePretraining.of(self, self.online_actor_loss)


class OPTSPOT(SPOT):
    """OPT on SPOT (the paper's AntMaze and Adroit setting): SPOT offline (VAE, then SPOT-TD3), then OPT's
    online phases; the actor keeps SPOT's loss, -Q_mix / mean|Q_mix| + lambda_t n(s), lambda cooled over the
    phase-3 updates (the pretraining updates of Q_on are not counted in it).

    :param online_utd_ratio: updates per env step in phase 3 (AntMaze, Adroit: 1)
    :param kappa_start: see OPT (AntMaze, Adroit: 0.1)
    :param kappa_steps: see OPT (AntMaze: 100k, large-diverse 200k; Adroit: 250k)
    Other arguments: see OPT, SPOT, TD3 and OfflineAlgorithm; per-domain values in hyperparams/opt-spot.yml.
    """

    policy_aliases: ClassVar[dict[str, type]] = {"MlpPolicy": OPTSPOTPolicy}
    policy: OPTSPOTPolicy
    online_actor_loss: ClassVar[str] = "own"

    def __init__(
        self,
        dataset: OfflineDataset | None = None,
        *,
        n_tau: int = 25_000,
        n_pretrain: int = 50_000,
        inner_lr: float = 3e-4,
        kappa_start: float = 0.1,
        kappa_end: float = 0.9,
        kappa_steps: int = 100_000,
        temperature: float = 5.0,
        density_learning_rate: float = 3e-4,
        reset_optimizers_online: bool = True,
        online_gamma: float | None = None,
        online_utd_ratio: int = 1,
        **kwargs: Any,
    ):
        check_online_settings(
            n_tau,
            n_pretrain,
            inner_lr,
            kappa_start,
            kappa_end,
            kappa_steps,
            temperature,
            density_learning_rate,
            online_gamma,
        )
        self.n_tau, self.n_pretrain, self.inner_lr = int(n_tau), int(n_pretrain), float(inner_lr)
        self.kappa_start, self.kappa_end, self.kappa_steps = (
            float(kappa_start),
            float(kappa_end),
            int(kappa_steps),
        )
        self.temperature, self.density_learning_rate = float(temperature), float(density_learning_rate)
        self.reset_optimizers_online, self.online_gamma = reset_optimizers_online, online_gamma
        super().__init__(dataset, online_utd_ratio=online_utd_ratio, **kwargs)

    def policy_settings(self) -> dict[str, Any]:
        return {**super().policy_settings(), "density_learning_rate": self.density_learning_rate}

    def _setup_model(self) -> None:
        super()._setup_model()
        self.online_pretraining = OnlinePretraining.of(self, self.online_actor_loss)


__all__ = [
    "OPT",
    "OPTSPOT",
    "OPTPolicy",
    "OPTSPOTPolicy",
    "OnlinePretraining",
    "balanced_priorities",
    "density_ratio_loss",
    "meta_critic_loss",
]
