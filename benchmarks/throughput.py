"""Update throughput: zoo's TD3+BC and CQL against plain eager single-file versions, in one run.

The reference below is the usual single-file loop (CORL's `offline/td3_bc.py` shape: dataset tensors on
the device, separate nn.Linear critics, default Adam, a per-parameter Polyak loop), with the same math
and sizes as zoo's agent. d3rlpy's TD3PlusBC and SB3's TD3 `train` run on the same data when installed
(`pip install -e .[bench]`). Every registry agent is timed too: updates/s of each of its phases offline
and env steps/s online at its own UTD ratio. Populations (zoo.registry.make_population: K agents as one
batched agent, K = 1, 4, 8, 16, fp32 and bf16) are timed in aggregate member-updates/s against K
sequential runs of the eager reference, with each configuration's peak memory; `--score-steps N` adds
fp32-vs-bf16 normalized scores of TD3+BC populations after N updates (same seeds, same data).
All timings are interleaved rounds in one process (medians; ratios are medians of per-round ratios).
On a CPU without bf16 instructions (AVX2 only) the bf16 population rows are skipped: bf16 products are
emulated there (the single "zoo TD3BC, bf16 matmuls" row shows the cost).
Beside each population and zoo's CQL runs the same update's matrix products alone (products_only): the
ratio they reach is the most the update could (its "bound": what this machine's matrix products allow
at cache speed with everything else free), printed as `population_bound_k8_<precision>=` and
`cql_bound_vs_reference=`.
The TD3+BC population of 8 also runs with compile=True (inductor; on the CPU where a C++ compiler is found).
The last lines are `ratio_vs_reference=<zoo TD3+BC / eager TD3+BC>`, `population_ratio_k8=<bf16 TD3+BC
population of 8, aggregate / eager TD3+BC>` (float32 where bf16 is emulated, said on the line before) and
`cql_ratio_vs_reference=<zoo CQL / eager CQL>`.

    python benchmarks/throughput.py [--device cuda] [--steps 2000] [--score-steps 20000]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib.util
import io
import platform
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

OBS_DIM, ACT_DIM, HIDDEN, BATCH = 17, 6, 256, 256


# ---------------------------------------------------------------------- third-party noise


def quiet_third_party_notices() -> None:
    """Drop two known, harmless notices; anything else still reaches stderr.

    - The old `gym` package (pulled in by d3rlpy, imported by SB3's gym patching when present) prints an
      "unmaintained" notice from `gym_notices` on import. It is a print, not a warning, so import gym once
      here with stderr captured and pass on whatever else it wrote.
    - MuJoCo's compiler warns that HalfCheetah's XML uses the deprecated `settotalmass` attribute, once per
      env. Route MuJoCo warnings through a handler that drops only that message.
    """
    if importlib.util.find_spec("gym") is not None:
        with contextlib.redirect_stderr(io.StringIO()) as captured:
            import gym
        text = captured.getvalue()
        try:
            from gym_notices.notices import notices

            text = text.replace(notices.get(gym.__version__) or "\0", "")
        except ImportError:
            pass
        if text.strip():
            sys.stderr.write(text)
    if importlib.util.find_spec("mujoco") is not None:
        import mujoco

        def on_warning(message: str) -> None:
            if "settotalmass" not in message:
                print(f"WARNING: {message}", file=sys.stderr)

        mujoco.set_mju_user_warning(on_warning)


# ---------------------------------------------------------------------- data


def make_data(n: int, seed: int = 0, env_id: str = "HalfCheetah-v5") -> dict[str, np.ndarray]:
    """Real transitions of a MuJoCo env (default HalfCheetah-v5: obs 17, act 6) under uniform random actions."""
    import gymnasium as gym

    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    obs, _ = env.reset(seed=seed)
    data = {k: [] for k in ("obs", "act", "rew", "next_obs", "term", "trunc")}
    for _ in range(n):
        act = rng.uniform(low, high).astype(np.float32)
        next_obs, rew, term, trunc, _ = env.step(act)
        for key, value in zip(data, (obs, act, rew, next_obs, term, trunc)):
            data[key].append(value)
        obs = env.reset()[0] if term or trunc else next_obs
    env.close()
    return {k: np.asarray(v, dtype=np.float32) for k, v in data.items()}


def write_minari(data: dict[str, np.ndarray], dataset_id: str, env_id: str = "HalfCheetah-v5") -> None:
    """Write `make_data`'s transitions as a Minari dataset (a trailing unfinished episode is kept as is)."""
    from zoo.data import Episode, write_dataset

    ends = np.flatnonzero(data["term"] + data["trunc"]) + 1
    if len(ends) == 0 or ends[-1] != len(data["obs"]):
        ends = np.append(ends, len(data["obs"]))
    starts = np.concatenate([[0], ends[:-1]])
    episodes = [
        Episode(
            observations=np.concatenate([data["obs"][s:e], data["next_obs"][e - 1 : e]]),
            actions=data["act"][s:e],
            rewards=data["rew"][s:e],
            terminations=data["term"][s:e].astype(bool),
            truncations=data["trunc"][s:e].astype(bool),
        )
        for s, e in zip(starts, ends)
    ]
    write_dataset(dataset_id, episodes, env_id=env_id, overwrite=True)


# ---------------------------------------------------------------------- the plain eager reference


class RefActor(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(OBS_DIM, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, ACT_DIM)
        )

    def forward(self, s):
        return torch.tanh(self.net(s))


class RefCritic(nn.Module):
    def __init__(self):
        super().__init__()

        def q():
            return nn.Sequential(
                nn.Linear(OBS_DIM + ACT_DIM, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1)
            )

        self.q1, self.q2 = q(), q()

    def forward(self, s, a):
        sa = torch.cat([s, a], 1)
        return self.q1(sa), self.q2(sa)


class ReferenceTD3BC:
    """The single-file TD3+BC update, eager, as CORL and sfujim/TD3_BC write it."""

    def __init__(self, data: dict[str, torch.Tensor], device: torch.device):
        self.data, self.device = data, device
        self.actor = RefActor().to(device)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic = RefCritic().to(device)
        self.critic_target = copy.deepcopy(self.critic)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=3e-4)
        self.it = 0

    def update(self):
        self.it += 1
        n = self.data["obs"].shape[0]
        idx = torch.randint(0, n, (BATCH,), device=self.device)
        s, a, r, s2, d = (self.data[k][idx] for k in ("obs", "act", "rew", "next_obs", "term"))
        with torch.no_grad():
            noise = (torch.randn_like(a) * 0.2).clamp(-0.5, 0.5)
            a2 = (self.actor_target(s2) + noise).clamp(-1, 1)
            tq1, tq2 = self.critic_target(s2, a2)
            y = r + 0.99 * (1 - d) * torch.min(tq1, tq2)
        q1, q2 = self.critic(s, a)
        critic_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        if self.it % 2 == 0:
            pi = self.actor(s)
            q = self.critic(s, pi)[0]
            lmbda = 2.5 / q.abs().mean().detach()
            actor_loss = -lmbda * q.mean() + F.mse_loss(pi, a)
            self.actor_opt.zero_grad()
            actor_loss.backward()
            self.actor_opt.step()
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters()):
                tp.data.copy_(0.005 * p.data + 0.995 * tp.data)
            for p, tp in zip(self.actor.parameters(), self.actor_target.parameters()):
                tp.data.copy_(0.005 * p.data + 0.995 * tp.data)


