"""Networks with a leading member axis: batched ensembles, critics, actors."""

from zoo.nn.actors import DeterministicActor
from zoo.nn.critics import EnsembleQ, SharedQ
from zoo.nn.ensemble import EnsembleLinear, EnsembleMLP

__all__ = ["DeterministicActor", "EnsembleLinear", "EnsembleMLP", "EnsembleQ", "SharedQ"]
