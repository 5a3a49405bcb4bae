"""Learning curves as PNG."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from zoo.evaluation import Evaluation, SeedAggregate


def _axes(size: tuple[float, float]):
    """A new figure and its axes on matplotlib's file-only backend (no display needed; imported here so
    that `import zoo` does not pay for matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size, dpi=120)


def _save(fig, path: str | Path) -> Path:
    """Lay the figure out, write it as a PNG atomically (zoo.io.atomic_path) and close it, even on error."""
    import matplotlib.pyplot as plt

    from zoo.io import atomic_path

    path = Path(path)
    try:
        fig.tight_layout()
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path


def plot_learning_curve(
    evaluations: Sequence[Evaluation], path: str | Path, *, title: str, reference: float | None = None,
    reference_label: str = "behaviour policy",
) -> Path:
    """Normalised score (or return, without references) against gradient steps; written atomically."""
    normalized = all(e.normalized_score is not None for e in evaluations)
    steps = [e.step for e in evaluations]
    values = [e.normalized_score if normalized else e.return_mean for e in evaluations]
    fig, ax = _axes((6, 4))
    ax.plot(steps, values, marker="o", label="agent")
    if reference is not None:
        ax.axhline(reference, color="gray", linestyle="--", label=reference_label)
    ax.set_xlabel("gradient steps")
    ax.set_ylabel("normalized score" if normalized else "return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_seed_aggregate(
    aggregate: SeedAggregate, path: str | Path, *, title: str, reference: float | None = None,
    reference_label: str = "behaviour policy",
) -> Path:
    """The mean over seeds against gradient (or online env) steps with its bootstrap CI as a band (zoo.evaluation
    SeedAggregate), each seed's curve thin behind it; written atomically."""
    fig, ax = _axes((6, 4))
    for row in aggregate.values:
        ax.plot(aggregate.steps, row, color="gray", alpha=0.35, linewidth=0.8)
    (line,) = ax.plot(aggregate.steps, aggregate.mean, marker="o", label=f"mean of {len(aggregate.seeds)} seeds")
    ax.fill_between(
        aggregate.steps, aggregate.low, aggregate.high, color=line.get_color(), alpha=0.25, linewidth=0,
        label=f"{aggregate.confidence:.0%} bootstrap CI",
    )
    if reference is not None:
        ax.axhline(reference, color="gray", linestyle="--", label=reference_label)
    ax.set_xlabel(aggregate.step_label)
    ax.set_ylabel(aggregate.metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


# ------------------------------------------------------------------ several runs: `zoo plot`


@dataclass
class RunGroup:
    """Runs of one configuration (same algo, dataset, fraction, subset and settings; seeds differ)."""

    label: str
    runs: list[Path]
    seeds: list[int]
    steps: np.ndarray  # evaluation steps every run of the group has
    values: np.ndarray  # (n_runs, n_steps)
    metric: str  # "normalized score" or "return"
    mean: np.ndarray
    low: np.ndarray  # 95% bootstrap CI of the mean over seeds (zoo.evaluation.bootstrap_mean_ci)
    high: np.ndarray

    def summary(self) -> str:
        last = f"{self.metric} {self.mean[-1]:.1f}"
        if len(self.runs) > 1:
            last += f" [95% CI {self.low[-1]:.1f}, {self.high[-1]:.1f}]"
        seeds = ", ".join(str(s) for s in self.seeds)
        return f"{self.label}: {len(self.runs)} run(s) (seeds {seeds}), step {int(self.steps[-1])}: {last}"


def group_runs(run_dirs: Sequence[str | Path], online: bool = False) -> list[RunGroup]:
    """Read each run's config.json and evaluations.csv (finetune/evaluations.csv with `online`) and group
    the runs whose configuration differs only in the seed (and device, command, save frequency). A
    population folder (`zoo train --seeds`) stands for its seed runs."""
    from zoo.errors import UserError
    from zoo.evaluation import bootstrap_mean_ci

    keyed: dict[str, list[tuple[Path, dict, dict[int, tuple[float, float | None]]]]] = {}
    for run_dir in _expand_populations(map(Path, run_dirs)):
        try:
            config = json.loads((run_dir / "config.json").read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"{run_dir} is not a `zoo train` run folder (config.json: {error}).") from None
        csv_path = run_dir / ("finetune" if online else "") / "evaluations.csv"
        rows = _read_evaluations(csv_path)
        if not rows:
            raise UserError(f"{csv_path} holds no evaluations yet: nothing to plot for {run_dir}.")
        keyed.setdefault(_configuration_key(config), []).append((run_dir, config, rows))
    labels = _labels([members[0][1] for members in keyed.values()])
    normalized = all(
        score is not None for members in keyed.values() for *_, rows in members for _, score in rows.values()
    )
    groups = []
    for label, members in zip(labels, keyed.values()):
        steps = sorted(set.intersection(*(set(rows) for *_, rows in members)))
        if not steps:
            raise UserError(f"The runs of {label} share no evaluation step: their eval_freq differ.")
        values = np.array([[rows[s][1] if normalized else rows[s][0] for s in steps] for *_, rows in members])
        mean, low, high = bootstrap_mean_ci(values)
        groups.append(RunGroup(
            label, [m[0] for m in members], [m[1]["seed"] for m in members], np.array(steps), values,
            "normalized score" if normalized else "return", mean, low, high,
        ))
    return groups


def plot_runs(run_dirs: Sequence[str | Path], path: str | Path, *, online: bool = False) -> list[RunGroup]:
    """One PNG of every group's mean curve with its 95% bootstrap band over seeds (one run: its curve)."""
    groups = group_runs(run_dirs, online)
    fig, ax = _axes((7, 4.5))
    for group in groups:
        seeds = f"{len(group.runs)} seeds" if len(group.runs) > 1 else f"seed {group.seeds[0]}"
        (line,) = ax.plot(group.steps, group.mean, label=f"{group.label} ({seeds})")
        if len(group.runs) > 1:
            ax.fill_between(
                group.steps, group.low, group.high, color=line.get_color(), alpha=0.25, linewidth=0
            )
    ax.set_xlabel("env steps (online fine-tuning)" if online else "gradient steps")
    banded = any(len(g.runs) > 1 for g in groups)
    ax.set_ylabel(groups[0].metric + (" (mean, 95% bootstrap CI over seeds)" if banded else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    _save(fig, path)
    return groups


def _expand_populations(run_dirs) -> list[Path]:
    """Run folders, with a population folder (`zoo train --seeds`: population.json) replaced by its seed runs."""
    from zoo.errors import UserError

    expanded = []
    for run_dir in run_dirs:
        population = run_dir / "population.json"
        if population.is_file():
            try:
                names = json.loads(population.read_text())["runs"]
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise UserError(f"{population} cannot be read ({error}): name its seed runs instead.") from None
            expanded.extend(run_dir / name for name in names)
        else:
            expanded.append(run_dir)
    return expanded


def _read_evaluations(path: Path) -> dict[int, tuple[float, float | None]]:
    """step -> (return_mean, normalized_score or None) from an evaluations.csv (a missing file: {})."""
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        int(row["step"]): (
            float(row["return_mean"]), float(row["normalized_score"]) if row.get("normalized_score") else None
        )
        for row in rows
    }


# Not part of the experiment: "population" (`zoo train --seeds` trained the seed with others in one process;
# each member equals the ordinary run of its seed) groups a population's seeds with ordinary runs too.
_NOT_CONFIGURATION = ("seed", "command", "evaluate_initial", "population")


def _settings(config: dict) -> dict:
    """A run's configuration without what does not change the experiment (seed, device, save frequency)."""
    kwargs = {k: v for k, v in config.get("kwargs", {}).items() if k != "device"}
    run = {k: v for k, v in config.get("run", {}).items() if k != "save_freq"}
    rest = {k: v for k, v in config.items() if k not in (*_NOT_CONFIGURATION, "kwargs", "run")}
    return {**rest, "kwargs": kwargs, "run": run}


def _configuration_key(config: dict) -> str:
    return json.dumps(_settings(config), sort_keys=True, default=str)


def _labels(configs: list[dict]) -> list[str]:
    """`algo on dataset` (+ fraction), plus the settings that tell apart groups sharing algo and dataset."""
    labels = []
    for config in configs:
        label = f"{config['algo']} on {config['dataset']}"
        if config.get("fraction", 1.0) != 1.0:
            label += f" ({config['fraction']:g} of it)"
        same = (config["algo"], config["dataset"])
        twins = [c for c in configs if c is not config and (c["algo"], c["dataset"]) == same]
        if twins:
            mine, theirs = _flat(_settings(config)), [_flat(_settings(t)) for t in twins]
            keys = set(mine).union(*theirs)
            differing = sorted(k for k in keys if any(t.get(k) != mine.get(k) for t in theirs))
            label += " " + ", ".join(f"{k.split('.')[-1]}={mine.get(k, 'default')}" for k in differing)
        labels.append(label)
    return labels


def _flat(settings: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