class RefTanhGaussian(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(OBS_DIM, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU())
        self.head = nn.Linear(HIDDEN, 2 * ACT_DIM)

    def forward(self, s, repeat=None):
        if repeat is not None:  # CORL's `extend_and_repeat`: (B, d) -> (B, repeat, d)
            s = s.unsqueeze(1).repeat(1, repeat, 1)
        mean, log_std = self.head(self.trunk(s)).chunk(2, -1)
        dist = torch.distributions.TransformedDistribution(
            torch.distributions.Normal(mean, log_std.clamp(-20, 2).exp()), torch.distributions.TanhTransform(cache_size=1)
        )
        a = dist.rsample()
        return a, dist.log_prob(a).sum(-1)


class RefQ(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(OBS_DIM + ACT_DIM, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1)
        )

    def forward(self, s, a):  # a: (B, A) or (B, K, A), as CORL's FullyConnectedQFunction
        if a.dim() == 3:
            s = s.unsqueeze(1).repeat(1, a.shape[1], 1)
        return self.net(torch.cat([s, a], -1)).squeeze(-1)


class ReferenceCQL:
    """The single-file SAC-based CQL update, eager, in the shape of CORL's `offline/cql.py` (Gym config:
    importance sampling, 10 actions of each kind, fixed weight 10, no max backup, no entropy backup)."""

    def __init__(self, data: dict[str, torch.Tensor], device: torch.device):
        self.data, self.device = data, device
        self.actor = RefTanhGaussian().to(device)
        self.q1, self.q2 = RefQ().to(device), RefQ().to(device)
        self.t1, self.t2 = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.log_alpha = torch.zeros((), device=device, requires_grad=True)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=3e-5)
        self.q_opt = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=3e-4)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=3e-5)

    def update(self):
        n, k = self.data["obs"].shape[0], 10
        idx = torch.randint(0, n, (BATCH,), device=self.device)
        s, a, r, s2, d = (self.data[key][idx] for key in ("obs", "act", "rew", "next_obs", "term"))
        r, d = r.squeeze(1), d.squeeze(1)
        pi, log_pi = self.actor(s)
        alpha_loss = -(self.log_alpha * (log_pi + -ACT_DIM).detach()).mean()
        alpha = self.log_alpha.exp()
        actor_loss = (alpha.detach() * log_pi - torch.min(self.q1(s, pi), self.q2(s, pi))).mean()
        q1, q2 = self.q1(s, a), self.q2(s, a)
        with torch.no_grad():
            a2, _ = self.actor(s2)
            y = r + 0.99 * (1 - d) * torch.min(self.t1(s2, a2), self.t2(s2, a2))
        td = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        rand = a.new_empty(BATCH, k, ACT_DIM).uniform_(-1, 1)
        cur, cur_logp = self.actor(s, repeat=k)
        nxt, nxt_logp = self.actor(s2, repeat=k)
        cur, cur_logp, nxt, nxt_logp = cur.detach(), cur_logp.detach(), nxt.detach(), nxt_logp.detach()
        cql = 0.0
        for q, q_data in ((self.q1, q1), (self.q2, q2)):
            cat = torch.cat(
                [q(s, rand) - np.log(0.5**ACT_DIM), q(s, nxt) - nxt_logp, q(s, cur) - cur_logp], dim=1
            )
            cql = cql + 10.0 * (torch.logsumexp(cat, dim=1) - q_data).mean()
        q_loss = td + cql
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        self.q_opt.zero_grad()
        q_loss.backward()
        self.q_opt.step()
        for q, t in ((self.q1, self.t1), (self.q2, self.t2)):
            for p, tp in zip(q.parameters(), t.parameters()):
                tp.data.copy_(0.005 * p.data + 0.995 * tp.data)


