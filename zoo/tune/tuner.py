"""`zoo tune`: Optuna studies over an agent's search space, trained by `zoo.runs.train_offline`.

Objective of a trial: the score of its final evaluation (after the last offline gradient step, or after the
last online env step when fine-tuning), averaged over `seeds` training seeds 0..K-1. The score is the
normalized score (D4RL convention, 100 = expert) where the task has reference returns, else the mean
return; each evaluation runs `n_eval_episodes` episodes with the evaluation seeds of `zoo train`.

Intermediate values (for the pruner): after evaluation j of seed k, the mean over seeds 0..k of their
j-th evaluation score, reported at step k * M + j (M = periodic evaluations per seed, offline then online),
so trials are compared on the same seeds at the same point of training. A pruned trial stops at once.

Budget: offline RL tuned with online evaluation is not offline any more. Every trial records as user
attributes the evaluation episodes it ran (`eval_episodes`), their env steps (`eval_env_steps`) and the
online fine-tuning env steps (`online_env_steps`), updated after every evaluation (so pruned, failed and
killed trials keep what they spent), and every worker prints the study's total when it ends.

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
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from zoo.errors import ConfigError, UserError
from zoo.tune.spaces import nest, sample, search_space
from zoo.tune.storage import default_storage_url, open_storage, redact, require_optuna

SAMPLERS = ("tpe", "random", "cmaes")
PRUNERS = ("median", "halving", "none")
BUDGET_ATTRS = ("eval_episodes", "eval_env_steps", "online_env_steps")
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
    _, run = load_hyperparams(settings.algo, settings.dataset, settings.hyperparams, settings.overrides)
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
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=5)


def _pruner(settings: TuneSettings, the_plan: _Plan | None, optuna):
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    if settings.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    warmup = the_plan.evaluations_per_seed // 3 if the_plan else 0
    # no pruning before 5 finished trials, nor in the first third of a trial's evaluations (rl-zoo3's rule)
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)


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


class _Surplus(Exception):
    """A trial created past the study's n_trials (two workers asked at the same instant): not run."""


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
        if _full(study, settings.n_trials, TrialState):
            study.stop()

    objective = _Objective(the_plan, optuna, TrialState)
    try:
        # n_trials caps this worker too, so a configuration that fails every time cannot loop forever
        study.optimize(
            objective,
            n_trials=settings.n_trials,
            timeout=settings.timeout,
            n_jobs=settings.n_jobs,
            catch=(Exception,),
            callbacks=[after_trial],
        )
    finally:
        bar.close()


class _Objective:
    def __init__(self, the_plan: _Plan, optuna, TrialState):
        self.plan, self.optuna, self.TrialState = the_plan, optuna, TrialState

    def __call__(self, trial) -> float:
        try:
            return self.run(trial)
        except (self.optuna.TrialPruned, _Surplus):
            raise
        except Exception as error:  # the trial line shows it; Optuna marks the trial FAIL and goes on
            trial.set_user_attr(
                "error",
                f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}",
            )
            raise

    def run(self, trial) -> float:
        settings, run, optuna = self.plan.settings, self.plan.run, self.optuna
        states = (
            self.TrialState.COMPLETE,
            self.TrialState.PRUNED,
            self.TrialState.RUNNING,
            self.TrialState.WAITING,
        )
        trials = trial.study.get_trials(deepcopy=False)
        earlier = sum(t.number < trial.number and t.state in states for t in trials)
        if earlier >= settings.n_trials:
            trial.set_user_attr("surplus", True)
            raise _Surplus(f"not run: the study has its {settings.n_trials} trials")
        from zoo.data import load_dataset
        from zoo.runs import train_offline

        params = sample(trial, search_space(settings.algo))
        overrides = self.plan.overrides(params)
        folder = settings.folder / f"trial-{trial.number:04d}"
        spent = dict.fromkeys(BUDGET_ATTRS, 0)
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("folder", str(folder.resolve()))
        this = next(t for t in trials if t.number == trial.number)
        retry_of = this.system_attrs.get("failed_trial")  # set by Optuna's retry of a stale trial
        if retry_of is not None:
            trial.set_user_attr("retry_of", retry_of)
        for key, value in spent.items():  # a retried trial arrives with its dead original's attributes
            trial.set_user_attr(key, value)
        scores: list[list[float]] = []
        finals: list[float] = []
        for seed in range(settings.seeds):
            seen: list = []
            scores.append([])

            online_before = spent["online_env_steps"]

            def on_evaluation(evaluation, phase, seed=seed, seen=seen, online_before=online_before):
                seen.append(evaluation)
                spent["eval_episodes"] += evaluation.episodes
                spent["eval_env_steps"] += evaluation.env_steps
                if phase == "online":
                    spent["online_env_steps"] = online_before + evaluation.step
                for key, value in spent.items():
                    trial.set_user_attr(key, value)
                scores[seed].append(self.score(evaluation))
                j = len(scores[seed]) - 1
                value = float(np.mean([s[j] for s in scores if len(s) > j]))
                trial.report(value, seed * self.plan.evaluations_per_seed + j)
                if trial.should_prune():
                    raise optuna.TrialPruned(
                        f"pruned at evaluation {j + 1} of seed {seed}: score {value:.2f}"
                    )

            dataset = load_dataset(
                settings.dataset, fraction=settings.fraction, seed=seed, device=settings.device
            )
            result = train_offline(
                settings.algo,
                dataset,
                folder / f"seed-{seed}",
                seed=seed,
                n_timesteps=run["n_timesteps"],
                hyperparams_path=settings.hyperparams,
                overrides=overrides,
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
            for key, value in spent.items():
                trial.set_user_attr(key, value)
            finals.append(self.score(result.final))
        trial.set_user_attr("seed_scores", finals)
        return float(np.mean(finals))

    def score(self, evaluation) -> float:
        if self.plan.objective == "normalized score":
            return float(evaluation.normalized_score)
        return float(evaluation.return_mean)


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
        seeds = attrs.get("seed_scores", [])
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
    YAML's n_timesteps when absent) into <out>/best/seed-<k>; print and return the final scores."""
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
    scores = []
    for seed in seeds if seeds is not None else range(settings.seeds):
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
        score = _Objective(the_plan, optuna, None).score(result.final)
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


def command_line() -> str:
    return shlex.join(["zoo", *sys.argv[1:]])
