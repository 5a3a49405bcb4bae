"""Bad input, everywhere it can come in: every hyperparameter of every agent key (generated from the
constructors' signatures), the command line (in process and as real subprocesses: exit code, one line,
no traceback), data that does not fit, and run folders that must not be overwritten."""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from tests.conftest import TINY_ID, tiny_episodes
from zoo.agents.pretraining import PRETRAINING
from zoo.cli import main
from zoo.data import load_dataset, write_dataset
from zoo.errors import ConfigError, DataError
from zoo.registry import AGENTS, make_agent
from zoo.validation import RANGES, Interval, check_value, parameters, policy_class

# ---------------------------------------------------------------------------- the table covers the signatures


def _agent_classes():
    for key, spec in AGENTS.items():
        for cls in dict.fromkeys([spec.cls, *spec.bases.values()]):
            yield key, cls


def _checked_parameters():
    """(owner, name, parameter) of every agent class, its policy class and every pretraining recipe."""
    owners = {cls for _, cls in _agent_classes()}
    owners |= {policy_class(cls) for cls in list(owners)} | set(PRETRAINING.values())
    for owner in sorted(owners, key=lambda c: c.__name__):
        for name, parameter in parameters(owner).items():
            yield owner, name, parameter


def test_every_hyperparameter_has_a_range_or_choices_and_its_default_passes():
    """A parameter added to any constructor without an entry in zoo.validation.RANGES fails here."""
    missing, failing = [], []
    for owner, name, parameter in _checked_parameters():
        if name not in RANGES:
            missing.append(f"{owner.__name__}.{name}")
        elif parameter.default is not inspect.Parameter.empty:
            try:
                check_value(name, parameter.default, parameter.annotation)
            except ConfigError as error:
                failing.append(str(error))
    assert not missing, f"no RANGES entry for {missing}"
    assert not failing, failing
    assert len(list(_checked_parameters())) > 60  # the walk reaches every class (agents, policies, recipes)


# ---------------------------------------------------------------------------- generated bad values

RULE_BAD = {  # (wrong type, out of range) for the settings whose rule is not an interval or choices
    "learning_rate": ("abc", 0.0),
    "pretrain": (3, "nope"),
    "pretrain_steps": ("abc", 1.5),
    "tensorboard_log": (3, ""),
    "device": (3, "gpu"),
    "ent_coef": ([1.0], -1.0),
    "target_entropy": ([1.0], math.inf),
    "log_std_bounds": ("abc", [2.0, -20.0]),
}


def bad_values(name: str) -> tuple[object, object]:
    """One value of the wrong type and one of the right type outside the allowed range, for `name`."""
    if name in RULE_BAD:
        return RULE_BAD[name]
    entry = RANGES[name]
    if isinstance(entry, tuple):
        if entry == (True, False):
            return "yes", 1  # 1 is not True: YAML's `yes` is a bool, an int is a typo
        return 3, "nope"
    interval = Interval.parse(entry)
    if interval.low > -math.inf:
        outside = interval.low - 1 if interval.low_closed else interval.low
    elif interval.high < math.inf:
        outside = interval.high + 1 if interval.high_closed else interval.high
    else:
        outside = math.nan if interval.low_closed else math.inf  # "[-inf, inf]" admits inf, never NaN
    if math.isfinite(outside) and float(outside).is_integer():
        outside = int(outside)  # of the right type for whole-number settings too (floats take ints)
    if name in ("net_arch", "actor_net_arch", "vae_net_arch", "density_net_arch"):
        return "abc", [256, outside]
    return "abc", outside


def _cases():
    for key, cls in _agent_classes():
        for name in parameters(cls):
            wrong, outside = bad_values(name)
            yield pytest.param(key, cls, {name: wrong}, name, id=f"{key}-{cls.__name__}-{name}-type")
            yield pytest.param(key, cls, {name: outside}, name, id=f"{key}-{cls.__name__}-{name}-range")
        policy = policy_class(cls)
        for name in parameters(policy):
            for kind, value in zip(("type", "range"), bad_values(name)):
                yield pytest.param(
                    key,
                    cls,
                    {"policy_kwargs": {name: value}},
                    name,
                    id=f"{key}-{cls.__name__}-policy_kwargs.{name}-{kind}",
                )
    for recipe_key, recipe in PRETRAINING.items():
        for name in parameters(recipe):
            for kind, value in zip(("type", "range"), bad_values(name)):
                kwargs = {"pretrain": recipe_key, "pretrain_steps": 10, "pretrain_kwargs": {name: value}}
                yield pytest.param(
                    "td3bc", AGENTS["td3bc"].cls, kwargs, name, id=f"{recipe_key}.{name}-{kind}"
                )


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("minari")
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        write_dataset(TINY_ID, tiny_episodes(), env_id="Hopper-v5")
        yield load_dataset(TINY_ID, device="cpu")
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


