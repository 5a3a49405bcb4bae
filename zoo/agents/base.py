"""The agent base: SB3's off-policy algorithm with an offline training loop on a device-resident dataset.

SB3 has no offline path (its replay buffer is host-side numpy and `learn` always steps an env). Here
`learn` runs gradient steps on batches indexed on the device, with SB3's callbacks, logger and progress
bar; `predict`, `save` and `load` are SB3's own. Online fine-tuning (`finetune`) plugs in here too.
"""

from __future__ import annotations

import atexit
import os
import time
import uuid
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common import utils as sb3_utils
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CallbackList,
    ConvertCallback,
    ProgressBarCallback,
)
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule

from zoo.agents.compiled import compile_options, inductor_missing
from zoo.agents.compiled import install as install_compiled_losses
from zoo.agents.pretraining import make_pretraining
from zoo.agents.replay import Batch, Replay
from zoo.data.dataset import OfflineDataset, resolve_device
from zoo.data.tasks import Task
from zoo.envs import make_env
from zoo.errors import ConfigError, DataError, UserError, warn
from zoo.nn.members import GLOBAL_RANDOM, MemberAdam, MemberRandom, member_rows


def adam(
    params: Iterable[torch.nn.Parameter], lr: float, device: torch.device, members: int | None = None
) -> torch.optim.Optimizer:
    """Adam with the fused kernel (CUDA and CPU): measured here ~3x faster than foreach on CPU. A population's
    stacked parameters (`members` = its size) get MemberAdam (zoo.nn.members), the same update with a
    learning rate per member (`lr` for every member until zoo.agents.population sets each member's)."""
    if members is not None:
        return MemberAdam(params, torch.full((members,), float(lr)))
    fused = device.type in ("cuda", "cpu")
    return torch.optim.Adam(params, lr=lr, fused=fused, foreach=None if fused else True)


class GradientStepProgressBar(ProgressBarCallback):
    """SB3's progress bar counting gradient steps (offline there is no env to count steps of).

    SB3 closes its (rich) bar only at the end of training; when an exception or Ctrl-C leaves the loop,
    an open bar was closed by the garbage collector during interpreter shutdown, where rich fails with
    "ImportError: sys.meta_path is None". Open bars are therefore tracked and closed by
    `close_progress_bars`, which the CLI calls before it reports an error and `atexit` calls otherwise.
    """

    open_bars: ClassVar[weakref.WeakSet] = weakref.WeakSet()

    def _on_training_start(self) -> None:
        super()._on_training_start()
        GradientStepProgressBar.open_bars.add(self)

    def _on_step(self) -> bool:
        self.pbar.update(1)
        return True

    def _on_training_end(self) -> None:
        GradientStepProgressBar.open_bars.discard(self)
        super()._on_training_end()


def cpu_multiplies_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices with bf16 instructions (AVX512 with BF16, or AMX: oneDNN's
    own check). Without them PyTorch emulates bf16 products, far slower than float32 ones."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def close_progress_bars() -> None:
    """Close the progress bars of training loops that an exception left (see GradientStepProgressBar)."""
    for bar in list(GradientStepProgressBar.open_bars):
        GradientStepProgressBar.open_bars.discard(bar)
        bar.pbar.close()


atexit.register(close_progress_bars)


