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

from tests.conftest import TINY_ID, tiny_episodes
from zoo.checkpoint import load_checkpoint
from zoo.cli import main
from zoo.data import load_dataset, write_dataset
from zoo.errors import DataError, UserError
from zoo.registry import make_population
from zoo.resume import STATE_DIR, latest_training_state, load_population_state, load_training_state
from zoo.runs import resume_run, train_population

SEEDS = [0, 3]
AGENT = {"device": "cpu", "batch_size": 8}
SETTINGS = {**AGENT, "eval_freq": 100, "n_eval_episodes": 1}
# 200 gradient steps, evaluations every 100, a state every 50 (the CLI's spelling of SETTINGS).
TRAIN = [
    "train", "--algo", "td3bc", "--dataset", TINY_ID, "--steps", "200", "--set", "eval_freq=100",
    "--set", "n_eval_episodes=1", "--set", "batch_size=8", "--device", "cpu", "--save-freq", "50",
    "--seeds", "0,3",
]
# Fine-tuning: 100 gradient steps, then 200 env steps evaluated every 50.
FINETUNE = {"n_timesteps": 100, "n_finetune_timesteps": 200, "finetune_eval_freq": 50}
# Files of a finished population that must be the same, byte for byte, however it got there.
SAME_FILES = ["aggregate.csv", "aggregate.json", *[f"seed{s}/evaluations.csv" for s in SEEDS]]


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


def train_in_process(out: Path, **settings) -> object:
    overrides = {**SETTINGS, **{k: settings.pop(k) for k in ("finetune_eval_freq",) if k in settings}}
    return train_population(
        "td3bc", load_dataset(TINY_ID, device="cpu"), out, SEEDS, overrides=overrides, evaluate_initial=True,
        progress_bar=False, verbose=0, **settings,
    )


def zip_tensors(path: Path) -> dict[str, dict[str, torch.Tensor]]:
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


def assert_same_optimizers(a, b) -> None:
    """The Adam moments and step counts of two agents, bitwise."""
    for name in a.policy.optimizer_names:
        states = [getattr(agent.policy, name).state_dict()["state"] for agent in (a, b)]
        assert states[0].keys() == states[1].keys() and states[0]
        for index in states[0]:
            assert_same_tensors(states[0][index], states[1][index])


