"""zoo: offline and offline-to-online RL agents on Stable-Baselines3, trained from Minari datasets."""

from zoo.agents import SPOT, TD3BC, OfflineAlgorithm
from zoo.agents.cql import CQL, CalQL
from zoo.agents.edac import EDAC
from zoo.agents.opt import OPT, OPTSPOT
from zoo.data import OfflineDataset, Task, load_dataset
from zoo.envs import dmc as _dmc  # noqa: F401  registers the zoo/dmc-<domain>-<task>-v0 env ids
from zoo.evaluation import EvalCallback, evaluate_returns
from zoo.registry import AGENTS, make_agent
from zoo.checkpoint import load_checkpoint, save_checkpoint
from zoo.hub import load_pretrained

__version__ = "0.1.0"

__all__ = [
    "OPT",
    "OPTSPOT",
    "AGENTS",
    "CQL",
    "CalQL",
    "EDAC",
    "EvalCallback",
    "OfflineAlgorithm",
    "OfflineDataset",
    "SPOT",
    "TD3BC",
    "Task",
    "evaluate_returns",
    "load_checkpoint",
    "load_dataset",
    "load_pretrained",
    "make_agent",
    "save_checkpoint",
]