class OfflinePolicy(BasePolicy):
    """Owns the networks, their targets and optimizers, and the observation normaliser.

    Observations are normalised inside the policy, so `predict` takes raw env observations while the
    training batches are normalised once, up front.
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: tuple[int, ...] | list[int] = (256, 256),
        n_members: int = 1,
    ):
        super().__init__(observation_space, action_space, squash_output=True)
        self.n_members = n_members  # agents in the population whose networks these are (1: an ordinary agent)
        self.is_population = False  # set by the agent before `build_optimizers` (MemberAdam for populations)
        self.net_arch = tuple(net_arch)
        self.obs_dim = int(np.prod(observation_space.shape))
        self.act_dim = int(np.prod(action_space.shape))
        self.register_buffer("obs_mean", torch.zeros(self.obs_dim))
        self.register_buffer("obs_std", torch.ones(self.obs_dim))

    @property
    def member_shape(self) -> tuple[int, ...]:
        """The shape of a learned scalar (temperature, Lagrange multiplier): () for an ordinary agent, (P, 1)
        for a population, one per member, broadcasting over its (P, batch) terms."""
        return () if self.n_members == 1 else (self.n_members, 1)

    def set_random(self, random: MemberRandom) -> None:
        """Give every network that draws noise (a stochastic actor, a VAE) the agent's random source."""
        for module in self.modules():
            if isinstance(getattr(module, "random", None), MemberRandom):
                module.random = random

    def normalize_observations(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    # Attribute names of the optimizers `build_optimizers` creates (saved with the checkpoint).
    optimizer_names: ClassVar[tuple[str, ...]] = ()

    def build_optimizers(self, lr: float) -> None:
        """Create the optimizers once the networks sit on their device (with `make_optimizer`)."""
        raise NotImplementedError

    def make_optimizer(self, params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """The Adam of these networks: fused torch Adam, or MemberAdam for a population's (even of one, so
        that a population of one steps as each member of a larger one does)."""
        return adam(params, lr, self.device, self.n_members if self.is_population else None)

    def set_training_mode(self, mode: bool) -> None:
        """Training mode (dropout on) for the actor and the critics."""
        self.actor.train(mode)
        self.critic.train(mode)
        self.training = mode

    def _predict(self, observation: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.actor(self.normalize_observations(observation.float()))


class OfflineAlgorithm(OffPolicyAlgorithm):
    """Base of every zoo agent: constructor arguments are hyperparameters, `learn` trains offline.

    :param policy: policy class or alias
    :param dataset: the OfflineDataset to train on (can be given later to `load`)
    :param env: optional env, only to check spaces; evaluation builds its own from the dataset's task
    :param learning_rate: Adam learning rate (or SB3 schedule)
    :param batch_size: transitions per gradient step
    :param tau: Polyak rate of the target networks
    :param gamma: discount factor
    :param normalize_observations: standardise observations with the dataset's mean and std (+1e-3)
    :param pretrain: a pretraining recipe key (zoo.agents.pretraining.PRETRAINING) or None
    :param pretrain_steps: gradient steps of the pretraining phase, counted inside `learn`'s total; a float
        in (0, 1) is that share of the total of the first `learn` call (PSQN pretrains for 10%)
    :param pretrain_kwargs: options of the recipe (e.g. {"td_weight": 0.0} for "imitate")
    :param online_mixing_ratio: share of each online fine-tuning batch drawn from the offline dataset
        (Cal-QL: 0.5); the rest comes from the online buffer
    :param online_utd_ratio: gradient steps per environment step during fine-tuning
    :param reward_scale: rewards are trained on as r * reward_scale + reward_bias, offline and online
        (Cal-QL/CQL on AntMaze: 10, -5; SPOT/OPT on AntMaze: 1, -1)
    :param reward_bias: see reward_scale
    :param precision: "float32" (default, exact) or "bfloat16": matrix products under bf16 autocast with
        fp32 weights, optimizer and losses; faster where the hardware has bf16 units (AMX, AVX512-BF16,
        GPUs), far slower where it has not (a CPU without them emulates bf16 products: a warning says so)
    :param compile: False (eager), True/"default", "reduce-overhead" (CUDA graphs), "max-autotune",
        "max-autotune-no-cudagraphs" or "aot_eager": the loss computations of each update run through
        torch.compile with that mode (backend), with the same random draws (zoo.agents.compiled)
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {}
    policy: OfflinePolicy
    # The algorithm family ("td3": deterministic actor and twin critics; "sac": tanh-Gaussian actor, critic
    # ensemble and temperature); pretraining recipes declare the families they serve.
    family: ClassVar[str] = ""
    # Online rows become sampleable when their episode ends (agents whose columns need the whole
    # episode, e.g. Monte-Carlo returns); otherwise as soon as they are stored.
    online_rows_wait_for_episode_end: ClassVar[bool] = False
    # A population (zoo.agents.population) sets these before its set-up: K members along the member axis,
    # each with its own seed and random generator. An ordinary agent is one member with its own generator.
    n_members: int = 1
    is_population: bool = False
    member_seeds: list[int] | None = None
    member_hyperparameters: list[dict[str, Any]] | None = None
    # A population whose members' learning rates follow schedules: member k's SB3 schedule (a constant one
    # for a member with a fixed rate), progress remaining -> rate.
    member_lr_schedules: list[Callable[[float], float]] | None = None
    random: MemberRandom = GLOBAL_RANDOM
    # Float settings that must still agree within a population because they choose phases or branches,
    # not numbers inside a loss (zoo.agents.population refuses members that differ in them).
    population_shared: ClassVar[frozenset[str]] = frozenset()

    def __new__(cls, *args: Any, **kwargs: Any):
        """Every constructor argument is type- and range-checked (zoo.validation) before any __init__
        along the MRO runs, so a bad value is one ConfigError, never a failure half-way through set-up."""
        from zoo.validation import validate_constructor_call

        validate_constructor_call(cls, args, kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        policy: str | type[OfflinePolicy],
        dataset: OfflineDataset | None = None,
        *,
        env: GymEnv | None = None,
        learning_rate: float | Schedule = 3e-4,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        normalize_observations: bool = True,
        pretrain: str | None = None,
        pretrain_steps: int | float = 0,
        pretrain_kwargs: dict[str, Any] | None = None,
        online_mixing_ratio: float = 0.5,
        online_utd_ratio: int = 1,
        reward_scale: float = 1.0,
        reward_bias: float = 0.0,
        precision: str = "float32",
        compile: bool | str = False,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        device: torch.device | str = "auto",
        seed: int | None = None,
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy,
            env,  # type: ignore[arg-type]
            learning_rate,
            buffer_size=0,
            learning_starts=0,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            policy_kwargs=policy_kwargs,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=resolve_device(device),
            seed=seed,
            sde_support=False,
            supported_action_spaces=(spaces.Box,),
        )
        if precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be 'float32' or 'bfloat16', got {precision!r}.")
        if precision == "bfloat16" and self.device.type == "cpu" and not cpu_multiplies_bf16():
            warn(
                "precision='bfloat16' on a CPU without bf16 instructions (AVX512-BF16 or AMX): its bf16 matrix "
                "products are emulated (TD3+BC ran 26x slower than in float32 on an AVX2 CPU, "
                "benchmarks/throughput.py); use precision='float32' unless you need bf16's rounding."
            )
        self.dataset = dataset
        self.normalize_observations = normalize_observations
        self.precision = precision
        options = compile_options(compile)  # a bad value fails here too, before any set-up
        if options is not None and options.get("backend") == "inductor":
            missing = inductor_missing(self.device.type)
            if missing:
                raise ConfigError(
                    f"compile={compile!r}: {missing}; install one (e.g. g++) or use compile='aot_eager' "
                    "(torch.compile without code generation) or compile=False."
                )
        self.compile = compile
        if not 0.0 <= online_mixing_ratio <= 1.0:
            raise ValueError(
                f"online_mixing_ratio is a share of the batch in [0, 1], got {online_mixing_ratio}."
            )
        if int(online_utd_ratio) != online_utd_ratio or online_utd_ratio < 1:
            raise ValueError(
                f"online_utd_ratio is a whole number of updates per env step >= 1, got {online_utd_ratio}."
            )
        self.online_mixing_ratio, self.online_utd_ratio = online_mixing_ratio, int(online_utd_ratio)
        self.reward_scale, self.reward_bias = float(reward_scale), float(reward_bias)
        fraction = isinstance(pretrain_steps, float) and 0.0 < pretrain_steps < 1.0
        if not fraction and (int(pretrain_steps) != pretrain_steps or pretrain_steps < 0):
            raise ValueError(
                f"pretrain_steps is a number of gradient steps or a share of the budget in (0, 1), "
                f"got {pretrain_steps}."
            )
        if pretrain is not None and pretrain_steps == 0:
            raise ValueError(f"pretrain='{pretrain}' needs pretrain_steps > 0, got {pretrain_steps}.")
        self._pretrain_budget = 0  # total_timesteps of the first learn(): the base of a fractional phase
        self.pretrain, self.pretrain_steps = pretrain, pretrain_steps
        self.pretrain_kwargs = dict(pretrain_kwargs or {})
        make_pretraining(pretrain, **self.pretrain_kwargs)  # unknown recipes fail here, before any set-up
        self.dataset_id = dataset.dataset_id if dataset is not None else None
        self.task: Task | None = dataset.task if dataset is not None else None
        if dataset is not None:
            if self.env is None:
                self.observation_space, self.action_space = dataset.observation_space, dataset.action_space
        elif self.env is None and _init_setup_model:
            raise ValueError("An agent needs a dataset to learn from: pass dataset=load_dataset('<id>').")
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ setup

    # The paper's networks of an agent class, below any policy_kwargs the user gives (key by key).
    default_policy_kwargs: ClassVar[dict[str, Any]] = {}

    def policy_settings(self) -> dict[str, Any]:
        """Policy arguments that come from the agent's own constructor arguments (learning rates of the
        actor, temperature, VAE, ...); the user's policy_kwargs override them key by key."""
        return {}

    def _setup_model(self) -> None:
        # The one merge of policy arguments: class defaults < the agent's settings < the user's policy_kwargs.
        self.policy_kwargs = {**self.default_policy_kwargs, **self.policy_settings(), **self.policy_kwargs}
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        # The agent's random draws (batches, noise, sampled actions, dropout): its own generator seeded with its
        # seed, or one per member; an ordinary agent with seed k draws what member k of a population does.
        if self.is_population:
            self.random = MemberRandom(self.member_seeds, self.device)
        else:
            self.random = MemberRandom.ordinary(self.seed, self.device)
        self.policy = self.policy_class(
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs,
            n_members=self.n_members,
        ).to(self.device)
        self.policy.set_random(self.random)
        self.policy.is_population = self.is_population
        self.policy.build_optimizers(self.lr_schedule(1.0))
        self.replay = Replay(self.device, self.random)
        self._stat_sums: dict[str, torch.Tensor] = {}
        self._stat_counts: dict[str, int] = {}
        self.pretraining = make_pretraining(self.pretrain, **self.pretrain_kwargs)
        if self.pretraining is not None:
            self.pretraining.check(self)
        if self.dataset is not None:
            self._check_dataset(self.dataset)
            self.dataset_id, self.task = self.dataset.dataset_id, self.dataset.task
            if self.normalize_observations:
                mean, std = self.dataset.observation_statistics()
                self.policy.obs_mean.copy_(mean)
                self.policy.obs_std.copy_(std)
        install_compiled_losses(self)  # `compile`: loss methods shadowed by compiled wrappers

    def autocast(self) -> torch.autocast:
        """The precision context for loss computations (backward and optimizer steps stay outside)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16")

    def check_spaces(
        self, observation_space: spaces.Space, action_space: spaces.Space, what: str, fix: str
    ) -> None:
        """Refuse spaces whose shapes or bounds differ from the agent's, in one line naming `what` and `fix`.

        Bounds too, not only shapes: actions are scaled by the agent's bounds, so data or an env with other
        bounds would mean other actions than the agent's.
        """
        for role, ours, theirs in (("observation", self.observation_space, observation_space),
                                   ("action", self.action_space, action_space)):
            if ours.shape != theirs.shape or not (
                np.allclose(ours.low, theirs.low) and np.allclose(ours.high, theirs.high)
            ):
                raise DataError(
                    f"The {role} space of {what} ({theirs}) does not match the agent's ({ours}): {fix}"
                )

    def _check_dataset(self, dataset: OfflineDataset) -> None:
        self.check_spaces(
            dataset.observation_space, dataset.action_space, f"dataset '{dataset.dataset_id}'",
            "train on a dataset of the same environment, or build a new agent.",
        )

    def save(
        self,
        path: str | os.PathLike,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """SB3's zip, written beside its destination and renamed into place: an existing checkpoint is
        replaced whole or not at all."""
        path = Path(path)
        if not path.suffix:
            path = path.with_suffix(".zip")  # SB3's own naming rule
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            super().save(tmp, exclude, include)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(), "dataset", "replay", "_stat_sums", "_stat_counts", "pretraining",
            "random", "_compiled_names", *getattr(self, "_compiled_names", ()),  # compiled losses: not saved
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        names = ["policy"] + [f"policy.{name}" for name in self.policy.optimizer_names]
        return names, []

    # ------------------------------------------------------------ loading without unpickling (zoo.checkpoint)
    # The zoo's checkpoints and SB3's zips are both rebuilt here from plain values: the constructor's
    # arguments, the spaces and the counters; the loaders then put the weights in.

    @classmethod
    def rebuild(
        cls,
        kwargs: dict[str, Any],
        observation_space: spaces.Box,
        action_space: spaces.Box,
        *,
        dataset: OfflineDataset | None = None,
        device: torch.device | str = "auto",
        dataset_id: str | None = None,
        task: Task | None = None,
        num_timesteps: int = 0,
        n_updates: int = 0,
        pretrain_budget: int = 0,
    ) -> "OfflineAlgorithm":
        """The agent `cls(**kwargs)` is, built on spaces instead of a dataset, its counters set before the
        set-up (so phase switches already passed apply, as in SB3's load); weights as initialised. With
        `dataset` (checked against the spaces) it can learn and fine-tune."""
        agent = cls(device=device, _init_setup_model=False, **kwargs)
        agent.observation_space, agent.action_space = observation_space, action_space
        agent.dataset, agent.dataset_id, agent.task = dataset, dataset_id, task
        agent.num_timesteps, agent._n_updates = num_timesteps, n_updates
        agent._pretrain_budget = pretrain_budget
        agent._setup_model()
        return agent

    @property
    def training_counters(self) -> dict[str, int]:
        """The counters a checkpoint keeps: env/gradient timesteps, updates, the pretraining budget base."""
        return {
            "num_timesteps": int(self.num_timesteps),
            "n_updates": int(self._n_updates),
            "pretrain_budget": int(self._pretrain_budget),
        }

    @classmethod
    def load(cls, path, env=None, device="auto", custom_objects=None, print_system_info=False,
             force_reset=True, **kwargs):
        """SB3's zip read without unpickling (zoo.agents.sb3_zip): SB3's own `load` runs the
        cloudpickle stored in the zip, which can execute any code. `dataset=` gives the agent its data."""
        from zoo.agents.sb3_zip import load_sb3_zip

        agent = load_sb3_zip(cls, path, device=device, **kwargs)
        if env is not None:  # SB3's load checks the env's spaces against the saved ones
            agent.check_spaces(env.observation_space, env.action_space, "the env", "use the agent's own env.")
        return agent
    # ------------------------------------------------------------------ (end of zoo.checkpoint's section)

    # ------------------------------------------------------------------ data on the device

    def _dataset_columns(self, dataset: OfflineDataset) -> dict[str, torch.Tensor]:
        """Per-transition columns of the training table; agents add their own (e.g. MC returns)."""
        policy = self.policy
        low = torch.as_tensor(self.action_space.low, device=self.device)
        high = torch.as_tensor(self.action_space.high, device=self.device)
        return {
            "observations": policy.normalize_observations(dataset.observations),
            "actions": 2.0 * (dataset.actions - low) / (high - low) - 1.0,  # SB3's scale_action, on device
            "rewards": self.transform_rewards(dataset.rewards),
            "next_observations": policy.normalize_observations(dataset.next_observations),
            "terminations": dataset.terminations.float(),
            **(self.pretraining.columns(self, dataset) if self.pretraining is not None else {}),
        }

    def transform_rewards(self, rewards):
        """The rewards the losses see: r * reward_scale + reward_bias (identity by default)."""
        return rewards * self.reward_scale + self.reward_bias

    def _prepare_table(self) -> None:
        """Pack every column into one (N, width) tensor so a batch is a single gather."""
        if self.dataset is None:
            raise ValueError(
                "This agent has no dataset: pass dataset=... to the constructor, "
                "or to load(path, dataset=...)."
            )
        if self.dataset.device != self.device:
            self.dataset = self.dataset.to(self.device)
        self.replay.set_offline(self._dataset_columns(self.dataset))

    def sample(self, batch_size: int) -> Batch:
        """A uniform batch drawn on the device (zoo.agents.replay): online, `online_mixing_ratio` of it
        comes from the offline table and the rest from the online rows."""
        return self.replay.sample(batch_size, self.online_mixing_ratio)

    # ------------------------------------------------------------------ logging without host syncs

    def record(self, **stats: torch.Tensor) -> None:
        """Accumulate training statistics on the device (a tensor with more than one element counts as its
        mean); they are read (one sync) only when dumped. Losses return their statistics, updates log them.
        A population's losses are sums over its members (each member's gradient is its own); a `*_loss`
        statistic is logged as their mean, like every other statistic."""
        for name, value in stats.items():
            value = value.detach()
            if value.dim() > 0:
                value = value.mean()
            elif self.is_population and name.endswith("_loss"):
                value = value / self.n_members
            if name in self._stat_sums:
                self._stat_sums[name] += value
                self._stat_counts[name] += 1
            else:
                self._stat_sums[name] = value.clone()
                self._stat_counts[name] = 1

    def _dump_logs(self) -> None:
        for name, total in self._stat_sums.items():
            self.logger.record(f"train/{name}", total.item() / self._stat_counts[name])
        self._stat_sums, self._stat_counts = {}, {}
        elapsed = max((time.time_ns() - self.start_time) / 1e9, 1e-9)
        rate = int((self.num_timesteps - self._num_timesteps_at_start) / elapsed)
        self.logger.record("time/updates_per_second", rate)
        self.logger.record("time/time_elapsed", int(elapsed), exclude="tensorboard")
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)

    # ------------------------------------------------------------------ training state (resume; zoo.resume)
    # Weights and optimizer moments are `get_parameters()` (SB3's); these methods carry the rest of what the
    # next offline update depends on, so that a run stopped after update k and resumed gives, on CPU, the
    # same weights as one that never stopped: the counters (they pick the phase, the policy delay, the
    # learning-rate schedule) and every random generator the updates draw from (SB3 seeds torch, numpy and
    # Python's `random` globally from `seed`, and batches, target noise and dropout draw from torch's).

    def training_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON-able info): counters and RNG states, for `restore_training_state`."""
        import random

        tensors = {"rng/torch": torch.get_rng_state()}
        for k, state in enumerate(self.random.get_state()):  # the agent's generator (a population's: each member's)
            tensors[f"rng/member/{k}"] = state
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, state in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng/cuda/{i}"] = state
        kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
        tensors["rng/numpy"] = torch.as_tensor(keys.astype(np.int64))
        version, python_state, gauss_next = random.getstate()
        tensors["rng/python"] = torch.tensor(python_state, dtype=torch.int64)
        info = {
            "num_timesteps": int(self.num_timesteps),
            "n_updates": int(self._n_updates),
            "pretrain_budget": int(self._pretrain_budget),
            "numpy_rng": {
                "kind": kind, "pos": int(pos), "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached_gaussian),
            },
            "python_rng": {"version": int(version), "gauss_next": gauss_next},
        }
        return tensors, info

    def restore_training_state(self, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        """Set the counters and RNG states of `training_state()` on an agent built with the same arguments
        and holding the saved weights and optimizer states.

        As SB3's `load` does, the model is set up again once the counters are in place, so that phase
        switches already passed are applied again (a recipe's `finish`, e.g. PSQN's frozen backbone; SPOT's
        frozen VAE); the weights and optimizer states are carried over that set-up unchanged.
        """
        import random

        counters = {name: int(info[name]) for name in ("num_timesteps", "n_updates", "pretrain_budget")}
        if counters != self.training_counters:  # zoo.checkpoint's load sets them before its set-up already
            parameters = self.get_parameters()
            self.num_timesteps, self._n_updates = counters["num_timesteps"], counters["n_updates"]
            self._pretrain_budget = counters["pretrain_budget"]
            self._setup_model()
            self.set_parameters(parameters, exact_match=True, device=self.device)
        torch.set_rng_state(tensors["rng/torch"].cpu())
        self.random.set_state([tensors[f"rng/member/{k}"] for k in range(self.n_members) if f"rng/member/{k}" in tensors])
        cuda = [tensors[f"rng/cuda/{i}"].cpu() for i in range(len(tensors)) if f"rng/cuda/{i}" in tensors]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
        numpy_rng = info["numpy_rng"]
        np.random.set_state((
            numpy_rng["kind"], tensors["rng/numpy"].numpy().astype(np.uint32), numpy_rng["pos"],
            numpy_rng["has_gauss"], numpy_rng["cached_gaussian"],
        ))
        python_rng = info["python_rng"]
        python_state = tuple(tensors["rng/python"].tolist())
        random.setstate((python_rng["version"], python_state, python_rng["gauss_next"]))

    def resume_blocker(self) -> str | None:
        """Why a training state taken now would not resume exactly, or None when it would.

        The one case: soft-imitate between its BC and critic phases, whose soft Monte-Carlo returns were
        computed once at the switch from sampled actions and live only in the replay table.
        """
        recipe = self.pretraining
        if recipe is None or recipe.key != "soft-imitate":
            return None
        if recipe.bc_steps(self) < self._n_updates <= self.pretrain_until:
            return (
                f"soft-imitate's critic phase (updates {recipe.bc_steps(self) + 1}..{self.pretrain_until}) "
                "trains on soft returns drawn once at its start, which a training state does not hold"
            )
        return None

    # ------------------------------------------------------------------ the training loop

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        """SB3's set-up without the env reset: offline, a timestep is one gradient step."""
        self.start_time = time.time_ns()
        if self.ep_info_buffer is None or reset_num_timesteps:
            self.ep_info_buffer = deque(maxlen=self._stats_window_size)
            self.ep_success_buffer = deque(maxlen=self._stats_window_size)
        if reset_num_timesteps:
            self.num_timesteps = 0
        else:
            total_timesteps += self.num_timesteps
        if self._n_updates == 0 and total_timesteps > 0:
            self._pretrain_budget = total_timesteps
        self._total_timesteps = total_timesteps
        self._num_timesteps_at_start = self.num_timesteps
        self._update_current_progress_remaining(self.num_timesteps, max(total_timesteps, 1))
        if not self._custom_logger:
            self._logger = sb3_utils.configure_logger(
                self.verbose, self.tensorboard_log, tb_log_name, reset_num_timesteps
            )
        return total_timesteps, self._init_callback(callback, progress_bar)

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool = False) -> BaseCallback:
        if isinstance(callback, list):
            callback = CallbackList(callback)
        if not isinstance(callback, BaseCallback):
            callback = ConvertCallback(callback)
        if progress_bar:
            callback = CallbackList([callback, GradientStepProgressBar()])
        callback.init_callback(self)
        return callback

    def learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1000,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ):
        """Run `total_timesteps` offline gradient steps on the dataset.

        Callbacks see one `on_step` per gradient step; `log_interval` is in gradient steps.
        """
        self._prepare_table()
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name or type(self).__name__, progress_bar
        )
        callback.on_training_start(locals(), globals())
        scheduled_lr = callable(self.learning_rate) or self.member_lr_schedules is not None
        optimizers = [getattr(self.policy, name) for name in self.policy.optimizer_names]
        while self.num_timesteps < total_timesteps:
            if scheduled_lr:  # SB3 schedules take the remaining progress, 1 -> 0
                self._update_learning_rate(optimizers)
            self.policy.set_training_mode(True)  # a callback's predict() (evaluation) switches it off
            self.train(gradient_steps=1, batch_size=self.batch_size)
            self.num_timesteps += 1
            self._update_current_progress_remaining(self.num_timesteps, self._total_timesteps)
            callback.update_locals(locals())
            if not callback.on_step():
                break
            if log_interval and self.num_timesteps % log_interval == 0:
                self._dump_logs()
        callback.on_training_end()
        self.policy.set_training_mode(False)
        return self

    def finetune(
        self,
        total_timesteps: int,
        env: gym.Env | None = None,
        callback: MaybeCallback = None,
        log_interval: int = 1000,
        tb_log_name: str | None = None,
        progress_bar: bool = False,
    ):
        """Online fine-tuning: `total_timesteps` environment steps, each followed by `online_utd_ratio`
        gradient steps on batches mixing offline and online transitions.

        The environment is the dataset's (its task's env id) unless given. Online transitions are
        normalised with the offline statistics and stored on the device; a time-limit end is stored as a
        truncation (bootstrapped), only a termination stops the TD target. Callbacks see one `on_step`
        per environment step, so `EvalCallback(eval_freq=...)` counts environment steps here.

        A population runs every member's env side by side (`env`: None, or a list of one env per member):
        one batched policy call per step for all members, each member's transitions in its own online rows,
        its episodes reset with its own seed; `total_timesteps` counts steps of each member's env.
        """
        envs = self._finetune_envs(env)
        if self.dataset is not None:
            self._prepare_table()
        elif self.online_mixing_ratio > 0:
            raise ValueError(
                f"online_mixing_ratio={self.online_mixing_ratio} mixes in offline data, "
                "but this agent has no dataset: load it with load(path, dataset=...), "
                "or set online_mixing_ratio=0."
            )
        else:  # no offline table: the online rows carry the base columns and the agent's online columns
            obs_dim, act_dim = self.policy.obs_dim, self.policy.act_dim
            self.replay.set_layout(
                {"observations": obs_dim, "actions": act_dim, "rewards": 1, "next_observations": obs_dim,
                 "terminations": 1, **self._online_column_widths()}
            )
        self.replay.start_online(total_timesteps, self.n_members if self.is_population else None)
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, True, tb_log_name or f"{type(self).__name__}_finetune", progress_bar
        )
        self._on_finetune_start()
        callback.on_training_start(locals(), globals())
        lanes = range(len(envs))  # one per member (an ordinary agent: one)
        seeds = self.member_seeds if self.is_population else [self.seed]
        observations = [env.reset(seed=seed)[0] for env, seed in zip(envs, seeds)]
        episode_returns, episode_lengths = [0.0 for _ in lanes], [0 for _ in lanes]
        while self.num_timesteps < total_timesteps:
            self.policy.set_training_mode(False)
            actions = self._explore_lanes(observations)
            steps = [env.step(action) for env, action in zip(envs, actions)]
            next_observations = [step[0] for step in steps]
            rewards = [float(step[1]) for step in steps]
            ended = [bool(step[2] or step[3]) for step in steps]
            if self.is_population:
                self.store_transition(
                    np.stack(observations), np.stack(actions), np.asarray(rewards, dtype=np.float32),
                    np.stack(next_observations), np.asarray([float(step[2]) for step in steps], dtype=np.float32),
                )
            else:
                self.store_transition(observations[0], actions[0], steps[0][1], next_observations[0], steps[0][2])
            for k in lanes:
                episode_returns[k] += rewards[k]
                episode_lengths[k] += 1
            if not self.online_rows_wait_for_episode_end:
                self.replay.release()
            else:
                for k in (k for k in lanes if ended[k]):
                    stop = self.replay.online_size
                    if self.is_population:
                        self._on_online_episode_end(stop - episode_lengths[k], stop, k)
                        self.replay.release(k)
                    else:  # the hook's signature for ordinary agents: (start, stop)
                        self._on_online_episode_end(stop - episode_lengths[k], stop)
                        self.replay.release()
            self.num_timesteps += 1
            self.policy.set_training_mode(True)
            if self.replay.can_sample:  # else nothing can be sampled yet
                self.train(gradient_steps=self.online_utd_ratio, batch_size=self.batch_size)
            self._update_current_progress_remaining(self.num_timesteps, self._total_timesteps)
            callback.update_locals(locals())
            if not callback.on_step():
                break
            for k in (k for k in lanes if ended[k]):
                self.ep_info_buffer.append({"r": episode_returns[k], "l": episode_lengths[k]})
                self.record(online_episode_return=torch.tensor(episode_returns[k]))
                episode_returns[k], episode_lengths[k] = 0.0, 0
                next_observations[k], _ = envs[k].reset()
            observations = next_observations
            if log_interval and self.num_timesteps % log_interval == 0:
                self._dump_logs()
        callback.on_training_end()
        self.policy.set_training_mode(False)
        return self

    def _finetune_envs(self, env: gym.Env | list[gym.Env] | None) -> list[gym.Env]:
        """The env of each member (an ordinary agent: its one env), made from the dataset's task when not
        given, checked against the agent's spaces."""
        count = self.n_members if self.is_population else 1
        if env is None:
            if self.task is None:
                raise ValueError(
                    "finetune() needs an environment: pass env=gym.make('<id>'), or train on a dataset whose "
                    "task names its environment."
                )
            envs = [make_env(self.task.env_id) for _ in range(count)]
        elif self.is_population:
            envs = list(env) if isinstance(env, (list, tuple)) else []
            if len(envs) != count:
                raise UserError(
                    f"A population of {count} fine-tunes in one env per member: pass env=[...] with {count} "
                    "envs, or env=None for the dataset's."
                )
        else:
            envs = [env]
        for each in envs:
            self.check_spaces(
                each.observation_space, each.action_space, "the env",
                "fine-tune in the environment of the agent's dataset, or wrap the env so that its bounds match "
                "(gymnasium.wrappers.RescaleAction for actions).",
            )
        return envs

    def _explore_lanes(self, observations: list[np.ndarray]) -> list[np.ndarray]:
        """Each member's online action for its env observation: `explore` for an ordinary agent, one
        batched `explore_members` call for a population."""
        if not self.is_population:
            return [self.explore(observations[0])]
        return list(self.explore_members(np.stack(observations)))

    # ------------------------------------------------------------------ populations (zoo.agents.population)

    def member(self, k: int) -> "OfflineAlgorithm":
        """Member k of a population as an ordinary agent (its weights, optimizer moments, settings, seed)."""
        from zoo.agents.population import member_agent

        return member_agent(self, k)

    def predict_members(self, observations: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """A population's actions for (K, n, obs_dim) observations, member k acting on row k, in one call."""
        from zoo.agents.population import predict_members

        return predict_members(self, observations, deterministic)

    def explore(self, observation: np.ndarray) -> np.ndarray:
        """The action taken online for one env observation (in the env's bounds); agents define it."""
        raise NotImplementedError(f"{type(self).__name__} does not define how it explores online.")

    def explore_members(self, observations: np.ndarray) -> np.ndarray:
        """A population's online actions, (K, obs_dim) -> (K, act_dim), member k's as `explore` of a
        population of one would give; agents define it."""
        raise NotImplementedError(f"{type(self).__name__} does not define how a population explores online.")

    def _on_finetune_start(self) -> None:
        """Hook for agents whose losses change between the offline and the online phase."""

    def _online_column_widths(self) -> dict[str, int]:
        """Columns beyond the base five that online rows need when there is no offline table (Cal-QL's
        Monte-Carlo returns); with a table, online rows take the table's layout."""
        return {}

    def _on_online_episode_end(self, start: int, stop: int, member: int | None = None) -> None:
        """Hook: online rows [start, stop) (a population's: of member k) form a finished episode (fill
        whole-episode columns here)."""

    def store_transition(self, obs, action, reward, next_obs, terminated) -> None:
        """One env transition into the online rows, as the losses see it: actions scaled to [-1, 1],
        rewards transformed, observations normalised on the device (extra columns, e.g. MC returns, 0). A
        population stores one per member: every value with a leading member axis."""
        normalize = self.policy.normalize_observations
        self.replay.append(
            {
                "observations": obs,
                "actions": self.policy.scale_action(np.asarray(action)),
                "rewards": self.transform_rewards(reward),
                "next_observations": next_obs,
                "terminations": np.asarray(terminated, dtype=np.float32),
            },
            {"observations": normalize, "next_observations": normalize},
        )

    def train(self, gradient_steps: int, batch_size: int) -> None:
        """`gradient_steps` updates, each on a fresh batch (SB3's name for the update loop)."""
        for _ in range(gradient_steps):
            self._n_updates += 1
            self.update(self.sample(batch_size))

    def update(self, batch: Batch) -> None:
        """One gradient step: the pretraining recipe's while its phase lasts, else the agent's `rl_update`."""
        if not self.pretraining_step(batch):
            self.rl_update(batch)

    def rl_update(self, batch: Batch, critic_loss: torch.Tensor | None = None) -> Any:
        """The agent's own update on one batch (a recipe may pass its own critic objective)."""
        raise NotImplementedError

    def pretraining_step(self, batch: Batch) -> bool:
        """Run the pretraining recipe's update while its phase lasts; True when it did.

        `_n_updates` counts from 1, so updates 1..pretrain_until are pretraining and the agent's own
        losses take over at update pretrain_until + 1 (where the recipe's `finish` runs once).
        """
        if self.pretraining is None:
            return False
        if self._n_updates > self.pretrain_until:
            if self._n_updates == self.pretrain_until + 1:
                self.pretraining.finish(self)
            return False
        self.pretraining.update(self, batch)
        return True

    def _update_learning_rate(self, optimizers) -> None:
        """SB3's: every given optimizer's rate <- lr_schedule(progress remaining, 1 -> 0). In a population
        whose members follow schedules, member k's rate <- its own schedule's value (MemberAdam's per-member
        rates), as member k alone would set it."""
        if self.member_lr_schedules is None:
            super()._update_learning_rate(optimizers)
            return
        progress = self._current_progress_remaining
        rates = torch.tensor([rate(progress) for rate in self.member_lr_schedules], dtype=torch.float32)
        self.logger.record("train/learning_rate", float(rates[0]))
        for optimizer in optimizers:
            optimizer.set_member_lr(rates)

    @property
    def n_updates(self) -> int:
        """Gradient steps taken so far (SB3's `_n_updates`), read-only."""
        return self._n_updates

    # ------------------------------------------------------------------ steps a recipe or component may take

    def critic_step(self, loss: torch.Tensor) -> None:
        """One Adam step of the critics on `loss` (its graph reaches only critic weights)."""
        optimizer = self.policy.critic_optimizer
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def actor_step(self, loss: torch.Tensor) -> None:
        """One Adam step of the actor on `loss`; gradients reach only the actor's weights."""
        optimizer = self.policy.actor_optimizer
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=self._actor_params)
        optimizer.step()

    @torch.no_grad()
    def update_targets(self, pairs: tuple[list, list] | None = None) -> None:
        """Polyak averaging of the target networks (`pairs`: other (targets, sources), e.g. OPT's); in a
        population whose members' tau differ, member k's slices move by its own tau. Without autograd: an
        in-place lerp from sources that require a gradient would otherwise give every target weight a
        grad_fn, a history one node longer per update (and a deep copy of the agent leaf weights that
        refuse in-place updates)."""
        targets, sources = pairs or self.target_pairs
        if not isinstance(self.tau, torch.Tensor):
            self.soft_update(targets, sources, self.tau)
            return
        rows = [member_rows(self.tau, target, self.n_members) for target in targets]
        steps = torch._foreach_sub(sources, targets)
        torch._foreach_mul_(steps, rows)
        torch._foreach_add_(targets, steps)

    @property
    def pretrain_until(self) -> int:
        """The last gradient step of the pretraining phase."""
        if isinstance(self.pretrain_steps, float) and self.pretrain_steps < 1.0:
            return int(round(self.pretrain_steps * self._pretrain_budget))
        return int(self.pretrain_steps)

    @staticmethod
    @torch.no_grad()
    def soft_update(targets: list[torch.Tensor], sources: list[torch.Tensor], tau: float) -> None:
        """target <- target + tau * (source - target), one foreach kernel for all tensors."""
        torch._foreach_lerp_(targets, sources, tau)
