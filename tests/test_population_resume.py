"""Populations that survive: training states of a `zoo train --seeds` run, a real Ctrl-C / SIGTERM of a real
`zoo train` process, then `--resume` of the population folder.

Exactness is asserted tensor by tensor: the resumed population ends with the very weights and Adam moments
of a population that never stopped (CPU, one thread), and its seed folders and aggregate files hold what the
uninterrupted run's hold. Everything runs on the 12-transition Hopper-v5 dataset of conftest.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from tests.conftest import TINY_ID, tiny_root
from zoo.checkpoint import load_checkpoint
from zoo.cli import main
from zoo.data import load_dataset
from zoo.errors import DataError, UserError
from zoo.registry import make_population
from zoo.resume import (
    STATE_DIR, latest_training_state, load_population_state, load_training_state, save_training_state,
)
from zoo.runs import resume_run, train_population

SEEDS = [0, 3]
AGENT = {"device": "cpu", "batch_size": 8, "policy_kwargs": {"net_arch": [32, 32]}}
SETTINGS = {**AGENT, "eval_freq": 100, "n_eval_episodes": 1, "finetune_eval_freq": 40}
# 200 gradient steps (evaluations every 100, a state every 50), then 160 env steps of fine-tuning (evaluations
# every 40): the CLI's spelling of SETTINGS.
TRAIN = [
    "train", "--algo", "td3bc", "--dataset", TINY_ID, "--steps", "200", "--finetune-steps", "160",
    "--set", "eval_freq=100", "--set", "finetune_eval_freq=40", "--set", "n_eval_episodes=1",
    "--set", "batch_size=8", "--set", "policy_kwargs={net_arch: [32, 32]}", "--device", "cpu",
    "--save-freq", "50", "--seeds", "0,3",
]
# Files of a finished population that must be the same, byte for byte, however it got there.
SAME_FILES = [
    "aggregate.csv", "aggregate.json", "finetune/aggregate.csv",
    *[f"seed{s}/{name}" for s in SEEDS for name in ("evaluations.csv", "finetune/evaluations.csv")],
]


def zoo_process(*args: str, root: Path) -> subprocess.Popen:
    env = {**os.environ, "MINARI_DATASETS_PATH": str(root), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def stop_when(ready, process: subprocess.Popen, signum: int) -> tuple[str, str]:
    """Send `signum` as soon as `ready()` holds (fails if the process ends first); its (stdout, stderr)."""
    deadline = time.monotonic() + 300
    while not ready():
        assert process.poll() is None, f"zoo train ended too early: {process.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signum)
    return process.communicate(timeout=120)


def interrupted_line(err: str) -> str:
    (line,) = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("zoo: interrupted")]
    return line


def zip_tensors(path: Path) -> dict[str, dict]:
    """Every .pth of SB3's zip (policy weights, each optimizer's Adam moments), read with weights_only."""
    with zipfile.ZipFile(path) as archive:
        return {
            name: torch.load(io.BytesIO(archive.read(name)), weights_only=True)
            for name in archive.namelist() if name.endswith(".pth") and name != "pytorch_variables.pth"
        }


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def assert_same_zips(a: Path, b: Path) -> None:
    """Two members' SB3 zips: weights and both optimizers' Adam moments and steps, bitwise."""
    ours, theirs = zip_tensors(a), zip_tensors(b)
    names = {"policy.pth", "policy.actor_optimizer.pth", "policy.critic_optimizer.pth"}
    assert ours.keys() == theirs.keys() == names
    assert_same_tensors(ours["policy.pth"], theirs["policy.pth"])
    for name in ("policy.actor_optimizer.pth", "policy.critic_optimizer.pth"):
        assert ours[name]["state"].keys() == theirs[name]["state"].keys() and ours[name]["state"]
        for index, values in ours[name]["state"].items():
            assert_same_tensors(values, theirs[name]["state"][index])


def assert_same_optimizers(a, b) -> None:
    """The Adam moments and step counts of two agents, bitwise."""
    stepped = 0
    for name in a.policy.optimizer_names:
        states = [getattr(agent.policy, name).state_dict()["state"] for agent in (a, b)]
        assert states[0].keys() == states[1].keys()
        for index in states[0]:
            assert_same_tensors(states[0][index], states[1][index])
        stepped += bool(states[0])  # (an optimizer of an unused term, e.g. a Lagrange multiplier's, has none)
    assert stepped >= 2


def hidden_files(folder: Path) -> list[Path]:
    return list(folder.rglob(".*"))


def files_of(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A Minari root with the tiny dataset, for the module's runs (tests get their own root from conftest)."""
    return tiny_root(tmp_path_factory)


