"""hyperparams/<algo>.yml -> constructor kwargs and run settings. Plain YAML, nothing is evaluated.

A file maps keys to settings, merged from general to specific: `default`, then the env part of the
dataset id (`hopper`), then the whole dataset id (`zoo/hopper/medium-v0`), then `zoo train --set`
overrides; `policy_kwargs` and `pretrain_kwargs` merge key by key. Run settings (RUN_SETTINGS:
budgets and evaluation frequencies) are split from the agent's keyword arguments.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import yaml

from zoo.data.tasks import env_key

HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"  # shipped inside the package
RUN_SETTINGS = {
    "n_timesteps": 1_000_000,
    "eval_freq": 5000,
    "n_eval_episodes": 10,
    "n_finetune_timesteps": 0,  # online env steps after offline learning (`zoo train --finetune-steps`)
    "finetune_eval_freq": 5000,  # in env steps
}


def load_hyperparams(
    algo: str, dataset_id: str, path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (agent kwargs, run settings) for `algo` on `dataset_id`; `overrides` (e.g. `zoo train --set`)
    sit on top of the file's sections and are checked the same way."""
    from zoo.registry import agent_class

    file = Path(path) if path else HYPERPARAMS_DIR / f"{algo}.yml"
    if not file.exists():
        raise FileNotFoundError(f"No hyperparameter file {file}: create it or pass --hyperparams PATH.")
    with file.open() as handle:
        table = yaml.safe_load(handle) or {}
    if not isinstance(table, dict):
        raise ValueError(f"{file} must map dataset ids (or 'default') to settings.")
    merged: dict[str, Any] = {}
    for key in ("default", env_key(dataset_id), dataset_id):
        section = table.get(key) if key else None
        if section:
            if not isinstance(section, dict):
                raise ValueError(f"Section '{key}' of {file} must be a mapping, got {section!r}.")
            _merge(merged, section)
    _merge(merged, overrides or {})
    run = {name: merged.pop(name, default) for name, default in RUN_SETTINGS.items()}
    allowed = {
        name
        for cls in agent_class(algo).__mro__
        if "__init__" in vars(cls) and cls.__module__.startswith("zoo.")
        for name in inspect.signature(cls.__init__).parameters
    } - {"self", "kwargs", "dataset", "policy", "_init_setup_model"} | {"base"}
    unknown = sorted(set(merged) - allowed)
    if unknown:
        raise ValueError(f"{file} or --set: unknown setting(s) {unknown} for '{algo}'. Known: {sorted(allowed)}.")
    return merged, run


NESTED = ("policy_kwargs", "pretrain_kwargs")  # merged key by key across sections, not replaced whole


def _merge(merged: dict[str, Any], section: dict[str, Any]) -> None:
    for key, value in section.items():
        if key in NESTED and isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """`["pretrain_steps=2000", "policy_kwargs={n_critics: 10}"]` -> a dict; values are read as YAML."""
    parsed = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set takes KEY=VALUE (value in YAML, e.g. alpha=2.5), got {item!r}.")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed
