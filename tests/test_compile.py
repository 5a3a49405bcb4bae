"""The `compile` setting (zoo.agents.compiled): the same agent with the loss computations compiled trains to
the same weights as eager, for an ordinary TD3+BC, a Cal-QL and a population of two TD3+BC members; the
setting is validated, recorded in checkpoints, and neither saved as a callable nor tied to the agent it
was built on.

Measured here (CPU, fp32): with inductor (compile=True) TD3+BC's weights after 10 updates differ from
eager by ~1.5e-8 (inductor's fused C++ kernels round differently); with the "aot_eager" backend (the same
aten kernels as eager) they are bitwise equal, for Cal-QL and the population too. Inductor compiles take
~45 s cold on this 2-core machine, so one test uses it and the others run aot_eager, which traces the same
graphs (dynamo, fullgraph) and runs them through AOTAutograd with the pre-drawn random tape.
"""

from __future__ import annotations

import copy

import pytest
import torch

from zoo.agents.compiled import CompiledLoss, inductor_missing
from zoo.agents.td3bc import TD3BC
from zoo.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from zoo.data import load_dataset, write_dataset
from zoo.errors import ConfigError
from zoo.registry import make_agent, make_population
from tests.test_population import random_episodes

DATASET = "zoo/hopper/compile-v0"
SMALL = dict(batch_size=32, policy_kwargs=dict(net_arch=[32, 32]))
SMALL_SAC = dict(batch_size=32, policy_kwargs=dict(net_arch=[32, 32], actor_net_arch=[32, 32]))


@pytest.fixture
def dataset():
    write_dataset(DATASET, random_episodes(), env_id="Hopper-v5")
    return load_dataset(DATASET, device="cpu")


def weight_difference(a, b) -> float:
    sa, sb = a.policy.state_dict(), b.policy.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[n] - sb[n]).abs().max().item() for n in sa)


def bitwise_equal(a, b) -> bool:
    sa, sb = a.policy.state_dict(), b.policy.state_dict()
    return all(torch.equal(sa[n], sb[n]) for n in sa)


def compiled_calls(agent) -> dict[str, int]:
    """Calls of each loss that ran the compiled function (not the eager recording or an eager fallback)."""
    return {name: agent.__dict__[name].compiled_calls for name in agent._compiled_names}


def test_td3bc_with_inductor_trains_as_eager(dataset):
    reason = inductor_missing()
    if reason:
        pytest.skip(reason)
    eager = make_agent("td3bc", dataset, seed=0, device="cpu", **SMALL).learn(10)
    compiled = make_agent("td3bc", dataset, seed=0, device="cpu", compile=True, **SMALL).learn(10)
    # Update 1 records the draws eagerly; updates 2..10 run compiled (the actor every 2nd update).
    assert compiled_calls(compiled) == {"critic_loss": 9, "actor_objective": 4}
    assert weight_difference(eager, compiled) <= 1e-5  # measured 1.5e-8
    assert weight_difference(eager, make_agent("td3bc", dataset, seed=0, device="cpu", **SMALL)) > 1e-3


def test_calql_compiled_is_bitwise_eager(dataset):
    eager = make_agent("calql", dataset, seed=0, device="cpu", **SMALL_SAC).learn(6)
    compiled = make_agent("calql", dataset, seed=0, device="cpu", compile="aot_eager", **SMALL_SAC).learn(6)
    assert compiled_calls(compiled) == {"actor_loss": 5, "critic_loss": 5}
    # Cal-QL's critic loss draws 3 times per update (K actions at s, K + K' at s', K random): all on the tape.
    (plan,) = compiled.__dict__["critic_loss"].plans.values()
    assert [draw.method for draw in plan] == ["randn_like", "randn_like", "rand_like"]
    assert bitwise_equal(eager, compiled)


def test_population_of_two_compiled_is_bitwise_eager(dataset):
    eager = make_population("td3bc", dataset, seeds=[0, 1], device="cpu", **SMALL).learn(10)
    compiled = make_population("td3bc", dataset, seeds=[0, 1], device="cpu", compile="aot_eager", **SMALL)
    compiled.learn(10)
    assert compiled_calls(compiled) == {"critic_loss": 9, "actor_objective": 4}
    assert bitwise_equal(eager, compiled)
    assert compiled.member(1).compile == "aot_eager"  # members export with the setting


