"""Q-function ensembles over s ⊕ a.

An ordinary agent's critics take (B, d) inputs shared by its C critics and return (C, B). A population of
`n_members` = P agents (zoo.agents.population) takes (P, B, d), agent p's rows for its own C critics, and
returns (P, C, B): the critic axis is always second to last.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from zoo.nn.ensemble import EnsembleLinear, EnsembleMLP, initialize
from zoo.nn.scratch import Scratch

# Rows (sampled actions x states) that `many_actions`' CPU chain carries through all its layers at a time: a
# block's activations and gradients (four (rows, 256) float32 tensors, 8 MiB at 2048 rows) stay in the
# CPU's cache from one product to the next instead of streaming 31 x 256-row tensors through memory.
BLOCK_ROWS = 2048


def _population_rows(x: torch.Tensor, n_members: int, n_critics: int, members: slice | None) -> torch.Tensor:
    """(P, B, d) -> (P * c, B, d): each population member's rows repeated for its c selected critics."""
    selected = n_critics if members is None else len(range(n_critics)[members])
    return x.unsqueeze(1).expand(n_members, selected, *x.shape[1:]).flatten(0, 1)


class EnsembleQ(nn.Module):
    """`n_critics` Q-networks Q_i(s, a) evaluated together: returns (n_critics, batch)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n_critics: int = 2,
        hidden: Sequence[int] = (256, 256),
        layer_norm: bool = False,
        init: str = "default",
        output_bound: float | None = None,
        n_members: int = 1,
    ):
        super().__init__()
        self.n_critics, self.n_members = n_critics, n_members
        self.net = EnsembleMLP(n_members * n_critics, obs_dim + act_dim, 1, hidden, layer_norm)
        initialize(self.net, init, output_bound)  # see zoo.nn.ensemble.initialize for the schemes
        self.scratch = Scratch()  # many_actions' reused activations and gradients (CPU)
        self.block_rows = BLOCK_ROWS  # many_actions' CPU chain: rows per block (whole action sets at least)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        """Q_i(s, a): (C, B) for (B, d) inputs; (P, C, B) for a population's (P, B, d). `members` selects
        critics (of every population member)."""
        x = torch.cat([obs, actions], dim=-1)
        if x.dim() == 2:
            return self.net(x, members).squeeze(-1)
        rows = _population_rows(x, self.n_members, self.n_critics, members)
        return self.net(rows, members, self.n_members).view(self.n_members, -1, x.shape[1])

    def many_actions_in_scratch(self, device: torch.device, autocast: bool) -> bool:
        """Whether `many_actions` runs its CPU chain (scratch activations when no input needs a gradient and
        nothing is being compiled) rather than the batched `forward` on repeated states: on the CPU, without
        LayerNorm, outside autocast."""
        return torch.device(device).type == "cpu" and not self.net.layer_norm and not autocast

    def many_actions(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q_i(s_b, a_nb) for N actions at each state: (B, d) states and (N, B, |A|) actions -> (C, N, B);
        a population's (P, B, d) and (P, N, B, |A|) -> (P, C, N, B). The values of `forward` on the states
        repeated N times (equal up to float rounding: sums in another order).

        On the CPU it is arranged for a 2-core machine (CQL evaluates 31 actions per state here):
        - the first layer splits, W1 [s; a] + b1 = (W1_s s + b1) + W1_a a: its state half is computed once
          per state instead of N times, and the N-fold copy of the states is never made;
        - each critic is its own chain of addmm (2-D matrix products: their backward ran ~1.2x faster here
          than a batched baddbmm's over 31 x 256 rows), ReLU in place on each product's fresh output, in
          blocks of whole action sets of about `block_rows` rows carried through every layer (forward and
          backward), so that a block's activations and gradients stay in cache;
        - when neither states nor actions need a gradient (CQL's sampled actions), the hidden activations and
          the backward's gradients live in reused scratch tensors (`ManyActionsMLP`, zoo.nn.scratch): no
          fresh pages per update. Under torch.compile the same chain runs through autograd instead, in one
          block (the same operations: bitwise the eager path's values where N * B <= block_rows, to float
          rounding of the block-by-block weight-gradient sums above it).
        On other devices, with LayerNorm, or under autocast (bf16) it evaluates `forward` on the repeated
        states: one batched matmul per layer (a GPU's caching allocator reuses memory by itself)."""
        *members, n, b, act_dim = actions.shape
        if not self.many_actions_in_scratch(obs.device, torch.is_autocast_enabled(actions.device.type)):
            states = obs.unsqueeze(-3).expand(*members, n, *obs.shape[-2:]).reshape(*members, n * b, -1)
            return self(states, actions.reshape(*members, n * b, -1)).view(*members, -1, n, b)
        groups = members[0] if members else 1
        obs, actions = obs.reshape(groups, b, -1), actions.reshape(groups, n, b, act_dim)
        params = [tensor for layer in self.net.layers for tensor in (layer.weight, layer.bias)]
        if torch.compiler.is_compiling() or obs.requires_grad or actions.requires_grad:
            # unbind: one backward node per layer stacks the members' gradients (indexing would zero-fill a
            # full-size gradient per member).
            q = many_actions_chain(obs, actions, [p.unbind(0) for p in params], self.n_critics)
        else:
            graph = torch.is_grad_enabled() and any(p.requires_grad for p in params)
            block = max(1, self.block_rows // b)  # action sets per block
            q = ManyActionsMLP.apply(self.scratch, self.n_critics, block, graph, obs, actions, *params)
        return q.view(*members, self.n_critics, n, b)


def many_actions_chain(
    obs: torch.Tensor,
    actions: torch.Tensor,
    params: Sequence[Sequence[torch.Tensor]],
    n_critics: int,
    activations: torch.Tensor | None = None,
    block: int | None = None,
) -> torch.Tensor:
    """The forward of `EnsembleQ.many_actions` on the CPU: obs (G, B, d_s), actions (G, N, B, |A|), params
    [W_1, b_1, ..., W_L, b_L] indexable by ensemble member e (W_l[e]: (in, out), b_l[e]: (1, out)), member e
    reading population member e // n_critics's rows. Returns (E, N * B, out).

    Per member: h_1 = relu((W1_s s + b1) + W1_a a), h_l = relu(h_{l-1} W_l + b_l), q = h_{L-1} W_L + b_L,
    `block` action sets at a time through every layer (default: all N).
    With `activations` (a flat tensor of E * N * B * sum(hidden sizes) elements) each h_l is written into it,
    member by member and layer by layer (`hidden_views` finds them again); otherwise each is a fresh tensor."""
    weights, biases = params[0::2], params[1::2]
    n, b, act_dim = actions.shape[1:]
    obs_dim, block = obs.shape[-1], block or n
    views = None if activations is None else hidden_views(activations, weights, n * b)
    q = []
    for e in range(len(weights[0])):
        p = e // n_critics
        w1, b1 = weights[0][e], biases[0][e]
        state_half = torch.addmm(b1, obs[p], w1[:obs_dim])  # (B, H): once per state
        blocks = []
        for start in range(0, n, block):
            stop = min(n, start + block)
            out = None if views is None else views[e][0][start * b : stop * b].view(stop - start, b, -1)
            x = torch.baddbmm(
                state_half.expand(stop - start, b, -1), actions[p][start:stop],
                w1[obs_dim:].expand(stop - start, act_dim, -1), out=out,
            )
            x = x.relu_().view((stop - start) * b, -1)
            for layer in range(1, len(weights) - 1):
                out = None if views is None else views[e][layer][start * b : stop * b]
                x = torch.addmm(biases[layer][e], x, weights[layer][e], out=out).relu_()
            blocks.append(torch.addmm(biases[-1][e], x, weights[-1][e]))
        q.append(blocks[0] if len(blocks) == 1 else torch.cat(blocks))
    return torch.stack(q)


def hidden_views(activations: torch.Tensor, weights: Sequence[Sequence[torch.Tensor]], rows: int) -> list:
    """[[h_1, ..., h_{L-1}] per member]: (rows, width) views of a flat scratch tensor, in `many_actions_chain`'s
    order."""
    widths = [w[0].shape[-1] for w in weights[:-1]]
    chunks = iter(activations.split([rows * width for _ in weights[0] for width in widths]))
    return [[next(chunks).view(rows, width) for width in widths] for _ in weights[0]]


class ManyActionsMLP(torch.autograd.Function):
    """`many_actions_chain` with its hidden activations and its backward's gradients in scratch tensors, in
    blocks of `block` action sets.

    Only the parameters get gradients (states and actions must not need one). The backward runs autograd's
    operations for the chain, block by block: per member, from g = dL/dq down, dW_l = sum_blocks h_{l-1}^T g,
    db_l = sum_rows g, g <- (g W_l^T) * [h_{l-1} > 0]; at the first layer dW1_a = sum_N a_N^T g_N,
    g_s = sum_N g_N (the state half's gradient), dW1_s = s^T g_s, db1 = sum_B g_s. With one block the
    gradients are bitwise autograd's for the chain; with several, the sums over rows are taken block by
    block (float rounding). Two (block rows, width) gradient tensors take turns, written in place; the
    activations go back to the pool when the backward is done (a second backward of the same graph is
    refused)."""

    @staticmethod
    def forward(ctx, scratch: Scratch, n_critics: int, block: int, graph: bool, obs, actions, *params):
        """`graph`: a backward will follow (grad mode on, parameters that need a gradient), so the
        activations stay with this node; otherwise they go back to the pool at once (a target critic's
        evaluation: ctx.needs_input_grad, which reads only requires_grad, cannot tell under no_grad)."""
        weights = params[0::2]
        rows = actions.shape[1] * actions.shape[2]
        numel = len(weights[0]) * rows * sum(w.shape[-1] for w in weights[:-1])
        activations = scratch.take(numel, obs.dtype, obs.device)
        q = many_actions_chain(obs, actions, params, n_critics, activations, block)
        if graph:
            ctx.save_for_backward(obs, actions, *params)
            ctx.scratch, ctx.activations, ctx.n_critics, ctx.block = scratch, activations, n_critics, block
        else:
            scratch.give(activations)
        return q

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_q):
        if ctx.activations is None:
            raise RuntimeError(
                "EnsembleQ.many_actions' graph was already backpropagated and its activations reused: "
                "run backward once per evaluation (retain_graph is not supported here)."
            )
        obs, actions, *params = ctx.saved_tensors
        weights, biases = params[0::2], params[1::2]
        n, b = actions.shape[1:3]
        obs_dim, rows, block = obs.shape[-1], n * b, ctx.block
        views = hidden_views(ctx.activations, weights, rows)
        widest = max(w.shape[-2] for w in weights[1:])
        turns = [ctx.scratch.take(min(n, block) * b * widest, grad_q.dtype, grad_q.device) for _ in range(2)]
        grad_w, grad_b = [torch.empty_like(w) for w in weights], [torch.empty_like(bias) for bias in biases]
        state_grad = grad_q.new_empty(b, weights[0].shape[-1])
        for e in range(weights[0].shape[0]):
            p = e // ctx.n_critics
            for start in range(0, n, block):
                first, stop = start == 0, min(n, start + block)
                g = grad_q[e][start * b : stop * b]
                for layer in range(len(weights) - 1, 0, -1):
                    h = views[e][layer - 1][start * b : stop * b]  # this layer's input (the ReLU output)
                    _mm_into(grad_w[layer][e], h.t(), g, first)
                    _sum_into(grad_b[layer][e], g, first)
                    g_in = turns[layer % 2][: h.numel()].view_as(h)
                    torch.mm(g, weights[layer][e].t(), out=g_in)
                    g = torch.ops.aten.threshold_backward.grad_input(g_in, h, 0, grad_input=g_in)
                g = g.view(stop - start, b, -1)
                _sum_into(grad_w[0][e][obs_dim:], actions[p][start:stop].transpose(1, 2).bmm(g), first)
                _sum_into(state_grad, g, first)
            torch.mm(obs[p].t(), state_grad, out=grad_w[0][e][:obs_dim])
            torch.sum(state_grad, 0, keepdim=True, out=grad_b[0][e])
        for tensor in (*turns, ctx.activations):
            ctx.scratch.give(tensor)
        ctx.activations = None
        grads = [grad for pair in zip(grad_w, grad_b) for grad in pair]
        return (None, None, None, None, None, None, *grads)