@pytest.fixture(scope="module")
def whole(tmp_path_factory, root):
    """The uninterrupted population, offline then online (in this process, one torch thread, as the
    subprocesses have; `zoo train` runs train_population with the same settings)."""
    out = tmp_path_factory.mktemp("reference") / "population"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        return train_population(
            "td3bc", load_dataset(TINY_ID, device="cpu"), out, SEEDS, n_timesteps=200,
            n_finetune_timesteps=160, overrides=SETTINGS, evaluate_initial=True, progress_bar=False, verbose=0,
            save_freq=50,
        )


@pytest.fixture(scope="module")
def reference(whole) -> Path:
    return whole.folder


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, root) -> tuple[Path, str]:
    """A real `zoo train --seeds 0,3` stopped by Ctrl-C once its first state is written: (folder, stderr)."""
    out = tmp_path_factory.mktemp("interrupted") / "population"
    process = zoo_process(*TRAIN, "--out", str(out), root=root)
    _, err = stop_when(lambda: latest_training_state(out) is not None, process, signal.SIGINT)
    assert process.returncode == 130, err
    return out, err


def test_ctrl_c_saves_one_state_of_the_whole_population(interrupted):
    folder, err = interrupted
    assert "Traceback" not in err
    state = latest_training_state(folder)
    line = interrupted_line(err)
    step = int(line.split("gradient step ")[1].split(" ")[0])
    assert line == (
        f"zoo: interrupted at gradient step {step} of 200; training state saved in {state}; "
        f"resume with: zoo train --resume {folder}"
    )
    assert 50 <= step < 200
    # On disk: one whole state of the whole population, at the step the line names; no temporaries, no
    # finished marks, no checkpoints yet.
    assert [p.name for p in (folder / STATE_DIR).iterdir()] == [state.name]
    assert hidden_files(folder) == []
    assert not (folder / "aggregate.json").exists() and not (folder / "seed0" / "td3bc.zip").exists()
    config = json.loads((state / "config.json").read_text())
    rates = torch.tensor([3e-4, 3e-4]).tolist()  # MemberAdam keeps them in float32
    assert config["run_info"]["population"] == {
        "seeds": SEEDS, "learning_rates": {"actor_optimizer": rates, "critic_optimizer": rates},
    }
    assert config["training"]["num_timesteps"] == config["training"]["gradient_steps"] == step
    generators = ["rng/member/0", "rng/member/1", "rng/numpy", "rng/python", "rng/torch"]
    assert sorted(config["tensors"]["extra"]) == sorted(generators)
    history = config["run_info"]["run"]
    assert history["phase"] == "offline"
    steps = [[e["step"] for e in member] for member in history["evaluations"]]
    assert steps == [[s for s in (100,) if s <= step]] * 2
    assert len(history["initial"]) == 2  # the untrained members' evaluations, for aggregate.json