@pytest.mark.parametrize("key, cls, kwargs, name", list(_cases()))
def test_python_api_refuses_each_bad_hyperparameter(tiny_dataset, key, cls, kwargs, name):
    """Through make_agent (the registry) and the class itself: a ConfigError naming the setting, before any
    set-up (the check runs in OfflineAlgorithm.__new__)."""
    base = (
        next((b for b, c in AGENTS[key].bases.items() if c is cls), None)
        if cls is not AGENTS[key].cls
        else None
    )
    with pytest.raises(ConfigError) as info:
        make_agent(key, tiny_dataset, base=base, **{"device": "cpu", **kwargs})
    message = str(info.value)
    assert f"{name}=" in message and f"{name} must be" in message and f"(from {cls.__name__}(...))" in message
    assert "\n" not in message


def test_python_api_names_the_setting_value_and_range():
    from zoo import TD3BC

    with pytest.raises(
        ConfigError, match=r"^gamma=2 \(from TD3BC\(\.\.\.\)\): gamma must be a number in \[0, 1\)\.$"
    ):
        TD3BC(None, gamma=2)
    with pytest.raises(
        ConfigError, match=r"^batch_size=256\.0 .*: batch_size must be a whole number >= 1\.$"
    ):
        TD3BC(None, batch_size=256.0)
    with pytest.raises(
        ConfigError, match=r"policy_kwargs has no option 'n_critic' for TD3Policy.*Known: .*n_critics"
    ):
        TD3BC(None, policy_kwargs={"n_critic": 3})
    from zoo.agents import TD3

    with pytest.raises(ConfigError, match=r"^TD3 takes no setting 'alpha': its settings are .*policy_delay"):
        TD3(None, alpha=2.5)  # TD3+BC's, not TD3's: a ConfigError, not a TypeError from OfflineAlgorithm


# ---------------------------------------------------------------------------- the command line, in process


@pytest.fixture
def tiny_root(write_tiny, minari_root_per_test):
    write_tiny()
    return minari_root_per_test


TRAIN = ["train", "--algo", "td3bc", "--dataset", TINY_ID]
CLI_CASES = [
    (TRAIN[:2] + ["nope"] + TRAIN[3:], "unknown agent 'nope' (--algo): choose one of calql, cql, edac"),
    (TRAIN + ["--set", "alpha=abc"], "alpha='abc' (from --set): alpha must be a number >= 0."),
    (TRAIN + ["--set", "batch_size=0"], "batch_size=0 (from --set): batch_size must be a whole number >= 1."),
    (TRAIN + ["--set", "policy_delay=0"], "policy_delay must be a whole number >= 1"),
    (TRAIN + ["--set", "gamma=2"], "gamma=2 (from --set): gamma must be a number in [0, 1)."),
    (
        TRAIN + ["--set", "learning_rate=0"],
        "learning_rate=0 (from --set): learning_rate must be a number > 0",
    ),
    (TRAIN + ["--set", "n_finetune_timesteps=abc"], "n_finetune_timesteps='abc' (from --set)"),
    (TRAIN + ["--set", "policy_kwargs={n_critics: 0}"], "policy_kwargs: n_critics=0 (from --set)"),
    (TRAIN + ["--steps", "0"], "--steps 0: --steps must be a whole number >= 1."),
    (
        TRAIN + ["--finetune-steps", "-3"],
        "--finetune-steps -3: --finetune-steps must be a whole number >= 0.",
    ),
    (TRAIN + ["--fraction", "2"], "--fraction 2.0: --fraction must be a number in (0, 1]."),
    (TRAIN + ["--seed", "-1"], "--seed -1: --seed must be a whole number >= 0."),
    (TRAIN + ["--device", "gpu"], "device='gpu' is not a torch device"),
    (
        ["train", "--algo", "td3bc", "--dataset", "zoo/hopper/nothing-v0"],
        "Dataset 'zoo/hopper/nothing-v0' is not in",
    ),
    (["eval", "/nowhere/td3bc.zip"], "/nowhere/td3bc.zip"),
    (
        ["datasets", "make", "zoo/hopper/random-v0", "--steps", "0"],
        "--steps 0: --steps must be a whole number >= 1.",
    ),
    (["datasets", "make", "zoo/hopper/random-v0", "--n-envs", "0"], "--n-envs 0: --n-envs must be"),
]


