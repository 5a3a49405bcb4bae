"""Zoo checkpoints (zoo.checkpoint): every agent round-trips, training continues exactly, crafted files run
nothing, mismatches are refused in one line; SB3 zips load without unpickling; `zoo eval PATH` and
`zoo export` on a real `zoo train` run."""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from zoo import TD3BC, load_dataset
from zoo.checkpoint import (
    CONFIG_NAME,
    REFERENCE_NAME,
    STAGING_SUFFIX,
    WEIGHTS_NAME,
    config_text,
    load_agent,
    load_checkpoint,
    read_checkpoint_config,
    read_checkpoint_extras,
    save_checkpoint,
)
from zoo.cli import main
from zoo.errors import DataError, UserError
from zoo.evaluation import agent_predict, evaluate_returns
from zoo.registry import AGENTS, make_agent

TINY = "zoo/hopper/tiny-v0"
SMALL_NETS = {"net_arch": [8, 8]}
# Per key: tiny networks, and phase lengths short enough that a 4-step run crosses every phase switch
# before the checkpoint (so loading must re-apply them: frozen VAE, finished pretraining).
SETTINGS = {
    "td3bc-mc": {"pretrain_steps": 3, "policy_kwargs": {**SMALL_NETS, "actor_net_arch": [8, 8, 8]}},
    "psqn": {"pretrain_steps": 2},
    "spot": {"vae_steps": 3, "policy_kwargs": {**SMALL_NETS, "vae_net_arch": [8, 8]}},
    "opt-spot": {"vae_steps": 3, "policy_kwargs": {**SMALL_NETS, "vae_net_arch": [8, 8]}},
    "edac": {"policy_kwargs": {**SMALL_NETS, "n_critics": 3}},
    "edac-mc": {"pretrain_steps": 2, "policy_kwargs": {**SMALL_NETS, "n_critics": 3}},
}
OBSERVATIONS = np.random.default_rng(0).normal(size=(6, 11)).astype(np.float32)


def tiny_agent(key: str, dataset, **overrides):
    settings = {"batch_size": 4, "seed": 1, "policy_kwargs": SMALL_NETS, **SETTINGS.get(key, {}), **overrides}
    return make_agent(key, dataset, **settings)


def actions(agent) -> np.ndarray:
    return agent.predict(OBSERVATIONS, deterministic=True)[0]


def weights(agent) -> dict[str, torch.Tensor]:
    state = {f"policy.{k}": v for k, v in agent.policy.state_dict().items()}
    for name in agent.policy.optimizer_names:
        for index, values in getattr(agent.policy, name).state_dict()["state"].items():
            state.update({f"{name}.{index}.{field}": v for field, v in values.items()})
    return state


@pytest.fixture
def dataset(tiny):
    return load_dataset(TINY, device="cpu")


@pytest.mark.parametrize("key", sorted(AGENTS))
def test_every_agent_round_trips(key, dataset, tmp_path):
    """Save -> load gives the same actions, counters, settings and tensors, without the dataset."""
    agent = tiny_agent(key, dataset)
    agent.learn(4)
    folder = save_checkpoint(agent, tmp_path / "ck", key=key)
    config = read_checkpoint_config(folder)
    assert config["agent"]["key"] == key and config["agent"]["class"] == type(agent).__name__
    assert config["dataset"]["id"] == TINY and config["task"]["env_id"] == "Hopper-v5"
    assert config["training"]["gradient_steps"] == 4 and config["optimizers"] is None
    assert not any(
        name.startswith("optimizer.") for name in safetensors_load((folder / WEIGHTS_NAME).read_bytes())
    )

    loaded = load_checkpoint(folder, device="cpu")
    assert type(loaded) is type(agent) and loaded.dataset is None
    np.testing.assert_array_equal(actions(loaded), actions(agent))
    assert loaded.training_counters == agent.training_counters
    assert (
        read_checkpoint_config(save_checkpoint(loaded, tmp_path / "again", key=key))["agent"]
        == config["agent"]
    )
    for name, tensor in agent.policy.state_dict().items():
        assert torch.equal(loaded.policy.state_dict()[name], tensor), name
    if agent.normalize_observations:  # the dataset's normaliser came back (not the rebuilt zeros)
        assert loaded.policy.obs_mean.abs().sum() > 0 and loaded.normalize_observations


