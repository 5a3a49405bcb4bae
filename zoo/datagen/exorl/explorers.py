"""URLB's reward-free explorers for state observations: DDPG trained on an RND, ICM or SMM reward.

DDPG (one actor μ, no target actor; a critic with a shared trunk and two heads Q1, Q2; a target
critic Q̄), on n-step batches whose reward r_int is the intrinsic one:

    y = r_int + γ_n · min(Q̄1, Q̄2)(s', μ(s') + clip(ε', ±0.3)),      ε, ε' ~ N(0, 0.2²)
    L_Q = (Q1(s, a) - y)² + (Q2(s, a) - y)²,   L_μ = -min(Q1, Q2)(s, μ(s) + clip(ε, ±0.3))
    Q̄ ← (1 - τ) Q̄ + τ Q (τ = 0.01);  actions are clamped to ±(1 - 1e-6) with a straight-through gradient

- RND: r = c·e(s) / (sqrt(running var of e) + 1e-8), e(s) = mean_k (f̄(s̃) - f(s̃))², s̃ = clamp(BN(s), ±5).
- ICM: r = log(1 + c·‖s' - f(s, a)‖), f trained with g on ‖s' - f(s, a)‖ + ‖a - g(s, s')‖.
- SMM: r = c_s Σ_d (x - x̂)² + c_z log(z_dim) + c_zs CE(d(·|s), z), x = s ⊕ z, from the VAE's and the
  discriminator's errors before their step.

URLB's quirks are kept: r_int replaces the sampled n-step reward while the critic still bootstraps
with γ_n = γ³ from s_{t+3}; RND divides by a running std without subtracting a mean; SMM adds
+CE = -log d(z|s) (`smm_latent_cond_ent_coef=-1` gives the +log d(z|s) variant).

Differs from the official code:
- RND normalises the batch and computes the frozen target's features once per update (URLB calls
  `rnd(obs)` twice; BatchNorm uses batch statistics, so both calls see the same values).
- `ExplorerConfig(nstep=1)` removes the n-step quirk (ICM then sees (s_t, a_t, s_{t+1})).
- Metrics stay on the device as detached tensors: no `.item()` or host round trip in `update`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ConfigError

EXPLORERS = ("rnd", "icm", "smm", "random")


@dataclass(frozen=True)
class ExplorerConfig:
    """Hyper-parameters of the explorers; the defaults are URLB's (ddpg/rnd/icm/smm.yaml, pretrain.yaml)."""

    hidden_dim: int = 1024  # width of actor, critic, RND, ICM and the SMM discriminator
    batch_size: int = 1024
    lr: float = 1e-4  # Adam, actor, critic, RND predictor and ICM
    discount: float = 0.99
    nstep: int = 3
    critic_target_tau: float = 0.01
    update_every_steps: int = 2  # one update of every network per 2 environment steps
    stddev: float = 0.2  # exploration and target-policy noise (URLB's constant stddev_schedule)
    stddev_clip: float = 0.3
    num_seed_frames: int = 4000  # uniform random actions and no updates before this step
    replay_size: int = 1_000_000  # FIFO over whole episodes
    rnd_rep_dim: int = 512
    rnd_scale: float = 1.0
    rnd_clip: float = 5.0  # normalised observations are clamped to [-5, 5]
    icm_scale: float = 1.0
    smm_z_dim: int = 4
    smm_sp_lr: float = 1e-3  # discriminator d(z|s)
    smm_vae_lr: float = 1e-2
    smm_vae_beta: float = 0.5
    smm_state_ent_coef: float = 1.0
    smm_latent_ent_coef: float = 1.0
    smm_latent_cond_ent_coef: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


# URLB's sizes (its GPU configuration) and a CPU-sized one; everything else is identical.
CONFIGS: dict[str, ExplorerConfig] = {
    "urlb": ExplorerConfig(),
    "small": ExplorerConfig(hidden_dim=256, batch_size=256),
}


def resolve_config(config: str | ExplorerConfig | dict | None) -> tuple[str, ExplorerConfig]:
    """(name, config) from a preset name ('urlb', 'small'), a config, or a dict of overrides of 'urlb'."""
    if config is None:
        config = "urlb"
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ConfigError(f"Unknown explorer config '{config}'; the presets are: {', '.join(CONFIGS)}.")
        return config, CONFIGS[config]
    if isinstance(config, ExplorerConfig):
        name = next((k for k, v in CONFIGS.items() if v == config), "custom")
        return name, config
    if isinstance(config, dict):
        unknown = set(config) - set(ExplorerConfig.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"Unknown explorer config fields {sorted(unknown)}.")
        return resolve_config(replace(CONFIGS["urlb"], **config))
    raise TypeError(
        f"config must be a preset name, an ExplorerConfig or a dict, got {type(config).__name__}."
    )