def hidden_files(folder: Path) -> list[Path]:
    return list(folder.rglob(".*"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted population (in this process, one torch thread as the subprocesses have)."""
    root = tmp_path_factory.mktemp("minari")
    out = tmp_path_factory.mktemp("reference") / "population"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        write_dataset(TINY_ID, tiny_episodes(), env_id="Hopper-v5")
        result = train_in_process(out, n_timesteps=200, save_freq=50)
    return result


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, reference):
    """A real `zoo train --seeds 0,3` stopped by Ctrl-C once its first state is written: (folder, stderr)."""
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        write_dataset(TINY_ID, tiny_episodes(), env_id="Hopper-v5")
    out = tmp_path_factory.mktemp("interrupted") / "population"
    process = zoo_process(*TRAIN, "--out", str(out), root=root)
    _, err = stop_when(lambda: latest_training_state(out) is not None, process, signal.SIGINT)
    assert process.returncode == 130, err
    return out, err, root


def test_ctrl_c_saves_the_population_and_resume_ends_as_the_run_that_never_stopped(
    interrupted, reference, tmp_path, capsys, monkeypatch
):
    folder, err, root = interrupted
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
    history = config["run_info"]["run"]
    assert [[e["step"] for e in member] for member in history["evaluations"]] == [
        [s for s in (100,) if s <= step]
    ] * 2
    assert len(history["initial"]) == 2  # the untrained members' evaluations, for aggregate.json

    # Resumed through the CLI (in this process; the population's own seeds may be given again), on a copy.
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    capsys.readouterr()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    assert main(["train", "--resume", str(copy), "--seeds", "0,3"]) == 0
    out = capsys.readouterr().out
    assert "offline (200 steps)" in out and f"seed runs: {copy}/seed<k>" in out
    for seed in SEEDS:  # weights and both optimizers' Adam moments of every member, bitwise
        ours = zip_tensors(copy / f"seed{seed}" / "td3bc.zip")
        theirs = zip_tensors(reference.folder / f"seed{seed}" / "td3bc.zip")
        assert ours.keys() == theirs.keys() == {"policy.pth", "policy.actor_optimizer.pth", "policy.critic_optimizer.pth"}
        assert_same_tensors(ours["policy.pth"], theirs["policy.pth"])
        for name in ("policy.actor_optimizer.pth", "policy.critic_optimizer.pth"):
            for index, values in ours[name]["state"].items():
                assert_same_tensors(values, theirs[name]["state"][index])
    for name in SAME_FILES:  # evaluations continue (no row twice), the aggregate is the uninterrupted one's
        assert (copy / name).read_text() == (reference.folder / name).read_text(), name
    with (copy / "seed3" / "evaluations.csv").open() as handle:
        assert [int(row["step"]) for row in csv.DictReader(handle)] == [100, 200]
    # Finished: the population says so, its states are gone, every seed run has its mark.
    assert sorted(p.name for p in (copy / STATE_DIR).iterdir()) == ["finished.json"]
    assert json.loads((copy / STATE_DIR / "finished.json").read_text())["num_timesteps"] == 200
    assert all((copy / f"seed{s}" / STATE_DIR / "finished.json").is_file() for s in SEEDS)
    assert hidden_files(copy) == []
    assert main(["train", "--resume", str(copy)]) == 2


def test_a_finished_population_says_so(reference, capsys):
    assert main(["train", "--resume", str(reference.folder)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"zoo: error: {reference.folder} finished already (200 steps, seeds 0,3): there is nothing to resume; "
        "train a new run with another --out.\n"
    )


def test_fine_tuning_stopped_by_sigterm_restarts_from_the_end_of_offline_learning(tiny, tmp_path):
    """SIGTERM during online fine-tuning: the state written when offline learning ended is the one resumed,
    fine-tuning starts again from its first env step, and the population ends as the uninterrupted one."""
    whole = train_in_process(tmp_path / "whole", **FINETUNE)
    out = tmp_path / "cut"
    process = zoo_process(
        *TRAIN[:6], "100", *TRAIN[7:], "--finetune-steps", "200", "--set", "finetune_eval_freq=50",
        "--out", str(out), root=tiny_root(),
    )
    _, err = stop_when(lambda: (out / "seed0" / "finetune" / "evaluations.csv").exists(), process, signal.SIGTERM)
    assert process.returncode == 143, err
    line = interrupted_line(err)
    assert line.startswith("zoo: interrupted at env step ") and line.endswith(
        f"of 200 of online fine-tuning; `zoo train --resume {out}` restarts fine-tuning from the end of offline "
        "learning (an env mid-episode cannot be restored)"
    )
    state = latest_training_state(out)
    assert json.loads((state / "config.json").read_text())["run_info"]["run"]["phase"] == "offline-done"

    resumed = resume_run(out, progress_bar=False, verbose=0)  # the population folder: resumed as a population
    assert resumed.seeds == SEEDS and resumed.agent.num_timesteps == 200
    assert_same_tensors(whole.agent.policy.state_dict(), resumed.agent.policy.state_dict())
    assert_same_optimizers(whole.agent, resumed.agent)
    assert resumed.online_evaluations == whole.online_evaluations and resumed.evaluations == whole.evaluations
    for name in [*SAME_FILES, "finetune/aggregate.csv", *[f"seed{s}/finetune/evaluations.csv" for s in SEEDS]]:
        assert (out / name).read_text() == (whole.folder / name).read_text(), name


def tiny_root() -> Path:
    return Path(os.environ["MINARI_DATASETS_PATH"])


# ------------------------------------------------------------------------------------------- bad input


def test_resume_refuses_other_seeds_and_a_seed_folder_in_one_line(interrupted, tmp_path, capsys):
    folder = tmp_path / "population"
    shutil.copytree(interrupted[0], folder)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert main(["train", "--resume", str(folder), "--seeds", "0-2"]) == 2
    assert capsys.readouterr().err == (
        f"zoo: error: --seeds 0-2 is not the population in {folder}, whose seeds are 0,3: drop --seeds "
        "(--resume continues the population with its own seeds), or train the other seeds as a new population "
        "with another --out.\n"
    )
    assert main(["train", "--resume", str(folder), "--save-freq", "10"]) == 2
    assert capsys.readouterr().err == (
        f"zoo: error: --resume continues a run with the settings in {folder}/population.json; drop --save-freq "
        "(or start a new run without --resume).\n"
    )
    assert main(["train", "--resume", str(folder / "seed3")]) == 2
    assert capsys.readouterr().err == (
        f"zoo: error: {folder / 'seed3'} is seed 3 of a population run that did not finish: its training state "
        f"is the population's; resume the whole population with zoo train --resume {folder}.\n"
    )
    assert main(["train", *TRAIN[1:], "--out", str(folder)]) == 2  # a new run into it: the way out is named
    assert f"continue it with `zoo train --resume {folder}`" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before  # nothing touched


def test_a_damaged_population_state_is_one_line_before_any_work(interrupted, tiny, tmp_path, capsys):
    folder = tmp_path / "population"
    shutil.copytree(interrupted[0], folder)
    state = latest_training_state(folder)
    weights = state / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert main(["train", "--resume", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"zoo: error: {state}: model.safetensors does not match")
    assert "remove that folder to resume from an earlier state (or from the start, if it is the only one)" in err
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before

    # A population state is not one agent's, and the other way round: each loader says where it belongs.
    shutil.rmtree(folder)
    shutil.copytree(interrupted[0], folder)
    state = latest_training_state(folder)
    dataset = load_dataset(TINY_ID, device="cpu")
    with pytest.raises(UserError, match="is the training state of a population: resume its population folder"):
        load_training_state(state, dataset, "cpu")
    with pytest.raises(DataError, match="is the training state of a population .* `zoo train --resume`"):
        load_checkpoint(state)
    other = make_population("td3bc", dataset, [0, 4], **AGENT)
    with pytest.raises(UserError, match=r"population of seeds \[0, 3\], the population.json beside it has seeds \[0, 4\]"):
        load_population_state(state, other)
    # The state loads into the population its population.json builds, at the state's counters.
    population = make_population("td3bc", dataset, SEEDS, **AGENT)
    history = load_population_state(state, population)
    step = json.loads((state / "config.json").read_text())["training"]["num_timesteps"]
    assert population.training_counters["num_timesteps"] == step and len(history["evaluations"]) == 2
