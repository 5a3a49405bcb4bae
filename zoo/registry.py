"""The one registry of agents by key: the CLI, the YAML files and the tuner all resolve names here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoo.agents import TD3, TD3BC, OfflineAlgorithm
from zoo.data.dataset import OfflineDataset

@dataclass(frozen=True)
class AgentSpec:
    """An agent key: the class that implements it, the paper's defaults that differ from the class's, and
    the other base algorithms the method can be built on (`make_agent(key, ds, base=...)`)."""

    cls: type[OfflineAlgorithm]
    defaults: dict[str, Any] = field(default_factory=dict)
    bases: dict[str, type[OfflineAlgorithm]] = field(default_factory=dict)


AGENTS: dict[str, AgentSpec] = {
    "td3": AgentSpec(TD3),
    "td3bc": AgentSpec(TD3BC),
    # First imitate, then improve (Jelley et al.): BC actor + Monte-Carlo critic for 10k steps, then
    # TD3+BC; LayerNorm without affine before every ReLU, a 3-hidden-layer actor (EfficientOfflineRL).
    "td3bc-mc": AgentSpec(
        TD3BC,
        dict(
            pretrain="imitate",
            pretrain_steps=10_000,
            policy_kwargs=dict(actor_net_arch=[256, 256, 256], actor_layer_norm=True, critic_layer_norm=True),
        ),
    ),
    # Pretraining a shared Q-network (Park, Park & Lee): each critic's backbone first learns to predict
    # the normalised next state (10% of the budget), then TD3+BC (D4RL) or TD3 (ExoRL: base="td3")
    # fine-tunes it.
    "psqn": AgentSpec(
        TD3BC,
        dict(pretrain="transition", pretrain_steps=0.1, policy_kwargs=dict(shared_q=True)),
        bases={"td3bc": TD3BC, "td3": TD3},
    ),
}


def agent_class(key: str) -> type[OfflineAlgorithm]:
    return agent_spec(key).cls


def agent_spec(key: str) -> AgentSpec:
    try:
        return AGENTS[key]
    except KeyError:
        raise ValueError(f"Unknown agent '{key}'. Available: {', '.join(sorted(AGENTS))}.") from None


def make_agent(key: str, dataset: OfflineDataset, base: str | None = None, **kwargs: Any) -> OfflineAlgorithm:
    """Build the agent registered under `key` on `dataset`: the key's defaults, then `kwargs` on top
    (policy_kwargs merged key by key); `base` picks another base algorithm where the method has one."""
    spec = agent_spec(key)
    cls = spec.cls
    if base is not None:
        if base not in spec.bases:
            supported = ", ".join(sorted(spec.bases)) or "none besides its own"
            raise ValueError(f"'{key}' cannot be built on '{base}'. Supported bases: {supported}.")
        cls = spec.bases[base]
    merged = {**spec.defaults, **kwargs}
    if "policy_kwargs" in spec.defaults and "policy_kwargs" in kwargs:
        merged["policy_kwargs"] = {**spec.defaults["policy_kwargs"], **(kwargs["policy_kwargs"] or {})}
    return cls(dataset=dataset, **merged)
