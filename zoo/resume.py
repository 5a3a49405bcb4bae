"""Runs that survive: periodic training states, a clean stop on Ctrl-C, and `zoo train --resume`.

A training state is everything the next offline update depends on: every network and optimizer moment
(SB3's `get_parameters`), the counters and the RNG states (`OfflineAlgorithm.training_state`), and the
run's own history (evaluations so far, the untrained agent's evaluation). It is a folder
RUN/training_state/state-<seq>/ written as a hidden temporary folder and renamed into place when complete,
so the previous state stays valid until the new one is whole; older states are removed after. Nothing is
pickled: tensors go to safetensors, the rest to JSON.

Resuming from the state at update k builds the agent from the run's config.json, loads the state and runs
the remaining updates: on CPU its final weights equal those of a run that never stopped (the tests compare
every tensor). Online fine-tuning is not resumed mid-way: an environment mid-episode (MuJoCo's internal
state, the episode's time limit) cannot be restored exactly, so the state written when offline learning
ended is the one a fine-tuning run resumes from, and fine-tuning starts again from its first env step;
the resumed run then equals an uninterrupted one, at the cost of the online steps done before the stop.

A population (`zoo train --seeds`, zoo.agents.population) is saved the same way, as one state in the
population folder: its stacked weights (member k's slices), the MemberAdam moments, each optimizer's
per-member learning rates, every member's generator (the agent's MemberRandom, which its networks draw from
too), the counters, and the run's history (each member's evaluations, from which the seed runs' files and
the aggregate are written). It is loaded into the population rebuilt from population.json
(`load_population_state`), so member k resumes exactly as a population of one with seed k would. No state
is written during online fine-tuning, so the members' exploration generators (made when fine-tuning starts,
seeded with the members' seeds) are never part of one: fine-tuning starts again with them fresh.

Stop requests (SIGINT, SIGTERM) set a flag that is read after each whole update, never inside one; a second
Ctrl-C raises at once (zoo.runs raises Interrupted naming the last state; a state being written then is
abandoned in its staging folder, so the last periodic state stays valid).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from stable_baselines3.common.callbacks import BaseCallback

from zoo.agents.population import member_learning_rates, set_member_learning_rates, set_population_counters
from zoo.checkpoint import (
    STAGING_SUFFIX, load_checkpoint, load_checkpoint_tensors, read_checkpoint, read_checkpoint_extras,
    save_checkpoint,
)
from zoo.errors import UserError
from zoo.evaluation import Evaluation
from zoo.io import atomic_write_json, atomic_write_text, remove_stale_temporaries

STATE_DIR = "training_state"
FORMAT = "zoo-training-state/1"
FINISHED = "finished.json"


# ---------------------------------------------------------------------------------------------- the state


def save_training_state(
    agent, run_dir: str | os.PathLike, run_info: dict[str, Any], *, key: str, base: str | None = None
) -> Path:
    """Write the agent's full training state and `run_info` (JSON) as RUN/training_state/state-<seq>/, a
    zoo checkpoint with optimizer states whose extra tensors are the RNG states (a population's: one
    generator state per member, and its seeds and per-member learning rates under run_info "population").

    The folder is complete before it appears under its (new) name: zoo.checkpoint stages it and renames it
    into place; only then is every older state removed, so a kill at any point leaves a whole state.
    Returns the new folder.
    """
    states = Path(run_dir) / STATE_DIR
    states.mkdir(parents=True, exist_ok=True)
    previous = _state_folders(states)
    seq = (int(previous[-1].name.split("-")[1]) + 1) if previous else 1
    tensors, info = agent.training_state()
    record = {"format": FORMAT, "training_state": info, "run": run_info}
    if getattr(agent, "is_population", False):
        record["population"] = {
            "seeds": [int(s) for s in agent.member_seeds], "learning_rates": member_learning_rates(agent)
        }
    final = save_checkpoint(
        agent, states / f"state-{seq:06d}", include_optimizer=True, extra_tensors=tensors, run_info=record,
        key=key, base=base,
    )
    for old in previous:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_training_state(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete state folder of a run (staging folders are never candidates), or None."""
    folders = _state_folders(Path(run_dir) / STATE_DIR)
    return folders[-1] if folders else None


def load_training_state(folder: str | os.PathLike, dataset, device: str = "auto"):
    """(agent, run info) from a state folder: weights, optimizer states, counters and RNG states restored,
    ready to continue learning on `dataset`. A damaged or foreign folder is a UserError naming it."""
    folder = Path(folder)
    try:
        extras, run_info = read_checkpoint_extras(folder)
    except UserError:
        raise
    except Exception as error:  # OSError, JSON errors, safetensors' SafetensorError (an Exception)
        raise UserError(
            f"The training state {folder} cannot be read ({error}): remove that folder to resume from an "
            "earlier state (or from the start, if it is the only one)."
        ) from None
    if not isinstance(run_info, dict) or run_info.get("format") != FORMAT:
        raise UserError(f"{folder} is a checkpoint but not a zoo training state (no {FORMAT!r} run_info).")
    if "population" in run_info:
        raise UserError(
            f"{folder} is the training state of a population: resume its population folder (the one with "
            "population.json) with zoo train --resume."
        )
    agent = load_checkpoint(folder, dataset=dataset, device=device, load_optimizer=True)
    agent.restore_training_state(extras, run_info["training_state"])
    return agent, run_info["run"]


