"""Hyperparameter tuning with Optuna (`zoo tune`): search spaces per agent key, studies on an embedded SQLite
file or a shared database, trials trained by `zoo.runs.train_offline`. Needs the extra `tune`
(pip install 'offline-zoo[tune]'); importing this package does not import Optuna."""

from zoo.tune.spaces import SPACES, Categorical, Float, Given, Int, nest, sample, search_space
from zoo.tune.tuner import TuneSettings, best_section, budget, plan, retrain_best, tune

__all__ = [
    "SPACES",
    "Categorical",
    "Float",
    "Given",
    "Int",
    "TuneSettings",
    "best_section",
    "budget",
    "nest",
    "plan",
    "retrain_best",
    "sample",
    "search_space",
    "tune",
]
