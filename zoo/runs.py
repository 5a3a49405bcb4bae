"""One training run: dataset -> agent -> offline learning [-> online fine-tuning] -> evaluations,
checkpoints, logs and learning curve; and a population run (`zoo train --seeds`): K seeds trained as one
batched agent, written as K ordinary seed runs plus their aggregate."""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import CSVOutputFormat, Logger, make_output_format

from zoo.agents import OfflineAlgorithm
from zoo.checkpoint import read_checkpoint_config
from zoo.config import load_hyperparams
from zoo.data import OfflineDataset, load_dataset
from zoo.errors import ConfigError, Interrupted, UserError
from zoo.io import atomic_write_json, atomic_write_text
from zoo.evaluation import (
    EvalCallback, Evaluation, PopulationEvalCallback, SeedAggregate, aggregate_seeds, agent_predict,
    evaluate_population, evaluate_returns,
)
from zoo.plots import plot_learning_curve, plot_seed_aggregate
from zoo.registry import make_agent
from zoo.resume import (
    StopCallback, StopRequest, TrainingStateCallback, continue_progress_csv, evaluations_from_json,
    evaluations_to_json, finished_info, kept_csv_text, latest_training_state, load_population_state,
    load_training_state, mark_finished, read_population_state, remove_stale_states, stop_on_signals,
    truncate_csv,
)


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
    on_evaluation: Callable[[Evaluation, str], None] | None = None,
    subset: str = "transitions",
    save_freq: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> RunResult:
    """Train `algo` on `dataset` with its YAML hyperparameters, then fine-tune it online for
    `n_finetune_timesteps` env steps (YAML `n_finetune_timesteps`, default 0); everything lands in `out_dir`
    (offline checkpoint `<algo>.zip`, fine-tuned `<algo>-finetuned.zip`, online evaluations in `finetune/`).

    `on_evaluation(evaluation, phase)` is called after every periodic evaluation, phase "offline" or "online"
    (the tuner reports to Optuna there); an exception it raises (optuna.TrialPruned) ends the run at once.

    Every `save_freq` gradient steps (default: at every evaluation) a training state is written to
    `out_dir/training_state/` (zoo.resume); SIGINT (Ctrl-C) or SIGTERM stops the run after the current update,
    writes one and raises zoo.errors.Interrupted, whose message says how to resume. `resume=True` continues
    the run in `out_dir` from its last training state with the settings its config.json records (see
    `resume_run`): offline learning exactly where it stopped, fine-tuning from its start.

    A run never writes into another run's folder: an `out_dir` that holds files is refused (ConfigError)
    unless `resume` or `overwrite`; with `overwrite` the old run is moved aside only once the new agent is
    built (a run that fails during set-up leaves it untouched), and deleted when the new run finishes."""
    out_dir = Path(out_dir)
    with stop_on_signals(_stop_notice, lambda: _interrupted_again(out_dir)) as stop:
        return _train(
            algo, dataset, out_dir, stop, seed=seed, n_timesteps=n_timesteps,
            hyperparams_path=hyperparams_path,
            overrides=overrides, n_finetune_timesteps=n_finetune_timesteps, evaluate_initial=evaluate_initial,
            progress_bar=progress_bar, verbose=verbose, command=command, fraction=fraction,
            on_evaluation=on_evaluation, subset=subset, save_freq=save_freq, resume=resume,
            overwrite=overwrite,
        )


def checked_save_freq(save_freq: int | None, default: int | None) -> int | None:
    """A run's save_freq: `save_freq` (gradient steps >= 0; 0: states only on Ctrl-C), else `default`
    (the run's eval_freq); anything else is refused (ConfigError), by `zoo train` before any work."""
    if save_freq is not None and (
        isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 0
    ):
        raise ConfigError(
            f"--save-freq is a number of gradient steps >= 0 (0: states only on Ctrl-C), got {save_freq!r}."
        )
    return default if save_freq is None else save_freq


def _stop_notice() -> str:
    return "zoo: stopping after this update to save a training state (Ctrl-C again quits without saving)"


def _interrupted_again(out_dir: Path) -> Interrupted:
    latest = latest_training_state(out_dir)
    if latest is None:
        return Interrupted(
            f"zoo: interrupted again, without saving; `zoo train --resume {out_dir}` starts the run again"
        )
    step = read_checkpoint_config(latest)["training"]["num_timesteps"]
    return Interrupted(
        f"zoo: interrupted again, without saving; the last training state is step {step} ({latest}); "
        f"resume with: zoo train --resume {out_dir}"
    )


