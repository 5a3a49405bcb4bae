"""Data layer: Minari I/O, device-resident offline datasets, returns-to-go, the task table."""

from zoo.data.dataset import DatasetNotFoundError, OfflineDataset, load_dataset, resolve_device
from zoo.data.minari_io import Episode, local_dataset_ids, minari_root, read_dataset, write_dataset
from zoo.data.returns import discounted_returns_to_go, discounted_suffix_sums
from zoo.data.tasks import D4RL_REFERENCE_RETURNS, Task, task_for

__all__ = [
    "D4RL_REFERENCE_RETURNS",
    "DatasetNotFoundError",
    "Episode",
    "OfflineDataset",
    "Task",
    "discounted_returns_to_go",
    "discounted_suffix_sums",
    "load_dataset",
    "local_dataset_ids",
    "minari_root",
    "read_dataset",
    "resolve_device",
    "task_for",
    "write_dataset",
]
