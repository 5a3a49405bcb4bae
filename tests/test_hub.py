"""The pretrained zoo (zoo.hub): lookup order, names, listing, the Hub's failure lines, and every checkpoint
shipped in the package reproducing the actions recorded beside it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import zoo.hub as hub
from zoo import load_dataset, load_pretrained
from zoo.checkpoint import (
    CONFIG_NAME,
    REFERENCE_NAME,
    check_reference_actions,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from zoo.cli import main
from zoo.errors import DataError, UserError
from zoo.registry import make_agent

TINY = "zoo/hopper/tiny-v0"
OBSERVATIONS = np.random.default_rng(1).normal(size=(4, 11)).astype(np.float32)


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """A fresh $ZOO_HOME and a stand-in for the package's shipped folder; the Hub kept offline."""
    home, shipped = tmp_path / "zoo_home", tmp_path / "shipped"
    monkeypatch.setenv("ZOO_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "SHIPPED_ROOT", shipped)
    return home, shipped


def trained(dataset, steps: int):
    agent = make_agent("td3bc", dataset, batch_size=4, seed=0, policy_kwargs={"net_arch": [8, 8]})
    agent.learn(steps)
    return agent


def actions(agent) -> np.ndarray:
    return agent.predict(OBSERVATIONS, deterministic=True)[0]


def test_names():
    assert hub.repo_id("td3bc", "zoo/hopper/medium-v0") == "offline-zoo/td3bc-zoo-hopper-medium-v0"
    assert hub.repo_id("td3bc-mc", "D4RL/pen/human-v2", org="me") == "me/td3bc-mc-D4RL-pen-human-v2"
    assert hub.checkpoint_subpath("psqn", "zoo/walker2d/medium-v0", 3) == Path(
        "psqn/zoo/walker2d/medium-v0/seed3"
    )
    with pytest.raises(UserError, match="Unknown agent key 'td3cb'. Did you mean 'td3bc'?"):
        hub.checkpoint_subpath("td3cb", "zoo/hopper/medium-v0", 0)
    with pytest.raises(UserError, match="is not a dataset id"):
        hub.checkpoint_subpath("td3bc", "zoo/../../etc", 0)


def test_lookup_order_zoo_home_beats_shipped(tiny, roots):
    home, shipped = roots
    dataset = load_dataset(TINY, device="cpu")
    old, new = trained(dataset, 2), trained(dataset, 6)
    assert not np.array_equal(actions(old), actions(new))
    subpath = hub.checkpoint_subpath("td3bc", TINY, 0)

    save_checkpoint(old, shipped / subpath)
    assert hub.find_pretrained("td3bc", TINY, 0) == ("shipped", shipped / subpath)
    np.testing.assert_array_equal(actions(load_pretrained("td3bc", TINY)), actions(old))

    save_checkpoint(new, home / subpath)
    assert hub.find_pretrained("td3bc", TINY, 0) == ("local", home / subpath)
    agent = load_pretrained("td3bc", TINY, seed=0, dataset=dataset, device="cpu")
    np.testing.assert_array_equal(actions(agent), actions(new))

    # Ready to learn and fine-tune with its dataset: offline steps, then real Hopper-v5 env steps.
    agent.learn(2, reset_num_timesteps=False)
    assert agent._n_updates == 8
    agent.finetune(3)
    assert agent.num_timesteps == 3 and agent._n_updates == 11

    # A checkpoint in the wrong folder is refused rather than returned for the wrong request.
    save_checkpoint(new, home / hub.checkpoint_subpath("td3bc", TINY, 1))
    with pytest.raises(
        DataError,
        match="holds 'td3bc' on 'zoo/hopper/tiny-v0' seed 0, not 'td3bc' on 'zoo/hopper/tiny-v0' seed 1",
    ):
        load_pretrained("td3bc", TINY, seed=1)


def test_missing_checkpoint_is_one_line_naming_what_exists(tiny, roots, capsys):
    home, shipped = roots
    dataset = load_dataset(TINY, device="cpu")
    save_checkpoint(trained(dataset, 2), shipped / hub.checkpoint_subpath("td3bc", TINY, 0))
    with pytest.raises(UserError) as error:
        load_pretrained("td3bc", "zoo/hopper/medium-v0", seed=0)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        f"No pretrained 'td3bc' for 'zoo/hopper/medium-v0' seed 0 in $ZOO_HOME ({home}) or the package; "
        "available here: td3bc zoo/hopper/tiny-v0 seed 0."
    )
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        assert "The Hub was not tried: The Hugging Face Hub needs huggingface_hub" in message
    else:  # offline here: the Hub's own error, in one line, naming the repository
        assert (
            "The Hugging Face Hub repository offline-zoo/td3bc-zoo-hopper-medium-v0 could not be read"
            in message
        )

    assert main(["hub", "pull", "cql", TINY]) == 2
    assert "No pretrained 'cql' for 'zoo/hopper/tiny-v0' seed 0" in capsys.readouterr().err