def _train(
    algo: str, dataset: OfflineDataset, out_dir: Path, stop: StopRequest, *, seed: int,
    n_timesteps: int | None,
    hyperparams_path: str | Path | None, overrides: dict[str, Any] | None, n_finetune_timesteps: int | None,
    evaluate_initial: bool, progress_bar: bool, verbose: int, command: str | None, fraction: float,
    on_evaluation: Callable[[Evaluation, str], None] | None, subset: str, save_freq: int | None, resume: bool,
    overwrite: bool = False,
) -> RunResult:
    state = None
    if resume:
        config = read_run_config(out_dir)
        kwargs, run, seed = config["kwargs"], config["run"], config["seed"]
        remove_stale_states(out_dir)
        state = latest_training_state(out_dir)
    else:
        kwargs, run = load_hyperparams(algo, dataset.dataset_id, hyperparams_path, overrides)
        if n_timesteps is not None:
            run["n_timesteps"] = n_timesteps
        if n_finetune_timesteps is not None:
            run["n_finetune_timesteps"] = n_finetune_timesteps
        run["save_freq"] = checked_save_freq(save_freq, run["eval_freq"])
        check_run_folder(out_dir, overwrite)  # before any work; the folder is claimed once the agent is built
        config = {
            "algo": algo, "dataset": dataset.dataset_id, "fraction": fraction, "subset": subset, "seed": seed,
            "kwargs": kwargs, "run": run, "command": command, "evaluate_initial": evaluate_initial,
        }

    history: dict[str, Any] = {}
    replaced = None
    if state is not None:
        agent, history = load_training_state(state, dataset, kwargs.get("device", "auto"))
    else:
        agent = make_agent(algo, dataset, seed=seed, **kwargs)
    if not resume:
        replaced = claim_run_folder(out_dir, overwrite)
        atomic_write_json(out_dir / "config.json", config)
    _set_run_logger(agent, out_dir, verbose, resume)
    eval_callback = EvalCallback(
        eval_freq=run["eval_freq"], n_eval_episodes=run["n_eval_episodes"], log_path=out_dir, verbose=verbose
    )
    if resume:
        truncate_csv(out_dir / "evaluations.csv", "step", agent.num_timesteps)
        eval_callback.evaluations[:] = evaluations_from_json(history.get("evaluations"))
    initial = None
    if "initial" in history:
        initial = evaluations_from_json([history["initial"]])[0] if history["initial"] else None
    elif evaluate_initial:
        returns = evaluate_returns(agent_predict(agent), dataset.task.env_id, run["n_eval_episodes"], eval_callback.seed)
        score = float(np.mean(dataset.task.normalized_score(returns))) if dataset.task.has_reference else None
        initial = Evaluation(0, float(returns.mean()), float(returns.std()), score)

    def run_info(phase: str = "offline") -> dict[str, Any]:
        return {
            "phase": phase, "evaluations": evaluations_to_json(eval_callback.evaluations),
            "initial": evaluations_to_json([initial])[0] if initial is not None else None,
        }

    states = TrainingStateCallback(
        out_dir, run.get("save_freq", run["eval_freq"]), run_info, stop, key=algo, base=kwargs.get("base")
    )
    agent.learn(
        run["n_timesteps"] - agent.num_timesteps,
        callback=CallbackList([_with_hook(eval_callback, on_evaluation, "offline"), states]),
        progress_bar=progress_bar, reset_num_timesteps=agent.num_timesteps == 0,
    )
    if stop:
        raise _interrupted(states, out_dir, run["n_timesteps"])
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
        # Fine-tuning resumes from here, from its first env step (an env mid-episode cannot be restored).
        if history.get("phase") != "offline-done":
            states.save(run_info("offline-done"))
        if stop:
            raise _interrupted(states, out_dir, run["n_timesteps"])
        if resume:
            (out_dir / "finetune" / "evaluations.csv").unlink(missing_ok=True)  # the interrupted attempt's
        online_callback = EvalCallback(
            eval_freq=run["finetune_eval_freq"], n_eval_episodes=run["n_eval_episodes"],
            log_path=out_dir / "finetune", verbose=verbose,
        )
        agent.finetune(
            run["n_finetune_timesteps"],
            callback=CallbackList([_with_hook(online_callback, on_evaluation, "online"), StopCallback(stop)]),
            progress_bar=progress_bar,
        )
        if stop:
            raise _interrupted_online(agent, run, out_dir, stop)
        final = _final_evaluation(online_callback, agent)
        online = online_callback.evaluations
        checkpoint = out_dir / f"{algo}-finetuned.zip"
        agent.save(checkpoint)
    mark_finished(out_dir, {"num_timesteps": agent.num_timesteps, "checkpoint": str(checkpoint),
                            "final": evaluations_to_json([final])[0]})
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)  # the run --overwrite replaced, kept until now
    return RunResult(
        agent, eval_callback.evaluations, final, behavior, checkpoint, curve, initial, offline, online
    )


# ---------------------------------------------------------------------------------------------- run folders
REPLACED_MARK = ".replaced-"  # ".<name>.replaced-<pid>": a run --overwrite moved aside until the new one ends