# ---------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rate(step, n: int, device: torch.device, warmup: int = 50) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(n):
        step()
    sync(device)
    return n / (time.perf_counter() - start)


def interleaved_rates(
    steps: dict[str, object], counts: dict[str, int], rounds: int, device: torch.device, slices: int = 10
) -> dict[str, list[float]]:
    """Updates/s of each contender per round, the contenders taking turns within the round: each round
    runs counts[name] updates of every contender in `slices` turns (a turn of contender A, then of B, ...),
    so that load from other processes, which drifts over seconds, hits every contender alike. Ratios of
    contenders are then taken round by round (their median is the reported ratio)."""
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        seconds = dict.fromkeys(steps, 0.0)
        done = dict.fromkeys(steps, 0)
        for turn in range(slices):
            for name, step in steps.items():
                until = counts[name] * (turn + 1) // slices
                if until <= done[name]:
                    continue
                start = time.perf_counter()
                for _ in range(until - done[name]):
                    step()
                sync(device)
                seconds[name] += time.perf_counter() - start
                done[name] = until
        for name in steps:
            rates[name].append(counts[name] / seconds[name])
    return rates


class _RecordProducts(TorchDispatchMode):
    """Notes every matrix product the code under it runs: (op, [operand or scalar specs], {kwarg specs}),
    an operand as (shape, strides, dtype); the products still run."""

    PRODUCTS = {getattr(torch.ops.aten, name).default for name in ("mm", "addmm", "bmm", "baddbmm")} | {
        getattr(torch.ops.aten, name).out for name in ("mm", "addmm", "bmm", "baddbmm")
    }

    def __init__(self):
        super().__init__()
        self.calls: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.PRODUCTS:
            def spec(value):
                if isinstance(value, torch.Tensor):
                    return tuple(value.shape), tuple(value.stride()), value.dtype
                return value

            self.calls.append((func, [spec(a) for a in args], {k: spec(v) for k, v in kwargs.items()}))
        return func(*args, **kwargs)


