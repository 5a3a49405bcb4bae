"""Learning curves as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from zoo.evaluation import Evaluation


def plot_learning_curve(
    evaluations: Sequence[Evaluation], path: str | Path, *, title: str, reference: float | None = None,
    reference_label: str = "behaviour policy",
) -> Path:
    """Normalised score (or return, without references) against gradient steps; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    normalized = all(e.normalized_score is not None for e in evaluations)
    steps = [e.step for e in evaluations]
    values = [e.normalized_score if normalized else e.return_mean for e in evaluations]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(steps, values, marker="o", label="agent")
    if reference is not None:
        ax.axhline(reference, color="gray", linestyle="--", label=reference_label)
    ax.set_xlabel("gradient steps")
    ax.set_ylabel("normalized score" if normalized else "return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path
