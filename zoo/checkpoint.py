"""The zoo's checkpoint format: weights in safetensors, everything else in JSON; nothing is unpickled.

A checkpoint is a folder (or a zip of the same two files at its root):

    config.json        what the agent is and where it comes from (below)
    model.safetensors  every tensor the agent needs to act and to keep training: "policy.*" is the
                       policy's state dict (actor, critics, their targets, VAE / density nets, the
                       log-temperatures and Lagrange multipliers, the observation normaliser's
                       obs_mean / obs_std buffers); "optimizer.<name>.<param index>.<state key>" holds
                       the Adam moments when asked for; "extra.<name>" tensors a caller adds (RNG states)

config.json records the agent's registry key (and base), its class and every constructor argument, the
observation / action spaces as plain JSON, the observation normalisation, the dataset id and fraction,
the seed, gradient and env steps, the final normalised score with its episode count, the package versions
and the command that trained it, the name and shape of every tensor and the sha256 of model.safetensors.

Why it is safe: safetensors is a JSON header plus raw little-endian buffers, and config.json is read
with `json`; the agent is rebuilt by its registered class from plain values (`OfflineAlgorithm.rebuild`),
so a file can change numbers but never run code. Everything read is validated (types, known keys, the
registry key, tensor names and shapes against the rebuilt agent, the checksum) and a mismatch is one
`DataError` line naming the file, the field and the fix.

Why a reader never sees half a checkpoint: the folder is staged under a hidden name beside its
destination, every file written through zoo.io and fsynced, then renamed into place in one `rename`
(an existing checkpoint is moved aside first and removed after, so a reader sees the old one, briefly
none, or the new one). The checksum in config.json catches anything else (a copy interrupted by hand).

SB3's own zips (`agent.save`) are read by zoo.agents.sb3_zip without cloudpickle: the fields SB3 pickles
(spaces, the task, schedules) are rebuilt from the readable copies SB3 writes beside them, or ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import platform
import re
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from gymnasium import spaces

from zoo.data.tasks import Task
from zoo.agents.sb3_zip import NOT_RECORDED, constructor_parameters, load_sb3_zip
from zoo.errors import DataError, UserError
from zoo.io import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from zoo.agents.base import OfflineAlgorithm
    from zoo.data.dataset import OfflineDataset

FORMAT = "zoo-checkpoint"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
REFERENCE_NAME = "reference_actions.json"  # written by `zoo export`: fixed observations and their actions
POLICY_PREFIX, OPTIMIZER_PREFIX, EXTRA_PREFIX = "policy.", "optimizer.", "extra."
STAGING_SUFFIX = ".partial"  # a folder being written; never a checkpoint

TOP_LEVEL_KEYS = {
    "format",
    "format_version",
    "agent",
    "observation_space",
    "action_space",
    "observation_normalization",
    "dataset",
    "task",
    "seed",
    "training",
    "evaluation",
    "command",
    "versions",
    "tensors",
    "optimizers",
    "run_info",
}


# ---------------------------------------------------------------------------------------------- writing


def save_checkpoint(
    agent: "OfflineAlgorithm",
    folder: str | os.PathLike,
    *,
    include_optimizer: bool = False,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    run_info: dict[str, Any] | None = None,
    key: str | None = None,
    base: str | None = None,
    fraction: float | None = None,
    env_steps: int | None = None,
    evaluation: dict[str, Any] | None = None,
    command: str | None = None,
) -> Path:
    """Write `agent` as a checkpoint folder (or a zip when `folder` ends in ".zip"); returns its path.

    :param include_optimizer: also store the optimizers' state (needed to continue training exactly as
        the uninterrupted run would; a checkpoint to act with does not need it)
    :param extra_tensors: tensors stored under "extra.<name>" (e.g. RNG states), returned by
        read_checkpoint_extras
    :param run_info: any JSON-able mapping stored as config.json "run_info" (also returned by
        read_checkpoint_extras)
    :param key: the registry key the agent was made with ("td3bc-mc", "psqn"); default: its class's key
    :param base: the base given to make_agent (psqn: "td3", "cql", ...), if any
    :param fraction: share of the dataset trained on; env_steps: online steps of fine-tuning;
        evaluation: {"normalized_score", "return_mean", "return_std", "episodes", "step"}; command: the
        command line that trained it
    """
    destination = Path(folder)
    config, tensors = checkpoint_contents(
        agent,
        include_optimizer=include_optimizer,
        extra_tensors=extra_tensors,
        run_info=run_info,
        key=key,
        base=base,
        fraction=fraction,
        env_steps=env_steps,
        evaluation=evaluation,
        command=command,
    )
    return write_checkpoint(destination, config, tensors)


def write_checkpoint(
    destination: str | os.PathLike,
    config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write `checkpoint_contents` (plus `extra_files` such as reference_actions.json, folders only) as a
    folder, or a zip when `destination` ends in ".zip"; the checksum of the weights goes into config.json."""
    from safetensors.torch import save as safetensors_bytes

    destination = Path(destination)
    weights = safetensors_bytes(tensors, metadata={"format": "pt"})
    config["tensors"]["sha256"] = hashlib.sha256(weights).hexdigest()
    config["tensors"]["bytes"] = len(weights)
    validate_config(config, destination)  # what a reader would refuse is never written
    if destination.suffix == ".zip":
        _write_zip(destination, config, weights, extra_files or {})
    else:
        _write_folder(destination, {WEIGHTS_NAME: weights, **(extra_files or {})}, config)
    return destination


