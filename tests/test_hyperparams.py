"""The shipped hyperparameter files: every section builds its agent, each domain gets its own settings (an
AntMaze run never gets locomotion defaults), typos are errors with the nearest valid key, td3bc-ln is
td3bc-mc without its pretraining, values name their provenance, and the YAMLs ship inside the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from zoo.cli import main
from zoo.config import HYPERPARAMS_DIR, load_hyperparams, read_table, resolve_hyperparams
from zoo.data import Episode, load_dataset, task_for, write_dataset
from zoo.data.tasks import DOMAINS, official_dataset_ids, section_keys, zoo_dataset_ids
from zoo.errors import ConfigError
from zoo.registry import AGENTS, PRETRAINING_SETTINGS, make_agent

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted(HYPERPARAMS_DIR.glob("*.yml"))


class StandInEnv(gym.Env):
    """An env of the given flat Box spaces, standing in for Gymnasium-Robotics envs that are not installed
    here (AntMaze, Adroit, Kitchen): the datasets only need its spaces."""

    def __init__(self, obs_dim: int, act_dim: int):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(self.observation_space.shape), {}

    def step(self, action):
        return np.zeros(self.observation_space.shape), 0.0, False, False, {}


# One stand-in dataset per env, written under a real id of that env. Spaces: D4RL's AntMaze layout (qpos 15
# + qvel 14; Minari's AntMaze datasets store a Dict that must be flattened before the zoo reads them), the
# Adroit v1 envs (pen 45/24, door 39/28, hammer 46/26, relocate 39/30), FrankaKitchen's observation (59/9);
# the MuJoCo and dm_control envs are the real ones.
STAND_INS = {"antmaze": (29, 8), "pen": (45, 24), "door": (39, 28), "hammer": (46, 26), "relocate": (39, 30),
             "kitchen": (59, 9)}
DATASETS = {
    "hopper": ("zoo/hopper/medium-v0", "Hopper-v5"),
    "halfcheetah": ("zoo/halfcheetah/medium-v0", "HalfCheetah-v5"),
    "walker2d": ("zoo/walker2d/medium-v0", "Walker2d-v5"),
    "antmaze": ("D4RL/antmaze/umaze-v1", "zoo-test/antmaze-standin-v0"),
    "pen": ("D4RL/pen/human-v2", "zoo-test/pen-standin-v0"),
    "door": ("D4RL/door/cloned-v2", "zoo-test/door-standin-v0"),
    "hammer": ("D4RL/hammer/expert-v2", "zoo-test/hammer-standin-v0"),
    "relocate": ("D4RL/relocate/human-v2", "zoo-test/relocate-standin-v0"),
    "kitchen": ("D4RL/kitchen/complete-v2", "zoo-test/kitchen-standin-v0"),
    "walker": ("zoo/exorl/walker-walk/rnd-v0", "zoo/dmc-walker-walk-v0"),
    "quadruped": ("zoo/exorl/quadruped-walk/rnd-v0", "zoo/dmc-quadruped-walk-v0"),
    "cheetah": ("zoo/exorl/cheetah-run/rnd-v0", "zoo/dmc-cheetah-run-v0"),
    "cartpole": ("zoo/exorl/cartpole-swingup/rnd-v0", "zoo/dmc-cartpole-swingup-v0"),
}
# The env whose stand-in serves a section key that is a domain.
DOMAIN_ENV = {
    "mujoco": "hopper", "antmaze": "antmaze", "adroit": "pen", "kitchen": "kitchen", "exorl": "walker",
}

for _name, (_obs, _act) in STAND_INS.items():
    if f"zoo-test/{_name}-standin-v0" not in gym.registry:
        gym.register(f"zoo-test/{_name}-standin-v0", entry_point="tests.test_hyperparams:StandInEnv",
                     kwargs={"obs_dim": _obs, "act_dim": _act})


def stand_in_episodes(env_id: str, env: str) -> list[Episode]:
    """Two 30-step episodes inside the env's spaces; AntMaze's first one fails (all rewards 0)."""
    with gym.make(env_id) as made:
        obs_dim, act_dim = made.observation_space.shape[0], made.action_space.shape[0]
    rng = np.random.default_rng(0)
    episodes = []
    for index in range(2):
        rewards = rng.normal(size=30)
        if env == "antmaze":
            rewards = np.zeros(30) if index == 0 else (np.arange(30) == 29).astype(float)
        terminations = np.zeros(30, bool)
        terminations[-1] = env == "antmaze" and index == 1  # the goal ends the episode
        episodes.append(Episode(
            observations=rng.normal(size=(31, obs_dim)), actions=rng.uniform(-0.9, 0.9, (30, act_dim)),
            rewards=rewards, terminations=terminations, truncations=~terminations & (np.arange(30) == 29),
            seed=index,
        ))
    return episodes


@pytest.fixture(scope="module")
def stand_in_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("minari")
    patch = pytest.MonkeyPatch()
    patch.setenv("MINARI_DATASETS_PATH", str(root))
    try:
        for env, (dataset_id, env_id) in DATASETS.items():
            write_dataset(dataset_id, stand_in_episodes(env_id, env), env_id=env_id, requirements=())
    finally:
        patch.undo()
    return root


@pytest.fixture
def stand_ins(stand_in_root, monkeypatch) -> Path:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(stand_in_root))
    return stand_in_root


def representative(key: str) -> tuple[str, str]:
    """(dataset id whose resolution exercises section `key`, env of the stand-in to build the agent on)."""
    if key in DOMAIN_ENV:
        env = DOMAIN_ENV[key]
        return DATASETS[env][0], env
    if key in DATASETS:
        return DATASETS[key][0], key
    if "/" in key:
        domain, env = section_keys(key)[:2]
        return key, domain if domain in ("antmaze", "kitchen") else env
    raise AssertionError(f"no representative dataset for section {key!r}")


def test_every_agent_has_a_shipped_file_that_names_its_domains():
    assert {path.stem for path in SHIPPED} == set(AGENTS)
    for path in SHIPPED:
        table = read_table(path)
        assert "default" in table and any(key in DOMAINS for key in table), path.name
        assert "# " in path.read_text().split("default:")[0], f"{path.name} cites no source"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.stem)
def test_every_section_constructs_its_agent(path, stand_ins):
    algo = path.stem
    loaded = {}
    for key in read_table(path):
        if key == "default":
            continue
        dataset_id, env = representative(key)
        kwargs, run = load_hyperparams(algo, dataset_id)
        assert run["n_timesteps"] > 0 and run["eval_freq"] > 0
        if env not in loaded:
            loaded[env] = load_dataset(DATASETS[env][0], device="cpu")
        agent = make_agent(algo, loaded[env], seed=0, device="cpu", **kwargs)
        for name, value in kwargs.items():
            if name not in ("policy_kwargs", "pretrain_kwargs", "base", "ent_coef", "learning_rate"):
                assert getattr(agent, name) == value, (algo, key, name)
        observation = np.zeros(loaded[env].observation_space.shape, np.float32)
        action, _ = agent.predict(observation, deterministic=True)
        assert action.shape == loaded[env].action_space.shape


def test_antmaze_gets_its_own_settings_and_never_the_locomotion_defaults(stand_ins, capsys):
    kwargs, run = load_hyperparams("calql", "D4RL/antmaze/large-diverse-v1")
    assert (kwargs["reward_scale"], kwargs["reward_bias"], kwargs["failure_reward"]) == (10.0, -5.0, 0.0)
    assert kwargs["cql_lagrange"] and kwargs["cql_target_action_gap"] == 0.8 and kwargs["cql_weight"] == 5.0
    assert not kwargs["normalize_observations"] and kwargs["online_mixing_ratio"] == 0.5
    networks = kwargs["policy_kwargs"]
    assert networks["net_arch"] == [256] * 4 and networks["actor_net_arch"] == [256] * 2
    budget = (run["n_timesteps"], run["n_finetune_timesteps"], run["n_eval_episodes"])
    assert budget == (1_000_000, 1_000_000, 20)
    agent = make_agent("calql", load_dataset("D4RL/antmaze/umaze-v1", device="cpu"), device="cpu", **kwargs)
    assert agent.cql_lagrange and agent.failure_reward == 0.0 and agent.reward_scale == 10.0
    # The locomotion settings stay with the locomotion datasets.
    kwargs, _ = load_hyperparams("calql", "zoo/hopper/medium-v0")
    assert kwargs["normalize_observations"] and not kwargs["cql_lagrange"] and "failure_reward" not in kwargs
    # Dense D4RL Adroit: CORL's Cal-QL settings, no binary-Adroit reward transform or failure rule.
    kwargs, _ = load_hyperparams("calql", "D4RL/door/cloned-v2")
    assert kwargs["cql_weight"] == 1.0 and kwargs["cql_clip_diff_min"] == -200.0
    assert "failure_reward" not in kwargs
    assert "reward_scale" not in kwargs and not kwargs["normalize_observations"]
    kwargs, run = load_hyperparams("calql", "D4RL/kitchen/mixed-v2")
    assert not kwargs["importance_sample"] and kwargs["online_mixing_ratio"] == 0.25
    assert run["n_timesteps"] == 500_000 and kwargs["policy_kwargs"]["net_arch"] == [512] * 3
    # A method whose file does not cover AntMaze refuses it, from Python and from the command line.
    refused = r"td3bc-mc.yml has no settings for 'D4RL/antmaze/umaze-v1' \(domain: antmaze\); it covers"
    refused += " mujoco"
    with pytest.raises(ConfigError, match=refused + ".*section for 'antmaze'"):
        load_hyperparams("td3bc-mc", "D4RL/antmaze/umaze-v1")
    out = stand_ins / "runs"
    assert main(["train", "--algo", "edac", "--dataset", "D4RL/antmaze/umaze-v1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "edac.yml has no settings for 'D4RL/antmaze/umaze-v1'" in err
    assert len(err.strip().splitlines()) == 1


def test_every_listed_official_and_zoo_id_resolves_where_its_method_covers_it():
    covered = {algo: [] for algo in AGENTS}
    mujoco = ("hopper", "halfcheetah", "walker2d", "ant")  # of Minari's mujoco/* envs
    listed = (
        tuple(i for i in zoo_dataset_ids() + official_dataset_ids() if not i.startswith("mujoco/"))
        + tuple(f"mujoco/{env}/{level}-v0" for env in mujoco for level in ("simple", "medium", "expert"))
        + ("zoo/exorl/walker-run/rnd-v0",)
    )
    for algo in AGENTS:
        for dataset_id in listed:
            try:
                load_hyperparams(algo, dataset_id)
            except ConfigError as error:
                assert "has no settings for" in str(error), (algo, dataset_id, error)
            else:
                covered[algo].append(dataset_id)
    antmaze = [f"D4RL/antmaze/{name}-v1" for name in
               ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")]
    for algo in ("calql", "cql", "spot", "td3bc", "opt-spot"):
        assert set(antmaze) <= set(covered[algo]), algo
    for algo in ("td3bc-mc", "td3bc-ln", "edac-mc", "opt", "psqn", "edac", "td3"):
        assert not set(antmaze) & set(covered[algo]), algo
    assert "D4RL/kitchen/partial-v2" in covered["calql"] and "D4RL/relocate/expert-v2" in covered["edac"]
    assert set(zoo_dataset_ids()) <= set(covered["td3bc-ln"])
    assert not set(zoo_dataset_ids()) & set(covered["opt-spot"])
    assert "zoo/exorl/walker-run/rnd-v0" in set(covered["psqn"]) & set(covered["td3"])
    # Per-dataset values reach the official ids: SPOT's lambda per maze, EDAC's N and eta per Adroit task.
    assert load_hyperparams("spot", "D4RL/antmaze/medium-diverse-v1")[0]["lambd"] == 0.025
    kwargs, _ = load_hyperparams("edac", "D4RL/pen/human-v2")
    assert (kwargs["eta"], kwargs["policy_kwargs"]["n_critics"]) == (1000.0, 20)
    kwargs, _ = load_hyperparams("edac", "D4RL/hammer/cloned-v2")
    assert (kwargs["eta"], kwargs["policy_kwargs"]["n_critics"]) == (200.0, 50)
    assert load_hyperparams("td3bc-mc", "mujoco/hopper/medium-v0")[0]["alpha"] == 10.0


def test_exorl_ids_pick_up_family_task_and_id_sections(tmp_path):
    dataset_id = "zoo/exorl/walker-run/rnd-v0"
    assert section_keys(dataset_id) == ("exorl", "walker", "walker-run", dataset_id)
    kwargs, run = load_hyperparams("psqn", dataset_id)
    assert kwargs["base"] == "td3" and run["n_timesteps"] == 500_000 and "alpha" not in kwargs
    assert load_hyperparams("psqn", "zoo/hopper/medium-v0")[0]["alpha"] == 2.5
    with pytest.raises(ConfigError, match="covers mujoco, exorl \\(walker\\)"):
        load_hyperparams("psqn", "zoo/exorl/quadruped-walk/rnd-v0")
    hyper = tmp_path / "td3.yml"
    hyper.write_text(
        "default: {batch_size: 32, tau: 0.1, gamma: 0.9, learning_rate: 0.01}\n"
        "exorl: {batch_size: 64, tau: 0.2, gamma: 0.8}\n"
        "walker: {batch_size: 128, tau: 0.3}\n"
        "walker-run: {batch_size: 512}\n"
        f"{dataset_id}: {{policy_delay: 3}}\n"
    )
    resolved = resolve_hyperparams("td3", dataset_id, hyper)
    assert resolved.sections == ("default", "exorl", "walker", "walker-run", dataset_id)
    expected = {"batch_size": 512, "tau": 0.3, "gamma": 0.8, "learning_rate": 0.01, "policy_delay": 3}
    assert resolved.kwargs == expected
    assert resolved.sources["tau"] == f"{hyper} section 'walker'"
    kwargs, _ = load_hyperparams("td3", "zoo/exorl/walker-walk/rnd-v0", hyper)
    assert kwargs["batch_size"] == 128  # walker-run is not walker-walk's family


@pytest.mark.parametrize("key, nearest", [
    ("hoper", "hopper"),
    ("zoo/hopper/medium-v1", "zoo/hopper/medium-v0"),
    ("D4RL/antmaze/umaze-v2", "D4RL/antmaze/umaze-v1"),
    ("zoo/exorl/walker-run/rdn-v0", "zoo/exorl/walker-run/rnd-v0"),
    ("antmze", "antmaze"),
    ("defualt", "default"),
])
def test_a_section_key_that_matches_nothing_is_an_error_naming_the_nearest(tmp_path, key, nearest):
    hyper = tmp_path / "td3bc.yml"
    hyper.write_text(f"default: {{alpha: 2.5}}\n{key}: {{alpha: 3.0}}\n")
    with pytest.raises(ConfigError, match=f"section '{key}' matches no dataset id.*did you mean '{nearest}'"):
        load_hyperparams("td3bc", "zoo/walker2d/medium-v0", hyper)


def test_own_datasets_and_settings_in_unused_sections_are_checked(tmp_path, minari_root_per_test, capsys):
    hyper = tmp_path / "td3bc.yml"
    # A section for the dataset being trained is known even when the zoo has never heard of its id.
    hyper.write_text("default: {alpha: 2.5}\nzoo/hopper/mine-v0: {alpha: 4.0}\n")
    assert load_hyperparams("td3bc", "zoo/hopper/mine-v0", hyper)[0] == {"alpha": 4.0}
    # So is a dataset of the local Minari root.
    hyper.write_text("default: {alpha: 2.5}\nzoo/hopper/mine-v0: {alpha: 4.0}\n")
    with pytest.raises(ConfigError, match="'zoo/hopper/mine-v0' matches no dataset id"):
        load_hyperparams("td3bc", "zoo/hopper/medium-v0", hyper)
    write_dataset("zoo/hopper/mine-v0", stand_in_episodes("Hopper-v5", "hopper"), env_id="Hopper-v5")
    assert load_hyperparams("td3bc", "zoo/hopper/medium-v0", hyper)[0] == {"alpha": 2.5}
    # A misspelt setting is an error even in a section this run does not use, with the likely name.
    hyper.write_text("default: {alpha: 2.5}\nantmaze: {aplha: 3.0}\n")
    with pytest.raises(ConfigError, match=r"td3bc.yml section 'antmaze': unknown setting\(s\) \['aplha'\].*"
                                          r"'aplha' -> 'alpha'\?"):
        load_hyperparams("td3bc", "zoo/hopper/medium-v0", hyper)
    # A user file without domain sections applies its default to every dataset.
    hyper.write_text("default: {alpha: 3.5}\nhopper: {alpha: 4.5}\n")
    assert load_hyperparams("td3bc", "D4RL/antmaze/umaze-v1", hyper)[0] == {"alpha": 3.5}
    assert load_hyperparams("td3bc", "zoo/walker2d/medium-v0", hyper)[0] == {"alpha": 3.5}


def test_bad_values_name_the_section_or_flag_they_came_from(tmp_path):
    hyper = tmp_path / "edac.yml"
    hyper.write_text(
        "default: {eta: 1.0, policy_kwargs: {n_critics: 10}}\nmujoco: {}\n"
        "hopper: {eta: -1.0}\nwalker2d: {policy_kwargs: {n_critics: 0}}\nhalfcheetah: {n_eval_episodes: 0}\n"
    )
    with pytest.raises(ConfigError, match=rf"eta=-1.0 \(from {hyper} section 'hopper'\)"):
        load_hyperparams("edac", "zoo/hopper/medium-v0", hyper)
    with pytest.raises(ConfigError, match=rf"n_critics.*from {hyper} section 'walker2d'"):
        load_hyperparams("edac", "zoo/walker2d/medium-v0", hyper)
    with pytest.raises(ConfigError, match=rf"n_eval_episodes=0 \(from {hyper} section 'halfcheetah'\)"):
        load_hyperparams("edac", "zoo/halfcheetah/medium-v0", hyper)
    with pytest.raises(ConfigError, match=r"eta=-2 \(from --set\)"):
        load_hyperparams("edac", "zoo/halfcheetah/medium-v0", overrides={"eta": -2})
    # psqn's ExoRL base is TD3: a TD3+BC-only setting there is named with its section.
    with pytest.raises(ConfigError, match=r"\['alpha'\] \(from --set\) do not apply to 'psqn' built on TD3"):
        load_hyperparams("psqn", "zoo/exorl/walker-walk/rnd-v0", overrides={"alpha": 2.5})


def test_td3bc_ln_is_td3bc_mc_without_the_pretraining(stand_ins):
    mc_table = read_table(HYPERPARAMS_DIR / "td3bc-mc.yml")
    ln_table = read_table(HYPERPARAMS_DIR / "td3bc-ln.yml")
    assert set(mc_table) == set(ln_table)
    for key in mc_table:
        assert ln_table[key] == {k: v for k, v in mc_table[key].items() if k not in PRETRAINING_SETTINGS}, key
        dataset_id = representative(key)[0] if key != "default" else "zoo/walker2d/expert-v0"
        mc, mc_run = load_hyperparams("td3bc-mc", dataset_id)
        ln, ln_run = load_hyperparams("td3bc-ln", dataset_id)
        assert ln_run == mc_run and ln == {k: v for k, v in mc.items() if k not in PRETRAINING_SETTINGS}, key
        assert mc["pretrain"] == "imitate" and mc["pretrain_steps"] == 10_000
    mc_spec, ln_spec = AGENTS["td3bc-mc"], AGENTS["td3bc-ln"]
    assert ln_spec.cls is mc_spec.cls
    assert ln_spec.defaults == {k: v for k, v in mc_spec.defaults.items() if k not in PRETRAINING_SETTINGS}
    # The same networks, parameter for parameter; only td3bc-mc has a pretraining phase.
    hopper = load_dataset("zoo/hopper/medium-v0", device="cpu")
    mc_agent, ln_agent = (
        make_agent(key, hopper, seed=0, device="cpu", **load_hyperparams(key, hopper.dataset_id)[0])
        for key in ("td3bc-mc", "td3bc-ln")
    )
    assert [(n, p.shape) for n, p in mc_agent.policy.named_parameters()] == [
        (n, p.shape) for n, p in ln_agent.policy.named_parameters()
    ]
    assert mc_agent.alpha == ln_agent.alpha == 10.0
    assert ln_agent.pretrain is None and mc_agent.pretrain == "imitate"


def test_official_ids_know_their_env_and_reference_scores(stand_ins):
    antmaze = load_dataset("D4RL/antmaze/umaze-v1", device="cpu")
    assert (antmaze.task.ref_min_score, antmaze.task.ref_max_score) == (0.0, 1.0)
    assert antmaze.task.normalized_score(0.5) == pytest.approx(50.0)  # success rate x 100
    pen = load_dataset("D4RL/pen/human-v2", device="cpu")
    assert (pen.task.ref_min_score, pen.task.ref_max_score) == (96.262799, 3076.8331017826877)
    assert task_for("D4RL/door/human-v2").env_id == "AdroitHandDoor-v1"
    assert task_for("D4RL/relocate/expert-v2").ref_min_score == -6.425911
    assert task_for("D4RL/kitchen/mixed-v2") == task_for("D4RL/kitchen/complete-v2")
    assert task_for("D4RL/kitchen/partial-v2").normalized_score(4.0) == pytest.approx(100.0)
    # Minari's own references win over D4RL's.
    assert task_for("D4RL/pen/human-v2", {"ref_min_score": 1.0, "ref_max_score": 2.0}).ref_max_score == 2.0
    with pytest.raises(ValueError, match="Cannot tell which environment"):
        task_for("D4RL/antmaze/umaze-v1")  # the maze is in the dataset's env_spec, not in its id


def test_the_wheel_ships_the_hyperparameter_files(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "zoo", source / "zoo", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
                   cwd=source, check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("offline_zoo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"zoo/hyperparams/{path.name}" for path in SHIPPED} <= names
    assert "zoo/config.py" in names
    # Installed from the wheel (not this checkout), the package finds its own settings.
    target = tmp_path / "installed"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    probe = ("import zoo.config as c; k, r = c.load_hyperparams('calql', 'D4RL/antmaze/umaze-v1'); "
             "print(c.__file__, r['n_eval_episodes'], k['reward_bias'])")
    env = {**os.environ, "PYTHONPATH": str(target)}
    printed = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, check=True,
                             capture_output=True, text=True, timeout=300).stdout.split()
    assert printed == [str(target / "zoo" / "config.py"), "20", "-5.0"]