@pytest.mark.parametrize("key", sorted(AGENTS))
def test_target_networks_stay_plain_weights_and_a_deep_copy_learns_on(key, dataset):
    """Polyak averaging runs without autograd: after updates every target weight is still a leaf without
    gradient or history (an in-place lerp from sources that need a gradient would chain one LerpBackward
    node per update onto it), and a deep copy of the agent learns on from where the original stands."""
    import copy

    agent = tiny_agent(key, dataset)
    agent.learn(4)
    targets, _ = agent.target_pairs
    assert targets and all(t.is_leaf and not t.requires_grad and t.grad_fn is None for t in targets)
    twin = copy.deepcopy(agent)
    twin.learn(4, reset_num_timesteps=False)
    agent.learn(4, reset_num_timesteps=False)
    for name, tensor in agent.policy.state_dict().items():
        assert torch.equal(twin.policy.state_dict()[name], tensor), name


@pytest.mark.parametrize("key", sorted(AGENTS))
def test_continued_learning_equals_uninterrupted(key, dataset, tmp_path):
    """With optimizer state (and the agent's generator state as an extra tensor), learning on from the
    checkpoint ends with the weights and Adam moments of the agent that never stopped."""
    agent = tiny_agent(key, dataset)
    agent.learn(4)
    folder = save_checkpoint(
        agent,
        tmp_path / "ck",
        include_optimizer=True,
        extra_tensors={"rng/agent": agent.random.get_state()[0]},
        run_info={"note": "mid-run"},
        key=key,
    )
    agent.learn(4, reset_num_timesteps=False)

    resumed = load_checkpoint(folder, dataset=dataset, device="cpu", load_optimizer=True)
    extras, run_info = read_checkpoint_extras(folder)
    assert run_info == {"note": "mid-run"} and set(extras) == {"rng/agent"}
    resumed.random.set_state([extras["rng/agent"]])
    resumed.learn(4, reset_num_timesteps=False)

    assert resumed._n_updates == agent._n_updates == 8
    expected, got = weights(agent), weights(resumed)
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name


def test_without_optimizer_state_training_differs_and_is_refused_to_load(dataset, tmp_path):
    """The small checkpoint has no Adam moments: load_optimizer=True says so; it is less than half the
    size of one with them."""
    agent = tiny_agent("td3bc", dataset)
    agent.learn(4)
    folder = save_checkpoint(agent, tmp_path / "ck")
    with pytest.raises(DataError, match="holds no optimizer state"):
        load_checkpoint(folder, load_optimizer=True)
    with_state = save_checkpoint(agent, tmp_path / "full", include_optimizer=True)
    size = lambda f: (f / WEIGHTS_NAME).stat().st_size  # noqa: E731
    assert size(with_state) > 2 * size(folder)  # Adam's two moments per weight


def test_zip_checkpoint_and_atomic_replacement(dataset, tmp_path):
    agent = tiny_agent("cql", dataset)
    agent.learn(2)
    tmp_path = tmp_path / "checkpoints"
    archive = save_checkpoint(agent, tmp_path / "cql.zip")
    assert sorted(zipfile.ZipFile(archive).namelist()) == [CONFIG_NAME, WEIGHTS_NAME]
    np.testing.assert_array_equal(actions(load_checkpoint(archive, device="cpu")), actions(agent))

    # A writer killed mid-save leaves a hidden staging folder: never read as a checkpoint, swept next save.
    stale = tmp_path / f".ck.dead{STAGING_SUFFIX}"
    stale.mkdir()
    (stale / WEIGHTS_NAME).write_bytes(b"half")
    folder = save_checkpoint(agent, tmp_path / "ck")
    agent.learn(2, reset_num_timesteps=False)
    save_checkpoint(agent, folder)  # replaces the first one whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "cql.zip"]
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    assert read_checkpoint_config(folder)["training"]["gradient_steps"] == 4
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="is not a zoo checkpoint"):
        save_checkpoint(agent, tmp_path / "other")
    with pytest.raises(UserError, match="field 'evaluation.episodes' is missing"):
        save_checkpoint(agent, tmp_path / "scored", evaluation={"normalized_score": 50.0})
    assert not (tmp_path / "scored").exists()
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------------------------- refusals


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def saved(agent, tmp_path) -> Path:
    return save_checkpoint(agent, tmp_path / "ck")