def test_loss_drawing_outside_the_agents_source_stays_eager(dataset):
    """A loss that draws from torch's global generator cannot take its noise from the tape: the recording
    finds the generator advanced by more than the logged draws, warns, and keeps that loss eager."""

    class GlobalNoiseTD3BC(TD3BC):
        def critic_loss(self, batch):
            loss, stats = super().critic_loss(batch)
            return loss + 1e-3 * torch.randn(()), stats

    torch.manual_seed(7)
    eager = GlobalNoiseTD3BC(dataset, seed=0, device="cpu", **SMALL).learn(6)
    torch.manual_seed(7)
    with pytest.warns(UserWarning, match=r"GlobalNoiseTD3BC\.critic_loss draws random numbers outside"):
        compiled = GlobalNoiseTD3BC(dataset, seed=0, device="cpu", compile="aot_eager", **SMALL).learn(6)
    assert compiled_calls(compiled) == {"critic_loss": 0, "actor_objective": 2}
    assert bitwise_equal(eager, compiled)


def test_loss_that_cannot_be_one_graph_stays_eager(dataset):
    """EDAC's critic loss differentiates Q with torch.autograd.grad (its diversity term): the fullgraph trace
    fails before anything runs, the wrapper warns and runs it eagerly; its actor loss is compiled."""
    settings = dict(batch_size=32, policy_kwargs=dict(net_arch=[32, 32], n_critics=3))
    eager = make_agent("edac", dataset, seed=0, device="cpu", **settings).learn(4)
    with pytest.warns(UserWarning, match=r"EDAC\.critic_loss cannot be traced as one graph \(.*autograd\.grad"):
        compiled = make_agent("edac", dataset, seed=0, device="cpu", compile="aot_eager", **settings).learn(4)
    assert compiled_calls(compiled) == {"actor_loss": 3, "critic_loss": 0}
    assert bitwise_equal(eager, compiled)


def test_inductor_without_a_cpp_compiler_is_refused_in_one_line(dataset, monkeypatch):
    """Where inductor finds no C++ compiler (here: torch's own compiler setting pointed at a name that is not
    installed), compile=True is refused before set-up with the fix; aot_eager needs none and still runs."""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("zoo-test-no-such-compiler",))
    assert "zoo-test-no-such-compiler" in inductor_missing("cpu") and inductor_missing("cuda") is None
    with pytest.raises(ConfigError) as info:
        make_agent("td3bc", dataset, seed=0, device="cpu", compile=True, **SMALL)
    message = str(info.value)
    assert "\n" not in message and message.startswith("compile=True: inductor needs a C++ compiler on CPU")
    assert "compile='aot_eager'" in message
    assert make_agent("td3bc", dataset, seed=0, device="cpu", compile="aot_eager", **SMALL).learn(2).n_updates == 2


def test_setting_is_checked_recorded_and_not_saved(dataset, tmp_path):
    with pytest.raises(ConfigError) as info:
        make_agent("td3bc", dataset, compile="fast")
    message = str(info.value)
    assert "\n" not in message and message.startswith("compile='fast'") and "'reduce-overhead'" in message

    agent = make_agent("td3bc", dataset, seed=0, device="cpu", compile="aot_eager", **SMALL).learn(4)
    # zoo's checkpoint records the setting; the loaded agent compiles again (its own wrappers).
    save_checkpoint(agent, tmp_path / "ckpt")
    assert read_checkpoint_config(tmp_path / "ckpt")["agent"]["kwargs"]["compile"] == "aot_eager"
    loaded = load_checkpoint(tmp_path / "ckpt", dataset=dataset, device="cpu")
    assert loaded.compile == "aot_eager" and loaded.__dict__["critic_loss"].agent is loaded
    assert weight_difference(agent, loaded) == 0.0
    # SB3's zip leaves the wrappers out and loads with the setting.
    agent.save(tmp_path / "agent.zip")
    reloaded = TD3BC.load(tmp_path / "agent.zip", dataset=dataset, device="cpu")
    assert reloaded.compile == "aot_eager" and isinstance(reloaded.__dict__["critic_loss"], CompiledLoss)

    # A deep copy's wrappers compute with the copy's networks: after the original's critics move, the
    # copy's compiled loss still equals the copy's eager loss.
    twin = copy.deepcopy(agent)
    assert twin.__dict__["critic_loss"].agent is twin and twin.__dict__["critic_loss"].compiled_calls == 0
    with torch.no_grad():
        for p in agent.policy.critic.parameters():
            p.add_(1.0)
    batch = twin.sample(32)
    states = [torch.get_rng_state(), *twin.random.get_state()]

    def rewind():
        torch.set_rng_state(states[0])
        twin.random.set_state(states[1:])

    expected, _ = TD3BC.critic_loss(twin, batch)
    for _ in range(2):  # the recording call, then the compiled one
        rewind()
        value, _ = twin.critic_loss(batch)
        assert torch.equal(value, expected)
    assert twin.__dict__["critic_loss"].compiled_calls == 1
