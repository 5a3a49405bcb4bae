"""Batched evaluation with normalised scores, and the callback that runs it during training."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from zoo.data.tasks import Task
from zoo.envs import make_env
from zoo.io import atomic_write_text
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
    return evaluate_episodes(predict, env_id, n_episodes, seed, max_episode_steps)[0]


def evaluate_episodes(
    predict: PredictFn,
    env_id: str,
    n_episodes: int = 10,
    seed: int = 0,
    max_episode_steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`evaluate_returns` plus each episode's length in env steps (what an evaluation costs online)."""
    envs = [make_env(env_id, max_episode_steps=max_episode_steps) for _ in range(n_episodes)]
    try:
        with torch_threads(1):
            return _run_episodes(predict, envs, seed)
    finally:
        for env in envs:
            env.close()


def _run_episodes(predict: PredictFn, envs: list[gym.Env], seed: int) -> tuple[np.ndarray, np.ndarray]:
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    returns = np.zeros(len(envs))
    lengths = np.zeros(len(envs), dtype=np.int64)
    running = np.ones(len(envs), dtype=bool)
    while running.any():
        active = np.flatnonzero(running)
        actions = predict(obs[active])
        for j, i in enumerate(active):
            obs[i], reward, terminated, truncated, _ = envs[i].step(actions[j])
            returns[i] += reward
            lengths[i] += 1
            running[i] = not (terminated or truncated)
    return returns, lengths


def agent_predict(agent) -> PredictFn:
    return lambda obs: agent.predict(obs, deterministic=True)[0]


@dataclass
class Evaluation:
    step: int
    return_mean: float
    return_std: float
    normalized_score: float | None
    episodes: int = 0  # evaluation episodes run (the online budget an evaluation spends)
    env_steps: int = 0  # env steps those episodes took


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
        returns, lengths = evaluate_episodes(
            agent_predict(self.model), self.task.env_id, self.n_eval_episodes, self.seed
        )
        score = float(np.mean(self.task.normalized_score(returns))) if self.task.has_reference else None
        result = Evaluation(
            self.num_timesteps, float(returns.mean()), float(returns.std()), score, len(returns), int(lengths.sum())
        )
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
        """Add a row to evaluations.csv: the file is rewritten whole through zoo.io at each flush, so a reader
        (or a crash) sees the file before or after the row, never half a row."""
        path = self.log_path / "evaluations.csv"
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = "step,return_mean,return_std,normalized_score\n"
        row = io.StringIO()
        csv.writer(row, lineterminator="\n").writerow(
            [result.step, result.return_mean, result.return_std, result.normalized_score]
        )
        atomic_write_text(path, text + row.getvalue())


def bootstrap_mean_ci(
    values, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs and its percentile-bootstrap confidence interval: (mean, low, high).

    `values` is (n_runs,) or (n_runs, n_points), e.g. one row per seed and one column per evaluation step.
    A resample draws n_runs runs with replacement (one draw for all columns: a curve's band comes from whole
    resampled runs); low and high are the (1 - confidence)/2 and (1 + confidence)/2 percentiles (numpy's
    linear interpolation) of the `n_resamples` resampled means. This is the plain percentile bootstrap over
    seeds; for one task it is what rliable's stratified bootstrap does (rliable stratifies by task, and
    aggregates other than the mean, e.g. the IQM, are its business). One run gives an interval of zero width.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim not in (1, 2) or x.shape[0] == 0:
        raise ValueError(f"bootstrap_mean_ci takes (n_runs,) or (n_runs, n_points) values, got shape {x.shape}.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence is a probability in (0, 1), got {confidence}.")
    n = x.shape[0]
    draws = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    counts = np.zeros((n_resamples, n))
    np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1.0)  # times each run is drawn
    means = counts @ x.reshape(n, -1) / n  # (n_resamples, n_points)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail], axis=0)
    shape = x.shape[1:]
    return x.mean(axis=0), low.reshape(shape), high.reshape(shape)
