"""`zoo train --seeds`: seed grammar, batched evaluation of population members, the seed aggregate and its
bootstrap CI, and a real `zoo train --seeds` subprocess whose seed folders are ordinary runs.

Everything runs on the 12-transition Hopper-v5 dataset of conftest (real Minari files) and real Hopper-v5
envs; evaluation episodes of untrained or briefly trained agents end in tens of steps.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY_ID
from zoo.cli import main
from zoo.data import load_dataset
from zoo.errors import UserError
from zoo.evaluation import (
    Evaluation, aggregate_seeds, evaluate_episodes, evaluate_population, make_evaluation, agent_predict,
)
from zoo.plots import plot_seed_aggregate
from zoo.registry import make_agent
from zoo.runs import parse_seeds, seeds_label


def hand_bootstrap(values, n_resamples: int = 10_000, seed: int = 0, confidence: float = 0.95):
    """The percentile bootstrap of the mean over seeds written out plainly: draw n seeds with replacement
    n_resamples times (numpy's default_rng(seed).integers, the draw bootstrap_mean_ci makes), average each
    draw, take the 2.5th and 97.5th percentiles of those means."""
    x = np.asarray(values, dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, len(x), size=(n_resamples, len(x)))
    means = x[draws].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return x.mean(), low, high


# ------------------------------------------------------------------------------------------ seed grammar


def test_seeds_grammar():
    assert parse_seeds("0-7") == list(range(8))
    assert parse_seeds("0,3,5") == [0, 3, 5]
    assert parse_seeds("0-2,8,10-11") == [0, 1, 2, 8, 10, 11]
    assert parse_seeds("3-3") == [3]
    assert seeds_label([0, 1, 2, 8, 10, 11]) == "0-2,8,10-11" and seeds_label([4]) == "4"
    for bad, words in [
        ("4", "ambiguous: use --seed 4 for one run of seed 4, or --seeds 0-3 for 4 seeds"),
        ("3-1", "runs backwards; write 1-3"),
        ("0,1,1", "names seed(s) 1 twice"),
        ("0-2,2-3", "names seed(s) 2 twice"),
        ("a-b", "'a-b' is not a seed or a range"),
        ("-1", "'-1' is not a seed"),
        ("0-", "'0-' is not a seed"),
        ("0,,1", "'' is not a seed"),
        ("0-1-2", "'0-1-2' is not a seed"),
    ]:
        with pytest.raises(UserError, match="^--seeds") as error:
            parse_seeds(bad)
        assert words in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("flags, words", [
    (["--seeds", "4"], "--seeds 4 is ambiguous"),
    (["--seeds", "0-x"], "'0-x' is not a seed or a range of seeds"),
    (["--seeds", "0-3", "--seed", "1"], "--seed does not go with --seeds"),
    (["--seeds", "0-3", "--fraction", "0.5"], "--fraction does not go with --seeds"),
    (["--seeds", "0-3", "--subset", "trajectories"], "--subset does not go with --seeds"),
    (["--seeds", "0-3", "--save-freq", "-1"], "--save-freq is a number of gradient steps >= 0"),
])
def test_bad_seeds_flags_are_one_line_before_any_work(flags, words, capsys, tmp_path):
    # The dataset does not exist: the flags are refused before anything is loaded.
    code = main(["train", "--algo", "td3bc", "--dataset", "zoo/hopper/none-v0", "--out", str(tmp_path / "x"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("zoo: error: ") and words in err, err
    assert not (tmp_path / "x").exists()


def test_a_bad_seeds_string_from_a_real_process(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "train", "--algo", "td3bc", "--dataset", TINY_ID, "--seeds", "7-2"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "zoo: error: --seeds '7-2': the range 7-2 runs backwards; write 2-7.\n"


# ------------------------------------------------------------------------------------ batched evaluation


class AgentsAsPopulation:
    """A test double of a population agent made of K ordinary agents: `predict_members` asks each agent
    for its own slice, so evaluate_population's batching, episode seeds and bookkeeping are checked against
    the single-agent loop with the very same policies."""

    def __init__(self, agents):
        self.agents, self.n_members = agents, len(agents)
        self.task, self.num_timesteps = agents[0].task, agents[0].num_timesteps
        self.calls = 0

    def predict_members(self, observations, deterministic=True):
        assert observations.shape[0] == self.n_members and observations.ndim == 3
        self.calls += 1
        return np.stack([a.predict(o, deterministic=deterministic)[0] for a, o in zip(self.agents, observations)])


def test_population_evaluation_equals_each_members_own_evaluation(tiny):
    dataset = load_dataset(TINY_ID)
    agents = []
    for seed in (0, 1, 2):
        agent = make_agent("td3bc", dataset, seed=seed, batch_size=8, device="cpu")
        agent.learn(30 * (seed + 1), progress_bar=False)  # three different policies, the last at step 90
        agents.append(agent)
    population = AgentsAsPopulation(agents)
    population.num_timesteps = 77
    evaluations = evaluate_population(population, n_episodes=3, seed=100)
    assert [e.step for e in evaluations] == [77, 77, 77]
    longest = 0
    for agent, evaluation in zip(agents, evaluations):
        returns, lengths = evaluate_episodes(agent_predict(agent), "Hopper-v5", 3, seed=100)
        assert evaluation == make_evaluation(77, returns, lengths, dataset.task)
        assert evaluation.episodes == 3 and evaluation.env_steps == int(lengths.sum())
        assert evaluation.normalized_score == pytest.approx(float(np.mean(dataset.task.normalized_score(returns))))
        longest = max(longest, int(lengths.max()))
    assert len({e.return_mean for e in evaluations}) == 3  # the members really differ
    assert population.calls == longest  # one policy call per env step for all 9 episodes together


# ------------------------------------------------------------------------------------------- aggregate


def test_seed_aggregate_ci_is_the_hand_bootstrap(tmp_path):
    scores = {0: [10.0, 30.0, 41.5], 3: [12.0, 25.0, 38.0], 5: [8.0, 35.0, 52.25], 9: [11.0, 20.0, 17.0]}
    histories = [
        [Evaluation(step, 100.0 + v, 1.0, v, 2, 50) for step, v in zip((100, 200, 300), row)]
        for row in scores.values()
    ]
    aggregate = aggregate_seeds(list(scores), histories)
    assert aggregate.metric == "normalized score" and aggregate.steps.tolist() == [100, 200, 300]
    final = [row[-1] for row in scores.values()]
    mean, low, high = hand_bootstrap(final)
    assert aggregate.final_mean == pytest.approx(mean, abs=1e-12) == 37.1875
    assert aggregate.final_low == pytest.approx(low, abs=1e-9) and aggregate.final_high == pytest.approx(high, abs=1e-9)
    assert low < mean < high and high - low > 5.0
    for t in range(3):  # every step of the curve: the same draws over whole seeds
        column = [row[t] for row in scores.values()]
        assert (aggregate.mean[t], aggregate.low[t], aggregate.high[t]) == pytest.approx(hand_bootstrap(column))
    record = aggregate.to_json()
    assert record["final"]["per_seed"] == {"0": 41.5, "3": 38.0, "5": 52.25, "9": 17.0}
    assert record["final"]["ci_low"] == aggregate.final_low and record["curve"]["per_seed"]["5"] == [8.0, 35.0, 52.25]
    rows = list(csv.reader(aggregate.csv_text().splitlines()))
    assert rows[0] == ["step", "mean", "ci_low", "ci_high", "seed0", "seed3", "seed5", "seed9"]
    assert rows[3][0] == "300" and float(rows[3][1]) == 37.1875 and [float(v) for v in rows[3][4:]] == final
    assert "mean over 4 seeds at step 300: normalized score 37.2 [95% CI" in aggregate.summary()
    # Without reference returns the aggregate is of returns.
    raw = aggregate_seeds([0, 1], [[Evaluation(5, 3.0, 0.0, None)], [Evaluation(5, 4.0, 0.0, None)]])
    assert raw.metric == "return" and raw.final_mean == 3.5
    png = plot_seed_aggregate(aggregate, tmp_path / "band.png", title="t", reference=20.0)
    assert png.read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------------ the real population path

TRAIN = [
    "train", "--algo", "td3bc", "--dataset", TINY_ID, "--steps", "200", "--set", "eval_freq=100",
    "--set", "n_eval_episodes=2", "--set", "batch_size=8", "--device", "cpu",
]


def policy_tensors(agent) -> dict[str, torch.Tensor]:
    return {name: t.detach().cpu() for name, t in agent.policy.state_dict().items()}


def test_population_members_evaluated_together_equal_their_own_evaluation(tiny):
    from zoo.registry import make_population

    dataset = load_dataset(TINY_ID, device="cpu")
    population = make_population("td3bc", dataset, [0, 3, 4], batch_size=8, device="cpu")
    population.learn(60, progress_bar=False)
    evaluations = evaluate_population(population, n_episodes=2, seed=100)
    assert len(evaluations) == 3 and all(e.step == 60 for e in evaluations)
    for k, evaluation in enumerate(evaluations):
        returns, lengths = evaluate_episodes(agent_predict(population.member(k)), "Hopper-v5", 2, seed=100)
        assert evaluation.return_mean == pytest.approx(float(returns.mean()), rel=1e-6)
        assert evaluation.env_steps == int(lengths.sum())


def test_zoo_train_seeds_writes_ordinary_seed_runs_and_their_aggregate(tiny, tmp_path, capsys):
    from zoo.checkpoint import load_agent, load_checkpoint
    from zoo.runs import train_population

    out = tmp_path / "population"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "zoo.cli", *TRAIN, "--seeds", "0,2,5", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    seeds = [0, 2, 5]
    finals = {}
    for seed in seeds:
        run_dir = out / f"seed{seed}"
        config = json.loads((run_dir / "config.json").read_text())
        assert config["seed"] == seed and config["algo"] == "td3bc" and config["run"]["n_timesteps"] == 200
        assert config["kwargs"]["batch_size"] == 8 and config["population"]["seeds"] == seeds
        rows = list(csv.DictReader((run_dir / "evaluations.csv").open()))
        assert [int(r["step"]) for r in rows] == [100, 200]
        finals[seed] = float(rows[-1]["normalized_score"])
        assert (run_dir / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
        assert load_agent(run_dir).num_timesteps == 200  # zoo eval's loader: the run's td3bc.zip

    # The aggregate: per-seed final scores from the seed runs, the mean and the hand bootstrap's CI.
    aggregate = json.loads((out / "aggregate.json").read_text())
    assert aggregate["final"]["per_seed"] == {str(s): v for s, v in finals.items()}
    mean, low, high = hand_bootstrap([finals[s] for s in seeds])
    assert aggregate["final"]["mean"] == pytest.approx(mean, abs=1e-12)
    assert aggregate["final"]["ci_low"] == pytest.approx(low, abs=1e-9)
    assert aggregate["final"]["ci_high"] == pytest.approx(high, abs=1e-9)
    assert aggregate["curve"]["step"] == [100, 200] and aggregate["curve"]["ci_high"][-1] == pytest.approx(high)
    curve = list(csv.reader((out / "aggregate.csv").read_text().splitlines()))
    assert curve[0] == ["step", "mean", "ci_low", "ci_high", "seed0", "seed2", "seed5"] and curve[2][0] == "200"
    assert (out / "aggregate.png").read_bytes()[:4] == b"\x89PNG" and (out / "progress.csv").is_file()
    printed = done.stdout.splitlines()
    assert f"mean over 3 seeds at step 200: normalized score {mean:.1f} [95% CI {low:.1f}, {high:.1f}]" in done.stdout
    for seed in seeds:
        assert any(line.split()[:1] == [str(seed)] and line.split()[-1] == f"{finals[seed]:.1f}" for line in printed)

    # Member 2 equals a population of one with seed 2 (train_population in this process): weights and
    # evaluations. (Members draw from their own generators, so an ordinary make_agent run of seed 2 is
    # another random stream: the population's contract is member k == population of one with seed k.)
    dataset = load_dataset(TINY_ID, device="cpu")
    alone = train_population(
        "td3bc", dataset, tmp_path / "alone", [2], n_timesteps=200,
        overrides={"device": "cpu", "eval_freq": 100, "n_eval_episodes": 2, "batch_size": 8},
        evaluate_initial=True, progress_bar=False, verbose=0,
    )
    assert alone.runs == [tmp_path / "alone" / "seed2"] and alone.aggregate.final_low == alone.aggregate.final_high
    member, twin = policy_tensors(load_agent(out / "seed2")), policy_tensors(load_agent(alone.runs[0]))
    for name, tensor in member.items():
        torch.testing.assert_close(tensor, twin[name], rtol=1e-6, atol=1e-6)
    ours = list(csv.DictReader((out / "seed2" / "evaluations.csv").open()))
    reference = list(csv.DictReader((alone.runs[0] / "evaluations.csv").open()))
    for row, theirs in zip(ours, reference, strict=True):
        assert row["step"] == theirs["step"]
        assert float(row["return_mean"]) == pytest.approx(float(theirs["return_mean"]), rel=1e-5)
    # zoo eval of a seed run (the single-agent loop, same episode seeds) gives its last evaluation's return.
    capsys.readouterr()
    assert main(["eval", str(out / "seed5"), "--episodes", "2", "--device", "cpu"]) == 0
    recorded = float(list(csv.DictReader((out / "seed5" / "evaluations.csv").open()))[-1]["return_mean"])
    assert f"return {recorded:.1f}" in capsys.readouterr().out

    # zoo export turns a seed run into a zoo checkpoint; zoo plot groups the seeds with the ordinary run.
    assert main(["export", str(out / "seed5"), "--out", str(tmp_path / "exported")]) == 0
    exported = load_checkpoint(tmp_path / "exported")
    assert exported.seed == 5 and exported.num_timesteps == 200
    for name, tensor in policy_tensors(load_agent(out / "seed5")).items():
        torch.testing.assert_close(policy_tensors(exported)[name], tensor, rtol=0, atol=0)
    capsys.readouterr()
    runs = [str(out / f"seed{s}") for s in seeds] + [str(alone.runs[0])]  # two populations' seed runs
    assert main(["plot", *runs, "--out", str(tmp_path / "plot.png")]) == 0
    assert "4 run(s) (seeds 0, 2, 5, 2), step 200" in capsys.readouterr().out
    assert main(["plot", str(out), "--out", str(tmp_path / "plot.png")]) == 0  # a population folder: its seeds
    assert f"3 run(s) (seeds 0, 2, 5), step 200: normalized score {mean:.1f}" in capsys.readouterr().out
    # The population finished (its mark, its states dropped): resuming it says so; training into its folder
    # again is refused with the ways out.
    assert sorted(p.name for p in (out / "training_state").iterdir()) == ["finished.json"]
    assert main(["train", "--resume", str(out)]) == 2
    assert f"{out} finished already (200 steps, seeds 0,2,5): there is nothing to resume" in capsys.readouterr().err
    assert main([*TRAIN, "--seeds", "0-1", "--out", str(out)]) == 2
    assert "already holds a population run" in capsys.readouterr().err


# ------------------------------------------------------------------------- populations fine-tuning online

FINETUNE = [
    "train", "--algo", "td3bc", "--dataset", TINY_ID, "--steps", "20", "--finetune-steps", "30",
    "--set", "eval_freq=10", "--set", "finetune_eval_freq=15", "--set", "n_eval_episodes=2",
    "--set", "batch_size=8", "--device", "cpu",
]


def rows_of(path: Path) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(path.open())]


def test_zoo_train_seeds_fine_tunes_online_and_writes_ordinary_fine_tuning_runs(tiny, tmp_path, capsys):
    """`zoo train --seeds 0,1 --finetune-steps 30`: offline then online as one population; each seed folder
    holds what an ordinary fine-tuning run writes (offline checkpoint, finetune/evaluations.csv in env steps,
    the fine-tuned checkpoint the finished mark names), the folder the aggregate of both phases, and member 1
    equals a population of one with seed 1 through fine-tuning."""
    from zoo.checkpoint import load_agent
    from zoo.runs import train_population

    out = tmp_path / "population"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "zoo.cli", *FINETUNE, "--seeds", "0,1", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    seeds = [0, 1]
    offline, online = {}, {}
    for seed in seeds:
        run_dir = out / f"seed{seed}"
        assert json.loads((run_dir / "config.json").read_text())["run"]["n_finetune_timesteps"] == 30
        offline[seed] = rows_of(run_dir / "evaluations.csv")
        online[seed] = rows_of(run_dir / "finetune" / "evaluations.csv")
        assert [r["step"] for r in offline[seed]] == [10, 20]  # gradient steps
        assert [r["step"] for r in online[seed]] == [15, 30]  # env steps of fine-tuning
        assert load_agent(run_dir / "td3bc.zip", "td3bc", device="cpu").num_timesteps == 20  # offline stage
        finished = json.loads((run_dir / "training_state" / "finished.json").read_text())
        assert finished["checkpoint"] == str(run_dir / "td3bc-finetuned.zip") and finished["num_timesteps"] == 30
        assert finished["final"]["normalized_score"] == online[seed][-1]["normalized_score"]
        assert load_agent(run_dir, device="cpu").num_timesteps == 30  # zoo eval of the folder: the fine-tuned one
    assert online[0][-1]["return_mean"] != online[1][-1]["return_mean"]  # two members, two envs

    aggregate = json.loads((out / "aggregate.json").read_text())
    for phase, rows, record, step in [("offline", offline, aggregate, 20), ("online", online, aggregate["online"], 30)]:
        finals = [rows[s][-1]["normalized_score"] for s in seeds]
        mean, low, high = hand_bootstrap(finals)
        assert record["final"]["step"] == step
        assert record["final"]["per_seed"] == {str(s): v for s, v in zip(seeds, finals)}
        assert (record["final"]["mean"], record["final"]["ci_low"], record["final"]["ci_high"]) == pytest.approx(
            (mean, low, high), abs=1e-9
        )
        at = "env step 30 of online fine-tuning" if phase == "online" else "step 20"
        assert f"{phase}: mean over 2 seeds at {at}: normalized score {mean:.1f} [95% CI {low:.1f}, {high:.1f}]" in (
            done.stdout
        )
    assert aggregate["steps"] == "gradient steps" and aggregate["online"]["steps"] == "env steps"
    curve = list(csv.reader((out / "finetune" / "aggregate.csv").read_text().splitlines()))
    assert curve[0] == ["step", "mean", "ci_low", "ci_high", "seed0", "seed1"] and [r[0] for r in curve[1:]] == ["15", "30"]
    assert float(curve[2][4]) == online[0][-1]["normalized_score"]
    assert (out / "finetune" / "aggregate.png").read_bytes()[:4] == b"\x89PNG"
    for seed in seeds:  # the table: untrained, offline, online per seed
        row = next(line.split() for line in done.stdout.splitlines() if line.split()[:1] == [str(seed)])
        assert row[-2:] == [f"{offline[seed][-1]['normalized_score']:.1f}", f"{online[seed][-1]['normalized_score']:.1f}"]

    # Member 1 fine-tuned in the population == a population of one with seed 1 (in this process).
    alone = train_population(
        "td3bc", load_dataset(TINY_ID, device="cpu"), tmp_path / "alone", [1], n_timesteps=20,
        n_finetune_timesteps=30, progress_bar=False, verbose=0,
        overrides={"device": "cpu", "eval_freq": 10, "finetune_eval_freq": 15, "n_eval_episodes": 2, "batch_size": 8},
    )
    assert alone.checkpoints == [tmp_path / "alone" / "seed1" / "td3bc-finetuned.zip"]
    assert alone.online_aggregate.online and alone.final_aggregate is alone.online_aggregate
    for row, theirs in zip(online[1], alone.online_evaluations[0], strict=True):
        assert row["step"] == theirs.step and row["return_mean"] == pytest.approx(theirs.return_mean, rel=1e-5)
    member = policy_tensors(load_agent(out / "seed1" / "td3bc-finetuned.zip", "td3bc", device="cpu"))
    twin = policy_tensors(load_agent(alone.checkpoints[0], "td3bc", device="cpu"))
    # (to 1e-5: a batched policy call for 2 members rounds the actions differently from one for 1 member, and
    # 30 online updates carry that rounding into the weights; another seed differs by ~1e-2)
    for name, tensor in member.items():
        torch.testing.assert_close(tensor, twin[name], rtol=1e-5, atol=1e-5)
    other = policy_tensors(load_agent(out / "seed0" / "td3bc-finetuned.zip", "td3bc", device="cpu"))
    assert max((other[name] - tensor).abs().max().item() for name, tensor in twin.items()) > 1e-2
    # zoo plot --online of the population folder groups its seeds' online curves.
    capsys.readouterr()
    assert main(["plot", str(out), "--online", "--out", str(tmp_path / "online.png")]) == 0
    mean = np.mean([online[s][-1]["normalized_score"] for s in seeds])
    assert f"2 run(s) (seeds 0, 1), step 30: normalized score {mean:.1f}" in capsys.readouterr().out


def test_opt_population_fine_tunes_online_from_a_real_process(tiny, tmp_path):
    """`zoo train --algo opt --seeds 0,1 --finetune-steps 30`: OPT's online phases (collection until n_tau,
    Q_on's meta-pretraining, then prioritised updates) run for both members side by side; each seed folder
    holds an ordinary OPT fine-tuning run whose policy moved online, and the online aggregate is their mean."""
    from zoo.checkpoint import load_agent

    out = tmp_path / "opt"
    opt = ["--set", "n_tau=8", "--set", "n_pretrain=3", "--set", "online_utd_ratio=1"]
    done = subprocess.run(
        [sys.executable, "-m", "zoo.cli", *FINETUNE[:2], "opt", *FINETUNE[3:], *opt, "--seeds", "0,1",
         "--out", str(out)],
        capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    aggregate = json.loads((out / "aggregate.json").read_text())["online"]
    finals = {}
    for seed in (0, 1):
        online = rows_of(out / f"seed{seed}" / "finetune" / "evaluations.csv")
        assert [row["step"] for row in online] == [15, 30]
        finals[str(seed)] = online[-1]["normalized_score"]
        offline = policy_tensors(load_agent(out / f"seed{seed}" / "opt.zip", "opt", device="cpu"))
        tuned = policy_tensors(load_agent(out / f"seed{seed}" / "opt-finetuned.zip", "opt", device="cpu"))
        actor = [name for name in offline if name.startswith("actor.")]
        assert actor and max((tuned[n] - offline[n]).abs().max().item() for n in actor) > 0  # phase 3 ran
    assert aggregate["final"]["step"] == 30 and aggregate["final"]["per_seed"] == finals
    assert aggregate["final"]["mean"] == pytest.approx(np.mean(list(finals.values())), abs=1e-9)