class AtomicCSVOutputFormat(CSVOutputFormat):
    """SB3's progress.csv writer, with the file rewritten whole through zoo.io at each dump: SB3's own keeps
    it open, truncates it when the logger is made and rewrites it in place when a column appears, so a kill
    could leave it empty or half-written. The rows are kept in memory (a 1M-step run logging every 1000
    steps holds 1000 rows) and `self.file` stays a file-like object, as SB3's code and zoo.resume use it."""

    def __init__(self, filename: str | os.PathLike):
        self.path = Path(filename)
        self.file = _NamedBuffer(str(self.path))
        self.keys: list[str] = []
        self.separator = ","
        self.quotechar = '"'
        if not self.path.exists():  # as SB3's: the file is there from the start (rows every log_interval)
            atomic_write_text(self.path, "")

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0):
        super().write(key_values, key_excluded, step)
        atomic_write_text(self.path, self.file.getvalue())


class _NamedBuffer(io.StringIO):
    def __init__(self, name: str):
        super().__init__()
        self.name = name


def run_logger(out_dir: Path, verbose: int = 1) -> Logger:
    """SB3's logger of a run: progress.csv (AtomicCSVOutputFormat), TensorBoard, stdout with verbose > 1."""
    csv_rows = AtomicCSVOutputFormat(out_dir / "progress.csv")
    formats = [csv_rows, make_output_format("tensorboard", str(out_dir))]
    if verbose > 1:
        formats.append(make_output_format("stdout", str(out_dir)))
    return Logger(folder=str(out_dir), output_formats=formats)


def next_run_folder(parent: str | Path, stem: str) -> Path:
    """The next free numbered folder `parent/<stem>_<N>` (N = 1 + the largest taken), as rl-baselines3-zoo
    numbers its log folders: the default output of `zoo train`, so that a rerun never meets an old run."""
    parent = Path(parent)
    taken = [0]
    if parent.is_dir():
        for path in parent.iterdir():
            head, sep, number = path.name.rpartition("_")
            if sep and head == stem and number.isdigit():
                taken.append(int(number))
    return parent / f"{stem}_{max(taken) + 1}"