def products_only(step, device: torch.device, updates: int = 2):
    """A step that runs only the matrix products of `updates` calls of `step`: the same ops (mm, addmm, bmm,
    baddbmm, their out= forms), shapes, strides (transposed and broadcast operands stay so) and dtypes, on
    N(0, 1) operands. Its rate times `updates` is the update rate the code would reach if everything
    but its products (elementwise work, reductions, the optimizer, Python) cost nothing: timed beside the
    code and the reference, the bound it puts on their ratio holds on this machine in this run.

    All operands are views of one random buffer and all out= results share one other buffer, so they stay
    in cache (the real update's operands need not): the bound is, if anything, too high."""
    step()  # warm: lazily built state (optimizer moments, scratch tensors) is not in the recording
    with _RecordProducts() as recorded:
        for _ in range(updates):
            step()
    sync(device)

    def extent(spec) -> int:  # elements a (shape, strides) view reaches
        shape, strides, _ = spec
        return 1 + sum((n - 1) * s for n, s in zip(shape, strides)) if all(shape) else 0

    def is_spec(value) -> bool:
        return isinstance(value, tuple) and len(value) == 3 and isinstance(value[2], torch.dtype)

    specs = [v for _, args, kwargs in recorded.calls for v in (*args, *kwargs.values()) if is_spec(v)]
    buffers = {}
    for dtype in {spec[2] for spec in specs}:
        size = max(extent(spec) for spec in specs if spec[2] == dtype)
        operands = torch.randn(size, device=device).to(dtype)
        buffers[dtype] = (operands, torch.empty(size, dtype=dtype, device=device))

    def operand(value, written: bool = False):
        if not is_spec(value):
            return value
        shape, strides, dtype = value
        return buffers[dtype][int(written)].as_strided(shape, strides)

    calls = [
        (func, [operand(a) for a in args], {k: operand(v, written=k == "out") for k, v in kwargs.items()})
        for func, args, kwargs in recorded.calls
    ]

    def replay() -> None:
        for func, args, kwargs in calls:
            func(*args, **kwargs)

    return replay


def zoo_td3bc(dataset, device, precision="float32"):
    from zoo.agents import TD3BC

    agent = TD3BC(dataset, seed=0, device=device, precision=precision)
    agent.learn(1)  # sets up logger and the device table
    return lambda: agent.train(gradient_steps=1, batch_size=BATCH)


SLOW_AGENTS = ("cql", "calql", "edac", "edac-mc")

# Settings that make a registry agent reach the phase being timed quickly (they do not change its update).
PHASE_SETTINGS = {
    "spot": {"vae_steps": 1},
    "opt-spot": {"vae_steps": 1},
}


def agent_phases(key: str) -> tuple[str, ...]:
    """The phases of a registry agent with an update of their own: its pretraining (or SPOT's VAE), then RL."""
    from zoo import AGENTS

    spec = AGENTS[key]
    if "pretrain" in spec.defaults:
        return ("pretrain", "rl")
    if key in PHASE_SETTINGS:
        return ("vae", "rl")
    return ("rl",)


def zoo_agent(key: str, dataset, device, phase: str):
    """An agent of the registry, timed in its pretraining phase (or SPOT's VAE phase) or in its RL phase."""
    from zoo import make_agent

    settings = {} if phase == "vae" else PHASE_SETTINGS.get(key, {})
    agent = make_agent(key, dataset, seed=0, device=device, **settings)
    agent.learn(1)
    if phase == "rl" and agent.pretraining is not None:
        agent.pretrain_steps = 1  # skip straight to the agent's own losses
        agent._n_updates = max(agent._n_updates, 1)
    return lambda: agent.train(gradient_steps=1, batch_size=BATCH)


def zoo_finetune_rate(key: str, dataset, device, steps: int) -> float:
    """Online fine-tuning of a registry agent on HalfCheetah-v5: env steps per second at its own UTD ratio
    (OPT: its fine-tuning phase, after a 1-step collection and 10 online pre-training updates)."""
    from zoo import make_agent

    settings = {**PHASE_SETTINGS.get(key, {})}
    if key.startswith("opt"):
        settings.update(n_tau=1, n_pretrain=10)
    agent = make_agent(key, dataset, seed=0, device=device, **settings)
    agent.learn(1)
    if agent.pretraining is not None:
        agent.pretrain_steps = 1
    agent.finetune(20)  # warm-up
    start = time.perf_counter()
    agent.finetune(steps)
    sync(device)
    return steps / (time.perf_counter() - start)


def zoo_cql(dataset, device):
    """zoo's CQL in the reference's configuration (2x256 actor and critics, weight 10, importance sampling)."""
    from zoo.agents import CQL

    agent = CQL(dataset, seed=0, device=device, policy_kwargs=dict(net_arch=[HIDDEN, HIDDEN], critic_init="default"))
    agent.learn(1)
    return lambda: agent.train(gradient_steps=1, batch_size=BATCH)


def rate_block(train_n, n: int, device: torch.device, warmup: int = 50) -> float:
    """Like `rate`, for an API that runs n updates in one call (SB3's `train(gradient_steps=n)`)."""
    train_n(warmup)
    sync(device)
    start = time.perf_counter()
    train_n(n)
    sync(device)
    return n / (time.perf_counter() - start)