@pytest.mark.parametrize("argv, expected", CLI_CASES, ids=[" ".join(c[0][-2:]) for c in CLI_CASES])
def test_cli_bad_input_is_one_line_and_exit_2(tiny_root, argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default run folder would land here
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo: error: "), captured.err
    assert expected in lines[0]
    assert ".zip.zip" not in lines[0]
    assert not (tmp_path / "runs").exists()  # refused before any run folder was made


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_quickstart_on_a_missing_device_writes_nothing(capsys, minari_root_per_test, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["quickstart", "--device", "cuda"]) == 2
    assert capsys.readouterr().err.strip() == (
        "zoo: error: device='cuda' is not available (this torch build has no CUDA): "
        "use --device cpu (or auto)."
    )
    assert not minari_root_per_test.exists() and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------- real subprocesses


def zoo(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", *argv], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_cli_subprocess_exit_codes_and_debug(tiny_root, tmp_path):
    """The installed entry point's behaviour as a user sees it: one line on stderr, exit 2, no traceback;
    --debug (anywhere on the line) shows the traceback."""
    done = zoo(*TRAIN, "--set", "alpha=abc", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "zoo: error: alpha='abc' (from --set): alpha must be a number >= 0."
    ]
    done = zoo(*TRAIN, "--set", "alpha=abc", "--debug", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("zoo.errors.ConfigError: alpha='abc'")


# ---------------------------------------------------------------------------- data that does not fit


def test_write_refuses_nan_and_out_of_space_actions(make_episode, minari_root_per_test):
    episode = make_episode(0, 5)
    episode.actions[2, 1] = np.nan  # NaN passes a bounds test written as `a < low or a > high`
    with pytest.raises(DataError, match=r"non-finite value \(nan\) in 'actions' at step 2"):
        write_dataset("zoo/hopper/nan-v0", [episode], env_id="Hopper-v5")
    episode = make_episode(0, 5)
    episode.actions[3, 0] = 1.5
    with pytest.raises(
        DataError,
        match=r"action outside Hopper-v5's action space in 'actions' at step 3, "
        r"dimension 0: 1.5 not in \[-1.0, 1.0\]",
    ):
        write_dataset("zoo/hopper/oob-v0", [episode], env_id="Hopper-v5")
    assert not minari_root_per_test.exists() or not any(minari_root_per_test.rglob("*.hdf5"))


def test_foreign_dataset_with_actions_outside_the_space_is_refused(
    make_episode, capsys, tmp_path, monkeypatch
):
    from tests.test_data import write_unchecked

    episodes = [make_episode(0, 5), make_episode(1, 4)]
    episodes[1].actions[2, 2] = -3.0
    write_unchecked("other/hopper/oob-v0", episodes)
    expected = (
        "'actions' at transition 7 (episode 1, step 2), dimension 2: -3.0 not in [-1.0, 1.0]. "
        "Clip the actions to the action space"
    )
    with pytest.raises(DataError) as info:
        load_dataset("other/hopper/oob-v0", device="cpu")
    assert expected in str(info.value)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--algo", "td3bc", "--dataset", "other/hopper/oob-v0"]) == 2
    assert expected in capsys.readouterr().err


def test_finetune_refuses_an_env_with_other_action_bounds(tiny_dataset):
    from gymnasium.wrappers import RescaleAction

    from zoo import TD3BC

    agent = TD3BC(tiny_dataset, device="cpu", batch_size=4)
    env = RescaleAction(gym.make("Hopper-v5"), -2.0, 2.0)
    with pytest.raises(
        DataError,
        match=r"The action space of the env \(Box\(-2.0, 2.0, \(3,\), float32\)\) does not match "
        r"the agent's \(Box\(-1.0, 1.0, \(3,\), float32\)\)",
    ):
        agent.finetune(10, env=env)
    assert agent.num_timesteps == 0


# ---------------------------------------------------------------------------- runs never destroy runs


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_rerun_into_an_existing_folder_leaves_the_first_run_byte_identical(tiny_root, tmp_path, capsys):
    out = tmp_path / "runs" / "run"
    argv = TRAIN + [
        "--steps",
        "20",
        "--set",
        "batch_size=4",
        "--set",
        "eval_freq=10",
        "--set",
        "n_eval_episodes=1",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    first = _tree_hashes(out)
    assert {"config.json", "evaluations.csv", "progress.csv", "learning_curve.png", "td3bc.zip"} <= set(first)
    capsys.readouterr()
    # The same command again, a failing --overwrite, an --overwrite refused during set-up: all leave it alone.
    assert main(argv) == 2
    assert f"--out {out} already holds a run" in capsys.readouterr().err
    assert main(argv + ["--overwrite", "--set", "gamma=2"]) == 2
    assert main(argv + ["--overwrite", "--set", "pretrain=imitate"]) == 2  # refused when the agent is built
    capsys.readouterr()
    assert _tree_hashes(out) == first
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]  # nothing moved aside, nothing half-made
    # --overwrite replaces the run whole: no old file is left beside the new ones, no backup remains.
    assert main(argv[:-2] + ["--set", "alpha=1.0", "--out", str(out), "--overwrite"]) == 0
    second = _tree_hashes(out)
    assert (
        second["config.json"] != first["config.json"] and '"alpha": 1.0' in (out / "config.json").read_text()
    )
    assert [r.split(",")[0] for r in (out / "evaluations.csv").read_text().splitlines()] == [
        "step",
        "10",
        "20",
    ]
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]


def test_default_out_is_a_new_numbered_folder(tiny_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = TRAIN + [
        "--steps",
        "4",
        "--set",
        "batch_size=4",
        "--set",
        "eval_freq=0",
        "--set",
        "n_eval_episodes=1",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0 and main(argv) == 0
    parent = tmp_path / "runs" / "td3bc" / TINY_ID.replace("/", "_")
    assert sorted(p.name for p in parent.iterdir()) == ["seed0_1", "seed0_2"]
    assert "checkpoint: runs/td3bc/zoo_hopper_tiny-v0/seed0_2/td3bc.zip" in capsys.readouterr().out


def test_an_exception_in_training_closes_the_progress_bar(tiny_root, tmp_path):
    """An exception that leaves learn() with SB3's rich progress bar open used to end in rich's
    "ImportError: sys.meta_path is None" at interpreter shutdown; the bar is closed (atexit) before."""
    script = tmp_path / "crash.py"
    script.write_text(
        "from zoo.agents import TD3\n"
        "from zoo.data import load_dataset\n"
        f"agent = TD3(load_dataset({TINY_ID!r}, device='cpu'), batch_size=4, device='cpu')\n"
        "def fail(local_vars, global_vars):\n"
        "    if local_vars['self'].num_timesteps == 3:\n"
        "        raise RuntimeError('a bug in a callback')\n"
        "    return True\n"
        "agent.learn(10, callback=fail, progress_bar=True)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.count("Traceback") == 1
    assert "RuntimeError: a bug in a callback" in done.stderr and "sys.meta_path" not in done.stderr


def test_progress_csv_is_rewritten_whole_and_matches_sb3s_writer(tmp_path):
    """zoo's progress.csv writer writes what SB3's writes (columns added later included), through zoo.io."""
    from stable_baselines3.common.logger import CSVOutputFormat

    from zoo.runs import AtomicCSVOutputFormat

    rows = [{"train/loss": 1.5, "time/step": 1000}, {"train/loss": 0.5, "time/step": 2000, "eval/return": 3.0}]
    ours, theirs = AtomicCSVOutputFormat(tmp_path / "ours.csv"), CSVOutputFormat(str(tmp_path / "sb3.csv"))
    assert (tmp_path / "ours.csv").read_text() == ""  # there from the start, as SB3's
    for row in rows:
        ours.write(row, {key: () for key in row})
        theirs.write(row, {key: () for key in row})
        assert (tmp_path / "ours.csv").read_text() == (tmp_path / "sb3.csv").read_text()
    theirs.close()
    header, *lines = (tmp_path / "ours.csv").read_text().splitlines()
    assert set(header.split(",")) == {"train/loss", "time/step", "eval/return"} and len(lines) == 2
    assert header.split(",")[-1] == "eval/return" and lines[0].endswith(",")  # the later column, empty first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours.csv", "sb3.csv"]  # no temporary left