def check_run_folder(out_dir: Path, overwrite: bool) -> None:
    """Refuse an output folder that holds files, unless the run is to replace them (`overwrite`)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder: choose another --out.")
    if not overwrite and out_dir.is_dir() and any(out_dir.iterdir()):
        shown = ", ".join(sorted(p.name for p in out_dir.iterdir())[:4])
        kind = "a population run" if (out_dir / POPULATION_CONFIG).is_file() else "a run"
        raise ConfigError(
            f"--out {out_dir} already holds {kind} ({shown}, ...): pass --overwrite to replace it, continue "
            f"it with `zoo train --resume {out_dir}`, or choose another --out (without --out, a new "
            "numbered folder is picked)."
        )


def claim_run_folder(out_dir: Path, overwrite: bool) -> Path | None:
    """Make `out_dir` an empty folder for this run. With `overwrite`, a folder with files is renamed to a
    hidden sibling (returned, deleted by the caller when the new run finishes), so the old files are never
    mixed with the new ones and survive a new run that fails."""
    check_run_folder(out_dir, overwrite)
    replaced = None
    if out_dir.is_dir() and any(out_dir.iterdir()):
        replaced = out_dir.with_name(f".{out_dir.name}{REPLACED_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
        out_dir.rename(replaced)
    out_dir.mkdir(parents=True, exist_ok=True)
    return replaced


def _read_config(path: Path, absent: str, needed_for: str) -> dict[str, Any]:
    """A run's JSON config; UserError `absent` when the file does not exist, and one naming the file and
    `needed_for` when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(absent) from None
    except (OSError, ValueError) as error:
        raise UserError(f"{path} cannot be read ({error}): {needed_for}.") from None


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The config.json `zoo train` wrote in a run folder (algo, dataset, fraction, seed, kwargs, run,
    command)."""
    path = Path(run_dir) / "config.json"
    config = _read_config(
        path, f"{run_dir} has no config.json: it is not a `zoo train` run folder (or it was never started).",
        "resume needs the run's own config",
    )
    missing = [key for key in ("algo", "dataset", "seed", "kwargs", "run") if key not in config]
    if missing:
        raise UserError(
            f"{path} lacks {', '.join(missing)}: it was not written by `zoo train`, so it cannot be resumed."
        )
    return config


def resume_run(
    run_dir: str | Path, *, progress_bar: bool = True, verbose: int = 1,
    on_evaluation: Callable[[Evaluation, str], None] | None = None,
) -> RunResult | PopulationResult:
    """Continue the `zoo train` run in `run_dir` from its last training state, to the total its config.json
    records, with the settings recorded there (the YAML is not read again); a population folder (with
    population.json) is resumed as a population (`resume_population`, a PopulationResult).

    Offline learning continues at the update after the state's: on CPU the final weights equal those of the
    run had it never stopped. A run stopped during online fine-tuning starts fine-tuning again from the end
    of offline learning (an env mid-episode cannot be restored). evaluations.csv, progress.csv and the
    learning curve continue: rows written after the state are dropped and written again.
    """
    run_dir = Path(run_dir)
    if (run_dir / POPULATION_CONFIG).is_file():
        if on_evaluation is not None:
            raise UserError(
                f"{run_dir} is a population run: resume it with resume_population (no on_evaluation)."
            )
        return resume_population(run_dir, progress_bar=progress_bar, verbose=verbose)
    config = read_run_config(run_dir)
    done = finished_info(run_dir)
    if done is not None:
        raise UserError(
            f"{run_dir} finished already ({done['num_timesteps']} steps, checkpoint {done['checkpoint']}): "
            "there is nothing to resume; train a new run with another --out."
        )
    if "population" in config:
        folder = run_dir.parent
        if not (folder / POPULATION_CONFIG).is_file():
            folder = config["population"]["folder"]
        raise UserError(
            f"{run_dir} is seed {config['seed']} of a population run that did not finish: its training state "
            f"is the population's; resume the whole population with zoo train --resume {folder}."
        )
    dataset = load_dataset(
        config["dataset"], fraction=config.get("fraction", 1.0), subset=config.get("subset", "transitions"),
        seed=config["seed"], device=config["kwargs"].get("device", "auto"),
    )
    return train_offline(
        config["algo"], dataset, run_dir, seed=config["seed"],
        evaluate_initial=config.get("evaluate_initial", False), progress_bar=progress_bar, verbose=verbose,
        command=config.get("command"), fraction=config.get("fraction", 1.0), on_evaluation=on_evaluation,
        subset=config.get("subset", "transitions"), resume=True,
    )


def _set_run_logger(agent: OfflineAlgorithm, out_dir: Path, verbose: int, resume: bool) -> None:
    """Give the agent its run's logger; a resumed run keeps the progress.csv rows up to its state's update
    and writes the later ones again."""
    progress = out_dir / "progress.csv"
    n_updates = agent.training_counters["n_updates"]
    kept = kept_csv_text(progress, "train/n_updates", n_updates) if resume else None
    agent.set_logger(run_logger(out_dir, verbose))
    if kept:
        continue_progress_csv(agent.logger, progress, kept)


def _interrupted_online(
    agent: OfflineAlgorithm, run: dict[str, Any], out_dir: Path, stop: StopRequest
) -> Interrupted:
    """A stop during online fine-tuning, which saves nothing: the resume starts fine-tuning again."""
    return Interrupted(
        f"zoo: interrupted at env step {agent.num_timesteps} of {run['n_finetune_timesteps']} of online "
        f"fine-tuning; `zoo train --resume {out_dir}` restarts fine-tuning from the end of offline learning "
        "(an env mid-episode cannot be restored)", stop.signal,
    )


def _interrupted(states: TrainingStateCallback, out_dir: Path, total: int) -> Interrupted:
    """Save a training state at the stop (unless one was just written, or cannot be) and say how to resume."""
    agent = states.model
    step = agent.num_timesteps
    saved = states.saved_at == step or states.save() is not None
    latest = latest_training_state(out_dir)
    where = f"interrupted at gradient step {step} of {total}"
    how = f"resume with: zoo train --resume {out_dir}"
    if saved:
        return Interrupted(f"zoo: {where}; training state saved in {latest}; {how}", states.stop.signal)
    if latest is not None:
        last = read_checkpoint_config(latest)["training"]["num_timesteps"]
        return Interrupted(
            f"zoo: {where}; no training state now ({states.skipped}), the last one is step {last} ({latest}); {how}",
            states.stop.signal,
        )
    return Interrupted(
        f"zoo: {where}; no training state could be written ({states.skipped}); `zoo train --resume {out_dir}` "
        "starts the run again", states.stop.signal,
    )


class _AfterEvaluation(BaseCallback):
    """Calls `hook(evaluation, phase)` once for each evaluation `evaluations` gains (runs after its callback)."""

    def __init__(self, evaluations: list[Evaluation], hook: Callable[[Evaluation, str], None], phase: str):
        super().__init__()
        self.evaluations, self.hook, self.phase, self.seen = evaluations, hook, phase, len(evaluations)

    def _on_step(self) -> bool:
        while self.seen < len(self.evaluations):
            self.seen += 1
            self.hook(self.evaluations[self.seen - 1], self.phase)
        return True


def _with_hook(callback: EvalCallback, hook: Callable[[Evaluation, str], None] | None, phase: str) -> BaseCallback:
    return callback if hook is None else CallbackList([callback, _AfterEvaluation(callback.evaluations, hook, phase)])


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


# ---------------------------------------------------------------------------------------------- populations
POPULATION_CONFIG = "population.json"  # in a population folder; its seed runs are seed<k>/ beside it


def parse_seeds(text: str) -> list[int]:
    """The seeds of `zoo train --seeds`: comma-separated items, each a seed `N` or an inclusive range `A-B`
    (A <= B), e.g. "0-7", "0,3,5", "0-3,8-9"; no seed twice. A bare single number ("4") is refused: it
    could mean seed 4 or four seeds (`zoo tune --seeds 4`), and `--seed 4` already says the first."""
    usage = "write seeds as a range A-B (--seeds 0-7) or a list (--seeds 0,3,5)"
    text = text.strip()
    if text.isdigit():
        count = int(text)
        several = f", or --seeds 0-{count - 1} for {count} seeds" if count > 1 else ""
        raise UserError(
            f"--seeds {text} is ambiguous: use --seed {text} for one run of seed {text}{several}; {usage}."
        )
    seeds: list[int] = []
    for item in text.split(","):
        first, dash, last = item.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise UserError(f"--seeds {text!r}: {item.strip()!r} is not a seed or a range of seeds; {usage}.")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise UserError(f"--seeds {text!r}: the range {item.strip()} runs backwards; write {high}-{low}.")
        seeds.extend(range(low, high + 1))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UserError(f"--seeds {text!r} names seed(s) {', '.join(map(str, repeated))} twice; {usage}.")
    return seeds


def seeds_label(seeds: list[int]) -> str:
    """Seeds written back in parse_seeds' grammar, ranges joined: [0, 1, 2, 3, 8] -> "0-3,8"."""
    parts, start = [], 0
    for i in range(1, len(seeds) + 1):
        if i == len(seeds) or seeds[i] != seeds[i - 1] + 1:
            parts.append(str(seeds[start]) if i - start == 1 else f"{seeds[start]}-{seeds[i - 1]}")
            start = i
    return ",".join(parts)


