"""Agents: one file per algorithm on the shared offline base."""

from zoo.agents.base import OfflineAlgorithm, OfflinePolicy
from zoo.agents.td3bc import TD3BC, TD3BCPolicy

__all__ = ["OfflineAlgorithm", "OfflinePolicy", "TD3BC", "TD3BCPolicy"]