class NStepBatch(NamedTuple):
    """An n-step batch as URLB's sampler returns it: s = O[i-1], a = A[i], n-step r and γ_n, s' = O[i+n-1].

    Not the agents' `zoo.agents.replay.Batch` (named column views of the device replay): this one is
    URLB's fixed tuple, with the n-step reward and discount already summed.
    """

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor  # (B, 1) n-step extrinsic reward (replaced by the intrinsic one)
    discount: torch.Tensor  # (B, 1) γ^n · Π discounts
    next_obs: torch.Tensor
    meta: torch.Tensor | None = None  # (B, meta_dim): SMM's skill z = M[i-1]


def weight_init(module: nn.Module) -> None:
    """URLB `utils.weight_init`: orthogonal weights (gain 1), zero biases, on every Linear."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight.data)
        if module.bias is not None:
            module.bias.data.fill_(0.0)


def truncated_normal_sample(mu: torch.Tensor, std: float, clip: float | None = None) -> torch.Tensor:
    """URLB `TruncatedNormal.sample`: μ + (clipped) σ·ε, clamped to ±(1-1e-6), straight-through gradient."""
    eps = torch.randn_like(mu) * std
    if clip is not None:
        eps = eps.clamp(-clip, clip)
    x = mu + eps
    return x - x.detach() + x.detach().clamp(-1.0 + 1e-6, 1.0 - 1e-6)


def urlb_adam(params, lr: float, device: torch.device) -> torch.optim.Adam:
    """URLB's Adam (PyTorch's default betas/eps), fused on CUDA and foreach on CPU.

    Not the agents' `zoo.agents.base.adam`, which is fused on CPU too: the fused CPU kernel rounds
    differently (~1e-7 per step), so using it here would change the collected ExoRL episodes.
    """
    if device.type == "cuda":
        return torch.optim.Adam(params, lr=lr, fused=True)
    return torch.optim.Adam(params, lr=lr, foreach=True)


class Actor(nn.Module):
    """URLB DDPG actor for states: Linear→LayerNorm→Tanh, then Linear→ReLU→Linear, μ = tanh(·)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(obs_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.Tanh())
        self.policy = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, action_dim)
        )
        self.apply(weight_init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.policy(self.trunk(obs)))


