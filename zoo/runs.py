"""One training run: dataset -> agent -> offline learning [-> online fine-tuning] -> evaluations,
checkpoints, logs and learning curve."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.logger import configure

from zoo.agents import OfflineAlgorithm
from zoo.config import load_hyperparams
from zoo.data import OfflineDataset
from zoo.io import atomic_write_json
from zoo.evaluation import EvalCallback, Evaluation, agent_predict, evaluate_returns
from zoo.plots import plot_learning_curve
from zoo.registry import make_agent


@dataclass
class RunResult:
    agent: OfflineAlgorithm
    evaluations: list[Evaluation]  # offline, every eval_freq gradient steps
    final: Evaluation  # the last one: after fine-tuning when there was any, else after offline learning
    behavior_score: float | None
    checkpoint: Path
    curve: Path
    initial: Evaluation | None = None  # the untrained agent (evaluate_initial=True)
    offline: Evaluation | None = None  # after offline learning
    online_evaluations: list[Evaluation] | None = None  # every finetune_eval_freq env steps


def train_offline(
    algo: str,
    dataset: OfflineDataset,
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_timesteps: int | None = None,
    hyperparams_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    n_finetune_timesteps: int | None = None,
    evaluate_initial: bool = False,
    progress_bar: bool = True,
    verbose: int = 1,
    command: str | None = None,
    fraction: float = 1.0,
) -> RunResult:
    """Train `algo` on `dataset` with its YAML hyperparameters, then fine-tune it online for
    `n_finetune_timesteps` env steps (YAML `n_finetune_timesteps`, default 0); everything lands in `out_dir`
    (offline checkpoint `<algo>.zip`, fine-tuned `<algo>-finetuned.zip`, online evaluations in `finetune/`)."""
    out_dir = Path(out_dir)
    kwargs, run = load_hyperparams(algo, dataset.dataset_id, hyperparams_path, overrides)
    if n_timesteps is not None:
        run["n_timesteps"] = n_timesteps
    if n_finetune_timesteps is not None:
        run["n_finetune_timesteps"] = n_finetune_timesteps
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "algo": algo, "dataset": dataset.dataset_id, "fraction": fraction, "seed": seed,
        "kwargs": kwargs, "run": run, "command": command,
    }
    atomic_write_json(out_dir / "config.json", config)

    agent = make_agent(algo, dataset, seed=seed, **kwargs)
    agent.set_logger(configure(str(out_dir), ["csv", "tensorboard"] + (["stdout"] if verbose > 1 else [])))
    eval_callback = EvalCallback(
        eval_freq=run["eval_freq"], n_eval_episodes=run["n_eval_episodes"], log_path=out_dir, verbose=verbose
    )
    initial = None
    if evaluate_initial:
        returns = evaluate_returns(agent_predict(agent), dataset.task.env_id, run["n_eval_episodes"], eval_callback.seed)
        score = float(np.mean(dataset.task.normalized_score(returns))) if dataset.task.has_reference else None
        initial = Evaluation(0, float(returns.mean()), float(returns.std()), score)
    agent.learn(run["n_timesteps"], callback=eval_callback, progress_bar=progress_bar)
    final = offline = _final_evaluation(eval_callback, agent)

    behavior = None
    if dataset.task.has_reference:
        behavior = float(np.mean(dataset.task.normalized_score(dataset.source_episode_returns)))
    checkpoint = out_dir / f"{algo}.zip"
    agent.save(checkpoint)
    curve = plot_learning_curve(
        eval_callback.evaluations, out_dir / "learning_curve.png",
        title=f"{algo} on {dataset.dataset_id} (seed {seed})", reference=behavior,
    )
    online = None
    if run["n_finetune_timesteps"] > 0:
        online_callback = EvalCallback(
            eval_freq=run["finetune_eval_freq"], n_eval_episodes=run["n_eval_episodes"],
            log_path=out_dir / "finetune", verbose=verbose,
        )
        agent.finetune(run["n_finetune_timesteps"], callback=online_callback, progress_bar=progress_bar)
        final = _final_evaluation(online_callback, agent)
        online = online_callback.evaluations
        checkpoint = out_dir / f"{algo}-finetuned.zip"
        agent.save(checkpoint)
    return RunResult(
        agent, eval_callback.evaluations, final, behavior, checkpoint, curve, initial, offline, online
    )


def _final_evaluation(callback: EvalCallback, agent: OfflineAlgorithm) -> Evaluation:
    """The evaluation at the agent's last step: the callback's own if it just ran one, else a new one."""
    last = callback.evaluations[-1] if callback.evaluations else None
    return last if last is not None and last.step == agent.num_timesteps else callback.evaluate()


def evaluate_checkpoint(
    algo: str | None, checkpoint: str | Path, n_episodes: int = 10, seed: int = 100, device: str = "auto"
) -> tuple[np.ndarray, Any]:
    """Load a saved agent and return the returns of `n_episodes` evaluation episodes and its task.

    `checkpoint`: a zoo checkpoint (it names its agent: `algo` may be None) or SB3's zip (agent key from
    `algo` or the run's config.json beside it); neither is unpickled (zoo.checkpoint.load_agent)."""
    from zoo.checkpoint import load_agent

    agent = load_agent(checkpoint, algo, device=device)
    if agent.task is None:
        raise ValueError(f"Checkpoint {checkpoint} records no task: it was not trained on a zoo dataset.")
    returns = evaluate_returns(agent_predict(agent), agent.task.env_id, n_episodes, seed)
    return returns, agent.task
