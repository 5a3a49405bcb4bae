"""Batched evaluation with normalised scores, and the callback that runs it during training."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from zoo.data.tasks import Task
from zoo.threads import torch_threads

PredictFn = Callable[[np.ndarray], np.ndarray]


def evaluate_returns(
    predict: PredictFn,
    env_id: str,
    n_episodes: int = 10,
    seed: int = 0,
    max_episode_steps: int | None = None,
) -> np.ndarray:
    """Undiscounted return of `n_episodes` episodes, run side by side with one batched policy call per step.

    Episode i is reset with seed `seed + i`, so every evaluation with the same seed starts from the same
    initial states (as CORL and sfujim/TD3_BC do).
    """
    envs = [gym.make(env_id, max_episode_steps=max_episode_steps) for _ in range(n_episodes)]
    try:
        with torch_threads(1):
            return _run_episodes(predict, envs, seed)
    finally:
        for env in envs:
            env.close()


def _run_episodes(predict: PredictFn, envs: list[gym.Env], seed: int) -> np.ndarray:
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    returns = np.zeros(len(envs))
    running = np.ones(len(envs), dtype=bool)
    while running.any():
        active = np.flatnonzero(running)
        actions = predict(obs[active])
        for j, i in enumerate(active):
            obs[i], reward, terminated, truncated, _ = envs[i].step(actions[j])
            returns[i] += reward
            running[i] = not (terminated or truncated)
    return returns


def agent_predict(agent) -> PredictFn:
    return lambda obs: agent.predict(obs, deterministic=True)[0]


@dataclass
class Evaluation:
    step: int
    return_mean: float
    return_std: float
    normalized_score: float | None


class EvalCallback(BaseCallback):
    """Evaluate every `eval_freq` gradient steps; log `eval/return_mean` and `eval/normalized_score`.

    Keeps the history in `self.evaluations` (and `evaluations.csv` under `log_path`, when given) for
    learning curves.
    """

    def __init__(
        self,
        eval_freq: int = 5000,
        n_eval_episodes: int = 10,
        task: Task | None = None,
        seed: int = 100,
        log_path: str | os.PathLike | None = None,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        self.eval_freq, self.n_eval_episodes, self.task, self.seed = eval_freq, n_eval_episodes, task, seed
        self.log_path = Path(log_path) if log_path else None
        self.evaluations: list[Evaluation] = []

    def _on_training_start(self) -> None:
        self.task = self.task or self.model.task
        if self.task is None:
            raise ValueError("EvalCallback needs a task: the agent has no dataset, pass task=Task('<env id>').")

    def evaluate(self) -> Evaluation:
        returns = evaluate_returns(agent_predict(self.model), self.task.env_id, self.n_eval_episodes, self.seed)
        score = float(np.mean(self.task.normalized_score(returns))) if self.task.has_reference else None
        result = Evaluation(self.num_timesteps, float(returns.mean()), float(returns.std()), score)
        self.evaluations.append(result)
        self.logger.record("eval/return_mean", result.return_mean)
        self.logger.record("eval/return_std", result.return_std)
        if score is not None:
            self.logger.record("eval/normalized_score", score)
        if self.verbose:
            shown = f", normalized score {score:.1f}" if score is not None else ""
            print(f"step {self.num_timesteps}: return {result.return_mean:.1f} ± {result.return_std:.1f}{shown}")
        if self.log_path is not None:
            self._append_csv(result)
        return result

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.num_timesteps % self.eval_freq == 0:
            self.evaluate()
        return True

    def _append_csv(self, result: Evaluation) -> None:
        self.log_path.mkdir(parents=True, exist_ok=True)
        path = self.log_path / "evaluations.csv"
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", "return_mean", "return_std", "normalized_score"])
            writer.writerow([result.step, result.return_mean, result.return_std, result.normalized_score])
