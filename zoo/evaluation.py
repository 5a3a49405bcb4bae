"""Batched evaluation with normalised scores, the callbacks that run it during training (one agent, or
every member of a population in one batched loop), and seed aggregates with bootstrap CIs."""

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


# Many policies at once: observations (K, n, obs_dim) -> actions (K, n, act_dim), one call for all K.
MembersPredictFn = Callable[[np.ndarray], np.ndarray]


def population_episodes(
    predict_members: MembersPredictFn,
    env_id: str,
    n_members: int,
    n_episodes: int = 10,
    seed: int = 0,
    max_episode_steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns and lengths, each (n_members, n_episodes), of every member's `n_episodes` episodes: all
    K * n envs run side by side and each step makes ONE policy call for all of them.

    Member k's episode i is reset with seed `seed + i`, the seed `evaluate_episodes(..., seed)` gives it,
    so a member is scored on exactly the initial states an ordinary run (evaluated with the same `seed`)
    is scored on: the seed of the evaluation episodes never depends on the training seed or on K. The
    policy call always takes the full (K, n, obs_dim) array (a member's finished envs keep their last
    observation, whose actions are dropped): a deterministic policy acts on each row alone, so the actions
    of the running envs are the ones the single-agent loop computes on its shrinking batch.
    """
    envs = [[make_env(env_id, max_episode_steps=max_episode_steps) for _ in range(n_episodes)]
            for _ in range(n_members)]
    try:
        with torch_threads(1):
            return _run_population_episodes(predict_members, envs, seed)
    finally:
        for row in envs:
            for env in row:
                env.close()


def _run_population_episodes(
    predict_members: MembersPredictFn, envs: list[list[gym.Env]], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    shape = (len(envs), len(envs[0]))
    obs = np.stack([np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(row)]) for row in envs])
    returns = np.zeros(shape)
    lengths = np.zeros(shape, dtype=np.int64)
    running = np.ones(shape, dtype=bool)
    while running.any():
        actions = np.asarray(predict_members(obs))
        if actions.shape[:2] != shape:
            raise ValueError(
                f"predict_members returned actions of shape {actions.shape} for observations {obs.shape}."
            )
        for k, i in zip(*np.nonzero(running)):
            obs[k, i], reward, terminated, truncated, _ = envs[k][i].step(actions[k, i])
            returns[k, i] += reward
            lengths[k, i] += 1
            running[k, i] = not (terminated or truncated)
    return returns, lengths


def agent_predict_members(agent) -> MembersPredictFn:
    return lambda obs: agent.predict_members(obs, deterministic=True)


def evaluate_population(
    agent, n_episodes: int = 10, seed: int = 100, task: Task | None = None, step: int | None = None
) -> list[Evaluation]:
    """One Evaluation per member of a population agent (`agent.n_members`, `agent.predict_members`), all
    members' episodes batched (population_episodes); scores from `task` (default: the agent's), at `step`
    (default: the agent's num_timesteps). Member k's Evaluation equals what EvalCallback records for an
    ordinary agent with member k's weights and the same evaluation `seed` (EvalCallback's default: 100)."""
    task = task or agent.task
    if task is None:
        raise ValueError(
            "evaluate_population needs a task: the agent has no dataset, pass task=Task('<env id>')."
        )
    returns, lengths = population_episodes(
        agent_predict_members(agent), task.env_id, agent.n_members, n_episodes, seed
    )
    step = agent.num_timesteps if step is None else step
    return [make_evaluation(step, r, n, task) for r, n in zip(returns, lengths)]


def make_evaluation(step: int, returns: np.ndarray, lengths: np.ndarray, task: Task) -> Evaluation:
    """The Evaluation of episodes with these returns and lengths: mean and std of the returns, and the mean
    normalized score where the task has reference returns."""
    score = float(np.mean(task.normalized_score(returns))) if task.has_reference else None
    return Evaluation(step, float(returns.mean()), float(returns.std()), score, len(returns), int(lengths.sum()))


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
        result = make_evaluation(self.num_timesteps, returns, lengths, self.task)
        score = result.normalized_score
        self.evaluations.append(result)
        self.logger.record("eval/return_mean", result.return_mean)
        self.logger.record("eval/return_std", result.return_std)
        if score is not None:
            self.logger.record("eval/normalized_score", score)
        if self.verbose:
            shown = f", normalized score {score:.1f}" if score is not None else ""
            print(f"step {self.num_timesteps}: return {result.return_mean:.1f} ± {result.return_std:.1f}{shown}")
        if self.log_path is not None:
            append_evaluation_csv(self.log_path / "evaluations.csv", result)
        return result

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.num_timesteps % self.eval_freq == 0:
            self.evaluate()
        return True



class PopulationEvalCallback(BaseCallback):
    """EvalCallback for a population agent: every `eval_freq` gradient steps all members are evaluated in
    one batched loop (evaluate_population); member k's Evaluation goes to `self.evaluations[k]` and, with
    `log_paths`, to `log_paths[k]/evaluations.csv` (the file an ordinary run of seed k writes). The logger
    gets the mean over members (`eval/return_mean`, `eval/normalized_score`), as it gets the members' mean
    of the training statistics."""

    def __init__(
        self,
        eval_freq: int = 5000,
        n_eval_episodes: int = 10,
        seed: int = 100,
        log_paths: list[str | os.PathLike] | None = None,
        labels: list[str] | None = None,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        self.eval_freq, self.n_eval_episodes, self.seed = eval_freq, n_eval_episodes, seed
        self.log_paths = [Path(p) for p in log_paths] if log_paths is not None else None
        self.labels = labels
        self.task: Task | None = None
        self.evaluations: list[list[Evaluation]] = []

    def _on_training_start(self) -> None:
        self.task = self.model.task
        if self.task is None:
            raise ValueError("PopulationEvalCallback needs the agent's task: build the population on a dataset.")
        n = self.model.n_members
        if self.log_paths is not None and len(self.log_paths) != n:
            raise ValueError(f"{len(self.log_paths)} log paths for a population of {n} members.")
        if not self.evaluations:
            self.evaluations = [[] for _ in range(n)]

    def evaluate(self) -> list[Evaluation]:
        results = evaluate_population(self.model, self.n_eval_episodes, self.seed, self.task, self.num_timesteps)
        for k, result in enumerate(results):
            self.evaluations[k].append(result)
            if self.log_paths is not None:
                append_evaluation_csv(self.log_paths[k] / "evaluations.csv", result)
        self.logger.record("eval/return_mean", float(np.mean([r.return_mean for r in results])))
        normalized = all(r.normalized_score is not None for r in results)
        if normalized:
            self.logger.record("eval/normalized_score", float(np.mean([r.normalized_score for r in results])))
        if self.verbose:
            values = [r.normalized_score if normalized else r.return_mean for r in results]
            mean, low, high = bootstrap_mean_ci(values)
            labels = self.labels or [str(k) for k in range(len(results))]
            each = " ".join(f"{label}:{v:.1f}" for label, v in zip(labels, values))
            print(f"step {self.num_timesteps}: {'normalized score' if normalized else 'return'} {mean:.1f} "
                  f"[95% CI {low:.1f}, {high:.1f}] over {len(values)} members ({each})")
        return results

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.num_timesteps % self.eval_freq == 0:
            self.evaluate()
        return True


def append_evaluation_csv(path: Path, result: Evaluation) -> None:
    """Add a row to an evaluations.csv: the file is rewritten whole through zoo.io at each flush, so a reader
    (or a crash) sees the file before or after the row, never half a row."""
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


@dataclass
class SeedAggregate:
    """Evaluations of several seeds of one configuration: per-seed values at every evaluation step, their
    mean and its percentile-bootstrap confidence interval (bootstrap_mean_ci) per step.

    `final_*` are those of the last step, computed from the per-seed final values alone (the same numbers
    as the curve's last column: one set of bootstrap draws serves every column)."""

    seeds: list[int]
    metric: str  # "normalized score" (the task has reference returns) or "return"
    steps: np.ndarray  # (T,) evaluation steps
    values: np.ndarray  # (K, T): seed k's metric at step t
    mean: np.ndarray  # (T,)
    low: np.ndarray
    high: np.ndarray
    final_mean: float
    final_low: float
    final_high: float
    confidence: float = 0.95
    n_resamples: int = 10_000
    bootstrap_seed: int = 0
    online: bool = False  # steps are env steps of online fine-tuning (else gradient steps of offline learning)

    @property
    def final_values(self) -> np.ndarray:
        return self.values[:, -1]

    @property
    def step_label(self) -> str:
        """What the steps count, for axes: as zoo plot labels offline and online curves."""
        return "env steps (online fine-tuning)" if self.online else "gradient steps"

    def summary(self) -> str:
        """One line: the mean at the last step with its CI, over how many seeds, how the CI was drawn."""
        at = f"env step {int(self.steps[-1])} of online fine-tuning" if self.online else f"step {int(self.steps[-1])}"
        return (
            f"mean over {len(self.seeds)} seeds at {at}: {self.metric} "
            f"{self.final_mean:.1f} [{self.confidence:.0%} CI {self.final_low:.1f}, {self.final_high:.1f}] "
            f"(percentile bootstrap over seeds, {self.n_resamples} resamples)"
        )

    def to_json(self) -> dict:
        return {
            "seeds": list(self.seeds), "metric": self.metric,
            "confidence": self.confidence, "n_resamples": self.n_resamples, "bootstrap_seed": self.bootstrap_seed,
            "steps": "env steps" if self.online else "gradient steps",
            "final": {
                "step": int(self.steps[-1]),
                "per_seed": {str(s): float(v) for s, v in zip(self.seeds, self.final_values)},
                "mean": self.final_mean, "ci_low": self.final_low, "ci_high": self.final_high,
            },
            "curve": {
                "step": [int(s) for s in self.steps], "mean": self.mean.tolist(), "ci_low": self.low.tolist(),
                "ci_high": self.high.tolist(),
                "per_seed": {str(s): row.tolist() for s, row in zip(self.seeds, self.values)},
            },
        }

    def csv_text(self) -> str:
        """The curve as CSV: step, mean, ci_low, ci_high, then one column per seed (`seed<k>`)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["step", "mean", "ci_low", "ci_high", *(f"seed{s}" for s in self.seeds)])
        for t, step in enumerate(self.steps):
            writer.writerow([int(step), self.mean[t], self.low[t], self.high[t], *self.values[:, t]])
        return out.getvalue()


def aggregate_seeds(
    seeds: list[int], evaluations: list[list[Evaluation]], confidence: float = 0.95, n_resamples: int = 10_000,
    bootstrap_seed: int = 0, online: bool = False,
) -> SeedAggregate:
    """SeedAggregate of per-seed evaluation histories (`evaluations[k]` is seed `seeds[k]`'s, by step) on the
    steps every seed was evaluated at; the normalized score when every evaluation has one, else the return.
    `online`: the steps are env steps of online fine-tuning (labels only; the numbers are the same)."""
    if len(seeds) != len(evaluations) or not seeds:
        raise ValueError(f"{len(seeds)} seeds for {len(evaluations)} evaluation histories.")
    by_step = [{e.step: e for e in history} for history in evaluations]
    steps = sorted(set.intersection(*(set(h) for h in by_step)))
    if not steps:
        raise ValueError("The seeds share no evaluation step.")
    normalized = all(h[s].normalized_score is not None for h in by_step for s in steps)
    values = np.array([
        [h[s].normalized_score if normalized else h[s].return_mean for s in steps] for h in by_step
    ], dtype=np.float64)
    mean, low, high = bootstrap_mean_ci(values, confidence, n_resamples, bootstrap_seed)
    final_mean, final_low, final_high = bootstrap_mean_ci(values[:, -1], confidence, n_resamples, bootstrap_seed)
    return SeedAggregate(
        list(seeds), "normalized score" if normalized else "return", np.array(steps), values, mean, low, high,
        float(final_mean), float(final_low), float(final_high), confidence, n_resamples, bootstrap_seed, online,
    )