def test_resumed_twice_the_population_ends_as_the_run_that_never_stopped(
    interrupted, whole, reference, root, tmp_path
):
    """Ctrl-C during offline learning; `zoo train --resume` (a real process) continues it exactly and is
    stopped by SIGTERM during fine-tuning; the second resume restarts fine-tuning from the state written when
    offline learning ended. Offline checkpoints, the final weights and Adam moments, the seed runs' files and
    the aggregate are the uninterrupted run's."""
    folder = tmp_path / "population"
    shutil.copytree(interrupted[0], folder)
    # progress.csv rows as a run logging every 10 updates would have left them when killed after update 210
    # (the interrupted run logged none: SB3 logs every 1000): the rows after the state's update go.
    progress = "train/actor_loss,train/n_updates\n" + "".join(f"0.5,{n}\n" for n in range(10, 211, 10))
    (folder / "progress.csv").write_text(progress)
    config = json.loads((latest_training_state(folder) / "config.json").read_text())
    step = config["training"]["gradient_steps"]
    process = zoo_process("train", "--resume", str(folder), "--seeds", "0,3", root=root)  # its own seeds
    online = folder / "seed3" / "finetune" / "evaluations.csv"
    _, err = stop_when(online.exists, process, signal.SIGTERM)
    assert process.returncode == 143, err
    line = interrupted_line(err)
    assert line.startswith("zoo: interrupted at env step ") and line.endswith(
        f"of 160 of online fine-tuning; `zoo train --resume {folder}` restarts fine-tuning from the end of "
        "offline learning (an env mid-episode cannot be restored)"
    )
    # Offline learning went on exactly where it stopped: every member's weights and Adam moments, bitwise.
    for seed in SEEDS:
        assert_same_zips(folder / f"seed{seed}" / "td3bc.zip", reference / f"seed{seed}" / "td3bc.zip")
        for name in ("evaluations.csv", "learning_curve.png"):
            ours, theirs = folder / f"seed{seed}" / name, reference / f"seed{seed}" / name
            assert ours.read_bytes() == theirs.read_bytes(), name
    state = latest_training_state(folder)
    assert json.loads((state / "config.json").read_text())["run_info"]["run"]["phase"] == "offline-done"
    kept = "train/actor_loss,train/n_updates\n" + "".join(f"0.5,{n}\n" for n in range(10, step + 1, 10))
    assert (folder / "progress.csv").read_text() == kept  # cut back to the state's update at once

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        resumed = resume_run(folder, progress_bar=False, verbose=0)  # a population folder: as a population
    assert resumed.seeds == SEEDS and resumed.agent.num_timesteps == 160
    assert_same_tensors(whole.agent.policy.state_dict(), resumed.agent.policy.state_dict())
    assert_same_optimizers(whole.agent, resumed.agent)
    assert resumed.evaluations == whole.evaluations and resumed.initial == whole.initial
    assert resumed.online_evaluations == whole.online_evaluations
    assert [e.step for e in resumed.online_evaluations[1]] == [40, 80, 120, 160]
    for name in SAME_FILES:  # evaluations continue (no row twice), the aggregate is the uninterrupted one's
        assert (folder / name).read_text() == (reference / name).read_text(), name
    with (folder / "seed3" / "evaluations.csv").open() as handle:
        assert [int(row["step"]) for row in csv.DictReader(handle)] == [100, 200]
    assert (folder / "progress.csv").read_text() == kept  # (no row logged after: SB3 logs every 1000 updates)
    for seed in SEEDS:
        finetuned = folder / f"seed{seed}" / "td3bc-finetuned.zip"
        assert_same_zips(finetuned, reference / f"seed{seed}" / "td3bc-finetuned.zip")
    # (the zips are the members of the resumed population: member(k) carries its slices of every tensor)
    member = resumed.agent.member(1)
    assert_same_tensors(
        {k: v.cpu() for k, v in member.policy.state_dict().items()}, zip_tensors(finetuned)["policy.pth"]
    )
    # Finished: the population says so, its states are gone, every seed run has its mark.
    assert sorted(p.name for p in (folder / STATE_DIR).iterdir()) == ["finished.json"]
    assert json.loads((folder / STATE_DIR / "finished.json").read_text())["num_timesteps"] == 160
    assert all((folder / f"seed{s}" / STATE_DIR / "finished.json").is_file() for s in SEEDS)
    assert hidden_files(folder) == []


