"""The pretrained zoo: where checkpoints live, `load_pretrained`, `zoo export`, and the Hugging Face Hub.

A pretrained checkpoint is a zoo checkpoint folder (zoo.checkpoint) at `<key>/<dataset id>/seed<seed>/`
under a root. `load_pretrained(key, dataset_id, seed)` looks in this order:

1. the local zoo folder, $ZOO_HOME (default ~/.cache/zoo): what `zoo export` and `zoo hub pull` write;
2. the checkpoints shipped inside the package, zoo/assets/pretrained/;
3. the Hugging Face Hub, with rl-zoo3's naming: repository `<org>/<key>-<dataset id, "/" as "-">`
   (org: $ZOO_HUB_ORG, default "offline-zoo"), the checkpoint in its folder `seed<seed>/`; it is
   downloaded into the Hub's cache, validated, and copied into 1., so the next call finds it locally.

The Hub part is a thin layer over `huggingface_hub` (snapshot_download, HfApi.create_repo /
upload_folder), imported only when used: `pip install "offline-zoo[hub]"`. Nothing from the Hub is run
either: what comes down is loaded like any other checkpoint (JSON and safetensors, checksummed).
"""

from __future__ import annotations

import csv
import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.agents.sb3_zip import load_sb3_zip
from zoo.checkpoint import (
    CONFIG_NAME,
    REFERENCE_NAME,
    WEIGHTS_NAME,
    check_reference_actions,
    checkpoint_contents,
    copy_checkpoint,
    last_run_checkpoint,
    load_checkpoint,
    read_checkpoint_config,
    reference_actions,
    write_checkpoint,
)
from zoo.errors import DataError, UserError

if TYPE_CHECKING:
    from zoo.agents.base import OfflineAlgorithm
    from zoo.data.dataset import OfflineDataset

SHIPPED_ROOT = Path(__file__).resolve().parent / "assets" / "pretrained"
DEFAULT_ORG = "offline-zoo"


def zoo_home() -> Path:
    """The local zoo folder: $ZOO_HOME, default ~/.cache/zoo."""
    return Path(os.environ.get("ZOO_HOME") or Path.home() / ".cache" / "zoo").expanduser()


def hub_org() -> str:
    return os.environ.get("ZOO_HUB_ORG") or DEFAULT_ORG


def checkpoint_subpath(key: str, dataset_id: str, seed: int) -> Path:
    """`<key>/<dataset id>/seed<seed>`, after checking each part is a plain name (no "..", no "\\")."""
    from zoo.registry import AGENTS

    if key not in AGENTS:
        near = difflib.get_close_matches(key, list(AGENTS), n=1)
        hint = f" Did you mean '{near[0]}'?" if near else f" Known: {', '.join(sorted(AGENTS))}."
        raise UserError(f"Unknown agent key '{key}'.{hint}")
    parts = dataset_id.split("/")
    if not dataset_id or any(p in ("", ".", "..") or "\\" in p for p in parts) or dataset_id.startswith("/"):
        raise UserError(f"'{dataset_id}' is not a dataset id (e.g. zoo/hopper/medium-v0).")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed is a whole number >= 0, got {seed!r}.")
    return Path(key, *parts, f"seed{seed}")


def repo_id(key: str, dataset_id: str, org: str | None = None) -> str:
    """rl-zoo3's Hub naming, `<org>/<algo>-<env>`, with the dataset id's "/" written "-":
    repo_id("td3bc", "zoo/hopper/medium-v0") == "offline-zoo/td3bc-zoo-hopper-medium-v0"."""
    checkpoint_subpath(key, dataset_id, 0)
    return f"{org or hub_org()}/{key}-{dataset_id.replace('/', '-')}"


@dataclass(frozen=True)
class Pretrained:
    """One checkpoint found in a root (`source`: "local" or "shipped") or in the Hub's cache ("cached")."""

    source: str
    key: str
    dataset_id: str
    seed: int
    path: Path
    normalized_score: float | None = None
    episodes: int | None = None
    gradient_steps: int | None = None
    env_steps: int | None = None