def d3rlpy_rate(data, device, steps) -> float:
    """d3rlpy's TD3PlusBC (defaults: 256x256 encoders, two critics, batch 256), updated as `fit` does.

    Each step is the body of d3rlpy's `fitter` loop without its logger: `dataset.sample_transition_batch`
    (d3rlpy's own per-transition sampling) then `algo.update`, so d3rlpy's sampling cost is included.
    """
    import logging

    import d3rlpy
    import structlog

    # d3rlpy logs its automatic signature / action-space detection at info level through structlog, which
    # only d3rlpy uses here; keep its warnings and errors.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    # d3rlpy wants `terminals` to be true terminations only, with time-limit ends in `timeouts`, never both
    # set on one step. Close a trailing partial episode as a timeout so it is kept too. d3rlpy rebuilds
    # next observations from the episode, so the last step of each timed-out episode has no transition
    # (19,980 of 20,000 transitions by default).
    terminals = data["term"]
    timeouts = data["trunc"] * (1 - terminals)
    if not (terminals[-1] or timeouts[-1]):
        timeouts = timeouts.copy()
        timeouts[-1] = 1
    dataset = d3rlpy.dataset.MDPDataset(data["obs"], data["act"], data["rew"], terminals, timeouts=timeouts)
    config = d3rlpy.algos.TD3PlusBCConfig(batch_size=BATCH)
    algo = config.create(device=f"cuda:{device.index or 0}" if device.type == "cuda" else False)
    algo.build_with_dataset(dataset)

    def step():
        algo.update(dataset.sample_transition_batch(config.batch_size))

    return rate(step, steps, device)


def sb3_rate(data, device, steps) -> float:
    """SB3's TD3 `train` (256x256 like the rest; SB3's TD3 default is 400x300) on a buffer of the same data.

    SB3's TD3 has no BC term in the actor loss, otherwise the same update (policy delay 2, target noise
    0.2 clipped at 0.5, tau 0.005).
    """
    import gymnasium as gym
    from stable_baselines3 import TD3
    from stable_baselines3.common.logger import Logger

    n = len(data["obs"])
    model = TD3(
        "MlpPolicy",
        gym.make("HalfCheetah-v5"),
        batch_size=BATCH,
        buffer_size=n,
        learning_starts=0,
        policy_kwargs=dict(net_arch=[HIDDEN, HIDDEN]),
        device=device,
        seed=0,
    )
    model.set_logger(Logger(folder=None, output_formats=[]))  # train() records losses; keep them silent
    buffer = model.replay_buffer
    # Fill through the buffer's own API, as SB3's collection loop would: `done` is term or trunc, and a
    # time-limit end is flagged in infos so that (handle_timeout_termination) it does not cut the bootstrap.
    done = np.maximum(data["term"], data["trunc"])
    for i in range(n):
        buffer.add(
            data["obs"][i : i + 1],
            data["next_obs"][i : i + 1],
            data["act"][i : i + 1],
            data["rew"][i : i + 1],
            done[i : i + 1],
            [{"TimeLimit.truncated": bool(data["trunc"][i] and not data["term"][i])}],
        )
    assert buffer.size() == n
    assert np.array_equal(buffer.dones[:, 0] * (1 - buffer.timeouts[:, 0]), data["term"])
    return rate_block(lambda k: model.train(gradient_steps=k, batch_size=BATCH), steps, device)


# ---------------------------------------------------------------------- populations and memory


def rss_mib() -> float | None:
    """Current resident set size (Linux /proc), None elsewhere."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration):
        return None


class PeakMemory:
    """Peak memory of one configuration: on cuda, torch.cuda.max_memory_allocated over the window; on CPU,
    the peak RSS (VmHWM, reset by writing 5 to /proc/self/clear_refs) minus the RSS when the window opened:
    the configuration's weights, optimizer state, replay and its largest update's temporaries (after an
    earlier, larger configuration, memory the heap kept may hide part of it: then 0)."""

    def __init__(self, device: torch.device):
        self.device = device

    def start(self) -> bool:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            return True
        self.base = rss_mib()
        try:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        except OSError:
            return False
        return self.base is not None

    def stop(self) -> float | None:
        """MiB above the window's start."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - self.base) / 2**20
        with open("/proc/self/status") as status:
            hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
        return hwm - self.base


POPULATION_ALGOS = {
    # label: (registry key, settings matching the eager reference, reference class)
    "TD3+BC": ("td3bc", {}, ReferenceTD3BC),
    "CQL": ("cql", dict(policy_kwargs=dict(net_arch=[HIDDEN, HIDDEN], critic_init="default")), ReferenceCQL),
}


def population_step(key: str, settings: dict, dataset, device, k: int, precision: str):
    """One update of a K-member population (agent.train(gradient_steps=1)) of seeds 0..K-1."""
    from zoo.registry import make_population

    agent = make_population(key, dataset, seeds=list(range(k)), device=device, precision=precision, **settings)
    agent.learn(1)
    return lambda: agent.train(gradient_steps=1, batch_size=BATCH)


