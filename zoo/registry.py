"""The one registry of agents by key: the CLI, the YAML files and the tuner all resolve names here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from zoo.agents import SPOT, TD3, TD3BC, OfflineAlgorithm
from zoo.agents.cql import CQL, CalQL
from zoo.agents.edac import EDAC
from zoo.agents.opt import OPT, OPTSPOT
from zoo.agents.population import build_population
from zoo.data.dataset import OfflineDataset
from zoo.errors import ConfigError

@dataclass(frozen=True)
class AgentSpec:
    """An agent key: the class that implements it, the paper's defaults that differ from the class's, and
    the other base algorithms the method can be built on (`make_agent(key, ds, base=...)`)."""

    cls: type[OfflineAlgorithm]
    defaults: dict[str, Any] = field(default_factory=dict)
    bases: dict[str, type[OfflineAlgorithm]] = field(default_factory=dict)


# The networks of "First imitate, then improve" (AdamJelley/EfficientOfflineRL algorithms/td3_bc.py):
# LayerNorm without affine before every ReLU in actor and critics, a 3-hidden-layer actor.
_IMITATE_NETWORKS = dict(actor_net_arch=[256, 256, 256], actor_layer_norm=True, critic_layer_norm=True)
# The settings that make td3bc-mc's pretraining phase; td3bc-ln is td3bc-mc without them.
PRETRAINING_SETTINGS = ("pretrain", "pretrain_steps", "pretrain_kwargs")

AGENTS: dict[str, AgentSpec] = {
    "td3": AgentSpec(TD3),
    "td3bc": AgentSpec(TD3BC),
    # First imitate, then improve (Jelley et al.): BC actor + Monte-Carlo critic for 10k steps, then
    # TD3+BC; LayerNorm without affine before every ReLU, a 3-hidden-layer actor (EfficientOfflineRL).
    "td3bc-mc": AgentSpec(
        TD3BC, dict(pretrain="imitate", pretrain_steps=10_000, policy_kwargs=dict(_IMITATE_NETWORKS))
    ),
    # The same paper's own TD3+BC baseline: td3bc-mc's LayerNorm networks, per-dataset alpha and budget,
    # without the pretraining phase. Comparing td3bc-mc with this key isolates the pretraining; comparing it
    # with vanilla td3bc mixes architecture and alpha into the difference (EfficientOfflineRL runs its
    # baseline as td3_bc.py with the same config and no --pretrain).
    "td3bc-ln": AgentSpec(TD3BC, dict(policy_kwargs=dict(_IMITATE_NETWORKS))),
    # Pretraining a shared Q-network (Park, Park & Lee): each critic's backbone first learns to predict
    # the normalised next state (10% of the budget), then TD3+BC (D4RL) or TD3 (ExoRL: base="td3")
    # fine-tunes it; base="cql" / "calql" put the same critics under CQL (the paper's CQL variant).
    "psqn": AgentSpec(
        TD3BC,
        dict(pretrain="transition", pretrain_steps=0.1, policy_kwargs=dict(shared_q=True)),
        bases={"td3bc": TD3BC, "td3": TD3, "cql": CQL, "calql": CalQL},
    ),
    # SPOT (Wu et al.): a conditional VAE of the behaviour policy (the first vae_steps of the budget), then
    # TD3 whose actor pays lambda * the VAE's -log pi_beta estimate; lambda cooled online. Per-dataset
    # lambda in zoo/hyperparams/spot.yml.
    "spot": AgentSpec(SPOT),
    # CQL (Kumar et al.), SAC-based: the class defaults are CORL's Gym-MuJoCo baseline configuration.
    "cql": AgentSpec(CQL),
    # Cal-QL (Nakamoto et al.): CQL whose policy-action Q in the logsumexp is bounded below by the MC return;
    # the class defaults are the official code's; the bound stays on online. Settings per domain in
    # zoo/hyperparams/calql.yml.
    "calql": AgentSpec(CalQL),
    # OPT (Shin et al.): the base's offline phase unchanged, then online: n_tau frozen-policy steps, a new
    # critic Q_on pre-trained on a meta objective over offline + online data, and fine-tuning on the
    # kappa-mix of Q_off and Q_on with density-ratio balanced replay. TD3+BC base (MuJoCo) or SPOT
    # (AntMaze, Adroit: "opt-spot"); kappa schedules per dataset in zoo/hyperparams/opt.yml, opt-spot.yml.
    "opt": AgentSpec(OPT, bases={"td3bc": OPT, "spot": OPTSPOT}),
    "opt-spot": AgentSpec(OPTSPOT),
    # EDAC (An et al.): SAC-N with N critics (10) and the ensemble gradient-diversity penalty (eta 1.0);
    # per-dataset N and eta in zoo/hyperparams/edac.yml.
    "edac": AgentSpec(EDAC),
    # First imitate, then improve for EDAC (Jelley et al., `--pretrain softAC`): an entropy-regularised BC
    # actor for 10k steps, critics on its soft Monte-Carlo returns for 10k, then EDAC; LayerNorm without
    # affine before every ReLU and normalised observations (EfficientOfflineRL algorithms/edac.py).
    "edac-mc": AgentSpec(
        EDAC,
        dict(
            pretrain="soft-imitate",
            pretrain_steps=20_000,
            normalize_observations=True,
            policy_kwargs=dict(actor_layer_norm=True, critic_layer_norm=True),
        ),
    ),
}


def agent_class(key: str) -> type[OfflineAlgorithm]:
    return agent_spec(key).cls


def agent_spec(key: str) -> AgentSpec:
    try:
        return AGENTS[key]
    except KeyError:
        raise ConfigError(f"Unknown agent '{key}'. Available: {', '.join(sorted(AGENTS))}.") from None


def _agent_class_and_settings(
    key: str, base: str | None, kwargs: dict[str, Any]
) -> tuple[type[OfflineAlgorithm], dict[str, Any]]:
    """The class of `key` (on `base`) and its constructor settings: the key's defaults, then `kwargs` on top
    (policy_kwargs merged key by key)."""
    spec = agent_spec(key)
    cls = spec.cls
    if base is not None:
        if base not in spec.bases:
            supported = ", ".join(sorted(spec.bases)) or "none besides its own"
            raise ConfigError(f"'{key}' cannot be built on '{base}'. Supported bases: {supported}.")
        cls = spec.bases[base]
    merged = {**spec.defaults, **kwargs}
    if "policy_kwargs" in spec.defaults and "policy_kwargs" in kwargs:
        merged["policy_kwargs"] = {**spec.defaults["policy_kwargs"], **(kwargs["policy_kwargs"] or {})}
    return cls, merged


def make_agent(key: str, dataset: OfflineDataset, base: str | None = None, **kwargs: Any) -> OfflineAlgorithm:
    """Build the agent registered under `key` on `dataset`: the key's defaults, then `kwargs` on top
    (policy_kwargs merged key by key); `base` picks another base algorithm where the method has one."""
    cls, settings = _agent_class_and_settings(key, base, kwargs)
    return cls(dataset=dataset, **settings)


def make_population(
    key: str,
    dataset: OfflineDataset,
    seeds: Sequence[int],
    members: Sequence[dict[str, Any]] | None = None,
    base: str | None = None,
    **kwargs: Any,
) -> OfflineAlgorithm:
    """K = len(seeds) agents of `key` trained as one batched population (zoo.agents.population): member k
    is `make_agent(key, dataset, base, seed=seeds[k], **kwargs, **members[k])` (its settings override the
    shared `kwargs`, policy_kwargs merged key by key), and trains as that agent would in a population of one.
    Members may differ in any float setting; network sizes and other structural settings must agree."""
    members = [{} for _ in seeds] if members is None else list(members)
    if len(members) != len(seeds):
        raise ConfigError(f"{len(members)} member settings for {len(seeds)} seeds: give one per seed.")
    member_settings = []
    cls = None
    for own in members:
        combined = {**kwargs, **own}
        if "policy_kwargs" in kwargs and "policy_kwargs" in own:
            combined["policy_kwargs"] = {**(kwargs["policy_kwargs"] or {}), **(own["policy_kwargs"] or {})}
        cls, settings = _agent_class_and_settings(key, base, combined)
        member_settings.append(settings)
    return build_population(cls, dataset, seeds, member_settings)