def read_population_state(
    folder: str | os.PathLike, seeds: list[int]
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(config.json, tensors, run_info) of the training state in `folder`, checked to be whole (checksum) and
    to be the state of the population of `seeds` (its seeds, one learning rate per member and optimizer,
    one generator state per member). Needs no agent: `zoo train --resume` checks the state before the data
    loads. A damaged state, one of another population or of an ordinary agent is a UserError naming the
    folder and what to do."""
    folder = Path(folder)
    try:
        config, tensors = read_checkpoint(folder)
    except UserError as error:
        raise UserError(f"{error} (the training state cannot be used: {_remove_hint(folder)})") from None
    except Exception as error:  # OSError, safetensors' SafetensorError (an Exception)
        raise UserError(
            f"The training state {folder} cannot be read ({error}): {_remove_hint(folder)}."
        ) from None
    record = config["run_info"]
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise UserError(f"{folder} is a checkpoint but not a zoo training state (no {FORMAT!r} run_info).")
    described = record.get("population")
    if not isinstance(described, dict):
        raise UserError(
            f"{folder} is the training state of one agent, not of a population: resume its own run folder "
            "with zoo train --resume."
        )
    seeds = [int(s) for s in seeds]
    if described.get("seeds") != seeds:
        raise UserError(
            f"{folder} is the state of a population of seeds {described.get('seeds')}, the population.json "
            f"beside it has seeds {seeds}: the folder's files were mixed; {_remove_hint(folder)}."
        )
    rates = described.get("learning_rates")
    if not isinstance(rates, dict) or not rates or any(
        not isinstance(r, list) or len(r) != len(seeds) or not all(isinstance(v, float) for v in r)
        for r in rates.values()
    ):
        raise UserError(
            f"{folder}: config.json run_info 'population.learning_rates' is not one rate per member for each "
            f"optimizer: {_remove_hint(folder)}."
        )
    missing = [f"extra.rng/member/{k}" for k in range(len(seeds)) if f"extra.rng/member/{k}" not in tensors]
    whole = isinstance(record.get("training_state"), dict) and isinstance(record.get("run"), dict)
    if missing or not whole:
        what = f"the generator state {missing[0]}" if missing else "its counters or its run history"
        raise UserError(f"{folder} lacks {what}: {_remove_hint(folder)}.")
    return config, tensors, record


def load_population_state(folder: str | os.PathLike, population) -> dict[str, Any]:
    """Load the training state in `folder` into `population`, a population freshly built from its run's
    population.json (zoo.registry.make_population): counters first (the model set up again at them:
    set_population_counters), then the stacked weights and MemberAdam moments (names, shapes and dtypes
    checked), the members' learning rates, and every RNG state (each member's generator, torch's, numpy's,
    Python's). Returns the run's history (`run_info` given to save_training_state).

    Anything that does not fit (`read_population_state`'s checks, then the tensors against the population)
    is a UserError naming the folder and what to do, raised before any training (the population is then to
    be discarded).
    """
    folder = Path(folder)
    config, tensors, record = read_population_state(folder, population.member_seeds)
    rates = record["population"]["learning_rates"]
    names = list(population.policy.optimizer_names)
    if sorted(rates) != sorted(names):
        raise UserError(
            f"{folder} holds learning rates for the optimizers {sorted(rates)}, the population has "
            f"{sorted(names)}: {_remove_hint(folder)}."
        )
    prefix = "extra."
    extras = {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}
    info = record["training_state"]
    try:
        set_population_counters(population, info)
        load_checkpoint_tensors(population, config, tensors, folder)
        set_member_learning_rates(population, rates)
        population.restore_training_state(extras, info)
    except UserError as error:
        raise UserError(f"{error} (the training state cannot be used: {_remove_hint(folder)})") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise UserError(
            f"{folder}: config.json run_info 'training_state' does not restore this population ({error!r}): "
            f"{_remove_hint(folder)}."
        ) from None
    return record["run"]


def _remove_hint(folder: Path) -> str:
    return "remove that folder to resume from an earlier state (or from the start, if it is the only one)"


def mark_finished(run_dir: str | os.PathLike, info: dict[str, Any]) -> None:
    """The run ended: record it and drop its training states (optimizer moments are 2/3 of their size)."""
    states = Path(run_dir) / STATE_DIR
    atomic_write_json(states / FINISHED, info)
    for folder in _state_folders(states):
        shutil.rmtree(folder, ignore_errors=True)


def finished_info(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(run_dir) / STATE_DIR / FINISHED
    return json.loads(path.read_text()) if path.exists() else None


def remove_stale_states(run_dir: str | os.PathLike) -> None:
    """Staging folders and temporaries left by a process killed mid-write."""
    states = Path(run_dir) / STATE_DIR
    if states.is_dir():
        for stale in states.glob(f".state-*{STAGING_SUFFIX}"):
            shutil.rmtree(stale, ignore_errors=True)
        remove_stale_temporaries(states)


def _state_folders(states: Path) -> list[Path]:
    if not states.is_dir():
        return []
    folders = [p for p in states.glob("state-*") if p.is_dir() and p.name.split("-")[1].isdigit()]
    return sorted(folders, key=lambda p: int(p.name.split("-")[1]))


# ---------------------------------------------------------------------------------------------- run history


def evaluations_to_json(evaluations: list[Evaluation]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(e) for e in evaluations]


def evaluations_from_json(rows: list[dict[str, Any]] | None) -> list[Evaluation]:
    return [Evaluation(**row) for row in rows or []]


def kept_csv_text(path: str | os.PathLike, column: str, last: int) -> str | None:
    """The CSV's header and the rows whose `column` is at most `last` (dropping rows a killed run wrote
    after its last training state, which the resumed run writes again); None when there is no such file."""
    path = Path(path)
    if not path.exists():
        return None
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or column not in rows[0]:
        return None
    at = rows[0].index(column)
    kept = [rows[0]] + [row for row in rows[1:] if len(row) > at and row[at] and float(row[at]) <= last]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(kept)
    return buffer.getvalue()


def truncate_csv(path: str | os.PathLike, column: str, last: int) -> None:
    """Rewrite the CSV (atomically) with only the rows `kept_csv_text` keeps."""
    text = kept_csv_text(path, column, last)
    if text is not None:
        atomic_write_text(path, text)


def continue_progress_csv(logger, rows_path: str | os.PathLike, kept_text: str) -> None:
    """SB3's CSV writer opens progress.csv afresh ("w+"); put back the rows of the run so far, so that the
    file continues. `kept_text` is the file's content (header first) from `kept_csv_text`."""
    from stable_baselines3.common.logger import CSVOutputFormat

    lines = kept_text.splitlines()
    if not lines:
        return
    target = Path(rows_path).resolve()
    text = kept_text if kept_text.endswith("\n") else kept_text + "\n"
    for output in logger.output_formats:
        if isinstance(output, CSVOutputFormat) and Path(output.file.name).resolve() == target:
            output.keys = next(csv.reader([lines[0]]))
            output.file.write(text)
            output.file.flush()
            if isinstance(output.file, io.StringIO):  # zoo.runs' writer keeps the rows in memory and rewrites
                atomic_write_text(target, text)  # the file at each dump: the rows after the state go now


# ---------------------------------------------------------------------------------------------- stopping


class StopRequest:
    """Set by SIGINT/SIGTERM while `stop_on_signals` is active; read after each whole update."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def stop_on_signals(
    notice: Callable[[], str] | None = None, second: Callable[[], BaseException] | None = None
) -> Iterator[StopRequest]:
    """Turn the first SIGINT/SIGTERM into a stop request (training stops after the current update and saves);
    a second one raises `second()` (default KeyboardInterrupt) at once. Outside the main thread signals cannot
    be caught: the request then never fires and Python's defaults apply."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum, frame):
        if request:
            raise second() if second is not None else KeyboardInterrupt
        request.signal = signum
        if notice is not None:
            print(notice(), file=sys.stderr, flush=True)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class TrainingStateCallback(BaseCallback):
    """Every `save_freq` steps (gradient steps offline), after the evaluation of that step, write a training
    state; stop the loop (return False) once a stop was requested. `run_info()` gives the run's history."""

    def __init__(
        self, run_dir: Path, save_freq: int, run_info: Callable[[], dict[str, Any]], stop: StopRequest, *,
        key: str, base: str | None = None,
    ):
        super().__init__()
        self.run_dir, self.save_freq, self.run_info, self.stop = Path(run_dir), int(save_freq), run_info, stop
        self.key, self.base = key, base
        self.saved_at: int | None = None
        self.skipped: str | None = None  # why the last due state was not written

    def save(self, run_info: dict[str, Any] | None = None) -> Path | None:
        """Write a state now (with `run_info`, default `self.run_info()`); None when the agent's
        `resume_blocker()` says one taken now would not resume exactly (`self.skipped` says why)."""
        blocker = self.model.resume_blocker()
        if blocker is not None:
            self.skipped = blocker
            return None
        self.skipped = None
        self.saved_at = self.model.num_timesteps
        info = self.run_info() if run_info is None else run_info
        return save_training_state(self.model, self.run_dir, info, key=self.key, base=self.base)

    def _on_step(self) -> bool:
        if self.save_freq > 0 and self.num_timesteps % self.save_freq == 0:
            self.save()
        return not self.stop


class StopCallback(BaseCallback):
    """Stops the loop (returns False) once a stop was requested: fine-tuning writes no periodic states."""

    def __init__(self, stop: StopRequest):
        super().__init__()
        self.stop = stop

    def _on_step(self) -> bool:
        return not self.stop