def rewrite_config(folder: Path, change) -> None:
    config = json.loads((folder / CONFIG_NAME).read_text())
    change(config)
    (folder / CONFIG_NAME).write_text(config_text(config))


def rewrite_weights(folder: Path, change) -> None:
    """Change the tensors and record the new checksum, as someone forging a consistent file would."""
    tensors = safetensors_load((folder / WEIGHTS_NAME).read_bytes())
    change(tensors)
    data = safetensors_save(tensors)
    (folder / WEIGHTS_NAME).write_bytes(data)
    rewrite_config(
        folder, lambda c: c["tensors"].update(sha256=__import__("hashlib").sha256(data).hexdigest())
    )


def test_tensors_that_do_not_match_the_config_are_refused(dataset, tmp_path):
    agent = tiny_agent("td3bc", dataset)
    folder = saved(agent, tmp_path)

    rewrite_config(folder, lambda c: c["agent"]["kwargs"]["policy_kwargs"].update(net_arch=[16, 16]))
    with pytest.raises(DataError) as error:
        load_checkpoint(folder)
    assert re.search(
        r"tensor 'policy\.\S+' has shape \[\d+, \d+, 8\].*needs \[\d+, \d+, 16\]", one_line(error)
    )

    folder = save_checkpoint(agent, tmp_path / "ck2")
    rewrite_weights(folder, lambda t: t.pop("policy.critic_target.net.layers.0.weight"))
    with pytest.raises(DataError) as error:
        load_checkpoint(folder)
    assert "model.safetensors lacks 'policy.critic_target.net.layers.0.weight'" in one_line(error)

    folder = save_checkpoint(agent, tmp_path / "ck3")
    data = bytearray((folder / WEIGHTS_NAME).read_bytes())
    data[-1] ^= 0xFF
    (folder / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(DataError) as error:
        load_checkpoint(folder)
    assert "does not match the checksum" in one_line(error)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["agent"].update(key="td3-bc"), "agent key 'td3-bc' is not in this zoo's registry"),
        (lambda c: c["agent"].update(**{"class": "CQL"}), "builds TD3BC, but the checkpoint says CQL"),
        (lambda c: c["agent"]["kwargs"].update(alfa=2.5), "has 'alfa', which TD3BC does not take"),
        (
            lambda c: c["agent"]["kwargs"].update(batch_size="big"),
            "batch_size",
        ),  # the constructor's own check
        (lambda c: c.update(format_version=99), "format version 99 is newer"),
        (lambda c: c.update(extra_field=1), "field 'extra_field' is not a known field"),
        (lambda c: c["training"].update(gradient_steps="4"), "field 'training.gradient_steps' must be int"),
        (lambda c: c["action_space"].update(low=[-1.0]), "field 'action_space.low' must list 3 numbers"),
        (
            lambda c: c["observation_space"].update(dtype="int64"),
            "'observation_space.dtype' must be a float type",
        ),
    ],
)
def test_bad_config_fields_are_one_line(change, message, dataset, tmp_path):
    folder = saved(tiny_agent("td3bc", dataset), tmp_path)
    rewrite_config(folder, change)
    with pytest.raises(DataError) as error:
        load_checkpoint(folder)
    assert message in one_line(error) and str(folder) in str(error.value)


