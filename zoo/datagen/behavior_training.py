"""SAC behaviour policies for the D4RL-style datasets: training them, and choosing the checkpoints to ship.

`train_behavior` runs SB3's `SAC("MlpPolicy", env, learning_starts=10_000, seed=0)`, every other
setting at SB3's default, on one torch thread. Every 10k environment steps it saves the actor's state
dict (actor_<step:07d>.pt), evaluates 5 deterministic episodes (reset seeds 10000-10004) into
progress.csv (step, eval_mean, eval_std, wall_s), and saves the whole model without its replay buffer
(last_model.zip), each file written atomically. Called again on the same folder it resumes from
last_model.zip.

`check_checkpoints` re-evaluates the checkpoints with more episodes and chooses, as D4RL does,
expert = argmax_k R(k) and medium = argmin_{k < expert} |R(k) - R(expert)/3| over measured returns R;
`vendor_behavior` copies exactly the files the recipes of zoo.datagen.d4rl need into
zoo/assets/behavior/ with manifest.json.

Differs from an uninterrupted SB3 run: a resumed run refills its replay buffer from its current policy
(SB3 cannot restore a buffer that was not saved).
"""

from __future__ import annotations

import csv
import json
import time
import warnings
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from zoo.data.tasks import LOCOMOTION_ENV_IDS
from zoo.datagen.behavior import SACActor
from zoo.errors import ConfigError, DataError
from zoo.evaluation import evaluate_returns
from zoo.io import atomic_path, atomic_write, atomic_write_bytes, atomic_write_text
from zoo.threads import torch_threads

PROGRESS_FIELDS = ("step", "eval_mean", "eval_std", "wall_s")
EVAL_SEED = 10_000  # progress.csv: reset seeds 10000..10000+eval_episodes-1
CHECK_SEED = 20_000  # check_checkpoints: other initial states than the training-time evaluation
RECHECK_SEED = 30_000


def resolve_env(env: str) -> tuple[str, str]:
    """`hopper` or `Hopper-v5` -> ("hopper", "Hopper-v5")."""
    by_id = {env_id: key for key, env_id in LOCOMOTION_ENV_IDS.items()}
    if env in LOCOMOTION_ENV_IDS:
        return env, LOCOMOTION_ENV_IDS[env]
    if env in by_id:
        return by_id[env], env
    raise ConfigError(
        f"Unknown env '{env}': use one of {', '.join(LOCOMOTION_ENV_IDS)} "
        f"(or {', '.join(LOCOMOTION_ENV_IDS.values())})."
    )


def actor_file(step: int) -> str:
    return f"actor_{step:07d}.pt"


# ------------------------------------------------------------------------------------------ training


def train_behavior(
    env: str,
    out_dir: str | Path,
    total_steps: int = 1_000_000,
    *,
    seed: int = 0,
    learning_starts: int = 10_000,
    checkpoint_every: int = 10_000,
    eval_episodes: int = 5,
    progress: bool = False,
) -> Path:
    """Train (or resume training of) the SAC behaviour policy of `env` up to `total_steps` env steps.

    learning_starts, checkpoint_every, eval_episodes: the README's 10k / 10k / 5; smaller values are
    for tests. Returns out_dir.
    """
    from stable_baselines3 import SAC

    _, env_id = resolve_env(env)
    if total_steps < 1 or checkpoint_every < 1 or eval_episodes < 1:
        raise ConfigError("total_steps, checkpoint_every and eval_episodes must be positive.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last_model = out / "last_model.zip"
    with torch_threads(1):
        train_env = gym.make(env_id)
        if last_model.exists():
            try:
                model = SAC.load(last_model, env=train_env, device="cpu")
            except ValueError as error:  # SB3: "Observation spaces do not match"
                raise DataError(f"{last_model} does not fit {env_id}: {error}") from error
            model.set_random_seed(seed + model.num_timesteps)
            rows = [r for r in read_progress(out) if r["step"] <= model.num_timesteps]
            reset = False
        else:
            model = SAC("MlpPolicy", train_env, learning_starts=learning_starts, seed=seed, device="cpu")
            rows = []
            reset = True
        remaining = total_steps - model.num_timesteps
        if remaining <= 0:  # already there: leave the folder as it is
            return out
        _write_progress(out, rows)  # drops the rows of a crash after the last saved model
        callback = _CheckpointCallback(out, env_id, checkpoint_every, eval_episodes, rows)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="rich is experimental")  # SB3's progress bar
            model.learn(remaining, callback=callback, reset_num_timesteps=reset, progress_bar=progress)
    return out