def checkpoint_contents(
    agent: "OfflineAlgorithm",
    *,
    include_optimizer: bool = False,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    run_info: dict[str, Any] | None = None,
    key: str | None = None,
    base: str | None = None,
    fraction: float | None = None,
    env_steps: int | None = None,
    evaluation: dict[str, Any] | None = None,
    command: str | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config.json content without the checksum, the tensors of model.safetensors) of `agent`."""
    from zoo.registry import agent_spec

    cls = type(agent)
    if key is None:
        key = class_key(cls)
    spec = agent_spec(key)
    built = spec.bases.get(base) if base is not None else spec.cls
    if built is not cls:
        raise UserError(
            f"A '{cls.__name__}' agent cannot be saved as registry key '{key}'"
            + (f" on base '{base}'" if base else "")
            + f" (that builds {getattr(built, '__name__', 'nothing')}): pass the key it was made with."
        )
    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for name, tensor in agent.policy.state_dict().items():
        tensors[POLICY_PREFIX + name] = _host_copy(tensor)
        shapes[POLICY_PREFIX + name] = list(tensor.shape)
    optimizers = None
    if include_optimizer:
        optimizers = {}
        for name in agent.policy.optimizer_names:
            state = getattr(agent.policy, name).state_dict()
            for index, values in state["state"].items():
                for field, value in values.items():
                    if not torch.is_tensor(value):
                        raise UserError(
                            f"Optimizer '{name}' holds a non-tensor state '{field}': not a zoo Adam."
                        )
                    tensors[f"{OPTIMIZER_PREFIX}{name}.{index}.{field}"] = _host_copy(value)
            optimizers[name] = {"param_groups": _jsonable(state["param_groups"], f"optimizer {name}")}
    for name, tensor in (extra_tensors or {}).items():
        if not isinstance(name, str) or not torch.is_tensor(tensor):
            raise UserError(f"extra_tensors maps names to tensors, got {name!r}: {type(tensor).__name__}.")
        tensors[EXTRA_PREFIX + name] = _host_copy(tensor)
    counters = agent.training_counters
    task = agent.task
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "agent": {"key": key, "base": base, "class": cls.__name__, "kwargs": constructor_arguments(agent)},
        "observation_space": space_to_json(agent.observation_space),
        "action_space": space_to_json(agent.action_space),
        "observation_normalization": {
            "enabled": bool(agent.normalize_observations),
            "formula": "(observation - obs_mean) / obs_std",
            "mean": POLICY_PREFIX + "obs_mean",
            "std": POLICY_PREFIX + "obs_std",
        },
        "dataset": {"id": agent.dataset_id, "fraction": fraction},
        "task": None
        if task is None
        else {
            "env_id": task.env_id,
            "ref_min_score": task.ref_min_score,
            "ref_max_score": task.ref_max_score,
        },
        "seed": agent.seed,
        "training": {
            "gradient_steps": counters["n_updates"],
            "num_timesteps": counters["num_timesteps"],
            "pretrain_budget": counters["pretrain_budget"],
            "env_steps": env_steps,
        },
        "evaluation": _jsonable(evaluation, "evaluation"),
        "command": command,
        "versions": package_versions(),
        "tensors": {"file": WEIGHTS_NAME, "policy": shapes, "extra": sorted(extra_tensors or {})},
        "optimizers": optimizers,
        "run_info": _jsonable(run_info, "run_info"),
    }
    return config, tensors


def class_key(cls: type) -> str:
    """The registry key that builds `cls` with no base (every agent class has one)."""
    from zoo.registry import AGENTS

    for key, spec in AGENTS.items():
        if spec.cls is cls and not spec.defaults:
            return key
    raise UserError(
        f"{cls.__name__} is not a registered zoo agent: only registry agents can be checkpointed."
    )


def constructor_arguments(agent: "OfflineAlgorithm") -> dict[str, Any]:
    """Every constructor argument of `agent`, read from the attribute of the same name (each zoo class
    keeps its hyperparameters under their own names), as JSON values."""
    cls = type(agent)
    if agent.policy_class is not cls.policy_aliases.get("MlpPolicy"):
        raise UserError(
            f"{cls.__name__} was built with a custom policy class {agent.policy_class.__name__}: the zoo "
            "format "
            "stores registry agents only (use agent.save for SB3's pickled format)."
        )
    population = getattr(agent, "is_population", False)

    def value(name: str) -> Any:
        setting = getattr(agent, name)
        if population and torch.is_tensor(setting) and setting.dim() == 1:
            return setting.tolist()  # a population's setting that differs per member: one value per member
        return setting

    return {
        name: _jsonable(value(name), f"setting '{name}'")
        for name in constructor_parameters(cls)
        if name not in NOT_RECORDED
    }


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in (
        "offline-zoo",
        "torch",
        "stable-baselines3",
        "gymnasium",
        "numpy",
        "safetensors",
        "minari",
    ):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    return versions


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A Box as plain JSON: shape, dtype, and the bounds flattened (±inf written as "inf"/"-inf")."""
    if not isinstance(space, spaces.Box):
        raise UserError(f"Only Box spaces can be checkpointed, got {space}.")
    return {
        "type": "Box",
        "shape": list(space.shape),
        "dtype": str(space.dtype),
        "low": [_float_json(x) for x in np.asarray(space.low, dtype=np.float64).ravel()],
        "high": [_float_json(x) for x in np.asarray(space.high, dtype=np.float64).ravel()],
    }


