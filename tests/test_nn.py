"""Batched ensembles compute exactly what independent per-member layers compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.nn import DeterministicActor, EnsembleLinear, EnsembleMLP, EnsembleQ


def per_member(mlp: EnsembleMLP, member: int, x: torch.Tensor) -> torch.Tensor:
    *hidden, last = mlp.layers
    for layer in hidden:
        x = x @ layer.weight[member] + layer.bias[member, 0]
        if mlp.layer_norm:
            x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
        x = F.relu(x)
    return x @ last.weight[member] + last.bias[member, 0]


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("out_features", [1, 4])
def test_ensemble_mlp_equals_independent_members(layer_norm, out_features):
    torch.manual_seed(0)
    mlp = EnsembleMLP(3, 5, out_features, hidden=(8, 8), layer_norm=layer_norm)
    shared = torch.randn(7, 5)
    stacked = torch.randn(3, 7, 5)
    out_shared, out_stacked = mlp(shared), mlp(stacked)
    assert out_shared.shape == out_stacked.shape == (3, 7, out_features)
    for m in range(3):
        torch.testing.assert_close(out_shared[m], per_member(mlp, m, shared))
        torch.testing.assert_close(out_stacked[m], per_member(mlp, m, stacked[m]))
    # A slice of members uses only their weights.
    torch.testing.assert_close(mlp(shared, members=slice(1, 2))[0], per_member(mlp, 1, shared))


def test_members_get_independent_gradients():
    torch.manual_seed(0)
    layer = EnsembleLinear(2, 4, 3)
    x = torch.randn(6, 4)
    layer(x)[1].sum().backward()  # only member 1 contributes
    assert torch.count_nonzero(layer.weight.grad[0]) == 0
    torch.testing.assert_close(layer.weight.grad[1], x.sum(0, keepdim=True).T.expand(4, 3))


def test_initialisation_matches_nn_linear_bounds():
    torch.manual_seed(0)
    layer = EnsembleLinear(4, 256, 256)
    bound = 1 / 16
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.99 * bound
    assert not torch.equal(layer.weight[0], layer.weight[1])  # members start different


def test_critic_and_actor_shapes_and_ranges():
    torch.manual_seed(0)
    critic = EnsembleQ(11, 3, n_critics=2)
    actor = DeterministicActor(11, 3)
    obs = torch.randn(5, 11) * 10
    actions = actor(obs)
    assert actions.shape == (5, 3) and actions.abs().max() <= 1
    assert critic(obs, actions).shape == (2, 5)
    assert critic(obs, actions, members=slice(0, 1)).shape == (1, 5)