def find_pretrained(key: str, dataset_id: str, seed: int = 0) -> tuple[str, Path] | None:
    """(source, folder) of the first checkpoint in the lookup order's local roots, or None."""
    subpath = checkpoint_subpath(key, dataset_id, seed)
    for source, root in (("local", zoo_home()), ("shipped", SHIPPED_ROOT)):
        folder = root / subpath
        if (folder / CONFIG_NAME).is_file():
            return source, folder
    return None


def load_pretrained(
    key: str,
    dataset_id: str,
    seed: int = 0,
    *,
    dataset: "OfflineDataset | None" = None,
    device: str = "auto",
) -> "OfflineAlgorithm":
    """The pretrained `key` agent of `dataset_id` (training seed `seed`), ready to `predict`; with its
    `dataset` (load_dataset(dataset_id)) it can `learn` more and `finetune` online.

    Looks in $ZOO_HOME, then the package, then the Hugging Face Hub (see the module doc).
    """
    found = find_pretrained(key, dataset_id, seed)
    path = found[1] if found else pull(key, dataset_id, seed)
    config = read_checkpoint_config(path)
    if (config["agent"]["key"], config["dataset"]["id"], config["seed"]) != (key, dataset_id, seed):
        raise DataError(
            f"{path} holds '{config['agent']['key']}' on '{config['dataset']['id']}' seed {config['seed']}, "
            "not "
            f"'{key}' on '{dataset_id}' seed {seed}: move it to its own folder "
            f"({checkpoint_subpath(key, dataset_id, seed)})."
        )
    return load_checkpoint(path, dataset=dataset, device=device)


def list_pretrained(include_cache: bool = True) -> list[Pretrained]:
    """Every checkpoint under $ZOO_HOME and in the package, and those in the Hub's download cache."""
    entries = []
    for source, root in (("local", zoo_home()), ("shipped", SHIPPED_ROOT)):
        for config_file in sorted(root.glob(f"**/seed*/{CONFIG_NAME}")) if root.is_dir() else []:
            entry = _entry(source, config_file.parent)
            if entry is not None:
                entries.append(entry)
    if include_cache:
        entries.extend(_cached_entries())
    return entries


def _entry(source: str, folder: Path) -> Pretrained | None:
    try:
        config = read_checkpoint_config(folder)
    except UserError:
        return None  # not a checkpoint (or a broken one): `zoo eval` on it says why
    evaluation = config["evaluation"] or {}
    return Pretrained(
        source,
        config["agent"]["key"],
        config["dataset"]["id"] or "-",
        config["seed"] or 0,
        folder,
        evaluation.get("normalized_score"),
        evaluation.get("episodes"),
        config["training"]["gradient_steps"],
        config["training"]["env_steps"],
    )


def _cached_entries() -> list[Pretrained]:
    """Checkpoints of the zoo's org in huggingface_hub's cache (none when it is not installed)."""
    try:
        from huggingface_hub import scan_cache_dir
    except ImportError:
        return []
    try:
        cache = scan_cache_dir()
    except Exception:  # noqa: BLE001 -- no cache folder yet (CacheNotFound), or unreadable: nothing cached
        return []
    prefix = f"{hub_org()}/"
    entries = []
    for repo in cache.repos:
        if repo.repo_type != "model" or not repo.repo_id.startswith(prefix):
            continue
        for revision in repo.revisions:
            for config_file in sorted(Path(revision.snapshot_path).glob(f"seed*/{CONFIG_NAME}")):
                entry = _entry("cached", config_file.parent)
                if entry is not None:
                    entries.append(entry)
    return entries


# ---------------------------------------------------------------------------------------------- the Hub


def _huggingface_hub():
    try:
        import huggingface_hub
    except ImportError:
        raise UserError(
            'The Hugging Face Hub needs huggingface_hub: pip install "offline-zoo[hub]" (or huggingface_hub).'
        ) from None
    return huggingface_hub