def _float_json(x: float) -> float | str:
    return float(x) if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))


def _host_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy that shares memory with nothing (safetensors refuses shared storage)."""
    return tensor.detach().to("cpu").contiguous().clone()


def _jsonable(value: Any, what: str) -> Any:
    """`value` as JSON values (tuples become lists, numpy scalars numbers), or a UserError naming it."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value  # ±inf / nan are written as Python's json writes them (Infinity, NaN) and read back
    if isinstance(value, np.generic):
        return _jsonable(value.item(), what)
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, what) for item in value]
    if isinstance(value, dict) and all(isinstance(k, (str, int)) for k in value):
        return {str(k): _jsonable(v, f"{what}.{k}") for k, v in value.items()}
    raise UserError(
        f"{what} = {value!r} ({type(value).__name__}) cannot be written to a checkpoint's config.json: only "
        "numbers, strings, booleans, lists and mappings can (not a schedule function or a class)."
    )


def config_text(config: dict[str, Any]) -> str:
    """config.json's text: indented, with lists of plain numbers or short strings (shapes, bounds) on one
    line. Only the whitespace between the tokens changes."""
    token = r'(?:-?\d[\d.eE+\-]*|"[^",\s\\]*"|true|false|null|-?Infinity|NaN)'
    flat = re.compile(rf"\[\s*({token}(?:,\s*{token})*)\s*\]")
    return (
        flat.sub(lambda m: "[" + ", ".join(re.split(r",\s*", m.group(1))) + "]", json.dumps(config, indent=2))
        + "\n"
    )