class Payload:
    """Pickles into a call that creates `marker`: what a malicious checkpoint would hide."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_checkpoint_folder_runs_nothing(dataset, tmp_path):
    marker = tmp_path / "pwned"
    payload = base64.b64encode(pickle.dumps(Payload(marker))).decode()
    pickle.loads(base64.b64decode(payload))  # the payload is live: unpickling it runs the command
    assert marker.exists()
    marker.unlink()

    folder = saved(tiny_agent("td3bc", dataset), tmp_path)
    # SB3-style pickled field in the settings, a pickle where the weights belong (checksum made to match).
    rewrite_config(folder, lambda c: c["agent"]["kwargs"].update(policy_kwargs={":serialized:": payload}))
    with pytest.raises(DataError):
        load_checkpoint(folder)
    folder = save_checkpoint(tiny_agent("td3bc", dataset), tmp_path / "ck2")
    torch.save({"policy.obs_mean": Payload(marker)}, folder / WEIGHTS_NAME)
    digest = __import__("hashlib").sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest()
    rewrite_config(folder, lambda c: c["tensors"].update(sha256=digest))
    with pytest.raises(DataError, match="is not a safetensors file"):
        load_checkpoint(folder)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- SB3 zips


def craft_sb3_zip(
    source: Path, target: Path, *, data_changes: dict | None = None, members: dict | None = None
):
    with zipfile.ZipFile(source) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(contents["data"])
    data.update(data_changes or {})
    contents["data"] = json.dumps(data).encode()
    contents.update(members or {})
    with zipfile.ZipFile(target, "w") as archive:
        for name, blob in contents.items():
            archive.writestr(name, blob)
    return target


def test_crafted_sb3_zip_runs_nothing(dataset, tmp_path):
    from stable_baselines3.common.save_util import load_from_zip_file

    agent = tiny_agent("td3bc", dataset)
    agent.learn(2)
    agent.save(tmp_path / "agent.zip")
    marker = tmp_path / "pwned"
    payload = base64.b64encode(pickle.dumps(Payload(marker))).decode()
    original = json.loads(zipfile.ZipFile(tmp_path / "agent.zip").read("data"))
    # The payload replaces the pickles of fields SB3 stores with cloudpickle, readable copies kept.
    crafted = craft_sb3_zip(
        tmp_path / "agent.zip",
        tmp_path / "crafted.zip",
        data_changes={
            name: {**original[name], ":serialized:": payload}
            for name in (
                "observation_space",
                "action_space",
                "task",
                "lr_schedule",
                "policy_class",
                "ep_info_buffer",
            )
        },
    )
    load_from_zip_file(crafted, device="cpu")  # SB3's own reader runs it ...
    assert marker.exists()
    marker.unlink()

    loaded = TD3BC.load(crafted, device="cpu")  # ... the zoo's does not, and still loads the agent
    np.testing.assert_array_equal(actions(loaded), actions(agent))
    assert loaded.task == agent.task and loaded._n_updates == 2
    assert load_agent(crafted, "td3bc", device="cpu").training_counters == agent.training_counters

    # A setting the agent needs, stored as a pickle, is refused rather than run or silently defaulted.
    needed = craft_sb3_zip(
        tmp_path / "agent.zip",
        tmp_path / "needed.zip",
        data_changes={"alpha": {":type:": "float", ":serialized:": payload}},
    )
    with pytest.raises(DataError, match=r"setting\(s\) \['alpha'\] are stored as pickled code"):
        TD3BC.load(needed)
    # A .pth member that is a pickle of an object, not tensors: torch.load(weights_only=True) refuses it.
    blob = tmp_path / "evil.pth"
    torch.save(Payload(marker), blob)
    evil = craft_sb3_zip(
        tmp_path / "agent.zip", tmp_path / "evil.zip", members={"policy.pth": blob.read_bytes()}
    )
    with pytest.raises(DataError, match="a .pth member holds more than tensors"):
        TD3BC.load(evil)
    assert not marker.exists()


@pytest.mark.parametrize("key", ["calql", "spot"])
def test_sb3_save_load_keeps_working(key, dataset, tmp_path):
    agent = tiny_agent(key, dataset)
    agent.learn(4)
    agent.save(tmp_path / "agent.zip")
    loaded = type(agent).load(tmp_path / "agent.zip", device="cpu", dataset=dataset)
    np.testing.assert_array_equal(actions(loaded), actions(agent))
    assert loaded.training_counters == agent.training_counters
    loaded.learn(2, reset_num_timesteps=False)
    assert loaded._n_updates == 6


# ---------------------------------------------------------------------------------------------- CLI


def run_zoo(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def test_zoo_eval_path_needs_no_algo(dataset, tmp_path):
    agent = tiny_agent("td3bc", dataset)
    agent.learn(2)
    folder = save_checkpoint(agent, tmp_path / "ck")
    result = run_zoo("eval", str(folder), "--episodes", "2", "--seed", "5")
    assert result.returncode == 0, result.stderr
    returns = evaluate_returns(agent_predict(agent), "Hopper-v5", 2, 5)
    score = agent.task.normalized_score(returns).mean()
    assert result.stdout.strip() == (
        f"Hopper-v5: return {returns.mean():.1f} ± {returns.std():.1f} over 2 episodes, normalized score "
        f"{score:.1f}"
    )
    # An SB3 zip outside a run folder does not name its agent: one line asks for --algo.
    agent.save(tmp_path / "alone" / "agent.zip")
    with pytest.raises(UserError, match="pass --algo KEY"):
        load_agent(tmp_path / "alone" / "agent.zip")


def test_zoo_export_of_a_real_train_run(tiny, tmp_path, monkeypatch, capsys):
    """`zoo train` -> `zoo export` -> a checkpoint in $ZOO_HOME with the run's score and command, its
    reference actions reproduced, and `zoo eval` of it in a fresh process giving the recorded score."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo_home"))
    run = tmp_path / "run"
    train = [
        "train",
        "--algo",
        "td3bc",
        "--dataset",
        TINY,
        "--steps",
        "20",
        "--set",
        "eval_freq=10",
        "--set",
        "n_eval_episodes=2",
        "--set",
        "batch_size=4",
        "--set",
        "policy_kwargs={net_arch: [8, 8]}",
        "--device",
        "cpu",
        "--out",
        str(run),
    ]
    monkeypatch.setattr(sys, "argv", ["zoo", *train])  # as the console script sees it (the run records it)
    assert main(train) == 0
    assert main(["export", str(run)]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "zoo_home" / "td3bc" / "zoo" / "hopper" / "tiny-v0" / "seed0"
    assert f"checkpoint: {folder}" in out
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_NAME, REFERENCE_NAME, WEIGHTS_NAME])

    config = read_checkpoint_config(folder)
    last = (run / "evaluations.csv").read_text().strip().splitlines()[-1].split(",")
    assert config["evaluation"] == {
        "step": 20,
        "return_mean": float(last[1]),
        "return_std": float(last[2]),
        "normalized_score": float(last[3]),
        "episodes": 2,
    }
    run_config = json.loads((run / "config.json").read_text())
    assert config["command"] == run_config["command"] and config["command"].startswith(
        "zoo train --algo td3bc"
    )
    assert config["dataset"] == {"id": TINY, "fraction": 1.0} and config["seed"] == 0
    assert config["training"] == {
        "gradient_steps": 20,
        "num_timesteps": 20,
        "pretrain_budget": 20,
        "env_steps": 0,
    }
    assert config["optimizers"] is None and (folder / WEIGHTS_NAME).stat().st_size < 20_000

    sb3 = TD3BC.load(run / "td3bc.zip", device="cpu")
    exported = load_checkpoint(folder, device="cpu")
    reference = json.loads((folder / REFERENCE_NAME).read_text())
    observations = np.asarray(reference["observations"], dtype=np.float32)
    np.testing.assert_array_equal(
        exported.predict(observations, deterministic=True)[0], np.float32(reference["actions"])
    )
    np.testing.assert_array_equal(
        sb3.predict(observations, deterministic=True)[0], np.float32(reference["actions"])
    )

    assert main(["export", str(run)]) == 2  # exists: refused without --overwrite
    assert "pass --overwrite" in capsys.readouterr().err

    result = run_zoo("eval", str(folder), "--episodes", "2")  # zoo eval's default seed is the callback's, 100
    assert result.returncode == 0, result.stderr
    assert f"normalized score {config['evaluation']['normalized_score']:.1f}" in result.stdout