def pull(
    key: str, dataset_id: str, seed: int = 0, *, org: str | None = None, revision: str | None = None
) -> Path:
    """Download `seed<seed>/` of the Hub repository `repo_id(key, dataset_id, org)`, validate it, and copy
    it into $ZOO_HOME/<key>/<dataset id>/seed<seed>; returns that folder."""
    subpath = checkpoint_subpath(key, dataset_id, seed)
    repo = repo_id(key, dataset_id, org)
    try:
        hub = _huggingface_hub()
    except UserError as error:
        raise UserError(f"{_not_found(key, dataset_id, seed)} The Hub was not tried: {error}") from None
    try:
        snapshot = Path(hub.snapshot_download(repo, revision=revision, allow_patterns=[f"seed{seed}/*"]))
    except Exception as error:  # noqa: BLE001 -- network, authentication, missing repo: one line for the user
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(
            f"{_not_found(key, dataset_id, seed)} The Hugging Face Hub repository {repo} could not be read "
            f"({type(error).__name__}: {first[:200]})."
        ) from None
    source = snapshot / f"seed{seed}"
    if not (source / CONFIG_NAME).is_file():
        raise UserError(
            f"{_not_found(key, dataset_id, seed)} The Hub repository {repo} has no seed{seed}/{CONFIG_NAME}."
        )
    destination = zoo_home() / subpath
    copy_checkpoint(source, destination)
    return destination


def _not_found(key: str, dataset_id: str, seed: int) -> str:
    available = sorted(
        {f"{e.key} {e.dataset_id} seed {e.seed}" for e in list_pretrained(include_cache=False)}
    )
    listing = f"; available here: {', '.join(available)}" if available else ""
    return (
        f"No pretrained '{key}' for '{dataset_id}' seed {seed} in $ZOO_HOME ({zoo_home()}) or the package"
        f"{listing}."
    )


