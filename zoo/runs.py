"""One offline training run: dataset -> agent -> evaluations -> checkpoint, logs and learning curve."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.logger import configure

from zoo.agents import OfflineAlgorithm
from zoo.config import load_hyperparams
from zoo.data import OfflineDataset
from zoo.evaluation import EvalCallback, Evaluation, agent_predict, evaluate_returns
from zoo.plots import plot_learning_curve
from zoo.registry import make_agent


@dataclass
class RunResult:
    agent: OfflineAlgorithm
    evaluations: list[Evaluation]
    final: Evaluation
    behavior_score: float | None
    checkpoint: Path
    curve: Path


def train_offline(
    algo: str,
    dataset: OfflineDataset,
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_timesteps: int | None = None,
    hyperparams_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    progress_bar: bool = True,
    verbose: int = 1,
) -> RunResult:
    """Train `algo` on `dataset` with its YAML hyperparameters; everything lands in `out_dir`."""
    out_dir = Path(out_dir)
    kwargs, run = load_hyperparams(algo, dataset.dataset_id, hyperparams_path)
    kwargs.update(overrides or {})
    if n_timesteps is not None:
        run["n_timesteps"] = n_timesteps
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {"algo": algo, "dataset": dataset.dataset_id, "seed": seed, "kwargs": kwargs, "run": run}
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str))

    agent = make_agent(algo, dataset, seed=seed, **kwargs)
    agent.set_logger(configure(str(out_dir), ["csv", "tensorboard"] + (["stdout"] if verbose > 1 else [])))
    eval_callback = EvalCallback(
        eval_freq=run["eval_freq"], n_eval_episodes=run["n_eval_episodes"], log_path=out_dir, verbose=verbose
    )
    agent.learn(run["n_timesteps"], callback=eval_callback, progress_bar=progress_bar)
    final = eval_callback.evaluations[-1] if eval_callback.evaluations and \
        eval_callback.evaluations[-1].step == agent.num_timesteps else eval_callback.evaluate()

    behavior = None
    if dataset.task.has_reference:
        behavior = float(np.mean(dataset.task.normalized_score(dataset.source_episode_returns)))
    checkpoint = out_dir / f"{algo}.zip"
    agent.save(checkpoint)
    curve = plot_learning_curve(
        eval_callback.evaluations, out_dir / "learning_curve.png",
        title=f"{algo} on {dataset.dataset_id} (seed {seed})", reference=behavior,
    )
    return RunResult(agent, eval_callback.evaluations, final, behavior, checkpoint, curve)


def evaluate_checkpoint(algo: str, checkpoint: str | Path, n_episodes: int = 10, seed: int = 100) -> tuple[np.ndarray, Any]:
    """Load a saved agent and return the returns of `n_episodes` evaluation episodes and its task."""
    from zoo.registry import agent_class

    agent = agent_class(algo).load(checkpoint)
    if agent.task is None:
        raise ValueError(f"Checkpoint {checkpoint} records no task: it was not trained on a zoo dataset.")
    returns = evaluate_returns(agent_predict(agent), agent.task.env_id, n_episodes, seed)
    return returns, agent.task
