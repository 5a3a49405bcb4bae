"""Populations: K independent agents of one class (seeds, or tuning trials) trained as one batched agent.

`build_population(cls, dataset, seeds, member_kwargs)`:
1. builds every member as an ordinary agent with its own seed and settings (every check of the ordinary
   constructor runs for each member);
2. checks that the members agree on what shapes the networks or the control flow of an update (network
   sizes, the number of critics, any whole-number, boolean or string setting, the pretraining schedule):
   anything else, every float hyperparameter, may differ per member;
3. builds one agent of the class with `n_members = K` whose networks are one batched module per network
   (member k's weights are the slices k of each stacked parameter), starting from the members' own initial
   weights; its optimizers step each member with that member's learning rates (zoo.nn.members.MemberAdam),
   and every float setting that differs between members becomes a (K,) tensor the losses broadcast per member
   (zoo.nn.members.per_member). Learning rates may be SB3 schedules (callables of the remaining progress),
   per member: each member's rate follows its own schedule (`member_lr_schedules`).

Why member k trains as a population of one with seed k would: its weights start as an ordinary agent's with
seed k; its batches and noise come from its own generator (zoo.nn.members.MemberRandom); the population's loss
is the sum of its members' losses, each computed from the member's own slices, so member k's gradient is its
own; and its optimizer moments and learning rates are its own slices too.

`member_agent(population, k)` gives member k back as an ordinary agent (weights, optimizer moments, counters,
settings, seed), which the zoo's checkpoint format saves like any other.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from zoo.agents.sb3_zip import NOT_RECORDED, constructor_parameters
from zoo.errors import ConfigError
from zoo.nn.members import MemberAdam

if TYPE_CHECKING:
    from zoo.agents.base import OfflineAlgorithm
    from zoo.data.dataset import OfflineDataset

# Settings that must agree within a population although they are floats: they pick phases, or they shape
# the one data table all members sample from (rewards are transformed once, into the shared table), not
# numbers inside a loss (an agent class adds its own in `population_shared`).
SHARED_FLOATS = frozenset({"pretrain_steps", "reward_scale", "reward_bias"})
# Attributes that differ between members by design, or that the population carries elsewhere (the
# learning rates live in the optimizers, one per member).
_PER_MEMBER_ELSEWHERE = frozenset({"seed", "_explore_rng"})


def _is_learning_rate(name: str) -> bool:
    """An agent's optimizer learning-rate setting (learning_rate, actor_learning_rate, density_learning_rate,
    ...): its per-member values live in the optimizers. (OPT's inner_lr is a step size inside a loss, an
    ordinary per-member float; the policies' actor_lr/critic_lr/... sit in policy_kwargs.)"""
    return "learning_rate" in name


def _is_float(value: Any) -> bool:
    return isinstance(value, float) and not isinstance(value, bool)


def _plain(value: Any) -> bool:
    """A settings value compared between members (objects such as networks or datasets are not)."""
    if isinstance(value, (int, float, str, bool, type(None))):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _differs(values: Sequence[Any]) -> bool:
    first = values[0]
    return any(
        not (v == first or (_is_float(v) and _is_float(first) and math.isnan(v) and math.isnan(first)))
        for v in values[1:]
    )


def _refuse(name: str, values: Sequence[Any], seeds: Sequence[int]) -> ConfigError:
    shown = ", ".join(f"seed {s}: {v!r}" for s, v in zip(seeds, values))
    return ConfigError(
        f"The members of a population differ in '{name}' ({shown}): a population shares its network sizes, "
        "its data table and every setting that picks a phase or a branch; give all members the same "
        f"'{name}', or train them as separate populations."
    )


def _per_member_floats(
    objects: Sequence[Any], shared: frozenset[str], seeds: Sequence[int]
) -> dict[str, list[float]]:
    """The float attributes that differ between `objects` (one per member); a difference anywhere else is
    refused (ConfigError naming the setting)."""
    varying: dict[str, list[float]] = {}
    for name, first in vars(objects[0]).items():
        if name in _PER_MEMBER_ELSEWHERE or not _plain(first):
            continue
        values = [vars(o).get(name) for o in objects]
        if not _differs(values):
            continue
        if name in ("policy_kwargs", "pretrain_kwargs"):
            for key in first:
                entries = [v.get(key) for v in values]
                if _differs(entries) and not all(_is_float(e) for e in entries):
                    raise _refuse(f"{name}.{key}", entries, seeds)
            # float policy settings (learning rates, initial temperatures) live in optimizers/weights; a
            # recipe's float options in the recipe's attributes (compared with the recipes below)
            continue
        if _is_learning_rate(name) and all(_is_float(v) or callable(v) or v is None for v in values):
            if any(v is None for v in values):
                raise _refuse(name, values, seeds)
            continue
        if name in shared or not all(_is_float(v) for v in values):
            raise _refuse(name, values, seeds)
        varying[name] = values
    return varying


def build_population(
    cls: type["OfflineAlgorithm"],
    dataset: "OfflineDataset",
    seeds: Sequence[int],
    member_kwargs: Sequence[Mapping[str, Any]],
) -> "OfflineAlgorithm":
    """K = len(seeds) agents of `cls` on `dataset` as one population; member k is built as
    `cls(dataset, seed=seeds[k], **member_kwargs[k])` would be (see the module docstring)."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("A population needs at least one seed (e.g. seeds=[0, 1, 2, 3]).")
    if len(member_kwargs) != len(seeds):
        raise ConfigError(f"{len(member_kwargs)} member settings for {len(seeds)} seeds: give one per seed.")
    member_kwargs = [{k: v for k, v in kwargs.items() if k != "seed"} for kwargs in member_kwargs]
    # Members may share a seed when their settings differ (zoo tune --batch: every trial on seeds 0..K-1, the
    # same random numbers for every configuration, as sequential trials get); each member has its own
    # generator, so equal seeds give equal, independent streams. The same seed and settings twice is a mistake.
    if any(seeds[i] == seeds[j] and member_kwargs[i] == member_kwargs[j]
           for i in range(len(seeds)) for j in range(i)):
        raise ConfigError(f"The seeds of a population must differ (got {seeds}): member k draws from seed k.")
    members = [cls(dataset, seed=seed, **kwargs) for seed, kwargs in zip(seeds, member_kwargs)]
    shared = SHARED_FLOATS | frozenset(cls.population_shared)
    varying = _per_member_floats(members, shared, seeds)
    recipes = [m.pretraining for m in members]
    recipe_shared = shared | frozenset(getattr(recipes[0], "population_shared", ()))  # e.g. bc_fraction
    recipe_varying = _per_member_floats(recipes, recipe_shared, seeds) if recipes[0] is not None else {}

    population = cls(dataset, seed=seeds[0], _init_setup_model=False, **member_kwargs[0])
    population.n_members, population.is_population, population.member_seeds = len(seeds), True, seeds
    population._setup_model()
    population.member_hyperparameters = [member_settings(m) for m in members]
    if any(callable(m.learning_rate) for m in members):  # each member's SB3 schedule (constant if a number)
        population.member_lr_schedules = [m.lr_schedule for m in members]
    population._member_kwargs = [{**kwargs, "seed": seed} for seed, kwargs in zip(seeds, member_kwargs)]

    device = population.device
    with torch.no_grad():
        member_states = [m.policy.state_dict() for m in members]
        for name, tensor in population.policy.state_dict().items():
            stacked = torch.stack([state[name].to(device) for state in member_states])
            tensor.copy_(stacked.view(tensor.shape) if stacked.numel() == tensor.numel() else stacked[0])
    for name in population.policy.optimizer_names:
        optimizer = getattr(population.policy, name)
        lrs = [getattr(m.policy, name).param_groups[0]["lr"] for m in members]
        optimizer.set_member_lr(torch.tensor(lrs, dtype=torch.float32))
    for name, values in varying.items():
        setattr(population, name, torch.tensor(values, dtype=torch.float32, device=device))
    for name, values in recipe_varying.items():
        setattr(population.pretraining, name, torch.tensor(values, dtype=torch.float32, device=device))
    # (set again by set_population_counters, which sets the model up anew)
    population._member_varying = (tuple(varying), tuple(recipe_varying))
    return population


def member_learning_rates(population: "OfflineAlgorithm") -> dict[str, list[float]]:
    """Each optimizer's per-member learning rates (MemberAdam.member_lr), by optimizer name."""
    policy = population.policy
    return {name: getattr(policy, name).member_lr.tolist() for name in policy.optimizer_names}


def set_member_learning_rates(population: "OfflineAlgorithm", rates: Mapping[str, Sequence[float]]) -> None:
    """Give every optimizer its members' learning rates (`member_learning_rates`' mapping)."""
    for name in population.policy.optimizer_names:
        getattr(population.policy, name).set_member_lr(torch.tensor(list(rates[name]), dtype=torch.float32))


def set_population_counters(population: "OfflineAlgorithm", counters: Mapping[str, int]) -> None:
    """Put a freshly built population at `counters` (num_timesteps, n_updates, pretrain_budget) before a
    training state's weights and optimizer moments are loaded into it.

    As zoo.checkpoint's load of an ordinary agent does (counters set before its set-up), the model is set up
    again with the counters in place, so that phase switches already passed apply (a recipe's `finish`,
    e.g. PSQN's frozen backbone; SPOT's frozen VAE) and the optimizers hold the parameter groups of that
    phase. What build_population put on top of the set-up survives it: the members' learning rates and the
    per-member (K,) settings of the agent and of its recipe. The weights are the set-up's fresh ones until
    the state's are loaded.
    """
    counters = {name: int(counters[name]) for name in ("num_timesteps", "n_updates", "pretrain_budget")}
    if counters == population.training_counters:
        return
    rates = member_learning_rates(population)
    agent_names, recipe_names = getattr(population, "_member_varying", ((), ()))
    agent_values = {name: getattr(population, name) for name in agent_names}
    recipe_values = {name: getattr(population.pretraining, name) for name in recipe_names}
    population.num_timesteps, population._n_updates = counters["num_timesteps"], counters["n_updates"]
    population._pretrain_budget = counters["pretrain_budget"]
    population._setup_model()
    for name, value in agent_values.items():
        setattr(population, name, value)
    for name, value in recipe_values.items():
        setattr(population.pretraining, name, value)
    set_member_learning_rates(population, rates)


def member_settings(agent: "OfflineAlgorithm") -> dict[str, Any]:
    """Every constructor argument of an ordinary agent, read from its attributes (what it trains with)."""
    return {
        name: getattr(agent, name)
        for name in constructor_parameters(type(agent))
        if name not in NOT_RECORDED and hasattr(agent, name)
    }


def member_agent(population: "OfflineAlgorithm", k: int) -> "OfflineAlgorithm":
    """Member k of `population` as an ordinary agent: its settings and seed, its slices of every weight and
    optimizer moment, the population's counters and dataset."""
    if not population.is_population:
        raise ConfigError("member(k) is a population's: this agent is an ordinary agent.")
    n = population.n_members
    if not 0 <= k < n:
        raise ConfigError(f"member({k}): this population has members 0..{n - 1}.")
    counters = population.training_counters
    agent = type(population).rebuild(
        {name: v for name, v in population._member_kwargs[k].items() if name != "device"},  # passed below
        population.observation_space,
        population.action_space,
        dataset=population.dataset,
        device=population.device,
        dataset_id=population.dataset_id,
        task=population.task,
        num_timesteps=counters["num_timesteps"],
        n_updates=counters["n_updates"],
        pretrain_budget=counters["pretrain_budget"],
    )
    with torch.no_grad():
        source = population.policy.state_dict()
        for name, tensor in agent.policy.state_dict().items():
            stacked = source[name]
            tensor.copy_(stacked.view(n, *tensor.shape)[k] if stacked.numel() == n * tensor.numel() else stacked)
    for name in population.policy.optimizer_names:
        _copy_member_moments(getattr(population.policy, name), getattr(agent.policy, name), k, n)
    # Member k's random stream goes on in the ordinary agent (the next batch is the one member k would draw).
    agent.random.set_state([population.random.get_state()[k]])
    if hasattr(population, "_explore_rngs"):
        agent._explore_rng = copy.deepcopy(population._explore_rngs[k])
    return agent


def _copy_member_moments(source: MemberAdam, target: torch.optim.Optimizer, k: int, n: int) -> None:
    """Member k's Adam moments and step count into an ordinary agent's Adam."""
    for source_group, target_group in zip(source.param_groups, target.param_groups):
        for stacked, param in zip(source_group["params"], target_group["params"]):
            state = source.state.get(stacked)
            if not state:
                continue
            target.state[param] = {
                "step": state["step"].detach().clone().to(param.device),
                "exp_avg": state["exp_avg"].view(n, *param.shape)[k].clone(),
                "exp_avg_sq": state["exp_avg_sq"].view(n, *param.shape)[k].clone(),
            }


def predict_members(
    population: "OfflineAlgorithm", observations: np.ndarray, deterministic: bool = True
) -> np.ndarray:
    """Actions of every member for its own observations in one policy call: (K, n, obs_dim) raw env
    observations -> (K, n, act_dim) actions in the env's bounds."""
    observations = np.asarray(observations, dtype=np.float32)
    expected = (population.n_members, population.policy.obs_dim)
    if observations.ndim != 3 or (observations.shape[0], observations.shape[2]) != expected:
        raise ConfigError(
            f"predict_members takes (members, n, obs_dim) = ({expected[0]}, n, {expected[1]}) observations, "
            f"got {observations.shape}."
        )
    policy = population.policy
    policy.set_training_mode(False)
    with torch.no_grad():
        actions = policy._predict(torch.as_tensor(observations, device=population.device), deterministic)
    return policy.unscale_action(np.clip(actions.cpu().numpy(), -1.0, 1.0))
