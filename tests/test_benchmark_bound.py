"""benchmarks/throughput.py's `products_only`: the bound it prints replays exactly the matrix products of the
update it stands for (the same ops, shapes, strides and dtypes, so the same FLOPs), and nothing else."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from zoo.agents import CQL, TD3BC
from zoo.data import load_dataset

_SPEC = importlib.util.spec_from_file_location(
    "throughput", Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"
)
throughput = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(throughput)


def recorded(step, calls: int = 1) -> list:
    with throughput._RecordProducts() as record:
        for _ in range(calls):
            step()
    return record.calls


def flops(step, calls: int = 1) -> int:
    with FlopCounterMode(display=False) as counter:
        for _ in range(calls):
            step()
    return counter.get_total_flops()


def test_replay_runs_the_same_products_on_transposed_broadcast_and_out_operands():
    a, b = torch.randn(5, 7), torch.randn(5, 3)
    batch, bias, out = torch.randn(4, 6, 7), torch.randn(4, 1, 3), torch.empty(5, 3)

    def step():
        torch.mm(a.t(), b)  # a transposed operand: strides (1, 7)
        torch.baddbmm(bias, batch, torch.ones(7, 3).expand(4, 7, 3))  # a broadcast operand: stride 0
        torch.addmm(b[0], a, torch.ones(7, 3), out=out)
        (a * 2).sum()  # not a product: left out

    original, replay = recorded(step), throughput.products_only(step, torch.device("cpu"), updates=1)
    again = recorded(replay)
    assert [(f, args, kwargs) for f, args, kwargs in again] == original
    assert [f.__name__ for f, _, _ in original] == ["mm.default", "baddbmm.default", "addmm.out"]
    assert original[0][1][0] == ((7, 5), (1, 7), torch.float32)
    assert original[1][1][2] == ((4, 7, 3), (0, 3, 1), torch.float32)
    assert flops(replay) == flops(step) == 2 * (7 * 5 * 3 + 4 * 6 * 7 * 3 + 5 * 7 * 3)


@pytest.mark.parametrize("cls", [TD3BC, CQL])
def test_an_agents_bound_replays_its_updates_products(tiny, cls):
    """Two updates of a real agent (TD3+BC: a critic and an actor step; CQL: its sampled-action chain in
    scratch tensors): the replay has the same FLOPs, op by op."""
    dataset = load_dataset(tiny.dataset_id, device="cpu")
    agent = cls(dataset, seed=0, device="cpu", batch_size=8, policy_kwargs={"net_arch": [16, 16]})
    agent.learn(2)

    def step():
        agent.train(gradient_steps=1, batch_size=8)

    replay = throughput.products_only(step, torch.device("cpu"), updates=2)
    products = recorded(step, calls=2)
    assert len(products) > 10
    assert recorded(replay) == products
    assert flops(replay) == flops(step, calls=2) > 0
