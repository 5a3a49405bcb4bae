"""`zoo tune` on the embedded storage: real trials (TD3+BC on a tiny Hopper-v5 dataset, real MuJoCo
evaluations), real Optuna studies in SQLite files, real `zoo` subprocesses for the one-line errors."""

from __future__ import annotations

import csv
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml


def tune_extra(module: str):
    """Import a module of the extra 'tune'; skip without it, except under CI=true, where `make test` installs
    it and its absence must fail the run."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    return pytest.importorskip(
        module, reason="zoo tune needs the extra 'tune' (pip install 'offline-zoo[tune]')"
    )


optuna = tune_extra("optuna")

from zoo.cli import main as zoo_main
from zoo.config import load_hyperparams
from zoo.data import load_dataset
from zoo.errors import ConfigError
from zoo.registry import AGENTS, make_agent
from zoo.tune import SPACES, Categorical, Float, Given, TuneSettings, nest, sample, tune
from zoo.tune.spaces import search_space

from .conftest import TINY_ID


def final_scores(trial_folder) -> list[float]:
    """The normalized score of the last evaluation of each seed, read back from evaluations.csv."""
    scores = []
    for seed_folder in sorted(trial_folder.glob("seed*")):
        with (seed_folder / "evaluations.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        scores.append(float(rows[-1]["normalized_score"]))
    return scores


def test_three_trials_on_embedded_storage(tiny, tmp_path, capsys):
    folder = tmp_path / "study"
    settings = TuneSettings(
        "td3bc",
        TINY_ID,
        n_trials=3,
        seeds=2,
        steps=60,
        n_evaluations=2,
        eval_episodes=1,
        out=str(folder),
        sampler_seed=0,
        write_best=str(tmp_path / "best.yml"),
    )
    study = tune(settings)
    out = capsys.readouterr().out
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert (folder / "study.db").is_file()

    for trial in trials:
        # the objective is the mean over the 2 seeds of the final evaluation's normalized score ...
        scores = final_scores(folder / f"trial-{trial.number:04d}")
        assert len(scores) == 2
        assert trial.value == pytest.approx(np.mean(scores), abs=1e-9)
        assert trial.user_attrs["seed_scores"] == pytest.approx(scores, abs=1e-9)
        # ... also its last intermediate value (2 evaluations per seed, reported at steps 0..3)
        assert sorted(trial.intermediate_values) == [0, 1, 2, 3]
        assert trial.intermediate_values[3] == pytest.approx(trial.value, abs=1e-9)
        # 2 seeds x 2 evaluations x 1 episode; Hopper episodes last 1..1000 steps
        assert trial.user_attrs["eval_episodes"] == 4
        assert 4 <= trial.user_attrs["eval_env_steps"] <= 4000
        assert trial.user_attrs["online_env_steps"] == 0
        assert set(trial.params) == {"alpha", "learning_rate"}
        assert 1.0 <= trial.params["alpha"] <= 20.0 and 1e-4 <= trial.params["learning_rate"] <= 1e-3
        config = yaml.safe_load((folder / f"trial-{trial.number:04d}" / "seed-1" / "config.json").read_text())
        assert config["kwargs"]["alpha"] == trial.params["alpha"] and config["seed"] == 1
        assert config["run"]["n_timesteps"] == 60 and config["run"]["eval_freq"] == 30

    best = study.best_trial
    assert best.value == max(t.value for t in trials)
    total_episodes = sum(t.user_attrs["eval_episodes"] for t in trials)
    total_steps = sum(t.user_attrs["eval_env_steps"] for t in trials)
    assert f"{total_episodes:,} evaluation episodes ({total_steps:,} env steps)" in out
    assert f"best: trial {best.number}, score {best.value:.2f}" in out
    for trial in trials:
        assert f"trial {trial.number:>4}  alpha={trial.params['alpha']:.3g}" in out
        seeds = " ".join(f"{score:.1f}" for score in trial.user_attrs["seed_scores"])
        assert f"score {trial.value:7.2f} (seeds {seeds})  complete  4 eval episodes" in out

    # the best section: printed, written, and what `zoo train` would read back
    written = (tmp_path / "best.yml").read_text()
    assert written.strip().splitlines()[-3] in out
    assert yaml.safe_load(written) == {TINY_ID: best.params}
    kwargs, _ = load_hyperparams("td3bc", TINY_ID, overrides=yaml.safe_load(written)[TINY_ID])
    assert kwargs["alpha"] == best.params["alpha"]
    for name in ("optimization_history", "param_importances"):
        assert (folder / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"optuna-dashboard sqlite:///{folder / 'study.db'}" in out

    # a second worker on the full study runs nothing and reports the same best
    again = tune(settings)
    assert len(again.get_trials()) == 3
    assert "already has its 3 trials" in capsys.readouterr().out


def test_study_settings_must_match_and_best_retrains(tiny, tmp_path, capsys):
    base = {"n_trials": 1, "steps": 20, "n_evaluations": 1, "eval_episodes": 1, "plots": False}
    base["out"] = str(tmp_path / "s")
    study = tune(TuneSettings("td3bc", TINY_ID, **base))
    # one seed, one trial at a time: an ordinary run (zoo.runs.train_offline), no population
    (trial,) = study.get_trials()
    assert trial.user_attrs["gradient_steps"] == 20 and "population" not in trial.user_attrs
    assert trial.user_attrs["trained_with"] == [trial.params]
    with pytest.raises(ValueError, match=r"other settings: steps 20 \(this command: 30\)"):
        tune(TuneSettings("td3bc", TINY_ID, **{**base, "steps": 30}))
    # --best: the best trial's settings trained again, here at 30 steps, into <out>/best/seed-0
    capsys.readouterr()
    assert (
        zoo_main(
            [
                "tune",
                "--algo",
                "td3bc",
                "--dataset",
                TINY_ID,
                "--out",
                base["out"],
                "--best",
                "--steps",
                "30",
                "--eval-episodes",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    run = tmp_path / "s" / "best" / "seed0_1"
    config = yaml.safe_load((run / "config.json").read_text())
    assert config["kwargs"]["alpha"] == study.best_trial.params["alpha"]
    assert config["run"]["n_timesteps"] == 30
    (score,) = final_scores(tmp_path / "s" / "best")
    assert f"seed 0: normalized score {score:.2f} after 30 steps" in out


def test_every_agent_key_has_a_space_whose_draws_build_the_agent(tiny):
    assert set(AGENTS) <= set(SPACES)
    dataset = load_dataset(TINY_ID, device="cpu")
    for key in sorted(AGENTS):
        space = search_space(key)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
        for _ in range(3):
            trial = study.ask()
            drawn = sample(trial, space)
            study.tell(trial, 0.0)
            for name, dist in space.items():
                if name in drawn and isinstance(dist, Float):
                    assert dist.low <= drawn[name] <= dist.high
                if name in drawn and isinstance(dist, Categorical):
                    assert drawn[name] in dist.choices
            try:
                kwargs, _ = load_hyperparams(key, TINY_ID, overrides={"device": "cpu", **nest(drawn)})
            except ConfigError as error:  # a YAML for other domains only (opt-spot: AntMaze, Adroit)
                assert "has no settings for" in str(error)
                kwargs = {"device": "cpu", **nest(drawn)}
            agent = make_agent(key, dataset, **kwargs)
            for name, value in drawn.items():
                *parents, leaf = name.split(".")
                holder = kwargs
                for parent in parents:
                    holder = holder[parent]
                assert holder[leaf] == value, (key, name)
            del agent


def test_conditional_and_given_settings():
    space = {
        "cql_lagrange": Categorical([False, True]),
        "cql_target_action_gap": Float(0.5, 10.0, log=True, when={"cql_lagrange": [True]}),
        "gap_copy": Given("cql_lagrange", {False: 0.0, True: 1.0}),
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        drawn = sample(trial, space)
        study.tell(trial, 0.0)
        seen.add(drawn["cql_lagrange"])
        assert ("cql_target_action_gap" in drawn) == drawn["cql_lagrange"]
        assert set(trial.params) == (
            {"cql_lagrange", "cql_target_action_gap"} if drawn["cql_lagrange"] else {"cql_lagrange"}
        )
        assert drawn["gap_copy"] == float(drawn["cql_lagrange"])
    assert seen == {False, True}
    assert nest({"policy_kwargs.n_critics": 10, "eta": 1.0}) == {
        "policy_kwargs": {"n_critics": 10},
        "eta": 1.0,
    }


def zoo(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_unreachable_storage_is_one_line(tiny, tmp_path):
    # port 1 on the loopback: nothing listens, the connection is refused at once
    url = "postgresql://zoo:secret@127.0.0.1:1/zoo"
    result = zoo("tune", "--algo", "td3bc", "--dataset", TINY_ID, "--storage", url, "--out", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        "zoo: error: Cannot open the study storage postgresql://zoo:***@127.0.0.1:1/zoo"
    )
    assert "secret" not in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("trial-*"))


def test_bad_storage_and_missing_study_are_one_line(tiny, tmp_path, capsys):
    assert zoo_main(["tune", "--algo", "td3bc", "--dataset", TINY_ID, "--storage", "not-a-url"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a database URL" in err[0]
    out = str(tmp_path / "none")
    assert zoo_main(["tune", "--algo", "td3bc", "--dataset", TINY_ID, "--best", "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"No study 'td3bc-{TINY_ID}'" in err[0]
