"""`zoo tune --batch B --seeds K`: trials asked together and trained as populations, on real Optuna studies
in SQLite files, the tiny Hopper-v5 Minari dataset and real MuJoCo evaluations (as tests/test_tune.py)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from .test_tune import tune_extra

optuna = tune_extra("optuna")

from zoo.checkpoint import load_agent
from zoo.cli import main as zoo_main
from zoo.tune import SPACES, Categorical, Float, TuneSettings, tune
from zoo.tune.storage import default_storage_url, open_storage

from .conftest import TINY_ID

FAST = {"steps": 30, "n_evaluations": 3, "eval_episodes": 1, "plots": False, "sampler": "random"}


def evaluations(run_folder) -> list[dict[str, float]]:
    with (run_folder / "evaluations.csv").open() as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def final_score(run_folder) -> float:
    return evaluations(run_folder)[-1]["normalized_score"]


def new_study(folder, name: str):
    """The study `zoo tune` will open (same SQLite file and name), made beforehand to queue trials in it."""
    folder.mkdir(parents=True, exist_ok=True)
    storage = open_storage(default_storage_url(folder))
    return optuna.create_study(study_name=name, storage=storage, direction="maximize")


def test_batch_of_four_trains_one_population_and_records_what_each_member_trained_with(
    tiny, tmp_path, capsys
):
    out = tmp_path / "study"
    args = ["tune", "--algo", "td3bc", "--dataset", TINY_ID, "--out", str(out), "--n-trials", "4"]
    args += ["--batch", "4", "--steps", "30", "--n-evaluations", "3", "--eval-episodes", "1"]
    args += ["--sampler", "random", "--sampler-seed", "3", "--no-plots"]
    assert zoo_main(args) == 0
    printed = capsys.readouterr().out
    assert "4 trials asked at once, trained as one population of 4 x 1 members" in printed

    study = optuna.load_study(study_name=f"td3bc-{TINY_ID}", storage=open_storage(default_storage_url(out)))
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert len({(t.params["alpha"], t.params["learning_rate"]) for t in trials}) == 4  # 4 distinct draws
    for trial in trials:
        attrs = trial.user_attrs
        assert attrs["population"] == [0, 1, 2, 3]  # all four trained together
        # the values the member's agent holds, read back from the population: this trial's own draw
        assert attrs["trained_with"] == [trial.params]
        run = out / f"trial-{trial.number:04d}" / "seed-0"
        config = json.loads((run / "config.json").read_text())
        assert config["seed"] == 0 and config["population"]["trials"] == [0, 1, 2, 3]
        assert config["kwargs"]["alpha"] == trial.params["alpha"]
        assert config["kwargs"]["learning_rate"] == trial.params["learning_rate"]
        # the member's checkpoint is a standalone agent that carries the trial's alpha and learning rate
        member = load_agent(run / "td3bc.zip", "td3bc", device="cpu")
        assert member.alpha == pytest.approx(trial.params["alpha"], rel=1e-12)
        assert member.num_timesteps == 30
        # objective: the member's final evaluation; reports at its 3 evaluations (steps 10, 20, 30)
        rows = evaluations(run)
        assert [r["step"] for r in rows] == [10, 20, 30]
        assert trial.value == pytest.approx(rows[-1]["normalized_score"], abs=1e-12)
        reported = {j: r["normalized_score"] for j, r in enumerate(rows)}
        assert trial.intermediate_values == pytest.approx(reported, abs=1e-12)
        assert attrs["seed_scores"] == [trial.value]
        # budget: its own member's 3 one-episode evaluations and 30 gradient steps, not the population's
        assert attrs["eval_episodes"] == 3 and attrs["gradient_steps"] == 30
        assert 3 <= attrs["eval_env_steps"] <= 3000
    total = sum(t.user_attrs["eval_episodes"] for t in trials)
    assert f"{total:,} evaluation episodes" in printed and "120 gradient steps" in printed


def test_seeds_two_store_two_scores_whose_mean_is_the_objective(tiny, tmp_path, capsys):
    folder = tmp_path / "study"
    settings = TuneSettings(
        "td3bc", TINY_ID, n_trials=2, seeds=2, batch=2, out=str(folder), sampler_seed=1, **FAST
    )
    study = tune(settings)
    capsys.readouterr()
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    for trial in trials:
        runs = [folder / f"trial-{trial.number:04d}" / f"seed-{k}" for k in range(2)]
        scores = [final_score(run) for run in runs]
        assert trial.user_attrs["seed_scores"] == pytest.approx(scores, abs=1e-12)
        assert trial.value == pytest.approx(np.mean(scores), abs=1e-12)
        assert trial.user_attrs["trained_with"] == [trial.params, trial.params]
        assert [json.loads((run / "config.json").read_text())["seed"] for run in runs] == [0, 1]
        # as the sequential seeds report: steps 0..2 seed 0 alone, steps 3..5 the mean of seeds 0 and 1
        first, second = ([r["normalized_score"] for r in evaluations(run)] for run in runs)
        expected = {j: first[j] for j in range(3)} | {3 + j: (first[j] + second[j]) / 2 for j in range(3)}
        assert trial.intermediate_values == pytest.approx(expected, abs=1e-12)
        assert trial.user_attrs["eval_episodes"] == 6 and trial.user_attrs["gradient_steps"] == 60
        assert trial.user_attrs["population"] == [0, 1]

    # --best with 2 seeds retrains the best trial as one population of ordinary seed runs
    best = study.best_trial
    args = ["tune", "--algo", "td3bc", "--dataset", TINY_ID, "--out", str(folder), "--best", "--seeds", "2"]
    assert zoo_main([*args, "--steps", "20", "--eval-episodes", "1"]) == 0
    printed = capsys.readouterr().out
    population = folder / "best" / "seeds0-1_1"
    for seed in (0, 1):
        run = population / f"seed{seed}"
        config = json.loads((run / "config.json").read_text())
        assert config["seed"] == seed and config["kwargs"]["alpha"] == best.params["alpha"]
        assert config["run"]["n_timesteps"] == 20
        score = final_score(run)
        line = f"seed {seed}: normalized score {score:.2f} after 20 steps; checkpoint {run / 'td3bc.zip'}"
        assert line in printed
    aggregate = json.loads((population / "aggregate.json").read_text())
    assert f"mean over 2 seeds at step 20: normalized score {aggregate['final']['mean']:.1f}" in printed


def test_trials_that_disagree_structurally_train_as_separate_populations(tiny, tmp_path, capsys, monkeypatch):
    # a space with an integer setting (the batch size: one per population) and a float one (free per member)
    space = {"alpha": Float(1.0, 20.0, log=True), "batch_size": Categorical([4, 8])}
    monkeypatch.setitem(SPACES, "td3bc", space)
    folder = tmp_path / "study"
    study = new_study(folder, f"td3bc-{TINY_ID}")
    queued = [(2.0, 4), (3.0, 8), (5.0, 4), (7.0, 8)]
    for alpha, batch_size in queued:
        study.enqueue_trial({"alpha": alpha, "batch_size": batch_size})
    study = tune(TuneSettings("td3bc", TINY_ID, n_trials=4, batch=4, out=str(folder), **FAST))
    printed = capsys.readouterr().out
    assert "batch of trials 0, 1, 2, 3: 2 populations (trials 0, 2 | 1, 3)" in printed
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    for trial, (alpha, batch_size) in zip(trials, queued):
        assert trial.params == {"alpha": alpha, "batch_size": batch_size}
        assert trial.user_attrs["trained_with"] == [{"alpha": alpha, "batch_size": batch_size}]
        assert trial.user_attrs["population"] == ([0, 2] if batch_size == 4 else [1, 3])
        run = folder / f"trial-{trial.number:04d}" / "seed-0"
        member = load_agent(run / "td3bc.zip", "td3bc", device="cpu")
        assert (member.batch_size, member.alpha) == (batch_size, pytest.approx(alpha))
        assert trial.value == pytest.approx(final_score(run), abs=1e-12)
        assert trial.user_attrs["gradient_steps"] == 30


def test_fraction_below_one_trains_each_seed_as_its_own_run(tiny, tmp_path, capsys):
    # seed k trains on its own draw of 90% of the data: a population (one dataset) cannot, the batch runs
    # its trials' seeds one after another, and still asks and tells its trials together
    folder = tmp_path / "study"
    settings = TuneSettings(
        "td3bc", TINY_ID, n_trials=2, seeds=2, batch=2, fraction=0.9, out=str(folder), sampler_seed=2, **FAST
    )
    study = tune(settings)
    printed = capsys.readouterr().out
    assert "2 trials asked at once; each seed trains as its own run (--fraction 0.9" in printed
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    for trial in trials:
        runs = [folder / f"trial-{trial.number:04d}" / f"seed-{k}" for k in range(2)]
        configs = [json.loads((run / "config.json").read_text()) for run in runs]
        assert [c["seed"] for c in configs] == [0, 1] and all("population" not in c for c in configs)
        assert all(c["fraction"] == 0.9 for c in configs)
        assert "population" not in trial.user_attrs
        scores = [final_score(run) for run in runs]
        assert trial.user_attrs["seed_scores"] == pytest.approx(scores, abs=1e-12)
        assert trial.value == pytest.approx(np.mean(scores), abs=1e-12)
        assert trial.user_attrs["trained_with"] == [trial.params, trial.params]
        assert trial.user_attrs["gradient_steps"] == 60 and trial.user_attrs["eval_episodes"] == 6


def completed_trial(value_at: dict[int, float]):
    """A finished trial with these intermediate values, for the median pruner to compare with."""
    return optuna.trial.create_trial(
        params={"alpha": 2.5, "learning_rate": 3e-4},
        distributions={
            "alpha": optuna.distributions.FloatDistribution(1.0, 20.0, log=True),
            "learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-3, log=True),
        },
        value=0.0,
        intermediate_values=value_at,
    )


QUEUED = [{"alpha": a, "learning_rate": 3e-4} for a in (1.0, 2.5, 6.0, 15.0)]


def run_queued(folder, completed: list | None = None):
    """The four QUEUED trials as one batch (after `completed` finished trials, for the median pruner)."""
    study = new_study(folder, "pruning")
    for trial in completed or []:
        study.add_trial(trial)
    for params in QUEUED:
        study.enqueue_trial(params)
    settings = TuneSettings(
        "td3bc", TINY_ID, n_trials=4 + len(completed or []), batch=4, out=str(folder), study_name="pruning",
        pruner="median", **FAST,
    )
    return tune(settings).get_trials()[len(completed or []) :]


def test_pruned_trials_train_on_in_their_population_and_are_told_pruned(tiny, tmp_path, capsys):
    reference = run_queued(tmp_path / "unpruned")
    assert [t.state.name for t in reference] == ["COMPLETE"] * 4
    # the median pruner (5 finished trials, warm-up: the first of 3 evaluations) at step 1 compares each
    # trial's best value so far with the finished trials' median there: put it between the 2nd and 3rd best
    best = sorted(max(t.intermediate_values[0], t.intermediate_values[1]) for t in reference)
    if best[1] == best[2]:
        pytest.skip(f"two trials tie at step 1 ({best}): no threshold between them")
    threshold = (best[1] + best[2]) / 2
    finished = [completed_trial({0: threshold, 1: threshold, 2: -1e9}) for _ in range(5)]
    trials = run_queued(tmp_path / "pruned", finished)
    capsys.readouterr()
    for trial, twin in zip(trials, reference):
        assert trial.params == twin.params
        below = max(twin.intermediate_values[0], twin.intermediate_values[1]) < threshold
        if below:
            assert trial.state.name == "PRUNED"
            # it stopped reporting where it was pruned, and its value is its last report
            reported = {j: twin.intermediate_values[j] for j in (0, 1)}
            assert trial.intermediate_values == pytest.approx(reported, abs=1e-12)
            assert trial.value == pytest.approx(twin.intermediate_values[1])
            assert trial.user_attrs["pruned_in_population"] is True
        else:
            # the others are untouched by their neighbours' pruning: same scores as without it
            assert trial.state.name == "COMPLETE"
            assert trial.value == pytest.approx(twin.value, abs=1e-12)
            assert trial.intermediate_values == pytest.approx(twin.intermediate_values, abs=1e-12)
        # pruned or not, every member trained to the end with its population and was evaluated 3 times
        assert trial.user_attrs["gradient_steps"] == 30 and trial.user_attrs["eval_episodes"] == 3
    assert sum(t.state.name == "PRUNED" for t in trials) == 2


def test_a_population_whose_trials_are_all_pruned_stops(tiny, tmp_path, capsys):
    finished = [completed_trial({0: 1e9, 1: 1e9, 2: 1e9}) for _ in range(5)]
    trials = run_queued(tmp_path / "study", finished)
    capsys.readouterr()
    assert [t.state.name for t in trials] == ["PRUNED"] * 4
    for trial in trials:
        assert sorted(trial.intermediate_values) == [0, 1]  # pruned at its second evaluation (step 20) ...
        assert trial.user_attrs["gradient_steps"] == 20  # ... where the population stopped
        assert trial.user_attrs["eval_episodes"] == 2
        assert not (tmp_path / "study" / f"trial-{trial.number:04d}" / "seed-0" / "td3bc.zip").exists()


def test_a_pruned_trial_of_several_seeds_stops_after_the_warm_up(tiny, tmp_path, capsys):
    # one trial (--batch 1) of 2 seeds in a population of 2; the median pruner waits a third of the seeds'
    # evaluations (1 of 3), although step 3 (seed 1's first) is past its warm-up of 1 step
    study = new_study(tmp_path / "study", "one")
    for _ in range(5):
        study.add_trial(completed_trial(dict.fromkeys(range(6), 1e9)))
    out = str(tmp_path / "study")
    settings = TuneSettings("td3bc", TINY_ID, n_trials=6, seeds=2, out=out, study_name="one", **FAST)
    (trial,) = tune(settings).get_trials()[5:]
    capsys.readouterr()
    assert trial.state.name == "PRUNED"
    # evaluations 1 and 2 reported (steps 0, 1 seed 0 alone; 3, 4 the mean), pruned at evaluation 2
    assert sorted(trial.intermediate_values) == [0, 1, 3, 4]
    assert trial.user_attrs["gradient_steps"] == 2 * 20 and trial.user_attrs["eval_episodes"] == 4
    assert trial.user_attrs["pruned_in_population"] is False


def test_killed_batch_worker_fails_its_trials_and_they_are_rerun_once(tiny, tmp_path, capsys):
    """SQLite storage, heartbeat and Optuna's RetryHeartbeatStaleTrialCallback with --batch: a worker killed
    while training a batch leaves its trials RUNNING; a later worker fails them (stale heartbeat) and reruns
    each once, with the same parameters."""
    folder = tmp_path / "study"
    flags = ["--algo", "td3bc", "--dataset", TINY_ID, "--out", str(folder), "--n-trials", "2", "--batch", "2"]
    flags += ["--eval-episodes", "1", "--n-evaluations", "2", "--sampler", "random", "--no-plots"]
    flags += ["--heartbeat", "1", "--grace-period", "3", "--steps", "600"]
    flags += ["--set", "policy_kwargs={net_arch: [16, 16]}"]  # small networks: fast updates
    victim = subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", "tune", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    url = default_storage_url(folder)
    deadline, running = time.monotonic() + 120, []
    while time.monotonic() < deadline and len(running) < 2:
        time.sleep(0.1)
        assert victim.poll() is None, victim.communicate()[0]
        try:
            trials = optuna.load_study(study_name=f"td3bc-{TINY_ID}", storage=open_storage(url)).get_trials()
        except KeyError:  # not created yet
            continue
        running = [t for t in trials if t.state.name == "RUNNING" and "population" in t.user_attrs]
    assert len(running) == 2, "the batch did not start training within 120 s"
    victim.send_signal(signal.SIGKILL)  # while its population trains
    victim.wait(timeout=30)
    time.sleep(3.5)  # past the grace period
    # the next worker (in this process: the same code as `zoo tune` with these flags)
    assert zoo_main(["tune", *flags]) == 0
    printed = capsys.readouterr().out
    trials = optuna.load_study(study_name=f"td3bc-{TINY_ID}", storage=open_storage(url)).get_trials()
    killed = [t for t in trials if t.number in (0, 1)]
    assert [t.state.name for t in killed] == ["FAIL", "FAIL"]
    retries = {t.system_attrs.get("failed_trial"): t for t in trials if t.number > 1}
    assert sorted(retries) == [0, 1]  # each killed trial re-queued exactly once, and run
    for number, retry in retries.items():
        assert retry.params == killed[number].params
        assert retry.state.name == "COMPLETE" and retry.user_attrs["retry_of"] == number
        # Optuna fails stale trials as the next worker asks, so the two retries are asked in one batch or in
        # two (a CI run saw the second); either way a retry trains in a population that holds it.
        assert retry.number in retry.user_attrs.get("population", [retry.number])
        assert f"trial {retry.number:>4} (retry of {number})" in printed
    assert "'td3bc-zoo/hopper/tiny-v0': 2 complete, 0 pruned, 2 failed" in printed


def test_bad_batch_is_one_line(tmp_path, capsys):
    args = ["tune", "--algo", "td3bc", "--dataset", TINY_ID, "--out", str(tmp_path / "s"), "--batch", "0"]
    assert zoo_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["zoo: error: --batch must be at least 1, got 0."]
    assert not (tmp_path / "s").exists()  # refused before any work


def test_a_fine_tuning_study_trains_its_seeds_as_one_population_offline_then_online(tiny, tmp_path, capsys):
    # 2 seeds, 20 gradient steps then 30 online env steps, 2 evaluations per phase: one population of 2
    folder = tmp_path / "study"
    settings = TuneSettings(
        "td3bc", TINY_ID, n_trials=1, seeds=2, out=str(folder), sampler_seed=4, finetune_steps=30,
        **{**FAST, "steps": 20, "n_evaluations": 2},
    )
    (trial,) = tune(settings).get_trials()
    printed = capsys.readouterr().out
    assert "one trial at a time, trained as one population of 2 members" in printed
    assert trial.state.name == "COMPLETE" and trial.user_attrs["population"] == [0]
    runs = [folder / "trial-0000" / f"seed-{k}" for k in range(2)]
    online = []
    for k, run in enumerate(runs):
        config = json.loads((run / "config.json").read_text())
        assert config["seed"] == k and config["population"] == {"member": k, "members": 2, "trials": [0]}
        assert [r["step"] for r in evaluations(run)] == [10, 20]  # gradient steps
        online.append(evaluations(run / "finetune"))
        assert [r["step"] for r in online[k]] == [15, 30]  # env steps of fine-tuning
        assert load_agent(run / "td3bc.zip", "td3bc", device="cpu").num_timesteps == 20  # the offline stage
        assert load_agent(run / "td3bc-finetuned.zip", "td3bc", device="cpu").num_timesteps == 30
    # the objective is the online final score; reports run offline then online (M = 4 per seed), seed 1's
    # at steps 4..7 as the mean with seed 0, as the sequential seeds report
    finals = [rows[-1]["normalized_score"] for rows in online]
    assert trial.user_attrs["seed_scores"] == pytest.approx(finals, abs=1e-12)
    assert trial.value == pytest.approx(np.mean(finals), abs=1e-12)
    scores = [[r["normalized_score"] for r in evaluations(run) + evaluations(run / "finetune")] for run in runs]
    expected = {j: scores[0][j] for j in range(4)} | {4 + j: (scores[0][j] + scores[1][j]) / 2 for j in range(4)}
    assert trial.intermediate_values == pytest.approx(expected, abs=1e-12)
    attrs = trial.user_attrs
    assert attrs["gradient_steps"] == 40 and attrs["online_env_steps"] == 60 and attrs["eval_episodes"] == 8
    assert attrs["trained_with"] == [trial.params, trial.params]

    # --best --seeds 2 retrains it as one population that fine-tunes too; the scores are the online finals
    args = ["tune", "--algo", "td3bc", "--dataset", TINY_ID, "--out", str(folder), "--best", "--seeds", "2"]
    assert zoo_main([*args, "--steps", "20", "--finetune-steps", "30", "--eval-episodes", "1"]) == 0
    printed = capsys.readouterr().out
    population = folder / "best" / "seeds0-1_1"
    for seed in (0, 1):
        run = population / f"seed{seed}"
        score = evaluations(run / "finetune")[-1]["normalized_score"]
        line = f"seed {seed}: normalized score {score:.2f} after 30 steps; checkpoint {run / 'td3bc-finetuned.zip'}"
        assert line in printed
    aggregate = json.loads((population / "aggregate.json").read_text())["online"]
    assert f"mean over 2 seeds at env step 30 of online fine-tuning: normalized score {aggregate['final']['mean']:.1f}" in (
        printed
    )


def test_opt_studies_that_fine_tune_train_as_populations(tiny, tmp_path, capsys):
    """OPT's populations fine-tune online (per-member Q_on, density net, priorities and kappa): a batch of two
    OPT trials fine-tunes as one population when their structural settings agree (kappa_steps is a whole
    number: trials that differ in it train as separate populations), each recording its own draw."""
    from dataclasses import replace

    from zoo.tune.tuner import _how_trials_train, plan

    def the_plan(algo, finetune_steps):
        return plan(TuneSettings(algo, TINY_ID, seeds=2, out=str(tmp_path / "s"), finetune_steps=finetune_steps))

    assert the_plan("opt", 30).population and the_plan("cql", 30).population
    assert _how_trials_train(the_plan("opt", 30)) == (
        "one trial at a time, trained as one population of 2 members (one per group of structurally equal trials)"
    )

    folder = tmp_path / "study"
    settings = TuneSettings(
        "opt", TINY_ID, n_trials=2, batch=2, seeds=1, out=str(folder), sampler_seed=7, finetune_steps=20,
        overrides={"n_tau": 8, "n_pretrain": 3, "batch_size": 8, "online_utd_ratio": 1},
        **{**FAST, "steps": 10, "n_evaluations": 1},
    )
    trials = tune(settings).get_trials()
    assert "2 trials asked at once, trained as one population of 2 x 1 members" in capsys.readouterr().out
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    # sampler seed 7: kappa 0.3 -> 0.9 over 150k env steps and kappa 1.0 (kappa_steps: the YAML's 150k) -- the
    # same structure, other floats: one population whose members each have their own kappa schedule and alpha
    assert [t.params["kappa_start"] for t in trials] == [0.3, 1.0]
    for trial in trials:
        kappa_end = 1.0 if trial.params["kappa_start"] == 1.0 else 0.9  # Given("kappa_start", ...)
        assert trial.user_attrs["trained_with"] == [{**trial.params, "kappa_end": kappa_end}]
        assert trial.user_attrs["population"] == [0, 1]
        run = folder / f"trial-{trial.number:04d}" / "seed-0"
        assert [r["step"] for r in evaluations(run / "finetune")] == [20]  # env steps of fine-tuning
        finetuned = load_agent(run / "opt-finetuned.zip", "opt", device="cpu")
        assert finetuned.kappa_start == trial.params["kappa_start"] and finetuned.num_timesteps == 20


def test_a_population_pruned_while_fine_tuning_stops_online_and_keeps_its_offline_checkpoints(tiny, tmp_path, capsys):
    # 2 seeds, 2 offline + 2 online evaluations each (M = 4); the population checks the pruner at steps 4..7
    # (the mean of both seeds): the finished trials are far below it offline (steps <= 5) and far above it at
    # step 6 -- the first online evaluation -- where it is pruned and the population stops fine-tuning
    study = new_study(tmp_path / "study", "online")
    for _ in range(5):
        study.add_trial(completed_trial({step: -1e9 if step <= 5 else 1e9 for step in range(8)}))
    settings = TuneSettings(
        "td3bc", TINY_ID, n_trials=6, seeds=2, out=str(tmp_path / "study"), study_name="online", finetune_steps=30,
        **{**FAST, "steps": 20, "n_evaluations": 2},
    )
    (trial,) = tune(settings).get_trials()[5:]
    capsys.readouterr()
    assert trial.state.name == "PRUNED" and trial.user_attrs["pruned_in_population"] is False
    assert sorted(trial.intermediate_values) == [0, 1, 2, 4, 5, 6]  # offline both, online the first
    attrs = trial.user_attrs
    assert attrs["gradient_steps"] == 40 and attrs["online_env_steps"] == 2 * 15 and attrs["eval_episodes"] == 6
    for k in range(2):
        run = tmp_path / "study" / "trial-0005" / f"seed-{k}"
        assert [r["step"] for r in evaluations(run / "finetune")] == [15]  # stopped at its first online evaluation
        assert (run / "td3bc.zip").is_file() and not (run / "td3bc-finetuned.zip").exists()