@dataclass
class PopulationResult:
    """A finished population run: the agent, its folder, the seed runs in it and their aggregates (as
    RunResult, per seed: `evaluations` offline, `final` the last evaluation, after fine-tuning if any)."""

    agent: OfflineAlgorithm
    seeds: list[int]
    folder: Path
    runs: list[Path]  # folder/seed<k>: ordinary `zoo train` run folders
    evaluations: list[list[Evaluation]]  # per seed, every eval_freq gradient steps
    initial: list[Evaluation] | None  # per seed, the untrained member (evaluate_initial=True)
    final: list[Evaluation]  # per seed, the last one: after fine-tuning when there was any, else offline
    aggregate: SeedAggregate  # of the offline evaluations (gradient steps)
    behavior_score: float | None
    files: dict[str, Path]  # aggregate.json, aggregate.csv, aggregate.png (+ finetune/aggregate.* online)
    offline: list[Evaluation] | None = None  # per seed, after offline learning
    online_evaluations: list[list[Evaluation]] | None = None  # per seed, every finetune_eval_freq env steps
    online_aggregate: SeedAggregate | None = None  # of the online evaluations (env steps)
    checkpoints: list[Path] | None = None  # per seed: <algo>-finetuned.zip after fine-tuning, else <algo>.zip

    @property
    def final_aggregate(self) -> SeedAggregate:
        """The aggregate whose last step is the final evaluation: online's after fine-tuning, else offline's."""
        return self.online_aggregate if self.online_aggregate is not None else self.aggregate


