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


@pytest.mark.parametrize("members", [None, 3])
def test_many_actions_equals_forward_and_its_scratch_backward_is_autograds(members):
    """EnsembleQ.many_actions (CQL's N actions per state) on the CPU: values equal `forward` on the repeated
    states (to float rounding: the first layer is split), and the scratch-tensor backward (ManyActionsMLP)
    gives bitwise the gradients autograd computes for the same chain of operations."""
    from zoo.nn.critics import many_actions_chain

    torch.manual_seed(0)
    lead = [members] if members else []
    critic = EnsembleQ(5, 3, n_critics=2, hidden=(16, 12, 8), n_members=members or 1)
    obs, actions = torch.randn(*lead, 9, 5), torch.rand(*lead, 4, 9, 3) * 2 - 1
    q = critic.many_actions(obs, actions)
    assert q.shape == (*lead, 2, 4, 9)
    states = obs.unsqueeze(-3).expand(*actions.shape[:-1], 5).reshape(*lead, 36, 5)
    repeated = critic(states, actions.reshape(*lead, 36, 3)).view(q.shape)
    torch.testing.assert_close(q, repeated, rtol=0, atol=1e-6)

    weight = torch.randn_like(q)
    (q * weight).sum().backward()
    scratch_grads = [p.grad.clone() for p in critic.parameters()]
    critic.zero_grad()
    params = [t for layer in critic.net.layers for t in (layer.weight, layer.bias)]
    groups = members or 1
    chain = many_actions_chain(
        obs.reshape(groups, 9, 5), actions.reshape(groups, 4, 9, 3), [p.unbind(0) for p in params], 2
    )
    assert torch.equal(chain.view(q.shape), q)
    (chain.view(q.shape) * weight).sum().backward()
    for ours, autograds in zip(scratch_grads, (p.grad for p in critic.parameters())):
        assert torch.equal(ours, autograds)
    (repeated * weight).sum().backward()  # and forward's own gradients (summed in another order) agree
    for ours, total in zip(scratch_grads, (p.grad for p in critic.parameters())):
        torch.testing.assert_close(2 * ours, total, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("members", [None, 3])
def test_many_actions_in_blocks_equals_one_block(members):
    """The CPU chain carries `block_rows` rows (whole action sets) through every layer at a time: 7 actions
    over 9 states in blocks of 2, 2, 2 and 1 action sets give one block's values (the same products per
    row) and its gradients up to the order of the sums over blocks."""
    torch.manual_seed(1)
    lead = [members] if members else []
    critic = EnsembleQ(5, 3, n_critics=2, hidden=(16, 12), n_members=members or 1)
    obs, actions = torch.randn(*lead, 9, 5), torch.rand(*lead, 7, 9, 3) * 2 - 1
    weight = torch.randn(*lead, 2, 7, 9)
    results = {}
    for block_rows in (10_000, 18, 9, 1):  # one block; 2 action sets per block; 1; 1 (at least one set)
        critic.block_rows = block_rows
        critic.zero_grad()
        q = critic.many_actions(obs, actions)
        (q * weight).sum().backward()
        results[block_rows] = q.detach(), [p.grad.clone() for p in critic.parameters()]
    q_one, grads_one = results[10_000]
    for block_rows in (18, 9, 1):
        q, grads = results[block_rows]
        torch.testing.assert_close(q, q_one, rtol=0, atol=1e-6)
        for ours, whole in zip(grads, grads_one):
            torch.testing.assert_close(ours, whole, rtol=1e-5, atol=1e-6)
    assert torch.equal(results[9][1][0], results[1][1][0])  # one action set per block either way
    assert not torch.equal(results[18][1][2], torch.zeros_like(results[18][1][2]))


def test_many_actions_reuses_its_scratch_and_refuses_a_second_backward():
    critic = EnsembleQ(5, 3, n_critics=2, hidden=(16, 16))
    obs, actions = torch.randn(9, 5), torch.rand(4, 9, 3)

    def activations(q):  # the saved hidden activations of the ManyActionsMLP node under q's view
        return q.grad_fn.next_functions[0][0].activations

    q = critic.many_actions(obs, actions)
    first = activations(q)
    q.sum().backward()
    for _ in range(2):  # while `first` is still referenced here, the next evaluation gets that very tensor
        q = critic.many_actions(obs, actions)
        assert activations(q) is first
        q.sum().backward()
    with torch.no_grad():  # no graph: the activations go straight back to the pool
        critic.many_actions(obs, actions)
    q = critic.many_actions(obs, actions)
    assert activations(q) is first
    q.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="retain_graph is not supported"):
        q.sum().backward()
    critic.zero_grad()
    obs.requires_grad_(True)  # a gradient for the states: the autograd chain instead of the scratch
    q = critic.many_actions(obs, actions)
    assert not hasattr(q.grad_fn.next_functions[0][0], "activations")
    q.sum().backward()
    assert obs.grad is not None and obs.grad.abs().sum() > 0
