"""Behaviour policies (SB3 SAC actors) and batched rollouts that turn them into Minari episodes."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from zoo.data.minari_io import Episode
from zoo.errors import DataError
from zoo.threads import torch_threads

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SB3's SAC actor clamps log-std to this range


class SACActor(nn.Module):
    """The network of an SB3 SAC `policy.actor` (obs -> 256 -> 256 -> mean, log-std; tanh-squashed).

    Loads the saved `policy.actor.state_dict()` (`latent_pi.*`, `mu.*`, `log_std.*`) without building
    a whole SB3 model, and acts on a batch of observations at once:
    a = tanh(μ(s)) deterministic, a = tanh(μ(s) + σ(s)·ε), ε ~ N(0, I), σ = exp(clamp(log σ, -20, 2)).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        last = obs_dim
        for width in hidden:
            layers += [nn.Linear(last, width), nn.ReLU()]
            last = width
        self.latent_pi = nn.Sequential(*layers)
        self.mu = nn.Linear(last, act_dim)
        self.log_std = nn.Linear(last, act_dim)

    @classmethod
    def from_state_dict(cls, path: str | Path, env: gym.Env) -> "SACActor":
        state = torch.load(path, map_location="cpu", weights_only=True)
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        weights = [k for k in state if k.startswith("latent_pi.") and k.endswith(".weight")]
        hidden = tuple(state[k].shape[0] for k in sorted(weights, key=lambda k: int(k.split(".")[1])))
        if state["latent_pi.0.weight"].shape[1] != obs_dim or state["mu.weight"].shape[0] != act_dim:
            raise DataError(
                f"Behaviour checkpoint {path} expects observations of size "
                f"{state['latent_pi.0.weight'].shape[1]} and actions of size {state['mu.weight'].shape[0]}, "
                f"but {env.spec.id if env.spec else env} has {obs_dim} and {act_dim}: use the checkpoint "
                "trained on that environment."
            )
        actor = cls(obs_dim, act_dim, hidden)
        actor.load_state_dict(state)
        return actor.eval()

    @torch.no_grad()
    def act(
        self, obs: np.ndarray, deterministic: bool, generator: torch.Generator | None = None
    ) -> np.ndarray:
        latent = self.latent_pi(torch.as_tensor(obs, dtype=torch.float32))
        mean = self.mu(latent)
        if deterministic:
            return torch.tanh(mean).numpy()
        std = self.log_std(latent).clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
        noise = torch.randn(mean.shape, generator=generator)
        return torch.tanh(mean + std * noise).numpy()


def vendored_behavior(name: str) -> Path:
    """Path of a behaviour checkpoint shipped inside the package (zoo/assets/behavior/)."""
    path = Path(str(resources.files("zoo") / "assets" / "behavior" / name))
    if not path.exists():
        raise FileNotFoundError(f"No vendored behaviour checkpoint '{name}' in {path.parent}.")
    return path


def collect_episodes(
    env_id: str,
    policy: Callable[[np.ndarray], np.ndarray],
    n_steps: int,
    *,
    seed: int = 0,
    n_envs: int = 8,
    progress: bool = False,
) -> list[Episode]:
    """Run `policy` (batch of obs -> batch of actions in the env's bounds) in n_envs copies of the env.

    Returns whole episodes in order of completion until they hold at least n_steps transitions;
    episodes still running at that point are dropped (Minari's recipe: no partial final episode).
    Episode e is reset with seed `seed + e`, so the data is a function of the seed.
    """
    with torch_threads(1):  # a few observations per policy call
        return _collect_episodes(env_id, policy, n_steps, seed, n_envs, progress)


def _collect_episodes(
    env_id: str,
    policy: Callable[[np.ndarray], np.ndarray],
    n_steps: int,
    seed: int,
    n_envs: int,
    progress: bool,
) -> list[Episode]:
    envs = [gym.make(env_id) for _ in range(n_envs)]
    next_episode = 0
    buffers: list[dict[str, list]] = []
    obs = np.empty((n_envs, envs[0].observation_space.shape[0]), dtype=np.float64)
    seeds = [0] * n_envs

    def start(i: int) -> None:
        nonlocal next_episode
        seeds[i] = seed + next_episode
        obs[i], _ = envs[i].reset(seed=seeds[i])
        next_episode += 1
        buffers[i] = {"obs": [obs[i].copy()], "act": [], "rew": [], "term": [], "trunc": []}

    buffers = [dict() for _ in range(n_envs)]
    for i in range(n_envs):
        start(i)
    done_episodes: list[Episode] = []
    collected = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps, desc=f"collecting {env_id}", unit="step")
    try:
        while collected < n_steps:
            actions = policy(obs)
            for i, env in enumerate(envs):
                next_obs, reward, terminated, truncated, _ = env.step(actions[i])
                buf = buffers[i]
                buf["act"].append(actions[i])
                buf["rew"].append(reward)
                buf["term"].append(terminated)
                buf["trunc"].append(truncated)
                buf["obs"].append(next_obs)
                obs[i] = next_obs
                if terminated or truncated:
                    done_episodes.append(
                        Episode(
                            observations=np.asarray(buf["obs"], dtype=np.float32),
                            actions=np.asarray(buf["act"], dtype=np.float32),
                            rewards=np.asarray(buf["rew"], dtype=np.float64),
                            terminations=np.asarray(buf["term"], dtype=bool),
                            truncations=np.asarray(buf["trunc"], dtype=bool),
                            seed=seeds[i],
                        )
                    )
                    collected += len(buf["act"])
                    if bar is not None:
                        bar.update(len(buf["act"]))
                    if collected >= n_steps:
                        break
                    start(i)
    finally:
        if bar is not None:
            bar.close()
        for env in envs:
            env.close()
    return done_episodes


def sac_policy(actor: SACActor, *, deterministic: bool, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A batched policy function around a SAC actor, with its own seeded noise stream."""
    generator = torch.Generator().manual_seed(seed)
    return lambda obs: actor.act(obs, deterministic=deterministic, generator=generator)