def _write_folder(destination: Path, binaries: dict[str, bytes], config: dict[str, Any]) -> None:
    """Stage every file in a hidden sibling folder, then rename it into place (see the module doc)."""
    parent = destination.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{destination.name}.*{STAGING_SUFFIX}"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a writer that was killed
    stage = parent / f".{destination.name}.{uuid.uuid4().hex[:8]}{STAGING_SUFFIX}"
    stage.mkdir()
    try:
        for name, data in binaries.items():
            atomic_write_bytes(stage / name, data)
        atomic_write_text(
            stage / CONFIG_NAME, config_text(config)
        )  # last: a stage with a config.json is complete
        _fsync_dir(stage)
        old = None
        if destination.exists():
            if not (destination / CONFIG_NAME).exists() and any(destination.iterdir()):
                raise UserError(
                    f"{destination} exists and is not a zoo checkpoint: choose a new folder or remove it."
                )
            old = parent / f".{destination.name}.{uuid.uuid4().hex[:8]}.old{STAGING_SUFFIX}"
            os.rename(destination, old)
        os.rename(stage, destination)
        _fsync_dir(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def _write_zip(
    destination: Path, config: dict[str, Any], weights: bytes, extra_files: dict[str, bytes]
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(WEIGHTS_NAME, weights)
        for name, data in extra_files.items():
            archive.writestr(name, data)
        archive.writestr(CONFIG_NAME, config_text(config))
    atomic_write_bytes(destination, buffer.getvalue())


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot fsync a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------- reading


def is_checkpoint(path: str | os.PathLike) -> bool:
    """True for a zoo checkpoint folder or zip (not for SB3's zip)."""
    path = Path(path)
    if path.is_dir():
        return (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return CONFIG_NAME in archive.namelist()
    return False


def read_checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    """The validated config.json of a checkpoint folder or zip."""
    config, _ = _read(path, weights=False)
    return config


def read_checkpoint_extras(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(the tensors given as extra_tensors, the run_info mapping) of a checkpoint."""
    config, tensors = _read(path)
    extras = {name[len(EXTRA_PREFIX) :]: t for name, t in tensors.items() if name.startswith(EXTRA_PREFIX)}
    return extras, config["run_info"]


def load_checkpoint(
    path: str | os.PathLike,
    *,
    dataset: "OfflineDataset | None" = None,
    device: str | torch.device = "auto",
    load_optimizer: bool = False,
) -> "OfflineAlgorithm":
    """Rebuild the agent of a checkpoint: ready to `predict`; with its `dataset`, to `learn` / `finetune`.

    :param load_optimizer: restore the optimizers' state too (the checkpoint must hold it); without it
        the optimizers start fresh, as after construction
    """
    config, tensors = _read(path)
    population = config["run_info"].get("population") if isinstance(config["run_info"], dict) else None
    if population is not None:
        raise DataError(
            f"{path} is the training state of a population (several agents in one), not one agent: continue "
            "it with `zoo train --resume` of its population folder; a member's own checkpoint is the "
            "<algo>.zip in the population's seed<k>/ folder."
        )
    agent_config = config["agent"]
    cls = _agent_class(agent_config, path)
    if load_optimizer and config["optimizers"] is None:
        raise DataError(
            f"{path} holds no optimizer state: load it with load_optimizer=False, or save with "
            "include_optimizer=True."
        )
    task = None if config["task"] is None else Task(**config["task"])
    training = config["training"]
    observation_space = space_from_json(config["observation_space"], "observation_space", path)
    action_space = space_from_json(config["action_space"], "action_space", path)
    if dataset is not None:
        for role, ours, theirs in (
            ("observation", observation_space, dataset.observation_space),
            ("action", action_space, dataset.action_space),
        ):
            if ours.shape != theirs.shape:
                raise DataError(
                    f"Dataset '{dataset.dataset_id}' has {role}s of shape {theirs.shape}, the agent in "
                    f"{path} "
                    f"takes {ours.shape}: give it a dataset of its own environment."
                )
    try:
        agent = cls.rebuild(
            agent_config["kwargs"],
            observation_space,
            action_space,
            dataset=dataset,
            device=device,
            dataset_id=config["dataset"]["id"],
            task=task,
            num_timesteps=training["num_timesteps"],
            n_updates=training["gradient_steps"],
            pretrain_budget=training["pretrain_budget"],
        )
    except UserError as error:
        raise DataError(f"{path}: {error}") from None
    except (TypeError, ValueError) as error:
        raise DataError(
            f"{path}: config.json 'agent.kwargs' do not build a {cls.__name__}: {error}"
        ) from None
    _load_policy_tensors(agent, tensors, config, path)
    if load_optimizer:
        _load_optimizers(agent, tensors, config["optimizers"], path)
    return agent


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config.json, every tensor of model.safetensors) of a checkpoint, validated and checksummed."""
    return _read(path)


def load_checkpoint_tensors(
    agent: "OfflineAlgorithm", config: dict[str, Any], tensors: dict[str, torch.Tensor],
    path: str | os.PathLike, *, load_optimizer: bool = True,
) -> None:
    """Put a checkpoint's weights (and optimizer moments) into `agent`, an agent already built as the one
    saved (a population rebuilt from its population.json, whose tensors carry the member axis): every name,
    shape and dtype is checked against `agent` as `load_checkpoint` checks the agent it rebuilds."""
    if config["agent"]["class"] != type(agent).__name__:
        raise DataError(
            f"{path} holds a {config['agent']['class']}, not the {type(agent).__name__} it is loaded into."
        )
    _load_policy_tensors(agent, tensors, config, path)
    if load_optimizer:
        if config["optimizers"] is None:
            raise DataError(f"{path} holds no optimizer state: it is not a training state.")
        _load_optimizers(agent, tensors, config["optimizers"], path)


def load_agent(
    path: str | os.PathLike,
    algo: str | None = None,
    *,
    dataset: "OfflineDataset | None" = None,
    device: str | torch.device = "auto",
) -> "OfflineAlgorithm":
    """Any saved agent: a zoo checkpoint (it names its agent), or SB3's zip read safely; the SB3 zip's
    agent key comes from `algo` or from the config.json `zoo train` wrote beside it."""
    from zoo.registry import agent_class

    path = Path(path)
    if not path.exists():
        raise UserError(f"No checkpoint at {path}: give a checkpoint folder, a checkpoint zip or an SB3 zip.")
    if is_checkpoint(path):
        agent = load_checkpoint(path, dataset=dataset, device=device)
        if algo is not None and algo != agent_key(read_checkpoint_config(path)):
            raise UserError(
                f"{path} holds a '{agent_key(read_checkpoint_config(path))}' agent, not '{algo}'."
            )
        return agent
    if path.is_dir() and (path / CONFIG_NAME).is_file():  # a `zoo train` run folder: its last SB3 zip
        path = last_run_checkpoint(path)
    if not (path.is_file() and zipfile.is_zipfile(path)):
        raise UserError(f"{path} is neither a zoo checkpoint (config.json + {WEIGHTS_NAME}) nor an SB3 zip.")
    if algo is None:
        run_config = path.parent / "config.json"
        with contextlib.suppress(OSError, ValueError, AttributeError):
            algo = json.loads(run_config.read_text()).get("algo")
        if not isinstance(algo, str):
            raise UserError(
                f"{path} is an SB3 zip, which does not say which agent it holds: pass --algo KEY, or turn "
                "its "
                "run into a zoo checkpoint with `zoo export RUN_DIR`."
            )
    try:
        cls = agent_class(algo)
    except ValueError as error:
        raise UserError(str(error)) from None
    return load_sb3_zip(cls, path, device=device, dataset=dataset)


def copy_checkpoint(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Copy a checkpoint folder (config.json, model.safetensors, reference_actions.json if present) after
    validating it (fields and checksum), staged and renamed into place like a saved one."""
    source, destination = Path(source), Path(destination)
    config, _ = _read(source)
    files = {WEIGHTS_NAME: (source / WEIGHTS_NAME).read_bytes()}
    if (source / REFERENCE_NAME).is_file():
        files[REFERENCE_NAME] = (source / REFERENCE_NAME).read_bytes()
    if hashlib.sha256(files[WEIGHTS_NAME]).hexdigest() != config["tensors"]["sha256"]:
        raise DataError(f"{source}: {WEIGHTS_NAME} changed while it was copied; copy it again.")
    _write_folder(destination, files, config)
    return destination


def last_run_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The last SB3 zip of a `zoo train` run folder: `<algo>-finetuned.zip` if it fine-tuned, else
    `<algo>.zip`."""
    run_dir = Path(run_dir)
    try:
        algo = json.loads((run_dir / CONFIG_NAME).read_text()).get("algo")
    except (OSError, ValueError, AttributeError):
        algo = None
    if not isinstance(algo, str):
        raise UserError(
            f"{run_dir} is neither a zoo checkpoint nor a `zoo train` run folder (its config.json names no "
            "algo)."
        )
    for name in (f"{algo}-finetuned.zip", f"{algo}.zip"):
        if (run_dir / name).is_file():
            return run_dir / name
    raise UserError(f"{run_dir} has no {algo}.zip: the run did not finish (resume or re-run it).")


def agent_key(config: dict[str, Any]) -> str:
    return config["agent"]["key"]


def _read(path: str | os.PathLike, weights: bool = True) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and validate config.json (and model.safetensors) of a folder or zip."""
    path = Path(path)
    if path.is_dir():
        names = {CONFIG_NAME: path / CONFIG_NAME, WEIGHTS_NAME: path / WEIGHTS_NAME}
        missing = [name for name, file in names.items() if not file.is_file()]
        if missing:
            raise DataError(f"{path} is not a zoo checkpoint: {', '.join(missing)} missing.")
        raw_config = names[CONFIG_NAME].read_bytes()
        raw_weights = names[WEIGHTS_NAME].read_bytes() if weights else None
    elif path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
            missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if name not in members]
            if missing:
                raise DataError(
                    f"{path} is not a zoo checkpoint zip: {', '.join(missing)} missing at its root."
                )
            raw_config = archive.read(CONFIG_NAME)
            raw_weights = archive.read(WEIGHTS_NAME) if weights else None
    else:
        raise DataError(
            f"No zoo checkpoint at {path}: expected a folder or a zip with {CONFIG_NAME} and {WEIGHTS_NAME}."
        )
    try:
        config = json.loads(raw_config)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: {CONFIG_NAME} is not valid JSON ({error}).") from None
    validate_config(config, path)
    if raw_weights is None:
        return config, {}
    digest = hashlib.sha256(raw_weights).hexdigest()
    if digest != config["tensors"]["sha256"]:
        raise DataError(
            f"{path}: {WEIGHTS_NAME} does not match the checksum in {CONFIG_NAME} (a partial copy or an "
            "edited "
            "file): copy the checkpoint again."
        )
    from safetensors import SafetensorError
    from safetensors.torch import load as safetensors_load

    try:
        tensors = safetensors_load(raw_weights)
    except (SafetensorError, ValueError) as error:
        raise DataError(f"{path}: {WEIGHTS_NAME} is not a safetensors file ({error}).") from None
    return config, tensors


def validate_config(config: Any, path: str | os.PathLike) -> None:
    """Check every field a loader reads (type, known keys); a mismatch is one DataError line."""

    def fail(field: str, problem: str) -> DataError:
        return DataError(f"{path}: {CONFIG_NAME} field '{field}' {problem}; re-export the checkpoint.")

    def need(
        mapping: dict, field: str, types: type | tuple, *, prefix: str = "", nullable: bool = False
    ) -> Any:
        name = f"{prefix}{field}"
        if field not in mapping:
            raise fail(name, "is missing")
        value = mapping[field]
        if value is None and nullable:
            return None
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
            expected = " or ".join(t.__name__ for t in _as_tuple(types)) + (" or null" if nullable else "")
            raise fail(name, f"must be {expected}, got {type(value).__name__}")
        return value

    if not isinstance(config, dict):
        raise DataError(f"{path}: {CONFIG_NAME} must be a JSON object.")
    if config.get("format") != FORMAT:
        raise fail("format", f"must be {FORMAT!r}, got {config.get('format')!r}")
    if need(config, "format_version", int) > FORMAT_VERSION:
        raise DataError(
            f"{path}: format version {config['format_version']} is newer than this zoo reads "
            f"({FORMAT_VERSION}): "
            "upgrade offline-zoo."
        )
    unknown = sorted(set(config) - TOP_LEVEL_KEYS)
    if unknown:
        raise fail(unknown[0], f"is not a known field (known: {', '.join(sorted(TOP_LEVEL_KEYS))})")
    agent = need(config, "agent", dict)
    need(agent, "key", str, prefix="agent.")
    need(agent, "base", str, prefix="agent.", nullable=True)
    need(agent, "class", str, prefix="agent.")
    need(agent, "kwargs", dict, prefix="agent.")
    for role in ("observation_space", "action_space"):
        space = need(config, role, dict)
        if space.get("type") != "Box":
            raise fail(f"{role}.type", f"must be 'Box', got {space.get('type')!r}")
        shape = need(space, "shape", list, prefix=f"{role}.")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
            raise fail(f"{role}.shape", "must list positive integers")
        need(space, "dtype", str, prefix=f"{role}.")
        for side in ("low", "high"):
            values = need(space, side, list, prefix=f"{role}.")
            if len(values) != int(np.prod(shape)) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) or v in ("inf", "-inf", "nan")
                for v in values
            ):
                raise fail(f"{role}.{side}", f"must list {int(np.prod(shape))} numbers")
    normalization = need(config, "observation_normalization", dict)
    need(normalization, "enabled", bool, prefix="observation_normalization.")
    dataset = need(config, "dataset", dict)
    need(dataset, "id", str, prefix="dataset.", nullable=True)
    need(dataset, "fraction", (int, float), prefix="dataset.", nullable=True)
    task = need(config, "task", dict, nullable=True)
    if task is not None:
        need(task, "env_id", str, prefix="task.")
        need(task, "ref_min_score", (int, float), prefix="task.", nullable=True)
        need(task, "ref_max_score", (int, float), prefix="task.", nullable=True)
        if set(task) != {"env_id", "ref_min_score", "ref_max_score"}:
            raise fail("task", "must hold exactly env_id, ref_min_score, ref_max_score")
    need(config, "seed", int, nullable=True)
    training = need(config, "training", dict)
    for field in ("gradient_steps", "num_timesteps", "pretrain_budget"):
        if need(training, field, int, prefix="training.") < 0:
            raise fail(f"training.{field}", "must be >= 0")
    need(training, "env_steps", int, prefix="training.", nullable=True)
    evaluation = need(config, "evaluation", dict, nullable=True)
    if evaluation is not None:
        need(evaluation, "normalized_score", (int, float), prefix="evaluation.", nullable=True)
        need(evaluation, "episodes", int, prefix="evaluation.")
    need(config, "command", str, nullable=True)
    need(config, "versions", dict)
    tensors = need(config, "tensors", dict)
    need(tensors, "sha256", str, prefix="tensors.")
    shapes = need(tensors, "policy", dict, prefix="tensors.")
    for name, shape in shapes.items():
        if (
            not name.startswith(POLICY_PREFIX)
            or not isinstance(shape, list)
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape)
        ):
            raise fail(f"tensors.policy.{name}", "must map 'policy.*' names to shapes (lists of integers)")
    extra = need(tensors, "extra", list, prefix="tensors.")
    if not all(isinstance(name, str) for name in extra):
        raise fail("tensors.extra", "must list tensor names")
    optimizers = need(config, "optimizers", dict, nullable=True)
    for name, state in (optimizers or {}).items():
        groups = state.get("param_groups") if isinstance(state, dict) else None
        if not isinstance(groups, list) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups
        ):
            raise fail(f"optimizers.{name}.param_groups", "must list parameter groups with their 'params'")
    need(config, "run_info", dict, nullable=True)


def _as_tuple(types: type | tuple) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def space_from_json(space: dict[str, Any], role: str, path: str | os.PathLike) -> spaces.Box:
    shape = tuple(space["shape"])
    try:
        dtype = np.dtype(space["dtype"])
    except TypeError:
        raise DataError(
            f"{path}: {CONFIG_NAME} field '{role}.dtype' is not a numpy dtype: {space['dtype']!r}."
        ) from None
    if dtype.kind != "f":
        raise DataError(f"{path}: {CONFIG_NAME} field '{role}.dtype' must be a float type, got {dtype}.")
    low = np.array([float(v) for v in space["low"]], dtype=np.float64).reshape(shape)
    high = np.array([float(v) for v in space["high"]], dtype=np.float64).reshape(shape)
    if np.isnan(low).any() or np.isnan(high).any() or (low > high).any():
        raise DataError(f"{path}: {CONFIG_NAME} field '{role}' has NaN bounds or low > high.")
    return spaces.Box(low.astype(dtype), high.astype(dtype), shape, dtype)


def _agent_class(agent_config: dict[str, Any], path: str | os.PathLike) -> type:
    from zoo.registry import AGENTS

    key, base = agent_config["key"], agent_config["base"]
    if key not in AGENTS:
        raise DataError(
            f"{path}: agent key '{key}' is not in this zoo's registry ({', '.join(sorted(AGENTS))}): upgrade "
            "offline-zoo or check the checkpoint."
        )
    spec = AGENTS[key]
    cls = spec.cls if base is None else spec.bases.get(base)
    if cls is None:
        raise DataError(
            f"{path}: agent '{key}' has no base '{base}' (bases: {', '.join(sorted(spec.bases)) or 'none'})."
        )
    if cls.__name__ != agent_config["class"]:
        raise DataError(
            f"{path}: agent '{key}'"
            + (f" on base '{base}'" if base else "")
            + f" builds {cls.__name__}, but the checkpoint says {agent_config['class']}."
        )
    allowed = set(constructor_parameters(cls)) - NOT_RECORDED
    unknown = sorted(set(agent_config["kwargs"]) - allowed)
    if unknown:
        raise DataError(
            f"{path}: {CONFIG_NAME} 'agent.kwargs' has {unknown[0]!r}, which {cls.__name__} does not take "
            f"(it takes: {', '.join(sorted(allowed))})."
        )
    return cls


def _load_policy_tensors(agent, tensors: dict[str, torch.Tensor], config: dict[str, Any], path) -> None:
    """Put the "policy.*" tensors into the rebuilt policy after checking names, shapes and dtypes against it
    and against config.json."""
    expected = agent.policy.state_dict()
    recorded = config["tensors"]["policy"]
    stored = {name[len(POLICY_PREFIX) :]: t for name, t in tensors.items() if name.startswith(POLICY_PREFIX)}
    for source, names in (
        ("config.json", {n[len(POLICY_PREFIX) :] for n in recorded}),
        (WEIGHTS_NAME, set(stored)),
    ):
        missing, unexpected = sorted(set(expected) - names), sorted(names - set(expected))
        if missing or unexpected:
            problem = f"lacks 'policy.{missing[0]}'" if missing else f"has 'policy.{unexpected[0]}'"
            raise DataError(
                f"{path}: {source} {problem}, which the {type(agent).__name__} its config builds "
                f"{'needs' if missing else 'does not have'} ({len(missing)} missing, {len(unexpected)} "
                "unexpected "
                "tensors): the weights do not belong to this config."
            )
    for name, tensor in expected.items():
        shape, recorded_shape = list(stored[name].shape), recorded[POLICY_PREFIX + name]
        if shape != list(tensor.shape) or recorded_shape != shape:
            raise DataError(
                f"{path}: tensor 'policy.{name}' has shape {shape} (config.json says {recorded_shape}), the "
                f"agent its config builds needs {list(tensor.shape)}: the weights do not belong to this "
                "config."
            )
        if stored[name].dtype != tensor.dtype:
            raise DataError(
                f"{path}: tensor 'policy.{name}' is {stored[name].dtype}, the agent needs {tensor.dtype}."
            )
    agent.policy.load_state_dict(stored, strict=True)
    agent.policy.set_training_mode(False)


def _load_optimizers(agent, tensors: dict[str, torch.Tensor], optimizers: dict[str, Any], path) -> None:
    names = tuple(agent.policy.optimizer_names)
    if set(optimizers) != set(names):
        raise DataError(f"{path}: optimizer state for {sorted(optimizers)}, the agent has {sorted(names)}.")
    for name in names:
        optimizer = getattr(agent.policy, name)
        fresh = optimizer.state_dict()
        saved_groups = optimizers[name]["param_groups"]
        if [g["params"] for g in saved_groups] != [g["params"] for g in fresh["param_groups"]]:
            raise DataError(
                f"{path}: optimizer '{name}' has other parameter groups than the rebuilt agent's."
            )
        groups = []
        for fresh_group, saved_group in zip(fresh["param_groups"], saved_groups):
            group = dict(fresh_group)
            for field in ("lr", "betas", "eps", "weight_decay"):
                if field in saved_group:
                    group[field] = tuple(saved_group[field]) if field == "betas" else saved_group[field]
            groups.append(group)
        prefix = f"{OPTIMIZER_PREFIX}{name}."
        state: dict[int, dict[str, torch.Tensor]] = {}
        n_params = sum(len(g["params"]) for g in groups)
        for tensor_name, tensor in tensors.items():
            if tensor_name.startswith(prefix):
                index, _, field = tensor_name[len(prefix) :].partition(".")
                if not index.isdigit() or int(index) >= n_params or not field:
                    raise DataError(f"{path}: unexpected optimizer tensor '{tensor_name}'.")
                state.setdefault(int(index), {})[field] = tensor
        params = [p for g in optimizer.param_groups for p in g["params"]]
        for index, values in state.items():
            for field in ("exp_avg", "exp_avg_sq"):
                if field in values and values[field].shape != params[index].shape:
                    raise DataError(
                        f"{path}: optimizer tensor '{prefix}{index}.{field}' does not fit its parameter."
                    )
        optimizer.load_state_dict({"state": state, "param_groups": groups})


# ------------------------------------------------------------------------------------- reference actions


def reference_actions(agent: "OfflineAlgorithm", n: int = 8, seed: int = 0) -> dict[str, Any]:
    """Fixed observations and the deterministic actions `agent` takes on them, for reference_actions.json.

    The observations lie where the agent was trained: mean + std * z, with (mean, std) its observation
    normaliser (0 and 1 when normalisation is off) and z ~ N(0, I) from numpy's PCG64 seeded `seed`.
    """
    mean = agent.policy.obs_mean.detach().cpu().numpy().astype(np.float64)
    std = agent.policy.obs_std.detach().cpu().numpy().astype(np.float64)
    z = np.random.default_rng(seed).standard_normal((n, mean.size))
    observations = (mean + std * z).astype(np.float32).reshape(n, *agent.observation_space.shape)
    actions, _ = agent.predict(observations, deterministic=True)
    return {
        "description": f"deterministic actions on {n} observations mean + std * z of the observation "
        f"normaliser, z ~ N(0, I) from numpy.random.default_rng({seed})",
        "observations": observations.tolist(),
        "actions": np.asarray(actions, dtype=np.float32).tolist(),
    }


def check_reference_actions(
    agent: "OfflineAlgorithm", reference: Any, path: str | os.PathLike, atol: float = 1e-5
) -> float:
    """The largest |action - recorded action| of `agent` on the recorded observations; a DataError when it
    exceeds `atol` (a checkpoint that does not reproduce what it recorded)."""
    try:
        observations = np.asarray(reference["observations"], dtype=np.float32)
        recorded = np.asarray(reference["actions"], dtype=np.float32)
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(
            f"{path}: {REFERENCE_NAME} must hold 'observations' and 'actions' as number lists ({error})."
        ) from None
    if observations.shape[1:] != agent.observation_space.shape or recorded.shape != (
        len(observations),
        *agent.action_space.shape,
    ):
        raise DataError(
            f"{path}: {REFERENCE_NAME} shapes {observations.shape}, {recorded.shape} do not fit the agent."
        )
    actions, _ = agent.predict(observations, deterministic=True)
    error = float(np.abs(np.asarray(actions, dtype=np.float32) - recorded).max())
    if not error <= atol:
        raise DataError(
            f"{path}: the agent's actions differ from {REFERENCE_NAME} by {error:.3g} (> {atol})."
        )
    return error
