"""Search spaces for `zoo tune`: one per agent key, as data.

A space maps a setting to a distribution. Names are the keys of `hyperparams/<algo>.yml` (and of
`zoo train --set`); a dotted name such as `policy_kwargs.n_critics` is a key of a nested mapping and is
merged key by key like the YAML does. Four distributions, as Optuna samples them:

    Float(low, high)            uniform on [low, high]
    Float(low, high, log=True)  log-uniform: uniform in log(x), for scales (weights, learning rates)
    Int(low, high, step=1)      integers low, low + step, ..., high
    Categorical([a, b, ...])    one of a finite set (numbers, booleans, strings)

plus `Given("other", {value_of_other: value, ...})`, a setting that follows another instead of being
searched (OPT's final kappa is 1.0 when its start is 1.0, else 0.9). Any searched entry may carry
`when={"other": [values...]}`: it is drawn only in trials where `other` was drawn with one of those values
(CQL's Lagrange threshold exists only with the Lagrange multiplier on). Entries are drawn in the order
written, so a condition names an entry above it.

Where a paper or its official configs publish values, the range spans them; each space says where its
values come from (../shared/research/seed-methods.md and baselines.md hold the tables). A range wider than
the published values is said to be so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zoo.errors import ConfigError


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False
    when: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def __post_init__(self):
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ConfigError(
                f"Float({self.low}, {self.high}, log={self.log}): need 0 < low < high for log, low < high."
            )


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    step: int = 1
    log: bool = False
    when: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def __post_init__(self):
        if not self.low < self.high or self.step < 1 or (self.high - self.low) % self.step:
            raise ConfigError(
                f"Int({self.low}, {self.high}, step={self.step}): need low < high, high - low a multiple of step."
            )


@dataclass(frozen=True)
class Categorical:
    choices: tuple[Any, ...]
    when: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "choices", tuple(self.choices))
        if len(self.choices) < 2:
            raise ConfigError(f"Categorical{self.choices}: give two choices or more.")


@dataclass(frozen=True)
class Given:
    on: str
    values: Mapping[Any, Any]
    when: Mapping[str, Sequence[Any]] = field(default_factory=dict)


Distribution = Float | Int | Categorical | Given
Space = dict[str, Distribution]

# TD3+BC's alpha (weight of Q against behaviour cloning: lambda = alpha / mean|Q|). The TD3+BC paper uses
# 2.5 on every task; the imitate-then-improve configs (EfficientOfflineRL) use 20 (halfcheetah), 10 (hopper),
# 5 (walker2d) and 1 (Adroit) [seed-methods.md §2 table]. The range spans 1..20 on a log scale.
_TD3BC_ALPHA = Float(1.0, 20.0, log=True)
# Learning rate of actor and critics: 3e-4 in every reference config; searched over half a decade each side.
_LEARNING_RATE = Float(1e-4, 1e-3, log=True)
# CQL's conservative weight: CORL's configs use 10 (Gym), 5 (AntMaze, with the Lagrange multiplier), 1 (Adroit);
# Cal-QL: 5 (AntMaze, Lagrange), 1 (Adroit), 5 (Kitchen) [baselines.md §4 (b), seed-methods.md §4].
_CQL_WEIGHT = Float(1.0, 10.0, log=True)
# The Lagrange variant tunes the multiplier so the CQL gap meets a target: 0.8 in CORL/Cal-QL's AntMaze configs,
# 1.0 in young-geng/CQL's defaults. The range reaches 10 (wider than these configs: the gap scales with the
# reward scale, larger on dense locomotion rewards). Only drawn when cql_lagrange is on.
_CQL_GAP = Float(0.5, 10.0, log=True, when={"cql_lagrange": [True]})

SPACES: dict[str, Space] = {
    # TD3 (the online fine-tuning and ExoRL base): no paper sweep; the two settings most runs change.
    "td3": {
        "learning_rate": _LEARNING_RATE,
        "batch_size": Categorical([256, 512, 1024]),
    },
    "td3bc": {
        "alpha": _TD3BC_ALPHA,
        "learning_rate": _LEARNING_RATE,
    },
    # First imitate, then improve (Jelley et al.): alpha (their configs: 5, 10, 20); lambda = td_weight, the
    # TD share of the pretraining critic loss (0 is pure Monte-Carlo, the paper's best; 1 pure TD); the
    # pretraining length as a share of the budget (their runs: 10k-50k of 0.5M-1M steps, i.e. 0.01-0.1).
    "td3bc-mc": {
        "alpha": Float(2.5, 20.0, log=True),
        "pretrain_kwargs.td_weight": Float(0.0, 1.0),
        "pretrain_steps": Float(0.01, 0.1, log=True),
    },
    # The same paper's own baseline (LayerNorm networks and alpha of td3bc-mc, no pretraining).
    "td3bc-ln": {
        "alpha": Float(2.5, 20.0, log=True),
        "learning_rate": _LEARNING_RATE,
    },
    # PSQN (Park, Park & Lee): the share of the budget spent pretraining the shared Q backbone (paper default
    # 0.1, the "pretraining time-step ratio"; searched 0.02-0.3, wider than the paper's one value) and the
    # base TD3+BC's alpha.
    "psqn": {
        "pretrain_steps": Float(0.02, 0.3, log=True),
        "alpha": _TD3BC_ALPHA,
    },
    # SPOT (Wu et al.): lambda, the weight of the VAE's -log pi_beta; the official per-dataset values run from
    # 0.025 (AntMaze large) to 1.0 (halfcheetah-medium-expert, Adroit) [baselines.md §5 (b)]; the online
    # cooling floor is 0.2 (official AntMaze) or 0.5 (CORL Adroit).
    "spot": {
        "lambd": Float(0.025, 1.0, log=True),
        "lambd_end": Categorical([0.2, 0.5]),
    },
    # CQL (Kumar et al., CORL's SAC-based version): weight, optional Lagrange multiplier with its target gap,
    # actor learning rate (CORL 3e-5 Gym, 1e-4 AntMaze/Adroit; young-geng/CQL 3e-4).
    "cql": {
        "cql_weight": _CQL_WEIGHT,
        "cql_lagrange": Categorical([False, True]),
        "cql_target_action_gap": _CQL_GAP,
        "actor_learning_rate": Categorical([3e-5, 1e-4, 3e-4]),
    },
    # Cal-QL (Nakamoto et al.): the same CQL settings; official actor learning rate 1e-4.
    "calql": {
        "cql_weight": _CQL_WEIGHT,
        "cql_lagrange": Categorical([False, True]),
        "cql_target_action_gap": _CQL_GAP,
        "actor_learning_rate": Categorical([3e-5, 1e-4, 3e-4]),
    },
    # OPT (Shin et al.): the kappa schedule, the weight of the new online critic in the actor's Q, by dataset
    # quality in the paper's App. H (via seed-methods.md §3 (b)): random 1.0 fixed; medium 0.3 -> 0.9 and
    # medium-replay 0.1 -> 0.9 over 150k env steps; AntMaze 0.1 -> 0.9 over 100k/200k, Adroit over 250k.
    "opt": {
        "kappa_start": Categorical([0.1, 0.3, 1.0]),
        "kappa_end": Given("kappa_start", {0.1: 0.9, 0.3: 0.9, 1.0: 1.0}),
        # the ramp length matters only when kappa moves (start < end)
        "kappa_steps": Categorical([100_000, 150_000, 200_000, 250_000], when={"kappa_start": [0.1, 0.3]}),
        "alpha": _TD3BC_ALPHA,
    },
    # OPT on SPOT (AntMaze, Adroit): kappa 0.1 or 0.3 -> 0.9 over 100k-250k, and SPOT's lambda.
    "opt-spot": {
        "kappa_start": Categorical([0.1, 0.3]),
        "kappa_steps": Categorical([100_000, 150_000, 200_000, 250_000]),
        "lambd": Float(0.025, 1.0, log=True),
    },
    # EDAC (An et al.): N critics and eta, the weight of the ensemble gradient-diversity term. Official and CORL
    # configs: N 10/50 with eta 1 or 5 on Gym, N 20/50 with eta 10/200/1000 on Adroit; eta 0 is SAC-N
    # [baselines.md §6 (b)]. eta is categorical over exactly those values (0 cannot sit on a log scale).
    "edac": {
        "policy_kwargs.n_critics": Categorical([10, 20, 50]),
        "eta": Categorical([0.0, 1.0, 5.0, 10.0, 200.0, 1000.0]),
    },
    # EDAC after soft imitation (Jelley et al.): N, eta, and the pretraining length as a share of the budget
    # (their runs: 20 of 1000-12000 epochs, ~0.002-0.02; searched 0.002-0.05).
    "edac-mc": {
        "policy_kwargs.n_critics": Categorical([10, 20, 50]),
        "eta": Categorical([0.0, 1.0, 5.0]),
        "pretrain_steps": Float(0.002, 0.05, log=True),
    },
}


def search_space(algo: str) -> Space:
    """The space of agent key `algo`; a one-line error naming the keys that have one."""
    try:
        return SPACES[algo]
    except KeyError:
        raise ConfigError(
            f"No search space for '{algo}'. Keys with one: {', '.join(sorted(SPACES))}."
        ) from None


def sample(trial, space: Space) -> dict[str, Any]:
    """Draw one configuration from `space` with an Optuna trial: {setting: value} for the entries whose
    conditions hold. Searched values are trial parameters; Given values are recorded in the trial's user
    attributes (key "given") so the trial states every setting it ran."""
    drawn: dict[str, Any] = {}
    given: dict[str, Any] = {}
    for key, dist in space.items():
        if not _applies(dist.when, {**drawn, **given}):
            continue
        if isinstance(dist, Given):
            source = {**drawn, **given}.get(dist.on)
            if source not in dist.values:
                raise ConfigError(
                    f"Search space: '{key}' follows '{dist.on}' but has no value for {source!r}."
                )
            given[key] = dist.values[source]
        elif isinstance(dist, Float):
            drawn[key] = trial.suggest_float(key, dist.low, dist.high, log=dist.log)
        elif isinstance(dist, Int):
            drawn[key] = trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, Categorical):
            drawn[key] = trial.suggest_categorical(key, list(dist.choices))
        else:
            raise ConfigError(
                f"Search-space entry '{key}' is {dist!r}, not Float, Int, Categorical or Given."
            )
    if given:
        trial.set_user_attr("given", given)
    return {**drawn, **given}


def _applies(when: Mapping[str, Sequence[Any]], values: dict[str, Any]) -> bool:
    return all(key in values and values[key] in allowed for key, allowed in when.items())


def nest(settings: Mapping[str, Any]) -> dict[str, Any]:
    """{"policy_kwargs.n_critics": 10, "eta": 1.0} -> {"policy_kwargs": {"n_critics": 10}, "eta": 1.0}."""
    nested: dict[str, Any] = {}
    for name, value in settings.items():
        *parents, leaf = name.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested
