"""`zoo tune`: Optuna studies over an agent's search space, trained by `zoo.runs.train_offline`.

Objective of a trial: the score of its final evaluation (after the last offline gradient step, or after the
last online env step when fine-tuning), averaged over `seeds` training seeds 0..K-1. The score is the
normalized score (D4RL convention, 100 = expert) where the task has reference returns, else the mean
return; each evaluation runs `n_eval_episodes` episodes with the evaluation seeds of `zoo train`.

Populations: the K seeds of a trial train as one population agent (zoo.registry.make_population; offline,
then online when the study fine-tunes), and with
`batch` B > 1 the worker asks Optuna for B trials at once (study.ask) and trains the K seeds of all B
trials as one population of B * K members, or one population per group of trials whose structural
settings (network sizes, numbers of critics, integer, boolean and string settings, the pretraining
schedule) agree, then tells Optuna each trial's outcome (study.tell). Each trial records in its user
attribute `trained_with` the values of its settings as its members' agents hold them. See _Trainer.

Intermediate values (for the pruner): after evaluation j of seed k, the mean over seeds 0..k of their
j-th evaluation score, reported at step k * M + j (M = periodic evaluations per seed, offline then online),
so trials are compared on the same seeds at the same point of training, whether the seeds ran one after
another or side by side in a population. A pruned trial stops at once, unless it shares a population
with trials that are not pruned: then its members train on with them (their compute is not saved, and
is counted in its budget), it stops reporting and is told PRUNED.

Budget: offline RL tuned with online evaluation is not offline any more. Every trial records as user
attributes the evaluation episodes it ran (`eval_episodes`), their env steps (`eval_env_steps`), the
online fine-tuning env steps (`online_env_steps`) and the offline gradient steps of its seeds together
(`gradient_steps`), updated after every evaluation (so pruned, failed and killed trials keep what they
spent); a trial in a population counts its own members' only, so the study's total, which every worker
prints when it ends, is the sum over trials.

Many workers: start `zoo tune` with the same --storage and --study-name on any number of machines.
`n_trials` is the study's total: a worker stops when finished + running trials reach it, and a trial
started past it (two workers asking at the same instant) is not run (FAIL, user attribute `surplus`), so
exactly `n_trials` trials finish. Dead workers' trials: see zoo/tune/storage.py.
"""

from __future__ import annotations

import json
import shlex
import socket
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from stable_baselines3.common.callbacks import BaseCallback

from zoo.errors import ConfigError, Interrupted, UserError
from zoo.tune.spaces import nest, sample, search_space
from zoo.tune.storage import default_storage_url, open_storage, redact, require_optuna

SAMPLERS = ("tpe", "random", "cmaes")
PRUNERS = ("median", "halving", "none")
BUDGET_ATTRS = ("eval_episodes", "eval_env_steps", "online_env_steps", "gradient_steps")
# Settings that must match when a worker joins an existing study (else its trials are not comparable).
STUDY_SETTINGS = (
    "algo",
    "dataset",
    "fraction",
    "steps",
    "finetune_steps",
    "seeds",
    "eval_freq",
    "finetune_eval_freq",
    "n_eval_episodes",
)


@dataclass
class TuneSettings:
    algo: str
    dataset: str
    fraction: float = 1.0
    n_trials: int = 20
    timeout: float | None = None
    storage: str | None = None  # None: sqlite:///<out>/study.db
    study_name: str | None = None  # None: "<algo>-<dataset>" (plus the fraction when below 1)
    sampler: str = "tpe"
    pruner: str = "median"
    seeds: int = 1
    n_jobs: int = 1
    batch: int = 1  # trials asked at once and trained together (populations)
    steps: int | None = None  # gradient steps per trial (None: the YAML's n_timesteps)
    finetune_steps: int | None = None  # online env steps per trial (None: the YAML's, usually 0)
    n_evaluations: int | None = None  # periodic evaluations per phase (None: the YAML's eval_freq)
    eval_episodes: int | None = None  # episodes per evaluation (None: the YAML's n_eval_episodes)
    hyperparams: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # fixed settings (--set), not searched
    device: str = "auto"
    out: str | None = None  # None: runs/tune/<study name>
    heartbeat: int = 10
    grace_period: int | None = None
    sampler_seed: int | None = None
    write_best: str | None = None
    plots: bool = True
    command: str | None = None

    def __post_init__(self):
        checks = [
            (self.n_trials >= 1, f"--n-trials must be at least 1, got {self.n_trials}."),
            (self.seeds >= 1, f"--seeds must be at least 1, got {self.seeds}."),
            (self.n_jobs >= 1, f"--n-jobs must be at least 1, got {self.n_jobs}."),
            (self.batch >= 1, f"--batch must be at least 1, got {self.batch}."),
            (
                self.timeout is None or self.timeout > 0,
                f"--timeout must be positive seconds, got {self.timeout}.",
            ),
            (self.steps is None or self.steps >= 1, f"--steps must be at least 1, got {self.steps}."),
            (
                self.finetune_steps is None or self.finetune_steps >= 0,
                f"--finetune-steps must be 0 or more, got {self.finetune_steps}.",
            ),
            (
                self.n_evaluations is None or self.n_evaluations >= 1,
                f"--n-evaluations must be at least 1, got {self.n_evaluations}.",
            ),
            (
                self.eval_episodes is None or self.eval_episodes >= 1,
                f"--eval-episodes must be at least 1, got {self.eval_episodes}.",
            ),
            (0.0 < self.fraction <= 1.0, f"--fraction must be in (0, 1], got {self.fraction}."),
            (
                self.sampler in SAMPLERS,
                f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}.",
            ),
            (self.pruner in PRUNERS, f"--pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}."),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def name(self) -> str:
        if self.study_name:
            return self.study_name
        return f"{self.algo}-{self.dataset}" + (f"-fraction{self.fraction:g}" if self.fraction < 1 else "")

    @property
    def folder(self) -> Path:
        return Path(self.out) if self.out else Path("runs", "tune", self.name.replace("/", "_"))

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage_url(self.folder)


@dataclass
class _Plan:
    """What every trial of the study runs: resolved once, before any work, from the YAML and the flags."""

    settings: TuneSettings
    run: dict[str, Any]  # resolved run settings: n_timesteps, eval_freq, ... (see zoo.config.RUN_SETTINGS)
    evaluations_per_seed: int
    objective: str  # "normalized score" or "return"

    @property
    def warmup(self) -> int:
        """Evaluations of a seed before the median pruner may prune: the first third (rl-zoo3's rule)."""
        return self.evaluations_per_seed // 3 if self.settings.pruner == "median" else 0

    @property
    def population(self) -> bool:
        """Seeds and trials train as populations, offline and then online when the trials fine-tune: not on a
        --fraction below 1 (seed k trains on its own draw of the data, a population on one)."""
        return self.settings.fraction >= 1.0

    @property
    def study_attrs(self) -> dict[str, Any]:
        s, run = self.settings, self.run
        return {
            "algo": s.algo,
            "dataset": s.dataset,
            "fraction": s.fraction,
            "steps": run["n_timesteps"],
            "finetune_steps": run["n_finetune_timesteps"],
            "seeds": s.seeds,
            "eval_freq": run["eval_freq"],
            "finetune_eval_freq": run["finetune_eval_freq"],
            "n_eval_episodes": run["n_eval_episodes"],
            "objective": self.describe(),
        }

    def describe(self) -> str:
        run = self.run
        when = f"{run['n_timesteps']} gradient steps"
        if run["n_finetune_timesteps"]:
            when += f" and {run['n_finetune_timesteps']} online env steps"
        seeds = f"{self.settings.seeds} seed" + ("s" if self.settings.seeds > 1 else "")
        episodes = f"{run['n_eval_episodes']} episode" + ("s" if run["n_eval_episodes"] > 1 else "")
        return f"{self.objective} of the final evaluation ({episodes}) after {when}, mean over {seeds}"

    def overrides(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The fixed --set settings, the evaluation settings and the trial's drawn settings, nested."""
        merged = {**self.settings.overrides, "device": self.settings.device}
        for key in ("eval_freq", "finetune_eval_freq", "n_eval_episodes"):
            merged[key] = self.run[key]
        for key, value in nest(params or {}).items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        return merged


def plan(settings: TuneSettings) -> _Plan:
    """Check everything a trial needs before any work: the space, the YAML and --set, the dataset."""
    from zoo.config import load_hyperparams
    from zoo.data import load_dataset

    search_space(settings.algo)
    dataset = load_dataset(settings.dataset, fraction=settings.fraction, seed=0, device="cpu")
    kwargs, run = load_hyperparams(settings.algo, settings.dataset, settings.hyperparams, settings.overrides)
    if settings.steps is not None:
        run["n_timesteps"] = settings.steps
    if settings.finetune_steps is not None:
        run["n_finetune_timesteps"] = settings.finetune_steps
    if settings.eval_episodes is not None:
        run["n_eval_episodes"] = settings.eval_episodes
    n_evaluations = settings.n_evaluations
    run["eval_freq"] = _eval_freq(run["n_timesteps"], run["eval_freq"], n_evaluations)
    evaluations = run["n_timesteps"] // run["eval_freq"]
    if run["n_finetune_timesteps"]:
        run["finetune_eval_freq"] = _eval_freq(
            run["n_finetune_timesteps"], run["finetune_eval_freq"], n_evaluations
        )
        evaluations += run["n_finetune_timesteps"] // run["finetune_eval_freq"]
    objective = "normalized score" if dataset.task.has_reference else "return"
    return _Plan(settings, run, evaluations, objective)


def _eval_freq(total: int, freq: int, n_evaluations: int | None) -> int:
    """`n_evaluations` evenly spaced evaluations (the last at the end), else the YAML's frequency, capped at
    the run's length so that every trial reports at least once to the pruner."""
    if n_evaluations is not None:
        return max(1, total // n_evaluations)
    return min(freq, total)


def tune(settings: TuneSettings):
    """Run this worker's share of the study (until the study has `n_trials` trials), then print the
    summary, the best configuration as YAML and the plots. Returns the Optuna study."""
    optuna = require_optuna()
    the_plan = plan(settings)
    study = _open_study(settings, the_plan, optuna, create=True)
    folder = settings.folder
    if not study.get_trials(deepcopy=False) and any(folder.glob("trial-*")):
        raise UserError(
            f"--out {folder} holds trial folders of another study (study '{study.study_name}' has no trials "
            f"in {redact(settings.storage_url)}): choose another --out, or remove them."
        )
    folder.mkdir(parents=True, exist_ok=True)
    print(f"study '{study.study_name}' in {redact(settings.storage_url)}")
    print(f"objective: {the_plan.describe()}; trials in {folder}")
    if settings.seeds * settings.batch > 1:
        print(_how_trials_train(the_plan))
    space = search_space(settings.algo)
    print(f"search space ({settings.algo}): " + ", ".join(f"{k} {_describe(d)}" for k, d in space.items()))

    from optuna.trial import TrialState

    _fail_stale(optuna, study)
    if _full(study, settings.n_trials, TrialState):
        print(f"the study already has its {settings.n_trials} trials (finished or running): nothing to run")
    else:
        _optimize(study, the_plan, optuna, TrialState)
    summarize(study, settings, the_plan)
    return study


def _how_trials_train(the_plan: _Plan) -> str:
    s = the_plan.settings
    batch = f"{s.batch} trials asked at once" if s.batch > 1 else "one trial at a time"
    if not the_plan.population:  # --fraction below 1
        why = f"--fraction {s.fraction:g}: populations need offline learning on all the data"
        return f"{batch}; each seed trains as its own run ({why})"
    members = f"{s.batch} x {s.seeds} members" if s.batch > 1 else f"{s.seeds} members"
    return f"{batch}, trained as one population of {members} (one per group of structurally equal trials)"


def _open_study(settings: TuneSettings, the_plan: _Plan | None, optuna, *, create: bool):
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is ours; Optuna's would repeat it
    storage = open_storage(
        settings.storage_url, heartbeat_interval=settings.heartbeat, grace_period=settings.grace_period
    )
    if not create:
        try:
            return optuna.load_study(study_name=settings.name, storage=storage)
        except KeyError:
            names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
            raise UserError(
                f"No study '{settings.name}' in {redact(settings.storage_url)}; studies there: "
                f"{', '.join(names) or 'none'}. Run `zoo tune` without --best first."
            ) from None
    study = optuna.create_study(
        study_name=settings.name,
        storage=storage,
        sampler=_sampler(settings, optuna),
        pruner=_pruner(settings, the_plan, optuna),
        direction="maximize",
        load_if_exists=True,
    )
    recorded = study.user_attrs
    clashes = [
        f"{k} {recorded[k]!r} (this command: {v!r})"
        for k, v in the_plan.study_attrs.items()
        if k in STUDY_SETTINGS and k in recorded and recorded[k] != v
    ]
    if clashes:
        raise UserError(
            f"Study '{study.study_name}' was made with other settings: {'; '.join(clashes)}. "
            "Use the same flags, or another --study-name."
        )
    # Set the missing ones: a worker starting at the same instant may have set part of them (same values).
    for key, value in {**the_plan.study_attrs, "command": settings.command}.items():
        if key not in recorded:
            study.set_user_attr(key, value)
    return study


def _sampler(settings: TuneSettings, optuna):
    seed = settings.sampler_seed
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "cmaes":
        # CMA-ES models Float and Int settings; categorical and conditional ones are drawn at random.
        try:
            import cmaes  # noqa: F401
        except ModuleNotFoundError:
            raise UserError(
                "--sampler cmaes needs the package cmaes: pip install 'offline-zoo[tune]'."
            ) from None
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    # multivariate + group: TPE models settings jointly, and conditional ones within the branch they live in
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant_liar (--batch): trials asked together see each other as running with a poor value, so a
        # batch spreads over the space instead of drawing B near-copies of one point
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, n_startup_trials=5, constant_liar=settings.batch > 1
        )


def _pruner(settings: TuneSettings, the_plan: _Plan | None, optuna):
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    if settings.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    # no pruning before 5 finished trials, nor in the first third of a trial's evaluations (rl-zoo3's rule)
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=the_plan.warmup if the_plan else 0)


def _fail_stale(optuna, study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _full(study, n_trials: int, TrialState) -> bool:
    """The study needs no further trial: none waits, and finished plus running ones reach n_trials."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    if TrialState.WAITING in states:
        return False
    return sum(s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) for s in states) >= n_trials


def _optimize(study, the_plan: _Plan, optuna, TrialState) -> None:
    from tqdm.auto import tqdm

    settings = the_plan.settings
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = sum(t.state in finished for t in study.get_trials(deepcopy=False))
    # on a terminal only (disable=None): in a log file a bar is noise, the trial lines say the same
    bar = tqdm(
        total=settings.n_trials,
        initial=done,
        desc="trials",
        unit="trial",
        file=sys.stderr,
        dynamic_ncols=True,
        disable=None,
    )

    def after_trial(study, frozen) -> None:
        tqdm.write(trial_line(frozen, TrialState))
        trials = study.get_trials(deepcopy=False)
        bar.n = sum(t.state in finished for t in trials)
        bar.refresh()
        _fail_stale(optuna, study)

    def after_optimized_trial(study, frozen) -> None:
        after_trial(study, frozen)
        if _full(study, settings.n_trials, TrialState):
            study.stop()

    trainer = _Trainer(the_plan, optuna, TrialState, tqdm.write)
    try:
        if settings.batch > 1:
            _optimize_batches(study, trainer, after_trial)
        else:
            # n_trials caps this worker too, so a configuration that fails every time cannot loop forever
            study.optimize(
                _Objective(trainer),
                n_trials=settings.n_trials,
                timeout=settings.timeout,
                n_jobs=settings.n_jobs,
                catch=(Exception,),
                callbacks=[after_optimized_trial],
            )
    finally:
        bar.close()


def _optimize_batches(study, trainer: _Trainer, after_trial) -> None:
    """--batch B: ask Optuna for B trials at once (study.ask), train them together (_Trainer.train: one
    population per group of structurally equal trials), tell Optuna each trial's outcome (study.tell), and
    again, until the study has its trials, this worker has asked n_trials of them, or --timeout has passed
    (checked before each batch, as study.optimize checks it before each trial). --n-jobs J runs J such loops
    side by side (threads), as study.optimize runs J trials. Every running trial of a batch sends heartbeats
    (one thread for the batch), so a killed worker's trials are failed and retried as in study.optimize."""
    settings, TrialState = trainer.plan.settings, trainer.TrialState
    start = time.monotonic()
    lock = threading.Lock()
    asked = [0]

    def ask() -> list:
        with lock:  # workers of this process take turns; other processes race through the storage as usual
            if settings.timeout is not None and time.monotonic() - start >= settings.timeout:
                return []
            _fail_stale(trainer.optuna, study)
            states = [t.state for t in study.get_trials(deepcopy=False)]
            taken = sum(s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) for s in states)
            room = max(settings.n_trials - taken, sum(s == TrialState.WAITING for s in states))
            n = min(settings.batch, room, settings.n_trials - asked[0])
            asked[0] += max(n, 0)
            with warnings.catch_warnings():  # Optuna's note: heartbeats are study.optimize's (_heartbeats)
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
                return [study.ask() for _ in range(n)]

    def loop() -> None:
        while trials := ask():
            for frozen in trainer.run_batch(study, trials):
                after_trial(study, frozen)

    if settings.n_jobs == 1:
        loop()
        return
    with ThreadPoolExecutor(max_workers=settings.n_jobs) as pool:
        for future in [pool.submit(loop) for _ in range(settings.n_jobs)]:
            future.result()


@contextmanager
def _heartbeats(study, trials):
    """Record the heartbeat of every trial of a batch each heartbeat interval until the batch is told, as
    study.optimize does for its one trial (Optuna's HeartbeatThread); nothing when the storage has none."""
    storage = study._storage  # the RDBStorage study.optimize beats through (Optuna keeps it private)
    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial in trials:
                storage.record_heartbeat(trial._trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="zoo-tune-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class _Surplus(Exception):
    """A trial created past the study's n_trials (two workers asked at the same instant): not run."""


@dataclass
class _Job:
    """One trial being trained: its drawn settings, the constructor settings they resolve to, and what its
    K members (seeds 0..K-1) have reported and spent so far."""

    trial: Any
    params: dict[str, Any]  # drawn (and Given) settings, dotted names
    overrides: dict[str, Any]
    kwargs: dict[str, Any]  # the constructor settings (YAML + --set + drawn), as make_agent takes them
    folder: Path
    spent: dict[str, int]
    scores: list[list[float]] = field(default_factory=list)  # scores[k][j]: member k's j-th evaluation
    finals: list[float] = field(default_factory=list)
    trained_with: list[dict[str, Any]] = field(default_factory=list)  # per member: params as it trained
    pruned: str | None = None  # why, once the pruner said so
    error: str | None = None

    @property
    def number(self) -> int:
        return self.trial.number

    def save_spent(self) -> None:
        for key, value in self.spent.items():
            self.trial.set_user_attr(key, int(value))


class _Trainer:
    """Trains trials, each on seeds 0..K-1, and reports their evaluations to Optuna.

    Two ways, the same objective and the same intermediate values:
    - populations (the default): the K seeds of a trial, and the K seeds of every trial of a batch whose
      structural settings agree, train as ONE population agent (zoo.registry.make_population: member k of
      it equals an ordinary run of seed k to 1e-6), evaluated together (zoo.evaluation.evaluate_population,
      the evaluation seeds of `zoo train`); every member writes the files of an ordinary run's folder that
      tuning reads (trial-NNNN/seed-k: config.json with the settings it trained with, evaluations.csv, the
      checkpoint).
      When the plan fine-tunes online, the population then fine-tunes (OfflineAlgorithm.finetune: every
      member's env side by side, one batched policy call per step), as train_offline does after offline
      learning: seed-k/<algo>.zip after offline learning, seed-k/finetune/evaluations.csv every
      finetune_eval_freq env steps, seed-k/<algo>-finetuned.zip at the end; the final score is the online one.
    - one run per seed (zoo.runs.train_offline), as before populations: a trial of one seed in a batch of
      one, and every trial with --fraction below 1 (seed k trains on its own subset of the data, a population
      on one dataset).

    Reports: after evaluation j, for k = 0..K-1, the mean over seeds 0..k of their j-th score at step
    k * M + j (M = evaluations per seed), exactly the values the sequential runs report (seed after seed),
    so trials of both ways compare on the same seeds at the same point of training. A sequential trial asks
    the pruner after each report and stops at once; a population trial asks once per evaluation, after its
    K reports (its last step holds the mean of all K seeds), and not during the median pruner's warm-up
    (the first third of the seeds' evaluations).

    Pruning in a population: a member cannot leave its population, so a pruned trial's members keep
    training with the others until the population ends; the trial stops reporting at the evaluation where
    the pruner pruned it (its intermediate values end there, as a pruned sequential trial's do) and is told
    PRUNED, with its last reported value. Its compute is not saved, and its budget attributes count all of
    it (its members' gradient steps and evaluation episodes up to the end); a population whose trials are
    all pruned stops at once, so a batch of one trial prunes as a sequential trial does.
    """

    def __init__(self, the_plan: _Plan, optuna, TrialState, write=print):
        self.plan, self.optuna, self.TrialState, self.write = the_plan, optuna, TrialState, write

    # ------------------------------------------------------------------------------------------ set-up
    def prepare(self, trial) -> _Job:
        """Draw the trial's settings and record where and how it runs; _Surplus past the study's n_trials."""
        from zoo.config import load_hyperparams

        settings = self.plan.settings
        TrialState = self.TrialState
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
        trials = trial.study.get_trials(deepcopy=False)
        earlier = sum(t.number < trial.number and t.state in states for t in trials)
        if earlier >= settings.n_trials:
            trial.set_user_attr("surplus", True)
            for key in BUDGET_ATTRS:  # every trial states its budget: this one spent nothing
                trial.set_user_attr(key, 0)
            raise _Surplus(f"not run: the study has its {settings.n_trials} trials")
        params = sample(trial, search_space(settings.algo))
        overrides = self.plan.overrides(params)
        kwargs, _ = load_hyperparams(settings.algo, settings.dataset, settings.hyperparams, overrides)
        job = _Job(
            trial, params, overrides, kwargs, settings.folder / f"trial-{trial.number:04d}",
            dict.fromkeys(BUDGET_ATTRS, 0),
        )
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("folder", str(job.folder.resolve()))
        this = next(t for t in trials if t.number == trial.number)
        retry_of = this.system_attrs.get("failed_trial")  # set by Optuna's retry of a stale trial
        if retry_of is not None:
            trial.set_user_attr("retry_of", retry_of)
        # a retried trial arrives with its dead original's attributes: its own replace them (Optuna cannot
        # delete one, so those it may not set again are emptied)
        job.save_spent()
        for key in ("population", "pruned_in_population", "trained_with", "seed_scores"):
            if key in this.user_attrs:
                trial.set_user_attr(key, None)
        return job

    def run_batch(self, study, trials) -> list:
        """Train a batch of asked trials and tell Optuna each outcome; returns the told (frozen) trials."""
        TrialState = self.TrialState
        told: dict[int, Any] = {}
        jobs: list[_Job] = []
        with _heartbeats(study, trials):
            try:
                for trial in trials:
                    try:
                        jobs.append(self.prepare(trial))
                    except _Surplus:
                        told[trial.number] = study.tell(trial, state=TrialState.FAIL)
                    except Exception as error:  # a setting the YAML or the agent refuses: this trial fails
                        trial.set_user_attr("error", _one_line(error))
                        told[trial.number] = study.tell(trial, state=TrialState.FAIL)
                self.train(jobs)
            except BaseException:  # Ctrl-C, or a bug: no trial of the batch stays RUNNING
                for trial in trials:
                    if trial.number not in told:
                        told[trial.number] = study.tell(trial, state=TrialState.FAIL)
                raise
            for job in jobs:
                if job.error is not None:
                    job.trial.set_user_attr("error", job.error)
                    told[job.number] = study.tell(job.trial, state=TrialState.FAIL)
                elif job.pruned is not None:
                    told[job.number] = study.tell(job.trial, state=TrialState.PRUNED)
                else:
                    told[job.number] = study.tell(job.trial, float(np.mean(job.finals)))
        return [told[trial.number] for trial in trials]

    # ------------------------------------------------------------------------------------------ training
    def train(self, jobs: list[_Job]) -> None:
        """Train `jobs` (their outcome lands in each job: finals, pruned or error). Populations where they
        can train as populations (see the class), else one run per seed, trial after trial."""
        if not jobs:
            return
        settings = self.plan.settings
        if not self.plan.population or len(jobs) * settings.seeds == 1:
            for job in jobs:
                self._guarded([job], self.sequential)
            return
        groups = _structural_groups(settings.algo, jobs)
        if len(groups) > 1:
            numbers = " | ".join(", ".join(str(j.number) for j in group) for group in groups)
            self.write(
                f"batch of trials {', '.join(str(j.number) for j in jobs)}: {len(groups)} populations "
                f"(trials {numbers}): their structural settings differ"
            )
        for group in groups:
            self._guarded(group, self.population)

    def _guarded(self, jobs: list[_Job], train) -> None:
        """Run train(jobs); an error fails these jobs (one line in their trial), not the batch."""
        try:
            train(jobs)
        except self.optuna.TrialPruned as pruned:
            for job in jobs:
                job.pruned = job.pruned or str(pruned)
        except Interrupted:
            raise
        except Exception as error:
            for job in jobs:
                if job.pruned is None:
                    job.error = _one_line(error)

    def sequential(self, jobs: list[_Job]) -> None:
        """Seeds 0..K-1 of one trial one after another with zoo.runs.train_offline (the way before
        populations); a pruned trial stops at once (optuna.TrialPruned from the evaluation hook)."""
        from zoo.data import load_dataset
        from zoo.runs import train_offline

        (job,) = jobs
        settings, run = self.plan.settings, self.plan.run
        spent, trial = job.spent, job.trial
        gradient_steps_before = 0
        for seed in range(settings.seeds):
            seen: list = []
            job.scores.append([])
            online_before = spent["online_env_steps"]

            def on_evaluation(evaluation, phase, seed=seed, seen=seen, online_before=online_before,
                              before=gradient_steps_before):
                if len(job.trained_with) <= seed:  # its first evaluation
                    self._trained_with(job, [_run_kwargs(job.folder / f"seed-{seed}")], append=True)
                seen.append(evaluation)
                spent["eval_episodes"] += evaluation.episodes
                spent["eval_env_steps"] += evaluation.env_steps
                if phase == "online":
                    spent["online_env_steps"] = online_before + evaluation.step
                else:
                    spent["gradient_steps"] = before + evaluation.step
                job.save_spent()
                value, step = self.report(job, seed, self.score(evaluation))
                if trial.should_prune():
                    raise self.optuna.TrialPruned(
                        f"pruned at evaluation {step % self.plan.evaluations_per_seed + 1} of seed {seed}: "
                        f"score {value:.2f}"
                    )

            dataset = load_dataset(
                settings.dataset, fraction=settings.fraction, seed=seed, device=settings.device
            )
            result = train_offline(
                settings.algo,
                dataset,
                job.folder / f"seed-{seed}",
                seed=seed,
                n_timesteps=run["n_timesteps"],
                hyperparams_path=settings.hyperparams,
                overrides=job.overrides,
                n_finetune_timesteps=run["n_finetune_timesteps"],
                progress_bar=False,
                verbose=0,
                command=settings.command,
                fraction=settings.fraction,
                on_evaluation=on_evaluation,
            )
            for evaluation in result.evaluations + (result.online_evaluations or []):
                if not any(evaluation is s for s in seen):  # the final one, when off the periodic grid
                    spent["eval_episodes"] += evaluation.episodes
                    spent["eval_env_steps"] += evaluation.env_steps
            spent["online_env_steps"] = online_before + run["n_finetune_timesteps"]
            gradient_steps_before += run["n_timesteps"]
            spent["gradient_steps"] = gradient_steps_before
            job.save_spent()
            job.finals.append(self.score(result.final))
        trial.set_user_attr("seed_scores", job.finals)

    def population(self, jobs: list[_Job]) -> None:
        """The K seeds of every trial in `jobs` (structurally equal) as one population of len(jobs) * K
        members, trained for the plan's gradient steps with an evaluation of all members every eval_freq, then
        fine-tuned online for its env steps (if any) with one every finetune_eval_freq."""
        from stable_baselines3.common.callbacks import CallbackList

        from zoo.data import load_dataset
        from zoo.evaluation import PopulationEvalCallback
        from zoo.io import atomic_write_json
        from zoo.registry import make_population
        from zoo.runs import run_logger

        settings, run = self.plan.settings, self.plan.run
        K = settings.seeds
        seeds = [k for _ in jobs for k in range(K)]
        shared, members, base = _shared_and_members([job.kwargs for job in jobs for _ in range(K)])
        dataset = load_dataset(settings.dataset, fraction=settings.fraction, seed=0, device=settings.device)
        try:
            agent = make_population(settings.algo, dataset, seeds, members=members, base=base, **shared)
        except ConfigError:
            if len(jobs) == 1:
                raise
            # the agent's own rule says these trials cannot share a population: one population each
            self.write(f"trials {', '.join(str(j.number) for j in jobs)}: separate populations (" +
                       _one_line(sys.exc_info()[1]) + ")")
            for job in jobs:
                self._guarded([job], self.population)
            return
        trained = agent.member_hyperparameters
        paths = [job.folder / f"seed-{k}" for job in jobs for k in range(K)]
        together = [job.number for job in jobs]
        for i, path in enumerate(paths):
            job = jobs[i // K]
            config = {
                "algo": settings.algo, "dataset": settings.dataset, "fraction": settings.fraction,
                "subset": "transitions", "seed": seeds[i], "kwargs": trained[i], "run": dict(run),
                "command": settings.command, "evaluate_initial": False,
                "population": {"member": i, "members": len(paths), "trials": together},
            }
            atomic_write_json(path / "config.json", config)
        for j, job in enumerate(jobs):
            job.scores = [[] for _ in range(K)]
            self._trained_with(job, trained[j * K : (j + 1) * K])
            job.trial.set_user_attr("population", together)
        log_folder = jobs[0].folder if len(jobs) == 1 else settings.folder / f"population-{together[0]:04d}"
        agent.set_logger(run_logger(log_folder, 0))  # progress.csv: the members' mean training statistics
        evaluations = PopulationEvalCallback(
            eval_freq=run["eval_freq"], n_eval_episodes=run["n_eval_episodes"], seed=_EVAL_SEED,
            log_paths=paths,
        )
        hook = _AfterPopulationEvaluation(
            evaluations, lambda found: self._on_population(jobs, found, True, "offline")
        )
        agent.learn(run["n_timesteps"], callback=CallbackList([evaluations, hook]), progress_bar=False)
        if all(job.pruned for job in jobs):
            return  # stopped early: nothing of it is kept
        if evaluations.evaluations[0][-1].step != agent.num_timesteps:  # the final one, off the periodic grid
            self._on_population(jobs, evaluations.evaluate(), False, "offline")
        checkpoint = f"{settings.algo}.zip"
        for i, path in enumerate(paths):  # the offline stage's checkpoints, as train_offline keeps them
            if jobs[i // K].pruned is None:
                agent.member(i).save(path / checkpoint)
        if run["n_finetune_timesteps"]:
            # online, as train_offline's fine-tuning: every member's env side by side, evaluated every
            # finetune_eval_freq env steps into seed-k/finetune/evaluations.csv; reports go on at step k*M + j
            evaluations = PopulationEvalCallback(
                eval_freq=run["finetune_eval_freq"], n_eval_episodes=run["n_eval_episodes"], seed=_EVAL_SEED,
                log_paths=[path / "finetune" for path in paths],
            )
            hook = _AfterPopulationEvaluation(
                evaluations, lambda found: self._on_population(jobs, found, True, "online")
            )
            agent.finetune(run["n_finetune_timesteps"], callback=CallbackList([evaluations, hook]), progress_bar=False)
            if all(job.pruned for job in jobs):
                return  # stopped early: the offline checkpoints stay, as a run pruned online keeps its own
            if evaluations.evaluations[0][-1].step != agent.num_timesteps:
                self._on_population(jobs, evaluations.evaluate(), False, "online")
            checkpoint = f"{settings.algo}-finetuned.zip"
        for i, path in enumerate(paths):
            job = jobs[i // K]
            if job.pruned is None:
                job.finals.append(self.score(evaluations.evaluations[i][-1]))
                if run["n_finetune_timesteps"]:
                    agent.member(i).save(path / checkpoint)
        for job in jobs:
            if job.pruned is None:
                job.trial.set_user_attr("seed_scores", job.finals)

    def _on_population(self, jobs: list[_Job], results, periodic: bool, phase: str) -> bool:
        """After an evaluation of all members (`phase` "offline" or "online"): budgets, reports and pruning
        per trial; False (stop the population) once every trial of it is pruned."""
        K = self.plan.settings.seeds
        for j, job in enumerate(jobs):
            mine = results[j * K : (j + 1) * K]
            job.spent["eval_episodes"] += sum(e.episodes for e in mine)
            job.spent["eval_env_steps"] += sum(e.env_steps for e in mine)
            # its members' offline updates or online env steps so far, pruned or not (as the sequential
            # seeds count them: gradient steps offline only, the online phase in env steps)
            job.spent["gradient_steps" if phase == "offline" else "online_env_steps"] = K * mine[0].step
            job.save_spent()
            if job.pruned is not None or not periodic:
                continue
            for k, evaluation in enumerate(mine):
                value, step = self.report(job, k, self.score(evaluation))
            # the warm-up counts the seeds' own evaluations: step (K-1)*M + j is past the pruner's step
            # warm-up for K > 1 from j = 0, yet the seeds have trained no longer than at step j
            if step % self.plan.evaluations_per_seed >= self.plan.warmup and job.trial.should_prune():
                job.pruned = (
                    f"pruned at evaluation {step % self.plan.evaluations_per_seed + 1} (mean of {K} seeds): "
                    f"score {value:.2f}"
                )
                job.trial.set_user_attr("pruned_in_population", len(jobs) > 1)
        return not all(job.pruned for job in jobs)

    def report(self, job: _Job, k: int, score: float) -> tuple[float, int]:
        """Seed k's next score: report the mean over seeds 0..k of this evaluation at step k * M + j."""
        job.scores[k].append(score)
        j = len(job.scores[k]) - 1
        value = float(np.mean([s[j] for s in job.scores[: k + 1] if len(s) > j]))
        step = k * self.plan.evaluations_per_seed + j
        job.trial.report(value, step)
        return value, step

    def _trained_with(self, job: _Job, hyperparameters: list[dict[str, Any]], append: bool = False) -> None:
        """User attribute `trained_with`: for each member (seed), the trial's settings as the member's agent
        holds them (read back from it, not from what was asked)."""
        values = [{name: _lookup(h, name) for name in job.params} for h in hyperparameters]
        job.trained_with = (job.trained_with if append else []) + values
        job.trial.set_user_attr("trained_with", job.trained_with)

    def score(self, evaluation) -> float:
        if self.plan.objective == "normalized score":
            return float(evaluation.normalized_score)
        return float(evaluation.return_mean)


class _Objective:
    """study.optimize's objective (--batch 1): one trial, trained by _Trainer."""

    def __init__(self, trainer: _Trainer):
        self.trainer = trainer

    def __call__(self, trial) -> float:
        try:
            job = self.trainer.prepare(trial)
        except _Surplus:
            raise
        except Exception as error:  # the trial line shows it; Optuna marks the trial FAIL and goes on
            trial.set_user_attr("error", _one_line(error))
            raise
        self.trainer.train([job])
        if job.error is not None:
            trial.set_user_attr("error", job.error)
            raise _Failed(job.error)
        if job.pruned is not None:
            raise self.trainer.optuna.TrialPruned(job.pruned)
        return float(np.mean(job.finals))


class _Failed(Exception):
    """A trial's training raised: the error is in its user attribute `error`."""


class _AfterPopulationEvaluation(BaseCallback):
    """Calls `hook(results)` after each evaluation PopulationEvalCallback adds (it runs just before this one);
    the hook's False stops training."""

    def __init__(self, evaluations, hook):
        super().__init__()
        self.evaluations, self.hook, self.seen = evaluations, hook, 0

    def _on_step(self) -> bool:
        history = self.evaluations.evaluations
        go_on = True
        while history and self.seen < len(history[0]):
            self.seen += 1
            go_on = self.hook([member[self.seen - 1] for member in history]) and go_on
        return go_on


# The evaluation episodes' seeds of `zoo train` (EvalCallback's default): every trial scores on the same
# initial states.
_EVAL_SEED = 100


def _structural_key(kwargs: dict[str, Any], shared_floats: frozenset[str] = frozenset()) -> str:
    """What must agree for trials to share a population: every setting but the float ones (scalar
    hyperparameters, free per member), except the floats in `shared_floats` (zoo.agents.population's
    SHARED_FLOATS and the agent class's `population_shared`: floats that choose phases, such as the
    pretraining schedule). make_population is the judge (it raises ConfigError); this key only groups
    trials so that it rarely has to."""
    structural = frozenset(shared_floats)

    def mask(value, name):
        if isinstance(value, dict):
            return {str(k): mask(v, f"{name}.{k}" if name else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [mask(v, name) for v in value]
        if isinstance(value, float) and name not in structural and name.split(".")[-1] not in structural:
            return "<float>"
        return value

    return json.dumps(mask(kwargs, ""), sort_keys=True, default=repr)


def _structural_groups(algo: str, jobs: list[_Job]) -> list[list[_Job]]:
    from zoo.agents.population import SHARED_FLOATS
    from zoo.registry import agent_spec

    spec = agent_spec(algo)
    groups: dict[str, list[_Job]] = {}
    for job in jobs:
        cls = spec.bases.get(job.kwargs.get("base"), spec.cls)
        key = _structural_key(job.kwargs, SHARED_FLOATS | frozenset(getattr(cls, "population_shared", ())))
        groups.setdefault(key, []).append(job)
    return list(groups.values())


def _shared_and_members(
    members: list[dict[str, Any]],
) -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
    """Split per-member constructor settings into make_population's shared `**hyperparams` (equal in all),
    `members` (the rest, per member) and `base`."""
    keys = list(dict.fromkeys(k for m in members for k in m))
    shared = {k: members[0][k] for k in keys if all(k in m and m[k] == members[0][k] for m in members)}
    base = shared.pop("base", None)  # not searched: the same in every member (the structural key holds it)
    per_member = [{k: v for k, v in m.items() if k not in shared and k != "base"} for m in members]
    return shared, per_member, base


def _run_kwargs(run_folder: Path) -> dict[str, Any]:
    """The constructor settings a run's agent was built with (its config.json, written once it was built)."""
    return json.loads((run_folder / "config.json").read_text())["kwargs"]


def _lookup(settings: dict[str, Any], dotted: str) -> Any:
    node: Any = settings
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def trial_line(frozen, TrialState) -> str:
    """One line per finished trial: number, parameters, score, state, budget spent."""
    attrs = frozen.user_attrs
    params = " ".join(f"{k}={_fmt(v)}" for k, v in {**frozen.params, **attrs.get("given", {})}.items())
    head = f"trial {frozen.number:>4}"
    if attrs.get("retry_of") is not None:
        head += f" (retry of {attrs['retry_of']})"
    if attrs.get("surplus"):
        return f"{head}  not run: the study already had its trials"
    spent = f"{attrs.get('eval_episodes', 0)} eval episodes ({attrs.get('eval_env_steps', 0):,} env steps)"
    if attrs.get("online_env_steps"):
        spent += f" + {attrs['online_env_steps']:,} online env steps"
    if frozen.state == TrialState.COMPLETE:
        seeds = attrs.get("seed_scores") or []
        per_seed = f" (seeds {' '.join(f'{s:.1f}' for s in seeds)})" if len(seeds) > 1 else ""
        return f"{head}  {params}  score {frozen.value:7.2f}{per_seed}  complete  {spent}"
    if frozen.state == TrialState.PRUNED:
        last = frozen.intermediate_values
        at = f"score {last[max(last)]:7.2f} at report {max(last) + 1}" if last else "no report"
        return f"{head}  {params}  {at}  pruned  {spent}"
    reason = attrs.get("error") or "its worker stopped sending heartbeats (killed, or lost the database)"
    return f"{head}  {params}  failed: {reason}  {spent}"


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _describe(dist) -> str:
    from zoo.tune.spaces import Categorical, Float, Given, Int

    if isinstance(dist, Float):
        text = f"{'log-' if dist.log else ''}float [{dist.low:g}, {dist.high:g}]"
    elif isinstance(dist, Int):
        text = f"int [{dist.low}, {dist.high}]" + (f" step {dist.step}" if dist.step > 1 else "")
    elif isinstance(dist, Categorical):
        text = "{" + ", ".join(_fmt(c) for c in dist.choices) + "}"
    else:
        assert isinstance(dist, Given)
        text = f"from {dist.on}"
    if dist.when:
        text += " if " + " and ".join(f"{k} in {list(v)}" for k, v in dist.when.items())
    return text


def budget(study) -> dict[str, int]:
    """The study's total evaluation and online budget, over all its trials (failed and pruned included)."""
    totals = dict.fromkeys(BUDGET_ATTRS, 0)
    for trial in study.get_trials(deepcopy=False):
        for key in BUDGET_ATTRS:
            totals[key] += int(trial.user_attrs.get(key, 0))
    return totals


def best_section(study, plan_attrs: dict[str, Any]) -> str:
    """The best trial as a YAML section keyed by the dataset id, ready to paste into hyperparams/<algo>.yml."""
    best = study.best_trial
    settings = nest({**best.params, **best.user_attrs.get("given", {})})
    n_done = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials(deepcopy=False))
    header = [
        f"# zoo tune: best of {n_done} finished trials of study '{study.study_name}': "
        + f"trial {best.number}, score {best.value:.2f}",
        f"# ({plan_attrs['objective']}).",
        f"# Paste into zoo/hyperparams/{plan_attrs['algo']}.yml or your --hyperparams file "
        + f"(fraction {plan_attrs['fraction']:g} of the data).",
    ]
    body = yaml.safe_dump({plan_attrs["dataset"]: settings}, sort_keys=False, default_flow_style=False)
    return "\n".join(header) + "\n" + body


def summarize(study, settings: TuneSettings, the_plan: _Plan) -> None:
    from optuna.trial import TrialState

    from zoo.io import atomic_write_text

    trials = study.get_trials(deepcopy=False)
    count = {state: sum(t.state == state for t in trials) for state in TrialState}
    surplus = sum(bool(t.user_attrs.get("surplus")) for t in trials)
    print()
    print(
        f"study '{study.study_name}': {count[TrialState.COMPLETE]} complete, {count[TrialState.PRUNED]} pruned, "
        f"{count[TrialState.FAIL] - surplus} failed"
        + (f" (+{surplus} not run)" if surplus else "")
        + (f", {count[TrialState.RUNNING]} running" if count[TrialState.RUNNING] else "")
        + (f", {count[TrialState.WAITING]} waiting" if count[TrialState.WAITING] else "")
    )
    spent = budget(study)
    print(
        f"online budget spent by the study: {spent['eval_episodes']:,} evaluation episodes "
        f"({spent['eval_env_steps']:,} env steps)"
        + (
            f" + {spent['online_env_steps']:,} env steps of online fine-tuning"
            if spent["online_env_steps"]
            else ""
        )
        + " -- tuning offline RL on online evaluations spends this much interaction with the env"
    )
    print(
        f"offline compute spent by the study: {spent['gradient_steps']:,} gradient steps "
        "(all seeds of all trials)"
    )
    if count[TrialState.COMPLETE] == 0:
        print("no complete trial yet: no best configuration")
        return
    best = study.best_trial
    print(f"best: trial {best.number}, score {best.value:.2f} ({the_plan.describe()})")
    section = best_section(study, {**the_plan.study_attrs})
    print()
    print(section.rstrip())
    print()
    sets = " ".join(
        f"--set {shlex.quote(f'{k}={json.dumps(v)}')}"  # JSON is YAML, on one line
        for k, v in nest({**best.params, **best.user_attrs.get("given", {})}).items()
    )
    print(f"train it: zoo train --algo {settings.algo} --dataset {settings.dataset} {sets}")
    print(f"retrain it: {_retrain_command(settings)}")
    if settings.write_best:
        atomic_write_text(settings.write_best, section)
        print(f"best section written to {settings.write_best}")
    if settings.plots:
        for line in write_plots(study, settings.folder):
            print(line)
    print(
        f"dashboard: optuna-dashboard {shlex.quote(redact(settings.storage_url))}   (pip install optuna-dashboard)"
    )


def _retrain_command(settings: TuneSettings) -> str:
    parts = ["zoo", "tune", "--algo", settings.algo, "--dataset", settings.dataset, "--best"]
    if settings.storage:
        parts += ["--storage", redact(settings.storage)]
    if settings.study_name:
        parts += ["--study-name", settings.study_name]
    if settings.out:
        parts += ["--out", settings.out]
    if settings.fraction < 1:
        parts += ["--fraction", f"{settings.fraction:g}"]
    return shlex.join(parts)


def write_plots(study, folder: Path) -> list[str]:
    """Optimisation history and parameter importances (Optuna's matplotlib plots), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis

    from zoo.io import atomic_path

    lines = []
    for name, plot in (
        ("optimization_history", vis.plot_optimization_history),
        ("param_importances", vis.plot_param_importances),
    ):
        path = folder / f"{name}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                ax = plot(study)
            figure = ax.figure
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            with atomic_path(path, ".png") as tmp:
                figure.savefig(tmp, dpi=100, format="png")
            plt.close(figure)
            lines.append(f"{name.replace('_', ' ')}: {path}")
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            lines.append(f"{name.replace('_', ' ')}: not drawn ({reason})")
    return lines


def retrain_best(settings: TuneSettings, seeds: list[int] | None = None) -> list[float]:
    """Train the study's best configuration again (seeds 0..K-1, at the budget of this command: --steps, or the
    YAML's n_timesteps when absent) into <out>/best/seed<k>_<N>, or, for several seeds on the whole dataset,
    as one population into <out>/best/seeds<A>-<B>_<N>; print and return the final scores."""
    optuna = require_optuna()
    from zoo.data import load_dataset
    from zoo.runs import next_run_folder, train_offline

    study = _open_study(settings, None, optuna, create=False)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        raise UserError(f"Study '{study.study_name}' has no complete trial yet: nothing to retrain.")
    best = study.best_trial
    recorded = study.user_attrs
    if recorded.get("algo") not in (None, settings.algo) or recorded.get("dataset") not in (
        None,
        settings.dataset,
    ):
        raise UserError(
            f"Study '{study.study_name}' tunes {recorded.get('algo')} on {recorded.get('dataset')}, "
            f"not {settings.algo} on {settings.dataset}."
        )
    params = {**best.params, **best.user_attrs.get("given", {})}
    print(
        f"retraining trial {best.number} of '{study.study_name}' (score {best.value:.2f}): "
        + " ".join(f"{k}={_fmt(v)}" for k, v in params.items())
    )
    the_plan = plan(settings)
    seeds = list(seeds if seeds is not None else range(settings.seeds))
    if len(seeds) > 1 and the_plan.population:
        return _retrain_population(settings, the_plan, params, seeds, optuna)
    scores = []
    for seed in seeds:
        dataset = load_dataset(
            settings.dataset, fraction=settings.fraction, seed=seed, device=settings.device
        )
        result = train_offline(
            settings.algo,
            dataset,
            next_run_folder(settings.folder / "best", f"seed{seed}"),  # a new folder at each --best
            seed=seed,
            n_timesteps=the_plan.run["n_timesteps"],
            hyperparams_path=settings.hyperparams,
            overrides=the_plan.overrides(params),
            n_finetune_timesteps=the_plan.run["n_finetune_timesteps"],
            command=settings.command,
            fraction=settings.fraction,
        )
        score = _Trainer(the_plan, optuna, None).score(result.final)
        scores.append(score)
        print(
            f"seed {seed}: {the_plan.objective} {score:.2f} after {result.final.step} steps; "
            f"checkpoint {result.checkpoint}"
        )
    print(
        f"mean over {len(scores)} seed(s): {np.mean(scores):.2f}"
        + (f" ± {np.std(scores):.2f}" if len(scores) > 1 else "")
    )
    return scores


def _retrain_population(
    settings: TuneSettings, the_plan: _Plan, params: dict[str, Any], seeds: list[int], optuna
) -> list[float]:
    """--best with several seeds: one population (zoo.runs.train_population, fine-tuning online after offline
    learning when the plan does) in <out>/best/seeds<A>-<B>_<N>, whose seed<k>/ folders are ordinary runs,
    with the mean of the final evaluations and its 95% bootstrap CI over the seeds."""
    from zoo.data import load_dataset
    from zoo.runs import next_run_folder, train_population

    dataset = load_dataset(settings.dataset, fraction=settings.fraction, seed=0, device=settings.device)
    contiguous = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    stem = f"seeds{seeds[0]}-{seeds[-1]}" if contiguous else "seeds" + ",".join(map(str, seeds))
    result = train_population(
        settings.algo,
        dataset,
        next_run_folder(settings.folder / "best", stem),  # a new folder at each --best
        seeds,
        n_timesteps=the_plan.run["n_timesteps"],
        hyperparams_path=settings.hyperparams,
        overrides=the_plan.overrides(params),
        n_finetune_timesteps=the_plan.run["n_finetune_timesteps"],
        command=settings.command,
    )
    trainer = _Trainer(the_plan, optuna, None)
    scores = [trainer.score(final) for final in result.final]
    for seed, checkpoint, final, score in zip(seeds, result.checkpoints, result.final, scores):
        print(f"seed {seed}: {the_plan.objective} {score:.2f} after {final.step} steps; checkpoint {checkpoint}")
    print(f"mean over {len(scores)} seed(s): {np.mean(scores):.2f} ± {np.std(scores):.2f}")
    print(result.final_aggregate.summary())
    return scores


def command_line() -> str:
    return shlex.join(["zoo", *sys.argv[1:]])
