"""Networks with a leading member axis: batched ensembles, critics, actors."""

from zoo.nn.actors import DeterministicActor, TanhGaussianActor
from zoo.nn.critics import EnsembleQ, SharedQ
from zoo.nn.ensemble import EnsembleLinear, EnsembleMLP, initialize
from zoo.nn.vae import VAE

__all__ = [
    "DeterministicActor",
    "TanhGaussianActor",
    "initialize",
    "EnsembleLinear",
    "EnsembleMLP",
    "EnsembleQ",
    "SharedQ",
    "VAE",
]
