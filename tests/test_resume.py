"""Runs that survive: training states, SIGINT/SIGKILL of a real `zoo train`, `--resume`, and `zoo plot`.

Exactness is asserted tensor by tensor: a resumed run must end with the very weights of a run that never
stopped (CPU, one thread). The subprocess tests drive the real CLI with real signals.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY_ID, tiny_root
from zoo.cli import main
from zoo.data import load_dataset
from zoo.evaluation import bootstrap_mean_ci
from zoo.plots import group_runs
from zoo.registry import make_agent
from zoo.resume import STATE_DIR, latest_training_state, load_training_state
from zoo.runs import resume_run, train_offline

# 600 gradient steps on the 12-transition Hopper dataset, evaluations every 200, a state every 100.
TRAIN = [
    "train", "--algo", "td3bc", "--dataset", TINY_ID, "--steps", "600", "--set", "eval_freq=200",
    "--set", "n_eval_episodes=1", "--set", "batch_size=8", "--save-freq", "100",
]


def zoo_process(*args: str, root: Path) -> subprocess.Popen:
    env = {**os.environ, "MINARI_DATASETS_PATH": str(root), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def run_zoo(*args: str, root: Path) -> subprocess.CompletedProcess:
    process = zoo_process(*args, root=root)
    out, err = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def wait_for_state(run_dir: Path, process: subprocess.Popen) -> None:
    """Return as soon as the run has written its first training state (fails if it ends first)."""
    deadline = time.monotonic() + 300
    while latest_training_state(run_dir) is None:
        assert process.poll() is None, f"zoo train ended before its first state: {process.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.02)


def sb3_policy(path: Path) -> dict[str, torch.Tensor]:
    """The policy tensors of SB3's zip (read with weights_only: nothing unpickled)."""
    with zipfile.ZipFile(path) as archive:
        return torch.load(io.BytesIO(archive.read("policy.pth")), weights_only=True)


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def hidden_files(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob(".*")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run, through the same CLI."""
    root = tiny_root(tmp_path_factory)
    out = tmp_path_factory.mktemp("reference") / "run"
    done = run_zoo(*TRAIN, "--out", str(out), root=root)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture
def root(tiny, minari_root_per_test) -> Path:
    return minari_root_per_test


def test_sigkill_then_resume_ends_with_the_uninterrupted_weights(reference, root, tmp_path):
    run_dir = tmp_path / "run"
    process = zoo_process(*TRAIN, "--out", str(run_dir), root=root)
    wait_for_state(run_dir, process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    # What a kill leaves: the config, a whole training state, no final checkpoint, no end marker.
    state = latest_training_state(run_dir)
    assert (state / "model.safetensors").is_file() and (state / "config.json").is_file()
    assert not (run_dir / "td3bc.zip").exists() and not (run_dir / STATE_DIR / "finished.json").exists()

    resumed = run_zoo("train", "--resume", str(run_dir), root=root)
    assert resumed.returncode == 0, resumed.stderr
    assert "offline (600 steps)" in resumed.stdout
    assert_same_tensors(sb3_policy(reference / "td3bc.zip"), sb3_policy(run_dir / "td3bc.zip"))
    # evaluations.csv continues: the same rows as the uninterrupted run's, none twice.
    assert (run_dir / "evaluations.csv").read_text() == (reference / "evaluations.csv").read_text()
    with (run_dir / "evaluations.csv").open() as handle:
        assert [int(row["step"]) for row in csv.DictReader(handle)] == [200, 400, 600]
    # Finished: the states are gone (the end marker stays), no temporaries anywhere.
    assert sorted(p.name for p in (run_dir / STATE_DIR).iterdir()) == ["finished.json"]
    assert hidden_files(run_dir) == []


def test_sigint_saves_a_state_prints_how_to_resume_and_exits_130(reference, root, tmp_path):
    run_dir = tmp_path / "run"
    process = zoo_process(*TRAIN, "--out", str(run_dir), root=root)
    wait_for_state(run_dir, process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("zoo: interrupted")]
    assert len(lines) == 1
    state = latest_training_state(run_dir)
    step = int(lines[0].split("gradient step ")[1].split(" ")[0])
    assert lines[0] == (
        f"zoo: interrupted at gradient step {step} of 600; training state saved in {state}; "
        f"resume with: zoo train --resume {run_dir}"
    )
    assert 100 <= step < 600
    # On disk: config, the one state (loadable, at the step the line names), no temporaries.
    assert [p.name for p in (run_dir / STATE_DIR).iterdir()] == [state.name]
    assert hidden_files(run_dir) == []
    agent, history = load_training_state(state, load_dataset(TINY_ID, device="cpu"), "cpu")
    assert agent.num_timesteps == agent.training_counters["n_updates"] == step
    assert [e["step"] for e in history["evaluations"]] == [s for s in (200, 400) if s <= step]

    resumed = run_zoo("train", "--resume", str(run_dir), root=root)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_tensors(sb3_policy(reference / "td3bc.zip"), sb3_policy(run_dir / "td3bc.zip"))
    assert (run_dir / "evaluations.csv").read_text() == (reference / "evaluations.csv").read_text()


class Crash(Exception):
    """Ends a run from its evaluation hook, as a crash would (the process itself goes on)."""


def crash_at(step: int, phase: str):
    def hook(evaluation, seen_phase):
        if seen_phase == phase and evaluation.step == step:
            raise Crash

    return hook


def run_in_process(algo: str, out: Path, crash=None, **settings):
    dataset = load_dataset(TINY_ID, device="cpu")
    overrides = {"batch_size": 8, "n_eval_episodes": 1, **settings.pop("overrides", {})}
    return train_offline(
        algo, dataset, out, seed=settings.pop("seed", 0), overrides=overrides, progress_bar=False, verbose=0,
        on_evaluation=crash, **settings,
    )


@pytest.mark.parametrize(
    "algo, overrides",
    [
        # PSQN: the transition-prediction phase is 40% of the budget (a share: the budget base is restored).
        ("psqn", {"pretrain_steps": 0.4, "eval_freq": 100}),
        # Imitate then improve: MC critic and BC actor for 250 steps, then TD3+BC.
        ("td3bc-mc", {"pretrain_steps": 250, "eval_freq": 100}),
    ],
)
def test_resume_across_the_pretraining_switch_is_exact(tiny, tmp_path, algo, overrides):
    whole = run_in_process(algo, tmp_path / "whole", n_timesteps=500, overrides=overrides)
    with pytest.raises(Crash):  # stops at the evaluation of step 200: the last state is step 100's
        run_in_process(algo, tmp_path / "cut", crash_at(200, "offline"), n_timesteps=500, overrides=overrides,
                       save_freq=100)
    state = latest_training_state(tmp_path / "cut")
    counters = load_training_state(state, load_dataset(TINY_ID, device="cpu"), "cpu")[0].training_counters
    assert counters["num_timesteps"] == 100 and counters["n_updates"] < 200  # before the switch (200 / 250)
    resumed = resume_run(tmp_path / "cut", progress_bar=False, verbose=0)
    assert resumed.agent.training_counters == whole.agent.training_counters
    assert_same_tensors(whole.agent.policy.state_dict(), resumed.agent.policy.state_dict())
    for name in whole.agent.policy.optimizer_names:
        a, b = (getattr(r.agent.policy, name).state_dict()["state"] for r in (whole, resumed))
        for index in a:
            assert_same_tensors(a[index], b[index])
    assert [e.step for e in resumed.evaluations] == [100, 200, 300, 400, 500]
    assert resumed.evaluations == whole.evaluations


def test_fine_tuning_resumes_from_the_end_of_offline_learning(tiny, tmp_path):
    """A run stopped during fine-tuning starts fine-tuning again from the state written when offline
    learning ended; the result is then the uninterrupted run's."""
    settings = dict(
        n_timesteps=200, n_finetune_timesteps=150, overrides={"eval_freq": 100, "finetune_eval_freq": 50}
    )
    whole = run_in_process("td3bc", tmp_path / "whole", **settings)
    with pytest.raises(Crash):
        run_in_process("td3bc", tmp_path / "cut", crash_at(100, "online"), **settings)
    assert (tmp_path / "cut" / "finetune" / "evaluations.csv").exists()  # the interrupted attempt's rows
    resumed = resume_run(tmp_path / "cut", progress_bar=False, verbose=0)
    assert resumed.final.step == 150 and resumed.agent.num_timesteps == 150
    assert_same_tensors(whole.agent.policy.state_dict(), resumed.agent.policy.state_dict())
    assert resumed.online_evaluations == whole.online_evaluations
    for name in ("evaluations.csv", "finetune/evaluations.csv"):
        assert (tmp_path / "cut" / name).read_text() == (tmp_path / "whole" / name).read_text()
    # zoo plot --online: the two runs share a configuration (and seed): one group, a band of zero width.
    (group,) = group_runs([tmp_path / "whole", tmp_path / "cut"], online=True)
    assert group.steps.tolist() == [50, 100, 150] and group.seeds == [0, 0]
    scores = [e.normalized_score for e in whole.online_evaluations]
    np.testing.assert_allclose(group.values, [scores, scores])
    np.testing.assert_allclose(group.low, scores)
    np.testing.assert_allclose(group.high, scores)


def test_soft_imitate_writes_no_state_between_its_two_phases(tiny, tmp_path):
    """edac-mc's soft returns are drawn once when its critic phase starts; a state inside that phase could
    not resume exactly, so none is written there, and the agent says why."""
    dataset = load_dataset(TINY_ID, device="cpu")
    agent = make_agent(
        "edac-mc", dataset, seed=0, batch_size=8, pretrain_steps=40, policy_kwargs={"n_critics": 2}
    )
    agent.learn(20, reset_num_timesteps=False)  # phase A (BC): updates 1..20
    assert agent.resume_blocker() is None
    agent.learn(1, reset_num_timesteps=False)
    assert "soft-imitate's critic phase (updates 21..40)" in agent.resume_blocker()
    agent.learn(20, reset_num_timesteps=False)
    assert agent.resume_blocker() is None  # update 41: EDAC's own updates
    run = tmp_path / "run"
    with pytest.raises(Crash):
        run_in_process("edac-mc", run, crash_at(60, "offline"), n_timesteps=80, save_freq=30,
                       overrides={"pretrain_steps": 40, "eval_freq": 60, "policy_kwargs": {"n_critics": 2}})
    # States were due at 30 (inside the critic phase: skipped) and 60 (after the evaluation that crashed).
    assert latest_training_state(run) is None


def test_resume_refuses_what_it_cannot_do(tmp_path, capsys, reference):
    assert main(["train", "--resume", str(reference)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"zoo: error: {reference} finished already (600 steps, checkpoint {reference / 'td3bc.zip'}): "
        "there is nothing to resume; train a new run with another --out."
    )
    assert main(["train", "--resume", str(reference), "--steps", "5", "--seed", "3"]) == 2
    assert "drop --seed, --steps (or start a new run without --resume)" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "has no config.json: it is not a `zoo train` run folder" in capsys.readouterr().err


# ------------------------------------------------------------------ bootstrap CI and `zoo plot`


def test_bootstrap_ci_of_two_runs_by_hand():
    """Runs 0 and 1: a resample of two is {0,0}, {0,1}, {1,0} or {1,1}, so its mean is 0, 0.5 or 1 with
    probabilities 1/4, 1/2, 1/4; the 2.5% and 97.5% percentiles are 0 and 1."""
    mean, low, high = bootstrap_mean_ci([0.0, 1.0])
    assert (mean, low, high) == (0.5, 0.0, 1.0)


def test_bootstrap_ci_matches_the_exact_bootstrap_distribution():
    """Four runs: all 4^4 = 256 equally likely resamples enumerated by hand give the exact distribution of
    the resampled mean; its 2.5% / 97.5% quantiles are the interval (10,000 resamples land on the same
    atoms, or a neighbour)."""
    values = np.array([0.0, 1.0, 3.0, 10.0])
    means = np.sort([np.mean(values[list(draw)]) for draw in itertools.product(range(4), repeat=4)])
    cdf = np.arange(1, 257) / 256
    exact_low, exact_high = means[np.searchsorted(cdf, 0.025)], means[np.searchsorted(cdf, 0.975)]
    # 5/256 of the means are < 0.5 and 11/256 <= 0.5; 247/256 are < 7.75 and 251/256 <= 7.75.
    assert (exact_low, exact_high) == (0.5, 7.75)
    mean, low, high = bootstrap_mean_ci(values)
    assert mean == 3.5
    assert abs(low - exact_low) <= 0.25 and abs(high - exact_high) <= 0.25  # neighbouring atoms at most
    # Curves: each column is the same computation, with one draw of runs shared by all columns.
    curves = np.stack([values, 2 * values + 1], axis=1)
    mean2, low2, high2 = bootstrap_mean_ci(curves)
    np.testing.assert_allclose(mean2, [3.5, 8.0])
    np.testing.assert_allclose(low2, [low, 2 * low + 1])
    np.testing.assert_allclose(high2, [high, 2 * high + 1])
    assert bootstrap_mean_ci([[4.0, 5.0]]) == (pytest.approx([4.0, 5.0]),) * 3  # one run: zero width


def test_zoo_plot_groups_seeds_with_their_bootstrap_band(tiny, tmp_path, capsys):
    runs = []
    for seed in (0, 1, 2):
        run_dir = tmp_path / f"td3bc-seed{seed}"
        run_in_process("td3bc", run_dir, n_timesteps=100, seed=seed, overrides={"eval_freq": 50})
        runs.append(run_dir)
    other = tmp_path / "td3bc-alpha"
    run_in_process("td3bc", other, n_timesteps=100, overrides={"eval_freq": 50, "alpha": 1.0})
    png = tmp_path / "plot.png"
    assert main(["plot", *map(str, runs), str(other), "--out", str(png)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Hand computation from the three seeds' evaluations.csv at step 100.
    scores = []
    for run_dir in runs:
        with (run_dir / "evaluations.csv").open() as handle:
            rows = [row for row in csv.DictReader(handle) if row["step"] == "100"]
        scores.append(float(rows[0]["normalized_score"]))
    mean, low, high = bootstrap_mean_ci(scores)
    assert out[0] == (
        f"td3bc on {TINY_ID} alpha=2.5: 3 run(s) (seeds 0, 1, 2), step 100: normalized score {mean:.1f} "
        f"[95% CI {low:.1f}, {high:.1f}]"
    )
    assert abs(mean - np.mean(scores)) < 1e-12 and min(scores) <= low <= mean <= high <= max(scores)
    assert out[1].startswith(f"td3bc on {TINY_ID} alpha=1.0: 1 run(s) (seeds 0), step 100: normalized score ")
    assert out[2] == f"plot: {png}"
    assert hidden_files(tmp_path / "td3bc-seed0") == [] and not list(tmp_path.glob(".*"))