def population_precisions(device: torch.device) -> tuple[str, ...]:
    """The precisions the population rows time: bf16 too, except on a CPU without bf16 instructions, which
    emulates bf16 products (zoo warns; the "zoo TD3BC, bf16 matmuls" row shows the cost)."""
    from zoo.agents.base import cpu_multiplies_bf16

    if device.type == "cpu" and not cpu_multiplies_bf16():
        return ("float32",)
    return ("float32", "bfloat16")


def population_section(args, dataset, tensors, device, labels=("TD3+BC", "CQL")) -> dict[str, float]:
    """Aggregate member-updates/s of populations (K = --population-k, fp32 and bf16) against the eager
    reference run K times in sequence (whose aggregate is its own rate), for TD3+BC and CQL.

    Per round every configuration does about the same number of member-updates (the reference as many
    updates), the configurations taking turns (interleaved_rates); rates are medians over rounds and
    ratios medians of per-round ratios (each configuration against the reference of its round). Peak
    memory per configuration: see PeakMemory. With --population-compile, TD3+BC's largest K up to 8 also
    runs in fp32 with compile=True (inductor; the same products, so the same bound as eager). Not CQL's:
    compiled CQL losses leave the scratch path (their temporaries are fresh tensors, so zoo fixes glibc's
    mmap threshold for the whole process, which would slow every later contender) and ran slower than
    eager here (a population of one: 0.89x the reference against 1.24x eager).
    Returns {"<algo> K=<k> <precision>[ compiled| bound]": ratio}.
    """
    from zoo.agents.compiled import inductor_missing

    ks = [int(k) for k in args.population_k.split(",")]
    precisions = population_precisions(device)
    ratios: dict[str, float] = {}
    for label, (key, settings, reference_cls) in POPULATION_ALGOS.items():
        if label not in labels:
            continue
        if label == "CQL" and not args.cql:
            continue
        per_round = max(args.steps // args.rounds // (10 if label == "CQL" else 1), 2)
        memory = PeakMemory(device)
        steps: dict[str, object] = {}
        peaks: dict[str, float | None] = {}
        counts: dict[str, int] = {}
        compiled_k = None
        if label == "TD3+BC" and args.population_compile:
            compiled_k = max((k for k in ks if k <= 8), default=None)
        missing = inductor_missing(device.type)
        if compiled_k is not None and missing:
            print(f"population {label}: compile=True skipped: {missing}")
            compiled_k = None
        compiled_settings = {**settings, "compile": True}
        for name, build, n in [
            ("reference", lambda: reference_cls(tensors, device).update, per_round),
            *(
                (f"K={k} {precision}", lambda k=k, p=precision: population_step(key, settings, dataset, device, k, p),
                 max(per_round // k, 2))
                for k in ks
                for precision in precisions
            ),
            *(
                [(f"K={compiled_k} float32 compiled",
                  lambda: population_step(key, compiled_settings, dataset, device, compiled_k, "float32"),
                  max(per_round // compiled_k, 2))]
                if compiled_k is not None else []
            ),
        ]:
            gc.collect()
            measured = memory.start()
            step = build()
            for _ in range(3):  # warm-up
                step()
            rate(step, n, device, warmup=0)  # the first round's work inside the memory window
            peaks[name] = memory.stop() if measured else None
            steps[name], counts[name] = step, n
            if name != "reference" and not name.endswith("compiled"):  # its products alone, 2 updates' worth
                products = f"{name} products"
                steps[products], counts[products] = products_only(step, device), max(n // 2, 1)
        rates = interleaved_rates(steps, counts, args.rounds, device)
        ref = rates["reference"]
        print(f"population {label}: aggregate member-updates/s of K members as one agent, against K sequential "
              f"runs of the eager reference ({float(np.median(ref)):.1f} updates/s, peak "
              f"{fmt_mib(peaks['reference'])}); median of {args.rounds} interleaved rounds; bound: the ratio if "
              f"the update were only its matrix products (products_only)")
        print(f"  {'K':>3}  {'fp32 upd/s':>10} {'ratio':>6} {'bound':>6} {'peak':>9}   "
              f"{'bf16 upd/s':>10} {'ratio':>6} {'bound':>6} {'peak':>9}")
        for k in ks:
            cells = []
            for precision in ("float32", "bfloat16"):
                name = f"K={k} {precision}"
                if precision not in precisions:
                    cells.append(f"{'skipped':>10} {'':6} {'':6} {'':>9}")
                    continue
                aggregate = [k * r for r in rates[name]]
                ratio = float(np.median([a / b for a, b in zip(aggregate, ref)]))
                bound = float(np.median([2 * k * a / b for a, b in zip(rates[f"{name} products"], ref)]))
                ratios[f"{label} {name}"], ratios[f"{label} {name} bound"] = ratio, bound
                cells.append(
                    f"{float(np.median(aggregate)):10.1f} {ratio:6.2f} {bound:6.2f} {fmt_mib(peaks[name]):>9}"
                )
            print((f"  {k:>3}  " + "   ".join(cells)).rstrip())
        if compiled_k is not None:
            name = f"K={compiled_k} float32 compiled"
            aggregate = [compiled_k * r for r in rates[name]]
            ratio = float(np.median([a / b for a, b in zip(aggregate, ref)]))
            ratios[f"{label} {name}"] = ratio
            print(f"  K={compiled_k} fp32 with compile=True (inductor): {float(np.median(aggregate)):.1f} "
                  f"member-updates/s, ratio {ratio:.2f} (eager {ratios[f'{label} K={compiled_k} float32']:.2f}), peak "
                  f"{fmt_mib(peaks[name])}")
        del steps
    return ratios


def fmt_mib(value: float | None) -> str:
    return "n/a" if value is None else f"{max(value, 0.0):.0f} MiB"  # growth: rounding may dip below 0


def score_section(args, device) -> None:
    """fp32 against bf16 on score: the same seeds on the same data (zoo/hopper/medium-v0 built from the
    shipped behaviour policy, --score-transitions transitions), TD3+BC populations trained --score-steps
    updates each, then each member's normalized score over 10 evaluation episodes (the same episode seeds)."""
    from zoo import load_dataset
    from zoo.datagen.d4rl import make_d4rl_dataset
    from zoo.evaluation import evaluate_population
    from zoo.registry import make_population

    dataset_id = "zoo/hopper/medium-v0"
    make_d4rl_dataset(dataset_id, steps=args.score_transitions, seed=0, overwrite=True)
    dataset = load_dataset(dataset_id, device=device)
    seeds = list(range(args.score_seeds))
    print(f"bf16 vs fp32 score: TD3+BC on {dataset_id} ({args.score_transitions} transitions), seeds {seeds}, "
          f"{args.score_steps} updates, normalized score over 10 episodes per member")
    means = {}
    for precision in ("float32", "bfloat16"):
        agent = make_population("td3bc", dataset, seeds=seeds, device=device, precision=precision)
        start = time.perf_counter()
        agent.learn(args.score_steps)
        seconds = time.perf_counter() - start
        scores = [e.normalized_score for e in evaluate_population(agent, n_episodes=10)]
        means[precision] = float(np.mean(scores))
        print(f"  {precision:9} mean {means[precision]:6.1f}  members " + " ".join(f"{x:6.1f}" for x in scores)
              + f"  ({seconds:.0f} s)")
    print(f"  bf16 - fp32: {means['bfloat16'] - means['float32']:+.1f} points")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=2000, help="timed updates per implementation")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds per implementation")
    parser.add_argument("--transitions", type=int, default=20_000)
    parser.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True, help="also time d3rlpy and SB3")
    parser.add_argument("--cql", action=argparse.BooleanOptionalAction, default=True,
                        help="also time zoo's CQL against the plain eager CQL reference")
    parser.add_argument("--agents", action=argparse.BooleanOptionalAction, default=True,
                        help="also time every registry agent (pretraining and RL phases) and online fine-tuning")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--population", action=argparse.BooleanOptionalAction, default=True,
                        help="also time populations (K agents as one batched agent) against K eager runs")
    parser.add_argument("--population-k", default="1,4,8,16", help="population sizes K, comma-separated")
    parser.add_argument("--population-compile", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the TD3+BC population of 8 (or the largest K below) with compile=True")
    parser.add_argument("--score-steps", type=int, default=0,
                        help="also train fp32 and bf16 TD3+BC populations this many updates and compare scores")
    parser.add_argument("--score-seeds", type=int, default=4, help="members (seeds 0..n-1) of the score runs")
    parser.add_argument("--score-transitions", type=int, default=100_000,
                        help="size of the zoo/hopper/medium-v0 dataset the score runs train on")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each result as it comes, also into a file or a pipe
    if args.score_steps < 0 or args.score_seeds < 1:
        parser.error("--score-steps must be >= 0 and --score-seeds >= 1")
    device = torch.device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    quiet_third_party_notices()

    import os
    import tempfile

    os.environ.setdefault("MINARI_DATASETS_PATH", tempfile.mkdtemp(prefix="zoo-bench-"))
    from zoo.data import load_dataset

    data = make_data(args.transitions)
    write_minari(data, "zoo/bench/halfcheetah-random-v0")
    dataset = load_dataset("zoo/bench/halfcheetah-random-v0", device=device)
    tensors = {k: torch.as_tensor(v, device=device) for k, v in data.items()}
    for key in ("rew", "term"):
        tensors[key] = tensors[key].unsqueeze(1)

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, device {device}, "
          f"threads {torch.get_num_threads()}, batch {BATCH}, {HIDDEN}x{HIDDEN}, obs {OBS_DIM}, act {ACT_DIM}")
    # The TD3+BC rows first, then the CQL pair (zoo's float32 CQL leaves the allocator alone: its large
    # temporaries are scratch tensors), then the CQL populations, whose bf16 ones (on a CPU with bf16
    # instructions) fix glibc's mmap threshold for the rest of the process (zoo.allocator).
    # Warm up once, then rounds in which the contenders take turns (interleaved_rates): rates are medians
    # over rounds, ratios medians of per-round ratios. A CQL update costs ~10-15x a TD3+BC one (31 actions
    # per state through both critics): a tenth as many of them, at least 10 per round.
    def interleaved(contenders):
        for name, step in contenders.items():
            rate(step, 0, device, warmup=5 if "CQL" in name else 50)
        counts = {name: max(args.steps // args.rounds // (10 if "CQL" in name else 1), 10) for name in contenders}
        return interleaved_rates(contenders, counts, args.rounds, device)

    reference = ReferenceTD3BC(tensors, device)
    results = interleaved({
        "reference eager TD3+BC": reference.update,
        "zoo TD3BC": zoo_td3bc(dataset, device),
        "zoo TD3BC, bf16 matmuls": zoo_td3bc(dataset, device, precision="bfloat16"),
    })
    population = population_section(args, dataset, tensors, device, ("TD3+BC",)) if args.population else {}
    if args.cql:
        cql = zoo_cql(dataset, device)
        results.update(interleaved({
            "reference eager CQL": ReferenceCQL(tensors, device).update, "zoo CQL": cql,
            "zoo CQL products only": products_only(cql, device),  # 2 updates' products per call
        }))
        results["zoo CQL products only"] = [2 * r for r in results["zoo CQL products only"]]
    median = {name: float(np.median(rates)) for name, rates in results.items()}

    def ratio(ours: str, reference: str) -> float:
        return float(np.median([a / b for a, b in zip(results[ours], results[reference])]))

    for name, value in median.items():
        print(f"{name + ':':24}{value:8.1f} updates/s")
    if args.peers:
        for name, fn in (("d3rlpy TD3PlusBC", d3rlpy_rate), ("SB3 TD3 train", sb3_rate)):
            try:
                print(f"{name + ':':24}{fn(data, device, args.steps):8.1f} updates/s")
            except ImportError as error:
                print(f"{name + ':':24} skipped ({error.name} not installed: pip install -e .[bench])")
    if args.agents:
        from zoo import AGENTS, make_agent

        n = max(args.steps // 4, 100)
        for key in AGENTS:
            phases = agent_phases(key)
            # The SAC family's ensembles and CQL's 31 actions per state make an update 10-30x a TD3 one.
            m = max(n // 20, 20) if key in SLOW_AGENTS else n
            for phase in phases:
                label = f"zoo {key}" + (f" ({phase})" if len(phases) > 1 else "")
                value = rate(zoo_agent(key, dataset, device, phase), m, device, warmup=5)
                print(f"{label + ':':32}{value:8.1f} updates/s")
            utd = make_agent(key, dataset, device=device, **PHASE_SETTINGS.get(key, {})).online_utd_ratio
            value = zoo_finetune_rate(key, dataset, device, m)
            print(f"{'zoo ' + key + ' finetune:':32}{value:8.1f} env steps/s (UTD {utd})")
    if args.population:
        population.update(population_section(args, dataset, tensors, device, ("CQL",)))
    if args.score_steps:
        score_section(args, device)
    # What the hardware allows: each update's matrix products alone (products_only) against the reference.
    if "TD3+BC K=8 float32 bound" in population:
        print(f"population_bound_k8_float32={population['TD3+BC K=8 float32 bound']:.2f}")
    if "TD3+BC K=8 bfloat16 bound" in population:
        print(f"population_bound_k8_bfloat16={population['TD3+BC K=8 bfloat16 bound']:.2f}")
    if args.cql:
        print(f"cql_bound_vs_reference={ratio('zoo CQL products only', 'reference eager CQL'):.2f}")
    print(f"ratio_vs_reference={ratio('zoo TD3BC', 'reference eager TD3+BC'):.2f}")
    if "TD3+BC K=8 bfloat16" in population:
        print(f"population_ratio_k8={population['TD3+BC K=8 bfloat16']:.2f}")
    elif "TD3+BC K=8 float32" in population:  # no bf16 instructions here: the float32 population
        print("population_ratio_k8 below: float32 (this CPU has no bf16 instructions; bf16 rows skipped)")
        print(f"population_ratio_k8={population['TD3+BC K=8 float32']:.2f}")
    if args.cql:
        print(f"cql_ratio_vs_reference={ratio('zoo CQL', 'reference eager CQL'):.2f}")


if __name__ == "__main__":
    main()