def test_a_finished_population_says_so(reference, capsys):
    assert main(["train", "--resume", str(reference)]) == 2
    assert capsys.readouterr().err == (
        f"zoo: error: {reference} finished already (160 steps, seeds 0,3): there is nothing to resume; "
        "train a new run with another --out.\n"
    )


# ------------------------------------------------------------------------------------------- bad input


def test_resume_refuses_other_seeds_and_a_seed_folder_in_one_line(interrupted, tmp_path, capsys):
    folder = tmp_path / "population"
    shutil.copytree(interrupted[0], folder)
    before = files_of(folder)
    assert main(["train", "--resume", str(folder), "--seeds", "0-2"]) == 2
    assert capsys.readouterr().err == (
        f"zoo: error: --seeds 0-2 is not the population in {folder}, whose seeds are 0,3: drop --seeds "
        "(--resume continues the population with its own seeds), or train the other seeds as a new "
        "population with another --out.\n"
    )
    assert main(["train", "--resume", str(folder), "--save-freq", "10"]) == 2
    assert capsys.readouterr().err == (
        f"zoo: error: --resume continues a run with the settings in {folder}/population.json; drop "
        "--save-freq (or start a new run without --resume).\n"
    )
    assert main(["train", "--resume", str(folder / "seed3")]) == 2
    assert capsys.readouterr().err == (
        f"zoo: error: {folder / 'seed3'} is seed 3 of a population run that did not finish: its training "
        f"state is the population's; resume the whole population with zoo train --resume {folder}.\n"
    )
    assert main(["train", "--resume", str(folder / "seed3"), "--seeds", "3-3"]) == 2
    assert capsys.readouterr().err == (
        f"zoo: error: --seeds does not go with --resume {folder / 'seed3'}: it is one run, not a population "
        "folder (no population.json); drop --seeds.\n"
    )
    assert main(["train", *TRAIN[1:], "--out", str(folder)]) == 2  # a new run into it: the way out is named
    assert f"continue it with `zoo train --resume {folder}`" in capsys.readouterr().err
    assert files_of(folder) == before  # nothing touched
    (folder / "population.json").write_text('{"algo": "td3bc"')  # cut short
    assert main(["train", "--resume", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"zoo: error: {folder / 'population.json'} cannot be read (") and err.endswith(
        "): resuming a population needs its own config.\n"
    )


def test_a_damaged_population_state_is_one_line_before_any_work(interrupted, write_tiny, tmp_path, capsys):
    folder = tmp_path / "population"
    shutil.copytree(interrupted[0], folder)
    state = latest_training_state(folder)
    weights = state / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    before = files_of(folder)
    assert main(["train", "--resume", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"zoo: error: {state}: model.safetensors does not match")
    assert "remove that folder to resume from an earlier state (or from the start, if it is the only" in err
    assert files_of(folder) == before  # (refused before the data loads: this test's Minari root is empty)

    # A population state is not one agent's, and the other way round: each loader says where it belongs.
    shutil.rmtree(folder)
    shutil.copytree(interrupted[0], folder)
    state = latest_training_state(folder)
    write_tiny()
    dataset = load_dataset(TINY_ID, device="cpu")
    with pytest.raises(UserError, match="is the training state of a population: resume its population"):
        load_training_state(state, dataset, "cpu")
    with pytest.raises(DataError, match="is the training state of a population .* `zoo train --resume`"):
        load_checkpoint(state)
    other = make_population("td3bc", dataset, [0, 4], **AGENT)
    mixed = r"population of seeds \[0, 3\], the population.json beside it has seeds \[0, 4\]"
    with pytest.raises(UserError, match=mixed):
        load_population_state(state, other)
    # The state loads into the population its population.json builds, at the state's counters.
    population = make_population("td3bc", dataset, SEEDS, **AGENT)
    history = load_population_state(state, population)
    step = json.loads((state / "config.json").read_text())["training"]["num_timesteps"]
    assert population.training_counters["num_timesteps"] == step and len(history["evaluations"]) == 2


# ------------------------------------------------------------------------- the state itself, in process


class SaveAt(BaseCallback):
    """Writes a training state of the agent at gradient step `step` (as TrainingStateCallback does)."""

    def __init__(self, step: int, folder: Path, key: str):
        super().__init__()
        self.step, self.folder, self.key = step, folder, key

    def _on_step(self) -> bool:
        if self.num_timesteps == self.step:
            save_training_state(self.model, self.folder, {"evaluations": []}, key=self.key)
        return True


SMALL = {
    "device": "cpu", "batch_size": 8, "policy_kwargs": {"net_arch": [32, 32], "actor_net_arch": [32, 32]},
}


@pytest.mark.parametrize(
    "algo, settings, members, at",
    [
        # The state is after the switch at update 10: the population is set up again at the state's counters
        # (set_population_counters) and keeps its per-member gamma (agent) and td_weight (recipe).
        ("td3bc-mc", {"pretrain_steps": 10}, [{"gamma": 0.99, "pretrain_kwargs": {"td_weight": 0.2}},
                                              {"gamma": 0.9, "pretrain_kwargs": {"td_weight": 0.7}}], 25),
        # PSQN's backbone frozen at the switch (16 = 40% of 40): the optimizers of that phase; per-member
        # learning rates.
        ("psqn", {"pretrain_steps": 0.4, "pretrain_kwargs": {"freeze_backbone": True}},
         [{"learning_rate": 1e-3}, {"learning_rate": 3e-4}], 20),
        # SPOT's VAE phase (10 updates), its VAE frozen after: per-member lambda.
        ("spot", {"vae_steps": 10, "policy_kwargs": {"net_arch": [32, 32], "vae_net_arch": [16, 16]}},
         [{"lambd": 0.1}, {"lambd": 0.5}], 15),
        # A SAC-family agent (learned temperature, CQL's sampled actions) with per-member CQL weights.
        ("calql", {}, [{"cql_weight": 1.0}, {"cql_weight": 5.0}], 20),
    ],
)
def test_a_population_state_resumes_bitwise_across_a_phase_switch(
    tiny, tmp_path, algo, settings, members, at
):
    dataset = load_dataset(TINY_ID, device="cpu")
    kwargs = {**SMALL, **settings}
    if algo == "psqn":  # (a TD3 base: no actor_net_arch)
        kwargs["policy_kwargs"] = {"net_arch": [32, 32]}
    whole = make_population(algo, dataset, SEEDS, members=members, **kwargs)
    whole.learn(40, callback=SaveAt(at, tmp_path, algo), progress_bar=False)
    state = latest_training_state(tmp_path)

    resumed = make_population(algo, dataset, SEEDS, members=members, **kwargs)
    assert load_population_state(state, resumed) == {"evaluations": []}
    assert resumed.training_counters == {**whole.training_counters, "num_timesteps": at, "n_updates": at}
    resumed.learn(40 - resumed.num_timesteps, reset_num_timesteps=False, progress_bar=False)
    assert resumed.training_counters == whole.training_counters
    assert_same_tensors(whole.policy.state_dict(), resumed.policy.state_dict())
    assert_same_optimizers(whole, resumed)
    for name in whole.policy.optimizer_names:
        assert torch.equal(getattr(whole.policy, name).member_lr, getattr(resumed.policy, name).member_lr)
    if algo == "td3bc-mc":
        assert resumed.gamma.tolist() == pytest.approx([0.99, 0.9])
        assert resumed.pretraining.td_weight.tolist() == pytest.approx([0.2, 0.7])
    if algo == "spot":
        assert resumed.lambd.tolist() == pytest.approx([0.1, 0.5])