def test_sb3_load_overrides_and_run_folders(dataset, tmp_path):
    """TD3BC.load(path, setting=value) replaces a stored setting, as SB3's load does; a typo is refused;
    load_agent on a `zoo train`-style run folder takes its last zip and the key from its config.json."""
    agent = tiny_agent("td3bc", dataset)
    agent.save(tmp_path / "run" / "td3bc.zip")
    assert TD3BC.load(tmp_path / "run" / "td3bc.zip", alpha=4.0).alpha == 4.0
    with pytest.raises(UserError, match="'alfa' is not a setting of TD3BC"):
        TD3BC.load(tmp_path / "run" / "td3bc.zip", alfa=4.0)
    (tmp_path / "run" / "config.json").write_text(json.dumps({"algo": "td3bc"}))
    np.testing.assert_array_equal(actions(load_agent(tmp_path / "run")), actions(agent))
    agent.save(tmp_path / "run" / "td3bc-finetuned.zip")
    assert load_agent(tmp_path / "run").training_counters == agent.training_counters
    other = load_dataset(TINY, device="cpu")
    other.observation_space = type(other.observation_space)(-1.0, 1.0, (5,))
    folder = save_checkpoint(agent, tmp_path / "ck")
    with pytest.raises(DataError, match=r"has observations of shape \(5,\), the agent in .* takes \(11,\)"):
        load_checkpoint(folder, dataset=other)