def push(
    path: str | os.PathLike,
    *,
    repo: str | None = None,
    org: str | None = None,
    private: bool = False,
    token: str | None = None,
) -> str:
    """Upload a checkpoint folder to `seed<seed>/` of its Hub repository (created if needed), with a model
    card; returns the repository's URL. The checkpoint is loaded first, so only a valid one leaves."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"zoo hub push takes a checkpoint folder; {path} is not one.")
    config = read_checkpoint_config(path)
    load_checkpoint(path, device="cpu")  # validates names, shapes and checksum before anything is sent
    key, dataset_id, seed = config["agent"]["key"], config["dataset"]["id"], config["seed"] or 0
    if dataset_id is None and repo is None:
        raise UserError(f"{path} records no dataset id: pass --repo ORG/NAME.")
    repo = repo or repo_id(key, dataset_id, org)
    hub = _huggingface_hub()
    api = hub.HfApi(token=token)
    try:
        api.create_repo(repo, private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo,
            folder_path=str(path),
            path_in_repo=f"seed{seed}",
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, REFERENCE_NAME],
            commit_message=f"{key} on {dataset_id}, seed {seed}",
        )
        api.upload_file(
            repo_id=repo,
            path_or_fileobj=model_card(config, repo).encode(),
            path_in_repo="README.md",
            commit_message="model card",
        )
    except Exception as error:  # noqa: BLE001 -- network, authentication, permissions: one line for the user
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(
            f"Could not push to the Hugging Face Hub repository {repo} ({type(error).__name__}: "
            f"{first[:200]})."
        ) from None
    return f"https://huggingface.co/{repo}"


def model_card(config: dict[str, Any], repo: str) -> str:
    """A short README for the Hub: what the agent is, its score and budget, and the line that loads it."""
    key, dataset_id, seed = config["agent"]["key"], config["dataset"]["id"], config["seed"] or 0
    evaluation = config["evaluation"] or {}
    score = evaluation.get("normalized_score")
    score_line = (
        f"Normalized score {score:.1f} over {evaluation.get('episodes')} episodes."
        if score is not None
        else ""
    )
    return (
        f"---\nlibrary_name: offline-zoo\ntags:\n- reinforcement-learning\n- offline-rl\n- {key}\n---\n\n"
        f"# {key} on {dataset_id}\n\n"
        f"A pickle-free zoo checkpoint (config.json + model.safetensors) of `{key}` trained on "
        f"`{dataset_id}` "
        f"(seed {seed}, {config['training']['gradient_steps']} gradient steps). {score_line}\n\n"
        f'```python\nimport os\nos.environ["ZOO_HUB_ORG"] = "{repo.split("/")[0]}"\n'
        "from zoo import load_pretrained\n"
        f'agent = load_pretrained("{key}", "{dataset_id}", seed={seed})\n```\n\n'
        f"Trained with: `{config['command'] or 'unknown'}`\n"
    )


# ---------------------------------------------------------------------------------------------- zoo export


def export_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    stage: str = "final",
) -> Path:
    """Turn a `zoo train` run folder into a checkpoint folder without optimizer state.

    Reads the run's config.json (agent key, base, dataset, fraction, seed, settings, command) and its last
    SB3 zip (`<algo>-finetuned.zip` when it fine-tuned, else `<algo>.zip`, read without unpickling); the
    final score is the last row of its evaluations.csv when that row is at the saved agent's step. Writes
    reference_actions.json too (fixed observations and the actions they gave), then loads the result
    back and checks it reproduces them. Default destination: $ZOO_HOME/<key>/<dataset id>/seed<seed>.
    `stage="offline"` exports the agent as offline learning left it (`<algo>.zip`) from a run that went on
    to fine-tune: the starting point of an offline-to-online method's own online phase.
    """
    from zoo.registry import agent_spec

    run_dir = Path(run_dir)
    run_config = _read_run_config(run_dir)
    algo, kwargs, run = run_config["algo"], run_config["kwargs"], run_config["run"]
    base = kwargs.get("base")
    spec = agent_spec(algo)
    cls = spec.cls if base is None else spec.bases.get(base)
    if cls is None:
        raise DataError(f"{run_dir}/config.json: '{algo}' has no base '{base}'.")
    if stage not in ("final", "offline"):
        raise UserError(f"stage is 'final' (the run's last checkpoint) or 'offline', got {stage!r}.")
    checkpoint = last_run_checkpoint(run_dir) if stage == "final" else run_dir / f"{algo}.zip"
    if not checkpoint.is_file():
        raise UserError(f"{run_dir} has no {checkpoint.name}: it is not a finished `zoo train` run folder.")
    if checkpoint.name == f"{algo}-finetuned.zip":
        evaluations, env_steps = run_dir / "finetune" / "evaluations.csv", run.get("n_finetune_timesteps")
    else:
        evaluations, env_steps = run_dir / "evaluations.csv", 0
    agent = load_sb3_zip(cls, checkpoint, device="cpu")
    evaluation = final_evaluation(evaluations, agent.num_timesteps, run.get("n_eval_episodes"))
    destination = (
        Path(out)
        if out is not None
        else zoo_home() / checkpoint_subpath(algo, run_config["dataset"], run_config["seed"])
    )
    if destination.exists() and not overwrite:
        raise UserError(f"{destination} exists: pass --overwrite to replace it, or --out DIR.")
    config, tensors = checkpoint_contents(
        agent,
        key=algo,
        base=base,
        fraction=run_config.get("fraction"),
        env_steps=env_steps,
        evaluation=evaluation,
        command=run_config.get("command"),
        run_info={
            "exported_from": str(checkpoint.resolve()),
            "run_settings": run,
            "hyperparameters": {k: v for k, v in kwargs.items() if k != "device"},
        },
    )
    reference = reference_actions(agent)
    write_checkpoint(
        destination, config, tensors, {REFERENCE_NAME: (json.dumps(reference, indent=1) + "\n").encode()}
    )
    check_reference_actions(load_checkpoint(destination, device="cpu"), reference, destination)
    return destination


def _read_run_config(run_dir: Path) -> dict[str, Any]:
    file = run_dir / "config.json"
    if not file.is_file():
        raise UserError(f"{run_dir} is not a `zoo train` run folder: it has no config.json.")
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{file} is not valid JSON ({error}).") from None
    for field, types in (("algo", str), ("dataset", str), ("seed", int), ("kwargs", dict), ("run", dict)):
        if not isinstance(config.get(field) if isinstance(config, dict) else None, types):
            raise DataError(
                f"{file}: field '{field}' is missing or not a {types.__name__}; not a `zoo train` run config."
            )
    return config


def final_evaluation(csv_path: Path, step: int, episodes: int | None) -> dict[str, Any] | None:
    """The last row of an evaluations.csv if it was taken at `step` (the saved agent's), else None."""
    if not csv_path.is_file():
        return None
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or episodes is None or int(float(rows[-1]["step"])) != step:
        return None
    row = rows[-1]
    score = row.get("normalized_score")
    return {
        "step": step,
        "return_mean": float(row["return_mean"]),
        "return_std": float(row["return_std"]),
        "normalized_score": float(score) if score not in (None, "", "None") else None,
        "episodes": int(episodes),
    }
