"""Agents: one file per algorithm on the shared offline base."""

from zoo.agents.base import OfflineAlgorithm, OfflinePolicy
from zoo.agents.td3 import TD3, TD3Policy
from zoo.agents.td3bc import TD3BC
from zoo.agents.cql import CQL, CalQL
from zoo.agents.edac import EDAC
from zoo.agents.spot import SPOT
from zoo.agents.opt import OPT, OPTSPOT

__all__ = [
    "CQL",
    "CalQL",
    "OPT",
    "OPTSPOT",
    "EDAC",
    "OfflineAlgorithm",
    "OfflinePolicy",
    "TD3",
    "TD3BC",
    "TD3Policy",
    "SPOT",
]