def population_settings(
    algo: str, dataset_id: str, hyperparams_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None, n_timesteps: int | None = None,
    n_finetune_timesteps: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(agent kwargs, run settings) of a population run, resolved as `train_offline` resolves them. Needs no
    data: `zoo train --seeds` calls it before loading any."""
    kwargs, run = load_hyperparams(algo, dataset_id, hyperparams_path, overrides)
    if n_timesteps is not None:
        run["n_timesteps"] = n_timesteps
    if n_finetune_timesteps is not None:
        run["n_finetune_timesteps"] = n_finetune_timesteps
    return kwargs, run


def train_population(
    algo: str,
    dataset: OfflineDataset,
    out_dir: str | Path,
    seeds: list[int],
    *,
    n_timesteps: int | None = None,
    hyperparams_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    n_finetune_timesteps: int | None = None,
    evaluate_initial: bool = False,
    progress_bar: bool = True,
    verbose: int = 1,
    command: str | None = None,
    save_freq: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> PopulationResult:
    """Train one population (zoo.registry.make_population: member k is the agent `train_offline` would
    train with seed k) on `dataset` with the hyperparameters `train_offline` resolves (YAML, `overrides`,
    `n_timesteps`, `n_finetune_timesteps`), offline, then online for n_finetune_timesteps env steps when
    that is above 0 (every member's env side by side: OfflineAlgorithm.finetune of a population), and write:

    * `out_dir/seed<k>/` for every seed: the files an ordinary run of seed k writes (config.json with
      seed k, evaluations.csv, `<algo>.zip` from `agent.member(k)` after offline learning,
      learning_curve.png, the finished mark; after fine-tuning also finetune/evaluations.csv, counted in env
      steps, and `<algo>-finetuned.zip`, which the finished mark names), so `zoo eval`, `zoo export`,
      `zoo plot [--online]` treat it as one (`zoo train --resume` of a seed folder points to the
      population folder); config.json adds "population" (the folder's seeds), which `zoo plot` ignores when
      grouping;
    * `out_dir/`: population.json (the command, seeds, settings), progress.csv and TensorBoard logs of the
      population (training statistics are member means), aggregate.json and aggregate.csv (per-seed
      values, mean and 95% percentile-bootstrap CI at every offline evaluation step; aggregate.json also
      has the final step's per-seed scores and CI, and under "online" the same for the online evaluations)
      and aggregate.png (the mean curve with its band); after fine-tuning finetune/aggregate.csv and
      finetune/aggregate.png hold the online curve.

    Every `eval_freq` gradient steps (online: every `finetune_eval_freq` env steps) all members are
    evaluated in one batched loop on the episodes an ordinary run's EvalCallback uses (seeds 100 + i), so
    member k's evaluations equal those of a population of one with seed k.

    Training states as `train_offline` writes them (zoo.resume), one for the whole population in
    `out_dir/training_state/`: every `save_freq` gradient steps (default: at every evaluation), after the
    evaluation of that step, and on SIGINT (Ctrl-C) or SIGTERM after the current update, which then raises
    zoo.errors.Interrupted saying how to resume; a state holds every member's weights, MemberAdam moments
    and learning rates, every member's generator, the counters and each member's evaluations. `resume=True`
    (`zoo train --resume out_dir`, see `resume_population`) continues from the last state with the settings
    population.json records: offline learning exactly where it stopped (on CPU, the weights and Adam moments
    of the run that never stopped), seed<k>/evaluations.csv and progress.csv cut back to the state's update
    and continued, so the seed folders and the aggregate files end as the uninterrupted run's; fine-tuning
    starts again from the end of offline learning (an env mid-episode cannot be restored). When everything
    is written the population folder gets its finished mark (training_state/finished.json) and its states
    are dropped.
    """
    out_dir = Path(out_dir)
    with stop_on_signals(_stop_notice, lambda: _interrupted_again(out_dir)) as stop:
        return _train_population(
            algo, dataset, out_dir, seeds, stop, n_timesteps=n_timesteps, hyperparams_path=hyperparams_path,
            overrides=overrides, n_finetune_timesteps=n_finetune_timesteps, evaluate_initial=evaluate_initial,
            progress_bar=progress_bar, verbose=verbose, command=command, save_freq=save_freq, resume=resume,
            overwrite=overwrite,
        )


def _train_population(
    algo: str, dataset: OfflineDataset, out_dir: Path, seeds: list[int], stop: StopRequest, *,
    n_timesteps: int | None, hyperparams_path: str | Path | None, overrides: dict[str, Any] | None,
    n_finetune_timesteps: int | None, evaluate_initial: bool, progress_bar: bool, verbose: int,
    command: str | None, save_freq: int | None, resume: bool, overwrite: bool,
) -> PopulationResult:
    from zoo.registry import make_population

    seeds = [int(s) for s in seeds]
    state = None
    if resume:
        config = read_population_config(out_dir)
        if config["seeds"] != seeds or config["algo"] != algo or config["dataset"] != dataset.dataset_id:
            raise UserError(
                f"{out_dir}/{POPULATION_CONFIG} is a population of {config['algo']} on {config['dataset']} "
                f"with seeds {seeds_label(config['seeds'])}, not of {algo} on {dataset.dataset_id} with "
                f"seeds {seeds_label(seeds)}: resume it with its own settings (zoo train --resume {out_dir})."
            )
        _refuse_finished_population(out_dir, config)
        kwargs, run, evaluate_initial = config["kwargs"], config["run"], config.get("evaluate_initial", False)
        command = config.get("command")
        remove_stale_states(out_dir)
        state = latest_training_state(out_dir)
    else:
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise UserError(f"A population needs distinct seeds >= 0, got {seeds}.")
        kwargs, run = population_settings(
            algo, dataset.dataset_id, hyperparams_path, overrides, n_timesteps, n_finetune_timesteps
        )
        run["save_freq"] = checked_save_freq(save_freq, run["eval_freq"])
        check_run_folder(out_dir, overwrite)  # before any work; the folder is claimed once the agent is built
    runs = [out_dir / f"seed{s}" for s in seeds]

    agent = make_population(algo, dataset, seeds, **kwargs)
    history: dict[str, Any] = {}
    if state is not None:
        history = load_population_state(state, agent)
    replaced = None
    if not resume:
        replaced = claim_run_folder(out_dir, overwrite)
        atomic_write_json(out_dir / POPULATION_CONFIG, {
            "algo": algo, "dataset": dataset.dataset_id, "seeds": seeds, "runs": [p.name for p in runs],
            "kwargs": kwargs, "run": run, "command": command, "evaluate_initial": evaluate_initial,
        })
    population = {"folder": str(out_dir), "seeds": seeds}
    for seed, run_dir in zip(seeds, runs):
        if not (run_dir / "config.json").is_file():  # (a resumed run killed while it wrote these: again)
            run_dir.mkdir(exist_ok=True)
            atomic_write_json(run_dir / "config.json", {
                "algo": algo, "dataset": dataset.dataset_id, "fraction": 1.0, "subset": "transitions",
                "seed": seed, "kwargs": kwargs, "run": run, "command": command,
                "evaluate_initial": evaluate_initial, "population": population,
            })

    _set_run_logger(agent, out_dir, verbose, resume)
    labels = [f"seed{s}" for s in seeds]
    callback = PopulationEvalCallback(
        eval_freq=run["eval_freq"], n_eval_episodes=run["n_eval_episodes"], log_paths=runs, labels=labels,
        verbose=verbose,
    )
    if resume:
        for run_dir in runs:
            truncate_csv(run_dir / "evaluations.csv", "step", agent.num_timesteps)
        if history:
            callback.evaluations = [evaluations_from_json(rows) for rows in history["evaluations"]]
    initial = None
    if "initial" in history:
        initial = evaluations_from_json(history["initial"]) if history["initial"] else None
    elif evaluate_initial:
        initial = evaluate_population(agent, run["n_eval_episodes"], callback.seed, step=0)

    def run_info(phase: str = "offline") -> dict[str, Any]:
        return {
            "phase": phase, "evaluations": [evaluations_to_json(e) for e in callback.evaluations],
            "initial": evaluations_to_json(initial) if initial is not None else None,
        }

    states = TrainingStateCallback(
        out_dir, run.get("save_freq", run["eval_freq"]), run_info, stop, key=algo, base=kwargs.get("base")
    )
    agent.learn(
        run["n_timesteps"] - agent.num_timesteps, callback=CallbackList([callback, states]),
        progress_bar=progress_bar, reset_num_timesteps=agent.num_timesteps == 0,
    )
    if stop:
        raise _interrupted(states, out_dir, run["n_timesteps"])
    final = offline = _final_population_evaluation(callback, agent)

    behavior = None
    if dataset.task.has_reference:
        behavior = float(np.mean(dataset.task.normalized_score(dataset.source_episode_returns)))
    checkpoints = [run_dir / f"{algo}.zip" for run_dir in runs]
    for k, (seed, run_dir) in enumerate(zip(seeds, runs)):
        agent.member(k).save(checkpoints[k])
        plot_learning_curve(
            callback.evaluations[k], run_dir / "learning_curve.png",
            title=f"{algo} on {dataset.dataset_id} (seed {seed})", reference=behavior,
        )
    online = online_aggregate = None
    if run["n_finetune_timesteps"] > 0:
        # Fine-tuning resumes from here, from its first env step (an env mid-episode cannot be restored).
        if history.get("phase") != "offline-done":
            states.save(run_info("offline-done"))
        if stop:
            raise _interrupted(states, out_dir, run["n_timesteps"])
        if resume:
            for run_dir in runs:  # the interrupted attempt's
                (run_dir / "finetune" / "evaluations.csv").unlink(missing_ok=True)
        online_callback = PopulationEvalCallback(
            eval_freq=run["finetune_eval_freq"], n_eval_episodes=run["n_eval_episodes"],
            log_paths=[run_dir / "finetune" for run_dir in runs], labels=labels, verbose=verbose,
        )
        agent.finetune(
            run["n_finetune_timesteps"], callback=CallbackList([online_callback, StopCallback(stop)]),
            progress_bar=progress_bar,
        )
        if stop:
            raise _interrupted_online(agent, run, out_dir, stop)
        final = _final_population_evaluation(online_callback, agent)
        online = online_callback.evaluations
        checkpoints = [run_dir / f"{algo}-finetuned.zip" for run_dir in runs]
        for k in range(len(seeds)):
            agent.member(k).save(checkpoints[k])
        online_aggregate = aggregate_seeds(seeds, online, online=True)

    aggregate = aggregate_seeds(seeds, callback.evaluations)
    files = {name: out_dir / name for name in ("aggregate.json", "aggregate.csv", "aggregate.png")}
    title = f"{algo} on {dataset.dataset_id} ({len(seeds)} seeds)"
    if online_aggregate is not None:
        files |= {f"finetune/{name}": out_dir / "finetune" / name for name in ("aggregate.csv", "aggregate.png")}
        atomic_write_text(files["finetune/aggregate.csv"], online_aggregate.csv_text())
        plot_seed_aggregate(
            online_aggregate, files["finetune/aggregate.png"], title=f"{title}, online", reference=behavior
        )
    atomic_write_json(files["aggregate.json"], {
        "algo": algo, "dataset": dataset.dataset_id, "runs": [p.name for p in runs], **aggregate.to_json(),
        "initial": {str(s): evaluations_to_json([e])[0] for s, e in zip(seeds, initial)} if initial else None,
        "behavior_score": behavior,
        "online": online_aggregate.to_json() if online_aggregate is not None else None,
    })
    atomic_write_text(files["aggregate.csv"], aggregate.csv_text())
    plot_seed_aggregate(aggregate, files["aggregate.png"], title=title, reference=behavior)
    # The finished marks come last (seed runs, then the population, whose states go with its mark): a run
    # killed before them resumes from its last state and writes every file above again.
    for k, run_dir in enumerate(runs):
        mark_finished(run_dir, {"num_timesteps": agent.num_timesteps, "checkpoint": str(checkpoints[k]),
                                "final": evaluations_to_json([final[k]])[0]})
    mark_finished(out_dir, {"num_timesteps": agent.num_timesteps, "seeds": seeds,
                            "checkpoints": [str(c) for c in checkpoints]})
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)  # the run --overwrite replaced, kept until now
    return PopulationResult(
        agent, seeds, out_dir, runs, callback.evaluations, initial, final, aggregate, behavior, files, offline,
        online, online_aggregate, checkpoints,
    )


def read_population_config(folder: str | Path) -> dict[str, Any]:
    """The population.json `zoo train --seeds` wrote in a population folder, checked for what resuming
    reads (algo, dataset, seeds, kwargs, run); anything else is a UserError naming the file."""
    path = Path(folder) / POPULATION_CONFIG
    config = _read_config(
        path, f"{folder} has no {POPULATION_CONFIG}: it is not a `zoo train --seeds` folder.",
        "resuming a population needs its own config",
    )
    missing = [key for key in ("algo", "dataset", "seeds", "kwargs", "run") if key not in config]
    seeds = config.get("seeds")
    if missing or not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        problem = f"lacks {', '.join(missing)}" if missing else f"has no list of seeds ({seeds!r})"
        raise UserError(
            f"{path} {problem}: it was not written by `zoo train --seeds`, so the population cannot be "
            "resumed."
        )
    return config


def population_finished(folder: str | Path) -> dict[str, Any] | None:
    """The finished mark of a population folder; for a folder written before populations had one, a mark
    built from its seed runs' marks when every seed run has one (they were written last)."""
    folder = Path(folder)
    done = finished_info(folder)
    if done is not None:
        return done
    config = read_population_config(folder)
    marks = [finished_info(folder / f"seed{s}") for s in config["seeds"]]
    if latest_training_state(folder) is None and all(mark is not None for mark in marks):
        return {"num_timesteps": marks[0]["num_timesteps"], "seeds": config["seeds"],
                "checkpoints": [mark["checkpoint"] for mark in marks]}
    return None


def _refuse_finished_population(folder: Path, config: dict[str, Any]) -> None:
    done = population_finished(folder)
    if done is not None:
        raise UserError(
            f"{folder} finished already ({done['num_timesteps']} steps, seeds "
            f"{seeds_label(config['seeds'])}): there is nothing to resume; train a new run with another "
            "--out."
        )


def resume_population(
    folder: str | Path, *, seeds: list[int] | None = None, progress_bar: bool = True, verbose: int = 1
) -> PopulationResult:
    """Continue the `zoo train --seeds` population in `folder` (the one with population.json) from its last
    training state, with the settings population.json records (see `train_population`). `seeds`, when
    given (`zoo train --resume F --seeds S`), must be the population's own. Refused before any work: a
    finished population, other seeds, a damaged population.json or state."""
    folder = Path(folder)
    config = read_population_config(folder)
    if seeds is not None and [int(s) for s in seeds] != config["seeds"]:
        raise UserError(
            f"--seeds {seeds_label(list(seeds))} is not the population in {folder}, whose seeds are "
            f"{seeds_label(config['seeds'])}: drop --seeds (--resume continues the population with its own "
            "seeds), or train the other seeds as a new population with another --out."
        )
    _refuse_finished_population(folder, config)
    state = latest_training_state(folder)
    if state is not None:  # a damaged state is refused before the data loads (train_population loads it)
        read_population_state(state, config["seeds"])
    dataset = load_dataset(config["dataset"], device=config["kwargs"].get("device", "auto"))
    return train_population(
        config["algo"], dataset, folder, config["seeds"], progress_bar=progress_bar, verbose=verbose,
        resume=True,
    )


def _final_population_evaluation(callback: PopulationEvalCallback, agent: OfflineAlgorithm) -> list[Evaluation]:
    """Each member's evaluation at the agent's last step: the callback's own if it just ran one, else new."""
    last = [history[-1] if history else None for history in callback.evaluations]
    if last and all(e is not None and e.step == agent.num_timesteps for e in last):
        return last
    return callback.evaluate()