class Critic(nn.Module):
    """URLB DDPG critic for states: a shared trunk over s⊕a (Linear→LayerNorm→Tanh) and two Q heads."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(obs_dim + action_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.Tanh()
        )

        def head() -> nn.Sequential:
            return nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))

        self.Q1, self.Q2 = head(), head()
        self.apply(weight_init)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(torch.cat([obs, action], dim=-1))
        return self.Q1(h), self.Q2(h)


# ----------------------------------------------------------------------------------------------------
# Intrinsic rewards. Each module trains itself on the batch and returns the reward that replaces r.


class IntrinsicReward(nn.Module):
    """Base: `update(batch)` trains the module one step and returns (reward (B,1), metrics)."""

    meta_dim = 0

    def init_meta(self, rng: np.random.Generator) -> np.ndarray:
        """The per-episode meta input (SMM's skill); empty for the others."""
        return np.zeros(0, dtype=np.float32)

    def update(self, batch: NStepBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError


class RunningMeanStd:
    """URLB `utils.RMS`: running mean M and variance S of a (B, 1) stream, M₀=0, S₀=1, n₀=1e-4."""

    def __init__(self, device: torch.device, epsilon: float = 1e-4):
        self.M = torch.zeros(1, device=device)
        self.S = torch.ones(1, device=device)
        self.n = epsilon

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bs = x.shape[0]
        delta = x.mean(dim=0) - self.M
        new_M = self.M + delta * bs / (self.n + bs)
        new_S = (self.S * self.n + x.var(dim=0) * bs + delta.square() * self.n * bs / (self.n + bs)) / (
            self.n + bs
        )
        self.M, self.S, self.n = new_M, new_S, self.n + bs
        return self.M, self.S


class RND(nn.Module):
    """Predictor and frozen random target over clamp(BatchNorm(s), ±clip); error = mean_k (target-pred)²."""

    def __init__(self, obs_dim: int, hidden_dim: int, rep_dim: int, clip: float = 5.0):
        super().__init__()
        self.clip = clip
        self.normalize_obs = nn.BatchNorm1d(
            obs_dim, affine=False
        )  # always in training mode: batch statistics

        def net() -> nn.Sequential:
            return nn.Sequential(
                nn.Linear(obs_dim, hidden_dim),
                nn.ReLU(),
                nn.Linear(hidden_dim, hidden_dim),
                nn.ReLU(),
                nn.Linear(hidden_dim, rep_dim),
            )

        self.predictor, self.target = net(), net()
        for param in self.target.parameters():
            param.requires_grad = False
        self.apply(weight_init)

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return self.normalize_obs(obs).clamp(-self.clip, self.clip)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        obs = self.normalize(obs)
        prediction, target = self.predictor(obs), self.target(obs)
        return (target.detach() - prediction).square().mean(dim=-1, keepdim=True)


class RNDReward(IntrinsicReward):
    """URLB RND: one predictor step on s_t, then r = scale · e(s_t) / (sqrt(running var) + 1e-8)."""

    def __init__(self, obs_dim: int, action_dim: int, config: ExplorerConfig, device: torch.device):
        super().__init__()
        self.scale = config.rnd_scale
        self.rnd = RND(obs_dim, config.hidden_dim, config.rnd_rep_dim, config.rnd_clip).to(device)
        self.rms = RunningMeanStd(device)
        self.optimizer = urlb_adam(self.rnd.predictor.parameters(), config.lr, device)

    def update(self, batch: NStepBatch):
        # URLB runs `rnd(obs)` twice; BatchNorm (batch statistics) and the frozen target give the same
        # normalised input and target features both times, so they are computed once.
        obs = self.rnd.normalize(batch.obs)
        with torch.no_grad():
            target = self.rnd.target(obs)
        # 1. Train the predictor on the batch's s_t (off-policy, on replay samples).
        loss = (target - self.rnd.predictor(obs)).square().mean(dim=-1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        # 2. Reward from the updated predictor, divided by the running std of the errors.
        with torch.no_grad():
            error = (target - self.rnd.predictor(obs)).square().mean(dim=-1, keepdim=True)
            _, var = self.rms(error)
            reward = self.scale * error / (var.sqrt() + 1e-8)
        return reward, {"rnd_loss": loss.detach()}


class ICM(nn.Module):
    """Forward model f(s, a) -> s' and inverse model g(s, s') -> a, on raw state observations."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int):
        super().__init__()
        self.forward_net = nn.Sequential(
            nn.Linear(obs_dim + action_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, obs_dim)
        )
        self.backward_net = nn.Sequential(
            nn.Linear(2 * obs_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, action_dim), nn.Tanh()
        )
        self.apply(weight_init)

    def forward(self, obs, action, next_obs) -> tuple[torch.Tensor, torch.Tensor]:
        next_obs_hat = self.forward_net(torch.cat([obs, action], dim=-1))
        action_hat = self.backward_net(torch.cat([obs, next_obs], dim=-1))
        forward_error = torch.linalg.vector_norm(next_obs - next_obs_hat, dim=-1, keepdim=True)
        backward_error = torch.linalg.vector_norm(action - action_hat, dim=-1, keepdim=True)
        return forward_error, backward_error


class ICMReward(IntrinsicReward):
    """URLB ICM: one step on mean‖s'-f(s,a)‖ + mean‖a-g(s,s')‖, then r = log(1 + scale·‖s'-f(s,a)‖)."""

    def __init__(self, obs_dim: int, action_dim: int, config: ExplorerConfig, device: torch.device):
        super().__init__()
        self.scale = config.icm_scale
        self.icm = ICM(obs_dim, action_dim, config.hidden_dim).to(device)
        self.optimizer = urlb_adam(self.icm.parameters(), config.lr, device)

    def update(self, batch: NStepBatch):
        forward_error, backward_error = self.icm(batch.obs, batch.action, batch.next_obs)
        loss = forward_error.mean() + backward_error.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            forward_error, _ = self.icm(batch.obs, batch.action, batch.next_obs)
            reward = torch.log(self.scale * forward_error + 1.0)
        return reward, {"icm_loss": loss.detach()}


class SMMDensityVAE(nn.Module):
    """SMM's density model q(s ⊕ z): 150-150 MLP encoder/decoder, code size 128, orthogonal init.

    An unconditional VAE over states and skills; not `zoo.nn.VAE` (SPOT's behaviour model p(a|s)).
    """

    def __init__(self, input_dim: int, code_dim: int = 128, beta: float = 0.5):
        super().__init__()
        self.code_dim, self.beta = code_dim, beta
        self.enc = nn.Sequential(nn.Linear(input_dim, 150), nn.ReLU(), nn.Linear(150, 150), nn.ReLU())
        self.enc_mu = nn.Linear(150, code_dim)
        self.enc_logvar = nn.Linear(150, code_dim)
        self.dec = nn.Sequential(
            nn.Linear(code_dim, 150), nn.ReLU(), nn.Linear(150, 150), nn.ReLU(), nn.Linear(150, input_dim)
        )
        self.apply(weight_init)

    def loss(self, x: torch.Tensor, epsilon: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(β·KL + mean squared error, per-sample Σ_d (x_d - x̂_d)²) from one reparameterised sample."""
        if epsilon is None:
            epsilon = torch.randn(x.shape[0], self.code_dim, device=x.device, dtype=x.dtype)
        features = self.enc(x)
        mu, logvar = self.enc_mu(features), self.enc_logvar(features)
        x_hat = self.dec(mu + epsilon * (0.5 * logvar).exp())
        kl = (-0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(dim=1)).mean()
        squared = (x - x_hat).square()
        return self.beta * kl + squared.mean(), squared.sum(dim=1, keepdim=True)


class SMMReward(IntrinsicReward):
    """URLB SMM: VAE step on (s, z), discriminator step on d(z|s), then, from the pre-step errors,
    r = state_ent·Σ(x-x̂)² + latent_ent·log(z_dim) + latent_cond_ent·CE(d(·|s), z)."""

    def __init__(self, obs_dim: int, action_dim: int, config: ExplorerConfig, device: torch.device):
        super().__init__()
        self.config = config
        self.z_dim = self.meta_dim = config.smm_z_dim
        h = config.hidden_dim
        self.z_pred_net = nn.Sequential(
            nn.Linear(obs_dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, self.z_dim)
        ).to(device)
        self.z_pred_net.apply(weight_init)
        self.vae = SMMDensityVAE(obs_dim + self.z_dim, beta=config.smm_vae_beta).to(device)
        self.pred_optimizer = urlb_adam(self.z_pred_net.parameters(), config.smm_sp_lr, device)
        self.vae_optimizer = urlb_adam(self.vae.parameters(), config.smm_vae_lr, device)

    def init_meta(self, rng: np.random.Generator) -> np.ndarray:
        """A uniformly drawn one-hot skill, once per episode."""
        z = np.zeros(self.z_dim, dtype=np.float32)
        z[rng.integers(self.z_dim)] = 1.0
        return z

    def update(self, batch: NStepBatch, epsilon: torch.Tensor | None = None):
        z = batch.meta
        # 1. VAE step on x = s ⊕ z; its (pre-step) reconstruction error is the state-entropy term.
        vae_loss, h_s_z = self.vae.loss(torch.cat([batch.obs, z], dim=1), epsilon)
        self.vae_optimizer.zero_grad(set_to_none=True)
        vae_loss.backward()
        self.vae_optimizer.step()
        # 2. Discriminator step; its (pre-step) cross-entropy is the latent-conditional term.
        h_z_s = F.cross_entropy(self.z_pred_net(batch.obs), z.argmax(dim=1), reduction="none").unsqueeze(-1)
        pred_loss = h_z_s.mean()
        self.pred_optimizer.zero_grad(set_to_none=True)
        pred_loss.backward()
        self.pred_optimizer.step()
        # 3. Reward (log p*(s) omitted: uniform target; p(z) uniform, so -log p(z) = log z_dim).
        c = self.config
        reward = (
            c.smm_state_ent_coef * h_s_z.detach()
            + c.smm_latent_ent_coef * math.log(self.z_dim)
            + c.smm_latent_cond_ent_coef * h_z_s.detach()
        )
        return reward, {"vae_loss": vae_loss.detach(), "pred_loss": pred_loss.detach()}


INTRINSIC_REWARDS = {"rnd": RNDReward, "icm": ICMReward, "smm": SMMReward}


# ----------------------------------------------------------------------------------------------------
# The DDPG learner


class DDPGExplorer(nn.Module):
    """URLB's DDPG trained on an intrinsic reward; acts and updates on one device."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        intrinsic: IntrinsicReward,
        config: ExplorerConfig,
        device: torch.device,
    ):
        super().__init__()
        self.config, self.device = config, device
        self.intrinsic = intrinsic
        self.action_dim = action_dim
        policy_dim = obs_dim + intrinsic.meta_dim  # SMM's actor and critic see s ⊕ z
        self.actor = Actor(policy_dim, action_dim, config.hidden_dim).to(device)
        self.critic = Critic(policy_dim, action_dim, config.hidden_dim).to(device)
        self.critic_target = Critic(policy_dim, action_dim, config.hidden_dim).to(device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        for param in self.critic_target.parameters():
            param.requires_grad = False
        self.actor_optimizer = urlb_adam(self.actor.parameters(), config.lr, device)
        self.critic_optimizer = urlb_adam(self.critic.parameters(), config.lr, device)

    @torch.no_grad()
    def act(self, obs: np.ndarray, meta: np.ndarray, step: int) -> np.ndarray:
        """Exploration: μ(s⊕z) + N(0, σ²) clamped (no noise clip); uniform during the seed phase."""
        if step < self.config.num_seed_frames:
            return torch.empty(self.action_dim, device=self.device).uniform_(-1.0, 1.0).cpu().numpy()
        x = torch.as_tensor(np.concatenate([obs, meta]), dtype=torch.float32, device=self.device).unsqueeze(0)
        action = truncated_normal_sample(self.actor(x), self.config.stddev, clip=None)
        return action[0].cpu().numpy()

    def update(self, batch: NStepBatch) -> dict[str, torch.Tensor]:
        """One URLB update: intrinsic module step + reward, critic step, actor step, target lerp."""
        # 1. The intrinsic module trains on the batch and its reward replaces the n-step reward.
        reward, metrics = self.intrinsic.update(batch)
        obs, next_obs = batch.obs, batch.next_obs
        if batch.meta is not None and self.intrinsic.meta_dim:
            obs, next_obs = torch.cat([obs, batch.meta], dim=1), torch.cat([next_obs, batch.meta], dim=1)
        # 2. Critic: TD target from the target critic at a noisy clipped action of the current actor.
        critic_loss = self.critic_loss(obs, batch.action, reward, batch.discount, next_obs)
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()
        # 3. Actor: maximise min(Q1, Q2) at a noisy clipped sample (straight-through clamp), every update.
        actor_loss = self.actor_loss(obs)
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        # 4. Soft target update of the critic.
        with torch.no_grad():
            torch._foreach_lerp_(
                list(self.critic_target.parameters()),
                list(self.critic.parameters()),
                self.config.critic_target_tau,
            )
        metrics.update(
            critic_loss=critic_loss.detach(), actor_loss=actor_loss.detach(), intrinsic_reward=reward.mean()
        )
        return metrics

    def critic_loss(self, obs, action, reward, discount, next_obs) -> torch.Tensor:
        c = self.config
        with torch.no_grad():
            next_action = truncated_normal_sample(self.actor(next_obs), c.stddev, clip=c.stddev_clip)
            target_q1, target_q2 = self.critic_target(next_obs, next_action)
            target_q = reward + discount * torch.min(target_q1, target_q2)
        q1, q2 = self.critic(obs, action)
        return F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)

    def actor_loss(self, obs) -> torch.Tensor:
        action = truncated_normal_sample(self.actor(obs), self.config.stddev, clip=self.config.stddev_clip)
        q1, q2 = self.critic(obs, action)
        return -torch.min(q1, q2).mean()


def make_explorer(
    explorer: str, obs_dim: int, action_dim: int, config: ExplorerConfig, device: torch.device
) -> DDPGExplorer | None:
    """The DDPG learner for 'rnd', 'icm' or 'smm'; None for 'random' (uniform actions, no learning)."""
    if explorer not in EXPLORERS:
        raise ConfigError(f"Unknown explorer '{explorer}'; the explorers are: {', '.join(EXPLORERS)}.")
    if explorer == "random":
        return None
    intrinsic = INTRINSIC_REWARDS[explorer](obs_dim, action_dim, config, device)
    return DDPGExplorer(obs_dim, action_dim, intrinsic, config, device)
