"""The one registry of agents by key: the CLI, the YAML files and the tuner all resolve names here."""

from __future__ import annotations

from typing import Any

from zoo.agents import TD3BC, OfflineAlgorithm
from zoo.data.dataset import OfflineDataset

AGENTS: dict[str, type[OfflineAlgorithm]] = {
    "td3bc": TD3BC,
}


def agent_class(key: str) -> type[OfflineAlgorithm]:
    try:
        return AGENTS[key]
    except KeyError:
        raise ValueError(f"Unknown agent '{key}'. Available: {', '.join(sorted(AGENTS))}.") from None


def make_agent(key: str, dataset: OfflineDataset, **kwargs: Any) -> OfflineAlgorithm:
    """Build the agent registered under `key` on `dataset`, with hyperparameters as keyword arguments."""
    return agent_class(key)(dataset=dataset, **kwargs)