def test_hub_list_and_copy(tiny, roots, capsys):
    home, shipped = roots
    dataset = load_dataset(TINY, device="cpu")
    agent = trained(dataset, 2)
    save_checkpoint(
        agent,
        shipped / hub.checkpoint_subpath("td3bc", TINY, 0),
        evaluation={
            "step": 2,
            "return_mean": 8.0,
            "return_std": 0.1,
            "normalized_score": 0.87,
            "episodes": 10,
        },
    )
    (home / "td3bc" / "junk" / "seed0").mkdir(parents=True)
    (home / "td3bc" / "junk" / "seed0" / CONFIG_NAME).write_text("{}")  # not a checkpoint: left out
    hub.copy_checkpoint(
        shipped / hub.checkpoint_subpath("td3bc", TINY, 0), home / hub.checkpoint_subpath("td3bc", TINY, 0)
    )
    entries = hub.list_pretrained()
    assert [
        (e.source, e.key, e.dataset_id, e.seed, e.normalized_score, e.episodes, e.gradient_steps)
        for e in entries
    ] == [
        ("local", "td3bc", TINY, 0, 0.87, 10, 2),
        ("shipped", "td3bc", TINY, 0, 0.87, 10, 2),
    ]
    assert main(["hub", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"local: {home}  shipped: {shipped}"
    assert lines[1].split()[:8] == ["local", "td3bc", TINY, "seed", "0", "0.9", "(10", "ep)"]
    assert len(lines) == 3


def test_push_refuses_a_broken_folder_before_the_network(tiny, roots, tmp_path):
    dataset = load_dataset(TINY, device="cpu")
    folder = save_checkpoint(trained(dataset, 2), tmp_path / "ck")
    (folder / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(DataError, match="does not match the checksum"):
        hub.push(folder)
    card = hub.model_card(read_checkpoint_config(tmp_path / "ck"), "me/td3bc-zoo-hopper-tiny-v0")
    assert 'os.environ["ZOO_HUB_ORG"] = "me"' in card
    assert 'agent = load_pretrained("td3bc", "zoo/hopper/tiny-v0", seed=0)' in card


SHIPPED = Path(hub.__file__).resolve().parent / "assets" / "pretrained"


@pytest.mark.parametrize(
    "folder",
    sorted(c.parent for c in SHIPPED.glob(f"**/seed*/{CONFIG_NAME}")),
    ids=lambda p: str(p.relative_to(SHIPPED)),
)
def test_shipped_checkpoint_reproduces_its_reference_actions(folder):
    """Every checkpoint in zoo/assets/pretrained loads (no dataset) and gives the actions recorded beside
    it; it is small (no optimizer state) and sits in the folder its config names."""
    config = read_checkpoint_config(folder)
    key, dataset_id, seed = config["agent"]["key"], config["dataset"]["id"], config["seed"]
    assert folder.relative_to(SHIPPED) == hub.checkpoint_subpath(key, dataset_id, seed)
    assert config["optimizers"] is None and config["evaluation"] is not None
    agent = load_checkpoint(folder, device="cpu")
    reference = json.loads((folder / REFERENCE_NAME).read_text())
    assert check_reference_actions(agent, reference, folder) <= 1e-5