def _mm_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, first: bool) -> None:
    """out <- a @ b for the first block, out += a @ b for the others."""
    if first:
        torch.mm(a, b, out=out)
    else:
        out.addmm_(a, b)


def _sum_into(out: torch.Tensor, x: torch.Tensor, first: bool) -> None:
    """out <- x summed over its first axis for the first block, out += that sum for the others."""
    keepdim = x.dim() == out.dim()
    if first:
        torch.sum(x, 0, keepdim=keepdim, out=out)
    else:
        out.add_(x.sum(0, keepdim=keepdim))


class SharedQ(nn.Module):
    """Shared Q-networks (Park, Park & Lee, PSQN): per critic, a backbone over s ⊕ a feeds two linear heads.

    z_i = h_i(s ⊕ a) (hidden layers with ReLU, the last one included), Q_i = f_i(z_i) (linear -> 1) and
    s'_i = g_i(z_i) (linear -> obs_dim, the predicted normalised next state). Each critic has its own
    backbone and heads; "shared" means Q and the transition head share one backbone
    (daisophila/PSQN TD3_BC_Pretrain.py: l1, l2 -> l3 and l31 for Q1; l4, l5 -> l6 and l62 for Q2).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n_critics: int = 2,
        hidden: Sequence[int] = (256, 256),
        layer_norm: bool = False,
        n_members: int = 1,
    ):
        super().__init__()
        if not hidden:
            raise ValueError("A shared Q-network needs at least one hidden layer for its backbone.")
        self.n_critics, self.n_members = n_critics, n_members
        n = n_members * n_critics
        # The backbone is an MLP whose last layer is hidden too: ReLU after it, heads on top.
        self.backbone = EnsembleMLP(n, obs_dim + act_dim, hidden[-1], hidden[:-1], layer_norm, activate_output=True)
        self.q_head = EnsembleLinear(n, hidden[-1], 1)
        self.transition_head = EnsembleLinear(n, hidden[-1], obs_dim)

    def features(
        self, obs: torch.Tensor, actions: torch.Tensor, members: slice | None = None
    ) -> torch.Tensor:
        """The backbone's output z_i: (C, B, h), or (P * C, B, h) for a population's (P, B, d) inputs."""
        x = torch.cat([obs, actions], dim=-1)
        if x.dim() == 2:
            return self.backbone(x, members)
        return self.backbone(_population_rows(x, self.n_members, self.n_critics, members), members, self.n_members)

    def _split(self, out: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """(P * c, B, k) -> (P, c, B, k) for a population; unchanged for an ordinary agent."""
        return out if obs.dim() == 2 else out.view(self.n_members, -1, *out.shape[1:])

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        groups = 1 if obs.dim() == 2 else self.n_members
        q = self.q_head(self.features(obs, actions, members), members, groups).squeeze(-1)
        return self._split(q, obs)

    def predict_next_observation(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(n_critics, batch, obs_dim) (a population: (P, n_critics, batch, obs_dim)): each critic's
        transition head on its own backbone."""
        return self._split(self.transition_head(self.features(obs, actions)), obs)
