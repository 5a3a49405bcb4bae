"""Agents: one file per algorithm on the shared offline base."""

from zoo.agents.base import OfflineAlgorithm, OfflinePolicy
from zoo.agents.td3 import TD3, TD3Policy
from zoo.agents.td3bc import TD3BC

__all__ = ["OfflineAlgorithm", "OfflinePolicy", "TD3", "TD3BC", "TD3Policy"]
