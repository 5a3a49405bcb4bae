"""SPOT: Supported Policy Optimization (Wu et al., NeurIPS 2022), TD3 constrained to the behaviour support.

Losses follow thuml/SPOT (vae.py, train_vae.py, SPOT.py, main_finetune.py):
1. VAE phase, the first `vae_steps` gradient steps of `learn`: a conditional VAE of the dataset's actions,
   mean over batch of elbo_loss(s, a) (reconstruction MSE + beta * KL, one sample), its own Adam (lr 1e-3).
   It is then frozen; it sees the same normalised states as the actor.
2. Then TD3's critic update unchanged (zoo.agents.td3), and every `policy_delay` steps the actor on
   L = -mean Q_1(s, pi(s)) / mean|Q_1(s, pi(s))| (detached) + lambda * mean n(s),
   n(s) = elbo_loss(s, pi(s)) of the frozen VAE (a scaled stand-in for -log pi_beta(pi(s)|s)); Polyak targets.
3. Online (`finetune`): the same update with lambda_t = lambda * max(lambda_end, 1 - t / T) when
   `lambd_cool`, t = online gradient steps since the hand-over, T = the fine-tuning's env steps x UTD ratio
   (thuml/SPOT divides by 1e6, its online budget; CORL by its online iterations). Offline lambda is constant.

Deviations from thuml/SPOT, on purpose: the VAE phase counts inside `learn`'s budget (the official code
trains the VAE in a separate script: 100k VAE steps + 1M policy steps is learn(1_100_000)); no "exit if
mean Q > 1e4"; the time-limit step is kept as a bootstrapped transition (zoo convention, see td3.py).
Kept from the official Gym code: actor dropout 0.1 in training mode (also on the target actor, which the
official code never switches to eval mode), none at acting and evaluation time.

Populations (zoo.agents.population): P SPOT agents as one, each member with its own VAE (a member of the
batched VAE), its own dropout masks and latent noise (its own generator), its own lambda and beta; the VAE
phase's length (vae_steps, a whole number) is shared. Losses are sums over members of each member's means.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from zoo.agents.base import Batch
from zoo.agents.pretraining import member_values
from zoo.agents.td3 import TD3, TD3Policy
from zoo.data.dataset import OfflineDataset
from zoo.nn import VAE, EnsembleMLP, SharedQ, initialize
from zoo.nn.ensemble import member_uniform_
from zoo.nn.members import GLOBAL_RANDOM, MemberRandom, per_member


def member_dropout(x: torch.Tensor, p: float, training: bool, random: MemberRandom) -> torch.Tensor:
    """Dropout: in training, each unit kept with probability 1 - p and scaled by 1 / (1 - p).

    An ordinary agent's is torch's own F.dropout (its masks from torch's global generator, as always); a
    population's masks come from `random`, member k's rows from member k's generator (the same
    Bernoulli(1 - p) masks, drawn as U[0, 1) >= p)."""
    if not training or p == 0.0:
        return x
    if random.generators is None:
        return F.dropout(x, p, True)
    return x * (random.rand_like(x) >= p).to(x.dtype) / (1.0 - p)


class DropoutActor(nn.Module):
    """A DeterministicActor's MLP with dropout after each hidden layer's ReLU, active in training mode.

    It wraps the actor's own `net` (same parameters, same state-dict keys), so the TD3 machinery built on
    those parameters (optimizer, Polyak pairs) is unchanged. thuml/SPOT puts Dropout between Linear and
    ReLU; ReLU commutes with dropout's non-negative scaling, so that is the same function.
    (B, obs) -> (B, act); a population's (P, B, obs) -> (P, B, act), with member k's masks from `random`.
    """

    def __init__(self, net: EnsembleMLP, p: float, random: MemberRandom = GLOBAL_RANDOM):
        super().__init__()
        self.net, self.p, self.random = net, p, random

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x, last = obs, len(self.net.layers) - 1
        for i, layer in enumerate(self.net.layers):
            x = layer(x)
            if i < last:
                if self.net.layer_norm:
                    x = F.layer_norm(x, x.shape[-1:])
                x = member_dropout(F.relu(x), self.p, self.training, self.random)
        out = torch.tanh(x)
        return out.squeeze(0) if obs.dim() == 2 else out


class SPOTPolicy(TD3Policy):
    """TD3's actor and twin critics plus the behaviour VAE, whose optimizer is saved with the others.

    :param vae_net_arch: hidden sizes of the VAE's encoder and decoder (SPOT: 750, 750)
    :param vae_latent_dim: size of the VAE's latent (default 2 * action size)
    :param vae_lr: the VAE's Adam learning rate (set by the agent's vae_learning_rate)
    Other arguments: see TD3Policy (actor_lr: set by the agent's actor_learning_rate).
    """

    optimizer_names = ("actor_optimizer", "critic_optimizer", "vae_optimizer")

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: tuple[int, ...] | list[int] = (256, 256),
        vae_net_arch: tuple[int, ...] | list[int] = (750, 750),
        vae_latent_dim: int | None = None,
        vae_lr: float = 1e-3,
        **kwargs: Any,
    ):
        super().__init__(observation_space, action_space, lr_schedule, net_arch, **kwargs)
        self.vae = VAE(self.obs_dim, self.act_dim, vae_net_arch, vae_latent_dim, self.n_members)
        self.vae_lr = vae_lr

    def build_optimizers(self, lr: float) -> None:
        super().build_optimizers(lr)
        self.vae_optimizer = self.make_optimizer(self.vae.parameters(), self.vae_lr)


class SPOT(TD3):
    """SPOT-TD3 with the official defaults (thuml/SPOT main.py, train_vae.py, configs/).

    :param dataset: the OfflineDataset to learn from
    :param lambd: weight lambda of the density penalty (official default 1.0; per dataset, e.g. hopper-medium
        0.1: see hyperparams/spot.yml)
    :param beta: KL weight of the VAE's loss and of the penalty n(s)
    :param vae_steps: gradient steps of the VAE phase, the first ones of `learn`'s budget (official: 100k)
    :param vae_learning_rate: Adam learning rate of the VAE
    :param num_samples: latent samples per state in the penalty n(s)
    :param iwae: estimate -log pi_beta by importance sampling over num_samples latents instead of the ELBO
        loss
    :param normalize_q: divide the Q term by mean|Q| (detached); False is the official `--without_Q_norm`
    :param lambd_cool: during `finetune`, cool lambda linearly towards lambd_end * lambda (on in every
        official and CORL fine-tuning config, off in the official argparse default; offline it has no effect)
    :param lambd_end: the floor of the cooling, as a share of lambda, in [0, 1]
    :param actor_learning_rate: the actor's Adam learning rate (None: learning_rate; AntMaze/Adroit 1e-4);
        a learning-rate schedule then drives only the critic
    :param actor_dropout: dropout of the actor's hidden layers in training (official Gym 0.1; AntMaze and
        CORL 0)
    :param actor_init_w: draw the actor's output layer from U(-w, w) (AntMaze/Adroit: 1e-3); None: default
        init
    :param critic_init_w: the same for the critics' output layer (AntMaze/Adroit: 3e-3)
    :param policy_kwargs: TD3's, plus vae_net_arch and vae_latent_dim (see SPOTPolicy)
    Other arguments: see TD3 and OfflineAlgorithm. A pretraining recipe (pretrain=...) runs right after the
    VAE phase, before SPOT's own updates.
    """

    policy_aliases: ClassVar[dict[str, type[TD3Policy]]] = {"MlpPolicy": SPOTPolicy}
    policy: SPOTPolicy

    def __init__(
        self,
        dataset: OfflineDataset | None = None,
        *,
        lambd: float = 1.0,
        beta: float = 0.5,
        vae_steps: int = 100_000,
        vae_learning_rate: float = 1e-3,
        num_samples: int = 1,
        iwae: bool = False,
        normalize_q: bool = True,
        lambd_cool: bool = True,
        lambd_end: float = 0.2,
        actor_learning_rate: float | None = None,
        actor_dropout: float = 0.1,
        actor_init_w: float | None = None,
        critic_init_w: float | None = None,
        **kwargs: Any,
    ):
        if not lambd >= 0:
            raise ValueError(f"lambd (the density penalty's weight) must be >= 0, got {lambd}.")
        if not beta >= 0 or (iwae and beta == 0):
            raise ValueError(f"beta (the VAE's KL weight) must be >= 0, and > 0 with iwae=True; got {beta}.")
        if isinstance(vae_steps, bool) or int(vae_steps) != vae_steps or vae_steps < 0:
            raise ValueError(
                f"vae_steps is a whole number of gradient steps >= 0 (official: 100000), got {vae_steps}."
            )
        if not vae_learning_rate > 0:
            raise ValueError(f"vae_learning_rate must be > 0, got {vae_learning_rate}.")
        if int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples is a whole number of latent samples >= 1, got {num_samples}.")
        if not 0.0 <= lambd_end <= 1.0:
            raise ValueError(
                f"lambd_end is the floor of the online cooling as a share of lambd, in [0, 1]; "
                f"got {lambd_end}."
            )
        if actor_learning_rate is not None and not actor_learning_rate > 0:
            raise ValueError(
                f"actor_learning_rate must be > 0 (or None for learning_rate), got {actor_learning_rate}."
            )
        if not 0.0 <= actor_dropout < 1.0:
            raise ValueError(f"actor_dropout is a probability in [0, 1), got {actor_dropout}.")
        for name, w in (("actor_init_w", actor_init_w), ("critic_init_w", critic_init_w)):
            if w is not None and not w > 0:
                raise ValueError(
                    f"{name} is the half-width of a uniform output-layer init (> 0) or None, got {w}."
                )
        self.lambd, self.beta = float(lambd), float(beta)
        self.vae_steps, self.vae_learning_rate = int(vae_steps), float(vae_learning_rate)
        self.num_samples, self.iwae, self.normalize_q = int(num_samples), bool(iwae), bool(normalize_q)
        self.lambd_cool, self.lambd_end = bool(lambd_cool), float(lambd_end)
        self.actor_learning_rate = actor_learning_rate
        self.actor_dropout, self.actor_init_w, self.critic_init_w = (
            float(actor_dropout),
            actor_init_w,
            critic_init_w,
        )
        # Online lambda cooling: the update count at the hand-over (None offline) and the horizon T.
        self._cooling_start: int | None = None
        self._cooling_horizon = 1
        self._member_lambdas: tuple[torch.Tensor, torch.Tensor] | None = None
        super().__init__(dataset, **kwargs)

    def policy_settings(self) -> dict[str, Any]:
        """The policy builds its optimizers once, with these learning rates."""
        return {"actor_lr": self.actor_learning_rate, "vae_lr": self.vae_learning_rate}

    def _setup_model(self) -> None:
        super()._setup_model()
        policy = self.policy
        if self.actor_dropout > 0:  # wrap the actor and its target around their own weights
            policy.actor = DropoutActor(policy.actor.net, self.actor_dropout, self.random)
            policy.actor_target = DropoutActor(policy.actor_target.net, self.actor_dropout, self.random)
            self.actor = policy.actor
        if self.actor_init_w is not None:
            initialize(policy.actor.net, output_bound=self.actor_init_w)
            policy.actor_target.load_state_dict(policy.actor.state_dict())
        if self.critic_init_w is not None:
            self._initialize_critic_output(self.critic)
            policy.critic_target.load_state_dict(self.critic.state_dict())
        if self._n_updates >= self.vae_steps:  # a loaded agent past its VAE phase
            self.freeze_vae()

    @torch.no_grad()
    def _initialize_critic_output(self, critic: nn.Module, random: MemberRandom | None = None) -> None:
        """The critic's output layer from U(±critic_init_w) (AntMaze/Adroit), when that is set: at set-up
        from torch's generator (as every network's first draw), or from `random` (the agent's
        generator(s))."""
        if self.critic_init_w is not None:
            head = critic.q_head if isinstance(critic, SharedQ) else critic.net.layers[-1]
            for tensor in (head.weight, head.bias):
                member_uniform_(tensor, -self.critic_init_w, self.critic_init_w, random)

    def initialize_critic(self, critic: nn.Module) -> None:
        """TD3's default draw, then the output layer from U(±critic_init_w) when that is set (both from the
        agent's generator(s))."""
        super().initialize_critic(critic)
        self._initialize_critic_output(critic, self.random)

    def freeze_vae(self) -> None:
        """The VAE stops learning: the actor's gradients pass through it to pi(s) but leave no trace on it."""
        self.policy.vae.requires_grad_(False)

    @property
    def pretrain_until(self) -> int:
        """The last gradient step before SPOT's own updates: the VAE phase, then a recipe's phase if any."""
        return self.vae_steps + super().pretrain_until

    def _update_learning_rate(self, optimizers) -> None:
        """A learning-rate schedule drives the critic, and the actor unless actor_learning_rate is set; the
        VAE keeps vae_learning_rate."""
        fixed = [self.policy.vae_optimizer] + (
            [self.policy.actor_optimizer] if self.actor_learning_rate is not None else []
        )
        super()._update_learning_rate([o for o in optimizers if all(o is not f for f in fixed)])

    # ------------------------------------------------------------------ the density penalty and its weight

    def current_lambda(self) -> float | torch.Tensor:
        """lambda offline; lambda * max(lambd_end, 1 - t / T) during `finetune` with lambd_cool
        (host ints). A population's lambda is its (P,) tensor of member values; online, where lambda or
        lambd_end differ between members, member k's lambda_t is computed in float64 from the exact values it
        was built with and then rounded once, as a population of one rounds its Python float."""
        if not self.lambd_cool or self._cooling_start is None:
            return self.lambd
        t = self._n_updates - self._cooling_start
        factor = 1.0 - t / self._cooling_horizon
        if self._member_lambdas is None:
            return self.lambd * max(self.lambd_end, factor)
        lambd, lambd_end = self._member_lambdas
        return (lambd * torch.clamp(lambd_end, min=factor)).float()

    def learn(self, *args: Any, **kwargs: Any):
        self._cooling_start = None  # offline, lambda is constant
        return super().learn(*args, **kwargs)

    def _on_finetune_start(self) -> None:
        super()._on_finetune_start()
        if self._n_updates < self.pretrain_until:
            raise ValueError(
                f"finetune() needs the VAE trained first: {self._n_updates} gradient steps so far, "
                "the VAE (and "
                f"pretraining) phase lasts {self.pretrain_until}. Call learn() for at least that many steps."
            )
        # Cooling counts online updates from the hand-over; T = this fine-tuning's env steps x UTD ratio.
        self._cooling_start = self._n_updates
        self._cooling_horizon = max(self._total_timesteps * self.online_utd_ratio, 1)
        self._member_lambdas = None  # a population whose members' lambda or lambd_end differ: (P,) float64
        if any(isinstance(getattr(self, name), torch.Tensor) for name in ("lambd", "lambd_end")):
            self._member_lambdas = tuple(
                torch.as_tensor(member_values(self, name), dtype=torch.float64, device=self.device).expand(
                    self.n_members
                )
                for name in ("lambd", "lambd_end")
            )

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_member_lambdas"]  # rebuilt by every finetune call

    def density_loss(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """n(s) per state: the frozen VAE's elbo_loss (or IWAE estimate) of -log pi_beta(a|s)."""
        vae = self.policy.vae
        if self.iwae:
            return vae.iwae_loss(observations, actions, self.beta, self.num_samples)
        return vae.elbo_loss(observations, actions, self.beta, self.num_samples)

    # ------------------------------------------------------------------ losses

    def vae_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean over the batch of elbo_loss(s, a), one latent sample: thuml/SPOT train_vae.py's loss (summed
        over a population's members, each VAE on its member's batch)."""
        return self.policy.vae.elbo_loss(batch.observations, batch.actions, self.beta).mean(-1).sum(), {}

    def actor_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-mean Q(s, pi(s)) / mean|Q(s, pi(s))| (detached) + lambda_t * mean n(s), n from the frozen VAE;
        a population's members each with their own lambda, summed."""
        obs = batch.observations
        pi = self.actor(obs)
        q = self.actor_q(obs, pi)
        q_mean = q.mean(-1)
        q_term = -q_mean / q.abs().mean(-1).detach() if self.normalize_q else -q_mean
        density = self.density_loss(obs, pi).mean(-1)
        lambd = self.current_lambda()
        loss = (q_term + per_member(lambd, density) * density).sum()
        return loss, {"neg_log_beta": density, "lambd": torch.as_tensor(lambd)}

    # ------------------------------------------------------------------ one update

    def update(self, batch: Batch) -> None:
        """The VAE phase's step, then the base's (a recipe's phase, then SPOT's rl_update)."""
        if self._n_updates <= self.vae_steps:
            self.vae_update(batch)
        else:
            super().update(batch)

    def vae_update(self, batch: Batch) -> None:
        """One step of the VAE phase (actor and critics untouched); the VAE freezes after the last one."""
        policy = self.policy
        with self.autocast():
            loss, stats = self.vae_loss(batch)
        policy.vae_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        policy.vae_optimizer.step()
        self.record(**stats, vae_loss=loss)
        if self._n_updates == self.vae_steps:
            self.freeze_vae()


__all__ = ["SPOT", "DropoutActor", "SPOTPolicy"]