def read_progress(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "progress.csv"
    if not path.exists():
        return []
    with path.open() as f:
        return [
            {
                "step": int(r["step"]),
                "eval_mean": float(r["eval_mean"]),
                "eval_std": float(r["eval_std"]),
                "wall_s": float(r["wall_s"]),
            }
            for r in csv.DictReader(f)
        ]


def _write_progress(out: Path, rows: list[dict]) -> None:
    with atomic_write(out / "progress.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PROGRESS_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow(_progress_row(row))


def _progress_row(row: dict) -> dict:
    return {
        "step": row["step"],
        "eval_mean": f"{row['eval_mean']:.1f}",
        "eval_std": f"{row['eval_std']:.1f}",
        "wall_s": f"{row['wall_s']:.0f}",
    }


def _save_actor(model, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(model.policy.actor.state_dict(), tmp)


class _CheckpointCallback(BaseCallback):
    """Every `every` env steps: actor state dict, deterministic evaluation, progress row, whole model."""

    def __init__(self, out: Path, env_id: str, every: int, eval_episodes: int, rows: list[dict]):
        super().__init__()
        self.out, self.env_id, self.every, self.eval_episodes = out, env_id, every, eval_episodes
        self.rows = list(rows)  # progress.csv is rewritten whole (atomically) at each checkpoint
        self.wall_offset = rows[-1]["wall_s"] if rows else 0.0

    def _on_training_start(self) -> None:
        self.start = time.perf_counter()
        if self.model.num_timesteps == 0:
            _save_actor(self.model, self.out / actor_file(0))  # the untrained actor

    def _on_step(self) -> bool:
        if self.model.num_timesteps % self.every == 0:
            self._checkpoint(self.model.num_timesteps)
        return True

    def _on_training_end(self) -> None:
        if self.model.num_timesteps % self.every:  # stopped between checkpoints: keep the model to resume
            self._save_model()

    def _save_model(self) -> None:
        with atomic_path(self.out / "last_model.zip") as tmp:
            self.model.save(tmp)

    def _checkpoint(self, step: int) -> None:
        _save_actor(self.model, self.out / actor_file(step))
        returns = evaluate_returns(
            lambda obs: self.model.predict(obs, deterministic=True)[0],
            self.env_id,
            self.eval_episodes,
            seed=EVAL_SEED,
        )
        wall = self.wall_offset + time.perf_counter() - self.start
        self.rows.append(
            {"step": step, "eval_mean": returns.mean(), "eval_std": returns.std(), "wall_s": wall}
        )
        _write_progress(self.out, self.rows)
        # The model last: a crash before this resumes from the previous checkpoint (later rows are dropped).
        self._save_model()


# ------------------------------------------------------------------------- choosing the checkpoints


def evaluate_actor(
    path: str | Path, env_id: str, episodes: int, seed: int, *, deterministic: bool = True
) -> np.ndarray:
    """Returns of `episodes` episodes (reset seeds seed..seed+episodes-1) of a saved SAC actor, batched."""
    with gym.make(env_id) as env:
        actor = SACActor.from_state_dict(path, env)
    generator = torch.Generator().manual_seed(seed)
    predict: Callable[[np.ndarray], np.ndarray] = lambda obs: actor.act(obs, deterministic, generator)
    return evaluate_returns(predict, env_id, episodes, seed=seed)


def check_checkpoints(
    run_dir: str | Path,
    env: str,
    *,
    episodes: int = 20,
    recheck_episodes: int = 50,
    n_recheck: int = 5,
    medium_fraction: float = 1 / 3,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Re-evaluate a run's checkpoints and choose medium and expert.

    1. Every checkpoint after step 0 with a progress.csv row: `episodes` deterministic episodes
       (reset seeds 20000...).
    2. The `n_recheck` best (expert candidates) and the `n_recheck` before them nearest to
       medium_fraction x the best (medium candidates): `recheck_episodes` more (reset seeds 30000...);
       their measured return pools both rounds.
    3. expert = the highest measured return; medium = the checkpoint before it whose measured return is
       nearest to medium_fraction x the expert's.
    """
    key, env_id = resolve_env(env)
    run = Path(run_dir)
    progress = {r["step"]: r for r in read_progress(run)}
    checks: dict[int, dict] = {}
    for step in sorted(progress):
        path = run / actor_file(step)
        if step == 0 or not path.exists():
            continue
        returns = evaluate_actor(path, env_id, episodes, CHECK_SEED)
        checks[step] = {
            "step": step,
            "return_progress_csv": progress[step]["eval_mean"],
            "_returns": list(returns),
        }
        if log:
            log(
                f"{key} {step:>7}: progress.csv {progress[step]['eval_mean']:8.1f}  "
                f"checked {returns.mean():8.1f} ± {returns.std():6.1f}"
            )
    if not checks:
        raise DataError(f"No checkpoints with progress.csv rows in {run}.")

    def mean(step: int) -> float:
        return float(np.mean(checks[step]["_returns"]))

    best = sorted(checks, key=mean, reverse=True)[:n_recheck]
    target = medium_fraction * mean(best[0])
    before = [s for s in checks if s < best[0]]
    near = sorted(before, key=lambda s: abs(mean(s) - target))[:n_recheck]
    for step in sorted(set(best) | set(near)):
        extra = evaluate_actor(run / actor_file(step), env_id, recheck_episodes, RECHECK_SEED)
        checks[step]["_returns"] += list(extra)
        if log:
            log(
                f"{key} {step:>7}: rechecked over {len(checks[step]['_returns'])} episodes: {mean(step):8.1f}"
            )
    expert = max(checks, key=mean)
    target = medium_fraction * mean(expert)
    medium = min((s for s in checks if s < expert), key=lambda s: abs(mean(s) - target))
    for c in checks.values():
        returns = np.asarray(c.pop("_returns"))
        c.update(
            return_measured=round(float(returns.mean()), 1),
            return_measured_std=round(float(returns.std()), 1),
            episodes=len(returns),
        )
    procedure = {
        "deterministic_episodes": episodes,
        "reset_seeds": f"{CHECK_SEED}..{CHECK_SEED + episodes - 1}",
        "recheck": f"the {n_recheck} best and the {n_recheck} nearest to {medium_fraction:.3g} x best: "
        f"{recheck_episodes} more episodes "
        f"(reset seeds {RECHECK_SEED}..{RECHECK_SEED + recheck_episodes - 1}), pooled",
        "medium_rule": f"measured return nearest {medium_fraction:.3g} x the expert's, before the expert",
        "expert_rule": "highest measured return",
    }
    return {
        "env": key,
        "env_id": env_id,
        "medium_step": medium,
        "expert_step": expert,
        "checks": checks,
        "procedure": procedure,
    }


def vendor_behavior(
    run_dir: str | Path,
    checked: dict,
    dest: str | Path | None = None,
    *,
    stochastic_episodes: int = 20,
    segment_steps: int = 10_000,
    source: str | None = None,
) -> dict:
    """Copy the checkpoints the d4rl recipes need (replay segments up to medium, medium, expert) into
    `dest` (default zoo/assets/behavior/) as <env>_sac_actor_<step>.pt and record them in manifest.json.

    Also measures the stochastic return (what the datasets hold) of each vendored checkpoint.
    """
    key, env_id = checked["env"], checked["env_id"]
    medium, expert = checked["medium_step"], checked["expert_step"]
    dest = Path(dest) if dest is not None else Path(str(resources.files("zoo") / "assets" / "behavior"))
    dest.mkdir(parents=True, exist_ok=True)
    needed = {*range(segment_steps, medium, segment_steps), medium, expert}
    entries = []
    for step, c in sorted(checked["checks"].items()):
        entry = {"file": None, **c}
        if step in needed:
            name = f"{key}_sac_actor_{step:07d}.pt"
            src = Path(run_dir) / actor_file(step)
            if not (dest / name).exists() or (dest / name).read_bytes() != src.read_bytes():
                atomic_write_bytes(dest / name, src.read_bytes())
            returns = evaluate_actor(
                dest / name, env_id, stochastic_episodes, CHECK_SEED, deterministic=False
            )
            entry.update(
                file=name,
                return_stochastic=round(float(returns.mean()), 1),
                return_stochastic_std=round(float(returns.std()), 1),
            )
        entries.append(entry)
    missing = needed - set(checked["checks"])
    if missing:
        raise DataError(f"{run_dir} lacks checked checkpoints {sorted(missing)} that the recipes need.")
    manifest_path = dest / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"envs": {}}
    manifest["envs"][key] = {
        "env_id": env_id,
        "source": source or f"SB3 SAC run {Path(run_dir).name}/ (actor_<step>.pt, progress.csv)",
        "check": {
            **checked["procedure"],
            "stochastic_episodes": stochastic_episodes,
            "stochastic_reset_seeds": f"{CHECK_SEED}..{CHECK_SEED + stochastic_episodes - 1}",
        },
        "medium": f"{key}_sac_actor_{medium:07d}.pt",
        "expert": f"{key}_sac_actor_{expert:07d}.pt",
        "checkpoints": entries,
    }
    manifest["envs"] = dict(sorted(manifest["envs"].items()))
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1) + "\n")
    return manifest["envs"][key]
