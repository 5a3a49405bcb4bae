"""SB3's zip (`agent.save`) read without unpickling: the agents' own `load`.

SB3 stores part of an agent's attributes with cloudpickle inside the zip's "data" member (the spaces, the
task, the policy class, the learning-rate schedule, episode buffers) and its loader unpickles them, which
runs whatever code the file holds. Here "data" is read with `json`, every pickled field is dropped, and the
agent is rebuilt from plain values by `OfflineAlgorithm.rebuild`: its constructor arguments, the spaces
and the task from the readable copies of their attributes that SB3 writes beside each pickle, and the
counters. The ".pth" members go through torch.load(weights_only=True), which refuses anything but tensors
and plain containers. It sits at the agents' level (base.py's `load` calls it); the zoo's own format is
zoo.checkpoint.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import pickle  # only for the exception type torch.load(weights_only=True) raises; nothing is unpickled
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from gymnasium import spaces

from zoo.data.tasks import Task
from zoo.errors import DataError, UserError

if TYPE_CHECKING:
    from zoo.agents.base import OfflineAlgorithm

# Constructor arguments that describe where an agent runs or what it is given, not what it is.
NOT_RECORDED = frozenset(
    {"self", "dataset", "env", "device", "policy", "_init_setup_model", "tensorboard_log"}
)


def constructor_parameters(cls: type) -> list[str]:
    """Names of every keyword the zoo classes in `cls`'s MRO take (those read from the agent on save)."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and klass.__module__.startswith("zoo."):
            for name, parameter in inspect.signature(klass.__init__).parameters.items():
                if (
                    parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
                    and name not in names
                ):
                    names.append(name)
    return names


def load_sb3_zip(
    cls: type, path: str | os.PathLike, *, device: str | torch.device = "auto", dataset=None, **overrides: Any
) -> "OfflineAlgorithm":
    """An agent from SB3's zip (`agent.save`) without unpickling: "data" is read with `json` and every
    cloudpickled field in it is dropped; the spaces and the task are rebuilt from the plain copies of their
    attributes SB3 writes beside the pickle; the learning-rate schedule from `learning_rate`. The ".pth"
    members are read with torch.load(weights_only=True), which refuses anything but tensors and plain
    containers. `overrides` replace stored constructor arguments (e.g. learning_rate=1e-4), as in SB3's load.
    """
    path = Path(path)
    if not path.exists() and Path(f"{path}.zip").is_file():
        path = Path(f"{path}.zip")  # SB3's naming rule: save("x") writes x.zip, load("x") reads it
    allowed = set(constructor_parameters(cls)) - NOT_RECORDED
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise UserError(
            f"{cls.__name__}.load: {unknown[0]!r} is not a setting of {cls.__name__} (settings: "
            f"{', '.join(sorted(allowed))})."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
            if "data" not in members or "policy.pth" not in members:
                raise DataError(f"{path} is not an SB3 zip of a zoo agent (no 'data' / 'policy.pth' inside).")
            data = json.loads(archive.read("data"))
            params = {}
            for member in sorted(members):
                if member.endswith(".pth") and member != "pytorch_variables.pth":
                    with archive.open(member) as handle:
                        params[member[: -len(".pth")]] = torch.load(
                            io.BytesIO(handle.read()), map_location="cpu", weights_only=True
                        )
    except zipfile.BadZipFile:
        raise DataError(f"{path} is not a zip file.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: its 'data' member is not JSON ({error}).") from None
    except pickle.UnpicklingError as error:  # torch.load(weights_only=True) refused a non-tensor object
        raise DataError(
            f"{path}: a .pth member holds more than tensors; refused ({str(error).splitlines()[0]})"
        ) from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: its 'data' member is not a JSON object.")
    kwargs = {name: value for name, value in data.items() if name in allowed and not _pickled(value)}
    pickled = sorted(name for name in allowed - set(overrides) if name in data and _pickled(data[name]))
    if pickled:
        raise DataError(
            f"{path}: setting(s) {pickled} are stored as pickled code, which the zoo does not run: re-save "
            "the "
            "agent with plain values, or load it with stable_baselines3's own BaseAlgorithm.load if you "
            "trust it."
        )
    observation_space = _sb3_box(data.get("observation_space"), "observation_space", path)
    action_space = _sb3_box(data.get("action_space"), "action_space", path)
    task = _sb3_task(data.get("task"))
    kwargs.update(overrides)
    try:
        agent = cls.rebuild(
            kwargs,
            observation_space,
            action_space,
            dataset=dataset,
            device=device,
            dataset_id=data.get("dataset_id") if isinstance(data.get("dataset_id"), str) else None,
            task=task,
            num_timesteps=int(data.get("num_timesteps", 0)),
            n_updates=int(data.get("_n_updates", 0)),
            pretrain_budget=int(data.get("_pretrain_budget", 0)),
        )
    except (TypeError, ValueError) as error:
        raise DataError(f"{path}: its settings do not build a {cls.__name__}: {error}") from None
    try:
        agent.set_parameters(params, exact_match=True, device=agent.device)
    except (RuntimeError, ValueError, KeyError) as error:
        raise DataError(
            f"{path}: its weights do not fit a {cls.__name__} ({str(error).splitlines()[0]}): load it with "
            "the "
            "agent key it was trained with."
        ) from None
    agent.policy.set_training_mode(False)
    return agent


def _pickled(value: Any) -> bool:
    return isinstance(value, dict) and ":serialized:" in value


def _sb3_box(item: Any, role: str, path) -> spaces.Box:
    """A Box from the readable attributes SB3 writes beside a pickled space: dtype, _shape, and the
    low / high arrays as printed by numpy (or their one-number `low_repr` / `high_repr`)."""
    if not isinstance(item, dict) or "Box" not in str(item.get(":type:", "")):
        raise DataError(f"{path}: no readable {role} (a Box) in its 'data' member.")
    try:
        shape, dtype = tuple(int(n) for n in item["_shape"]), np.dtype(item["dtype"])
        bounds = []
        for side in ("low", "high"):
            text = str(item.get(f"{side}_repr", ""))
            try:
                bounds.append(np.full(shape, float(text)))
                continue
            except ValueError:
                pass
            text = str(item[side])
            if "..." in text:
                raise ValueError(f"{side} is abbreviated")
            values = np.array([float(v) for v in text.replace("[", " ").replace("]", " ").split()])
            bounds.append(values.reshape(shape))
        return spaces.Box(bounds[0].astype(dtype), bounds[1].astype(dtype), shape, dtype)
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(
            f"{path}: cannot read {role} from its 'data' member without unpickling ({error})."
        ) from None


def _sb3_task(item: Any) -> Task | None:
    if isinstance(item, dict) and isinstance(item.get("env_id"), str):
        numbers = [item.get(k) for k in ("ref_min_score", "ref_max_score")]
        if all(v is None or isinstance(v, (int, float)) for v in numbers):
            return Task(item["env_id"], *(None if v is None else float(v) for v in numbers))
    return None
