"""The command line end to end on a real small dataset, YAML hyperparameters, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import hand_episode
from zoo import TD3BC
from zoo.cli import main
from zoo.config import load_hyperparams
from zoo.data import write_dataset
from zoo.datagen.behavior import vendored_behavior
from zoo.datagen.generate import make_behavior_dataset

DATASET = "zoo/hopper/cli-v0"


@pytest.fixture
def hopper_small():
    make_behavior_dataset(DATASET, "Hopper-v5", vendored_behavior("hopper_sac_actor_0130000.pt"), 2000, seed=1)
    return DATASET


def test_train_eval_and_list_from_the_command_line(hopper_small, tmp_path, capsys):
    out = tmp_path / "run"
    hyper = tmp_path / "td3bc.yml"
    hyper.write_text("default:\n  n_timesteps: 1000\n  eval_freq: 400\n  n_eval_episodes: 2\n  alpha: 3.0\n")
    assert main(["train", "--algo", "td3bc", "--dataset", DATASET, "--steps", "400", "--hyperparams", str(hyper),
                 "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "normalized score" in printed and "checkpoint:" in printed
    # The run folder: resolved config, evaluations, SB3 logs, checkpoint and curve.
    config = json.loads((out / "config.json").read_text())
    assert config["kwargs"]["alpha"] == 3.0 and config["run"]["n_timesteps"] == 400
    rows = (out / "evaluations.csv").read_text().splitlines()
    assert rows[0] == "step,return_mean,return_std,normalized_score" and [r.split(",")[0] for r in rows[1:]] == ["400"]
    assert (out / "progress.csv").exists() and (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    agent = TD3BC.load(out / "td3bc.zip")
    assert agent.alpha == 3.0 and agent.num_timesteps == 400
    assert not list(out.glob(".td3bc*"))  # no temporary checkpoint left behind

    assert main(["eval", "--algo", "td3bc", "--checkpoint", str(out / "td3bc.zip"), "--episodes", "2"]) == 0
    line = capsys.readouterr().out
    recorded = float(rows[1].split(",")[1])
    assert line.startswith("Hopper-v5: return") and f"return {recorded:.1f}" in line  # same seeds, same result

    assert main(["datasets", "list"]) == 0
    assert DATASET in capsys.readouterr().out


def test_train_then_finetune_from_the_command_line(hopper_small, tmp_path, capsys):
    out = tmp_path / "run"
    hyper = tmp_path / "td3bc.yml"
    hyper.write_text("default:\n  eval_freq: 200\n  n_eval_episodes: 2\n  finetune_eval_freq: 150\n")
    assert main(["train", "--algo", "td3bc", "--dataset", DATASET, "--steps", "200", "--finetune-steps", "300",
                 "--hyperparams", str(hyper), "--out", str(out), "--device", "cpu",
                 "--set", "alpha=3.0", "--set", "n_eval_episodes=3"]) == 0
    printed = capsys.readouterr().out
    assert "untrained" in printed and "offline (200 steps)" in printed and "online (300 env steps)" in printed
    online = (out / "finetune" / "evaluations.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in online[1:]] == ["150", "300"]
    agent = TD3BC.load(out / "td3bc-finetuned.zip")
    assert agent.num_timesteps == 300 and (out / "td3bc.zip").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["run"]["n_finetune_timesteps"] == 300 and config["run"]["n_eval_episodes"] == 3
    assert config["kwargs"]["alpha"] == 3.0 and agent.alpha == 3.0
    # A --set key the agent does not take, or one without a value, is refused with the known keys named.
    assert main(["train", "--algo", "td3bc", "--dataset", DATASET, "--set", "alpah=3"]) == 2
    assert "unknown setting(s) ['alpah']" in capsys.readouterr().err
    assert main(["train", "--algo", "td3bc", "--dataset", DATASET, "--set", "alpha"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_unknown_dataset_on_the_command_line_is_a_clear_error(capsys):
    assert main(["train", "--algo", "td3bc", "--dataset", "zoo/hopper/nothing-v0"]) == 2
    err = capsys.readouterr().err
    assert "zoo/hopper/nothing-v0" in err and "Local datasets" in err


def test_settings_are_refused_before_any_data_loads(tmp_path, capsys):
    # No AntMaze dataset exists here: the uncovered domain is reported, not the missing data.
    out = tmp_path / "run"
    assert main(["train", "--algo", "td3bc-mc", "--dataset", "D4RL/antmaze/umaze-v1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "td3bc-mc.yml has no settings for 'D4RL/antmaze/umaze-v1'" in err and "Local datasets" not in err
    assert main(["train", "--algo", "spot", "--dataset", "zoo/hopper/nothing-v0", "--set", "lambd=-1"]) == 2
    assert "lambd=-1 (from --set)" in capsys.readouterr().err
    hyper = tmp_path / "mine.yml"
    hyper.write_text("default: {alpha: 2.5}\nhoper: {alpha: 10.0}\n")
    assert main(["train", "--algo", "td3bc", "--dataset", "zoo/hopper/nothing-v0", "--hyperparams", str(hyper)]) == 2
    assert "section 'hoper' matches no dataset id, env or domain the zoo knows; did you mean 'hopper'?" in (
        capsys.readouterr().err
    )
    assert not out.exists()  # refused before any run folder


def test_hyperparams_merge_default_env_and_dataset(tmp_path):
    hyper = tmp_path / "td3bc.yml"
    hyper.write_text(
        "default:\n  alpha: 2.5\n  n_timesteps: 100\n"
        "hopper:\n  alpha: 10.0\n  batch_size: 64\n"
        "zoo/hopper/medium-v0:\n  batch_size: 128\n  eval_freq: 50\n"
    )
    kwargs, run = load_hyperparams("td3bc", "zoo/hopper/medium-v0", hyper)
    assert kwargs == {"alpha": 10.0, "batch_size": 128}
    assert run == {
        "n_timesteps": 100, "eval_freq": 50, "n_eval_episodes": 10, "n_finetune_timesteps": 0, "finetune_eval_freq": 5000
    }
    kwargs, _ = load_hyperparams("td3bc", "zoo/walker2d/medium-v0", hyper)
    assert kwargs == {"alpha": 2.5}
    # policy_kwargs merge key by key, from the file's sections to the overrides.
    hyper.write_text(
        "default:\n  policy_kwargs: {net_arch: [64, 64], n_critics: 2}\n"
        "hopper:\n  policy_kwargs: {critic_layer_norm: true}\n"
    )
    kwargs, _ = load_hyperparams("td3bc", "zoo/hopper/medium-v0", hyper, {"policy_kwargs": {"n_critics": 3}})
    assert kwargs["policy_kwargs"] == {"net_arch": [64, 64], "n_critics": 3, "critic_layer_norm": True}


def test_shipped_td3bc_yaml_has_the_official_defaults():
    kwargs, run = load_hyperparams("td3bc", "zoo/walker2d/medium-v0")
    assert kwargs["alpha"] == 2.5 and kwargs["policy_delay"] == 2 and kwargs["tau"] == 0.005
    assert run["n_timesteps"] == 1_000_000 and run["eval_freq"] == 5000
    from zoo.agents import TD3

    agent_defaults = {**TD3.__init__.__kwdefaults__, **TD3BC.__init__.__kwdefaults__}
    for name in ("alpha", "policy_delay", "target_policy_noise", "target_noise_clip", "tau", "gamma", "batch_size"):
        assert kwargs[name] == agent_defaults[name], name


def test_unknown_hyperparameter_is_a_clear_error(tmp_path):
    hyper = tmp_path / "td3bc.yml"
    hyper.write_text("default:\n  alpha: 2.5\n  aplha: 3\n")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['aplha'\]"):
        load_hyperparams("td3bc", "zoo/hopper/medium-v0", hyper)
    with pytest.raises(ValueError, match="Unknown agent 'sac-n'"):
        load_hyperparams("sac-n", "zoo/hopper/medium-v0", hyper)


def test_bad_precision_and_mismatched_dataset_are_clear_errors(hopper_small):
    from zoo import load_dataset

    dataset = load_dataset(DATASET, device="cpu")
    with pytest.raises(ValueError, match="precision must be"):
        TD3BC(dataset, precision="fp8")
    # A dataset of another environment cannot be trained on by this agent.
    other = dataset.to("cpu")
    import gymnasium as gym

    other.observation_space = gym.spaces.Box(-np.inf, np.inf, (17,))
    agent = TD3BC(dataset)
    with pytest.raises(ValueError, match="does not match the agent's"):
        agent._check_dataset(other)


def test_writing_episodes_that_do_not_fit_the_env_is_refused(minari_root_per_test):
    bad_actions = hand_episode(0, 3)
    bad_actions.actions[1, 0] = 1.5
    with pytest.raises(ValueError, match="action outside Hopper-v5's action space in 'actions' at step 1"):
        write_dataset("zoo/hopper/bad-v0", [bad_actions], env_id="Hopper-v5")
    wrong_shape = hand_episode(0, 3)
    wrong_shape.observations = wrong_shape.observations[:, :5]
    with pytest.raises(ValueError, match=r"observations of shape \(5,\), but Hopper-v5 expects \(11,\)"):
        write_dataset("zoo/hopper/bad-v0", [wrong_shape], env_id="Hopper-v5")
    assert not (minari_root_per_test / "zoo" / "hopper" / "bad-v0").exists()


def test_exorl_collect_and_import_from_the_command_line(tmp_path, capsys):
    from zoo import load_dataset

    root = tmp_path / "exorl"
    assert main(["datasets", "exorl", "collect", "walker", "random", "--steps", "2000", "--out", str(root)]) == 0
    assert len(list((root / "walker" / "random" / "buffer").glob("episode_*.npz"))) == 2
    assert main(["datasets", "exorl", "import", "walker", "random", "walk", "stand", "--root", str(root)]) == 0
    printed = capsys.readouterr().out
    assert "zoo/exorl/walker-walk/random-v0" in printed and "zoo/exorl/walker-stand/random-v0" in printed
    walk = load_dataset("zoo/exorl/walker-walk/random-v0", device="cpu")
    stand = load_dataset("zoo/exorl/walker-stand/random-v0", device="cpu")
    assert len(walk) == len(stand) == 2000 and walk.task.env_id == "zoo/dmc-walker-walk-v0"
    assert torch_equal(walk.observations, stand.observations) and not torch_equal(walk.rewards, stand.rewards)
    # Relabelling a task the domain does not have is refused with the domain's tasks listed.
    assert main(["datasets", "exorl", "import", "walker", "random", "fly", "--root", str(root)]) == 2
    assert "fly" in capsys.readouterr().err


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
