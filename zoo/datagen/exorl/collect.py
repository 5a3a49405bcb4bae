"""Reward-free collection as URLB's `pretrain.py` does it, saved in ExoRL's episode layout.

`collect("walker", "rnd", "data/exorl", steps=100_000, config="small")` explores walker with DDPG + RND
and writes every training episode to `data/exorl/walker/rnd/buffer/episode_<index>_<length>.npz`
(observation, action, reward, discount, physics, and SMM's `z`), plus `zoo_collect.json` beside the
buffer (explorer, config, speed), which `import_exorl` copies into the Minari metadata. The loop: act
(uniform before `num_seed_frames`), update every `update_every_steps` steps after the seed phase from
complete episodes only, step the env. The reward written is that of the domain's URLB pretraining task
(walker: stand); the explorers ignore it.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from zoo.data.dataset import resolve_device
from zoo.datagen.exorl.episodes import buffer_dir, episode_filename, write_episode
from zoo.datagen.exorl.explorers import EXPLORERS, ExplorerConfig, NStepBatch, make_explorer, resolve_config
from zoo.envs.dmc import make_dmc_env, primal_task
from zoo.errors import ConfigError
from zoo.io import atomic_write_json, remove_stale_temporaries
from zoo.threads import torch_threads

COLLECT_INFO = "zoo_collect.json"
FORMAT_VERSION = 1


class EpisodeReplay:
    """URLB's replay over whole episodes, on the device: (episodes, L+1, ·) tensors, FIFO, n-step sampling.

    Rows follow the ExoRL layout (row 0 is the dummy reset row). Episodes shorter than the longest are
    padded past their end with discount 0 and reward 0, so n-step sums stop at a termination.
    """

    def __init__(
        self,
        capacity_episodes: int,
        episode_length: int,
        obs_dim: int,
        action_dim: int,
        meta_dim: int,
        device: torch.device,
    ):
        rows = episode_length + 1
        self.capacity, self.device = capacity_episodes, device
        self.obs = torch.zeros(capacity_episodes, rows, obs_dim, device=device)
        self.action = torch.zeros(capacity_episodes, rows, action_dim, device=device)
        self.reward = torch.zeros(capacity_episodes, rows, device=device)
        self.discount = torch.zeros(capacity_episodes, rows, device=device)
        self.meta = torch.zeros(capacity_episodes, rows, meta_dim, device=device)
        self.lengths = torch.zeros(capacity_episodes, dtype=torch.long, device=device)
        self.n_added = 0

    def __len__(self) -> int:
        return min(self.n_added, self.capacity)

    def add(self, observation, action, reward, discount, meta) -> None:
        slot = self.n_added % self.capacity
        n = len(observation)

        def put(buffer: torch.Tensor, values, pad) -> None:
            values = torch.as_tensor(
                np.asarray(values, dtype=np.float32).reshape(n, *buffer.shape[2:]), device=self.device
            )
            buffer[slot, :n] = values
            buffer[slot, n:] = pad if pad is not None else values[-1]

        put(self.obs, observation, None)
        put(self.action, action, 0.0)
        put(self.reward, reward, 0.0)
        put(self.discount, discount, 0.0)
        put(self.meta, meta, None)
        self.lengths[slot] = n - 1
        self.n_added += 1

    def sample(self, batch_size: int, nstep: int, gamma: float) -> NStepBatch:
        """URLB `_sample`: idx ~ U{1..L-n+1}; s = O[idx-1], a = A[idx], s' = O[idx+n-1], z = M[idx-1];
        r = Σ_k γ^k Π_{j<k} D[idx+j] R[idx+k], γ_n = Π_k γ D[idx+k]."""
        episodes = torch.randint(len(self), (batch_size,), device=self.device)
        high = (self.lengths[episodes] - nstep + 1).clamp(min=1)
        idx = (torch.rand(batch_size, device=self.device) * high).long() + 1
        rows = idx[:, None] + torch.arange(nstep, device=self.device)
        ep = episodes[:, None]
        gammas = gamma * self.discount[ep, rows]  # (B, n)
        cumulative = torch.cumprod(gammas, dim=1)
        before = torch.cat([torch.ones_like(cumulative[:, :1]), cumulative[:, :-1]], dim=1)
        reward = (before * self.reward[ep, rows]).sum(dim=1, keepdim=True)
        return NStepBatch(
            obs=self.obs[episodes, idx - 1],
            action=self.action[episodes, idx],
            reward=reward,
            discount=cumulative[:, -1:],
            next_obs=self.obs[episodes, idx + nstep - 1],
            meta=self.meta[episodes, idx - 1] if self.meta.shape[-1] else None,
        )


def collect(
    domain: str,
    explorer: str,
    out_dir: str | Path,
    steps: int,
    seed: int = 1,
    config: str | ExplorerConfig | dict | None = "urlb",
    *,
    task: str | None = None,
    episode_length: int | None = None,
    device: str | torch.device = "auto",
    overwrite: bool = False,
    threads: int | None = 1,
    progress: bool = False,
) -> Path:
    """Explore `domain` reward-free with `explorer` ('rnd', 'icm', 'smm', 'random') and save the episodes.

    out_dir: the ExoRL root; episodes go to `<out_dir>/<domain>/<explorer>/buffer/`.
    steps: environment steps, rounded up to whole episodes (every episode is saved).
    seed: env initial states (dm_control task seed), torch and the skill draws (URLB's default is 1).
    config: 'urlb' (hidden 1024, batch 1024: URLB's GPU sizes), 'small' (256/256, for CPUs), an
        ExplorerConfig, or a dict of overrides of 'urlb'. Recorded in zoo_collect.json.
    task: the reward written while exploring (default: URLB's pretraining task, walker -> stand).
    episode_length: shorter episodes than dm_control's 1000 steps (tests, quick checks).
    threads: torch CPU threads during the run (None: leave as is). One thread acts fastest on a busy CPU.
    Returns the explorer folder `<out_dir>/<domain>/<explorer>`.
    """
    if explorer not in EXPLORERS:
        raise ConfigError(f"Unknown explorer '{explorer}'; the explorers are: {', '.join(EXPLORERS)}.")
    config_name, cfg = resolve_config(config)
    if steps < 1:
        raise ConfigError(f"steps must be positive, got {steps}.")
    device = resolve_device(device)
    task = task or primal_task(domain)
    env = make_dmc_env(domain, task, seed=seed, episode_length=episode_length)
    length = env.episode_length
    if length is None:
        raise ConfigError(f"{domain}-{task} has no time limit; pass episode_length.")
    if length < cfg.nstep:
        raise ConfigError(f"episode_length ({length}) must be at least nstep ({cfg.nstep}).")
    n_episodes = math.ceil(steps / length)
    folder = Path(out_dir) / domain / explorer
    buffer = buffer_dir(out_dir, domain, explorer)
    existing = sorted(buffer.glob("*.npz")) if buffer.is_dir() else []
    if existing and not overwrite:
        raise FileExistsError(
            f"{buffer} already holds {len(existing)} episode files; pass overwrite=True to replace them "
            "or choose another out_dir."
        )
    for path in existing:
        path.unlink()
    buffer.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(buffer)  # episodes a killed run was writing

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    agent = make_explorer(explorer, obs_dim, action_dim, cfg, device)
    meta_dim = agent.intrinsic.meta_dim if agent is not None else 0
    replay = None
    if agent is not None:
        capacity = max(1, min(cfg.replay_size // length, n_episodes))
        replay = EpisodeReplay(capacity, length, obs_dim, action_dim, meta_dim, device)

    info = {
        "format_version": FORMAT_VERSION,
        "status": "running",
        "domain": domain,
        "explorer": explorer,
        "pretraining_task": task,
        "seed": seed,
        "steps_requested": steps,
        "episode_length": length,
        "config_name": config_name if explorer != "random" else "random (no learner)",
        "config": cfg.to_dict() if explorer != "random" else None,
        "device": str(device),
        "episodes": 0,
        "steps": 0,
    }
    atomic_write_json(folder / COLLECT_INFO, info)

    thread_context = (
        torch_threads(threads) if threads is not None and device.type == "cpu" else contextlib.nullcontext()
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_episodes * length, unit="step", desc=f"{domain} {explorer}")
    start = time.perf_counter()
    global_step = 0
    metric_sums: dict[str, torch.Tensor] = {}
    n_updates = 0
    with thread_context:
        for episode in range(n_episodes):
            obs, _ = env.reset(seed=seed if episode == 0 else None)
            meta = agent.intrinsic.init_meta(rng) if agent is not None else np.zeros(0, np.float32)
            rows = {
                "observation": [obs],
                "action": [np.zeros(action_dim, np.float32)],
                "reward": [np.zeros(1, np.float32)],
                "discount": [np.ones(1, np.float32)],
                "physics": [env.physics_state()],
            }
            done = False
            while not done:
                if agent is None:
                    action = rng.uniform(-1.0, 1.0, action_dim).astype(np.float32)
                else:
                    action = agent.act(obs, meta, global_step)
                    if (
                        global_step >= cfg.num_seed_frames
                        and global_step % cfg.update_every_steps == 0
                        and len(replay) > 0
                    ):
                        metrics = agent.update(replay.sample(cfg.batch_size, cfg.nstep, cfg.discount))
                        for key, value in metrics.items():
                            metric_sums[key] = metric_sums.get(key, 0.0) + value
                        n_updates += 1
                obs, reward, terminated, truncated, step_info = env.step(action)
                rows["observation"].append(obs)
                rows["action"].append(np.asarray(action, np.float32))
                rows["reward"].append(np.array([reward], np.float32))
                rows["discount"].append(np.array([step_info["discount"]], np.float32))
                rows["physics"].append(env.physics_state())
                global_step += 1
                done = terminated or truncated
            arrays = {key: np.stack(values) for key, values in rows.items()}
            if meta_dim:
                arrays["z"] = np.repeat(meta[None], len(arrays["observation"]), axis=0)
            n_steps = len(arrays["observation"]) - 1
            write_episode(buffer / episode_filename(episode, n_steps), arrays)
            if replay is not None:
                replay.add(
                    arrays["observation"],
                    arrays["action"],
                    arrays["reward"],
                    arrays["discount"],
                    arrays.get("z", np.zeros((n_steps + 1, 0), np.float32)),
                )
            if bar is not None:
                bar.update(n_steps)
                if n_updates:
                    bar.set_postfix({k: f"{float(v) / n_updates:.3g}" for k, v in metric_sums.items()})
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - start
    info.update(
        status="complete",
        episodes=n_episodes,
        steps=global_step,
        updates=n_updates,
        seconds=round(elapsed, 2),
        steps_per_second=round(global_step / elapsed, 1),
        mean_metrics={k: float(v) / n_updates for k, v in metric_sums.items()} if n_updates else {},
    )
    atomic_write_json(folder / COLLECT_INFO, info)
    env.close()
    return folder


def read_collect_info(folder: str | Path) -> dict | None:
    """The zoo_collect.json of an explorer folder, or None (e.g. an official ExoRL download)."""
    path = Path(folder) / COLLECT_INFO
    if not path.exists():
        return None
    return json.loads(path.read_text())
