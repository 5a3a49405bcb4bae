"""Batched ensembles: every weight carries a leading member axis, one matmul per layer for all members.

Twin critics, EDAC's N critics and several seeds trained in one process are all one such module. A population
of P agents with C critics each is one ensemble of P * C members, population member p owning members
p * C ... p * C + C - 1 (`groups=P` below selects critics within every population member at once).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn.members import MemberRandom


@torch.no_grad()
def member_uniform_(
    tensor: torch.Tensor, low: float, high: float, random: MemberRandom | None = None
) -> None:
    """tensor <- U(low, high): from torch's global generator (nn.init.uniform_) without `random`; with an
    agent's `random` (zoo.nn.members.MemberRandom) from its generator(s): an ordinary agent's whole tensor
    from its own generator, a population's stacked tensor (member k owning rows k * s0 ... (k + 1) * s0 - 1)
    slice by slice, member k's from member k's generator with the shape an ordinary agent's tensor has, so
    that member k draws what a population of one (or the ordinary agent) with its seed draws:
    low + (high - low) u, u ~ U[0, 1)."""
    if random is None:
        nn.init.uniform_(tensor, low, high)
        return
    shape = tensor.shape
    if random.generators is not None and random.stacked:
        shape = (tensor.shape[0] // random.n_members, *tensor.shape[1:])
    u = random.rand(*shape, dtype=tensor.dtype, device=tensor.device)
    tensor.copy_((low + (high - low) * u).view(tensor.shape))


class EnsembleLinear(nn.Module):
    """`n_members` independent linear layers: (E, B, in) or shared (B, in) -> (E, B, out)."""

    def __init__(self, n_members: int, in_features: int, out_features: int):
        super().__init__()
        self.n_members, self.in_features, self.out_features = n_members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(n_members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(n_members, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self, random: MemberRandom | None = None) -> None:
        """nn.Linear's default for each member: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias (drawn
        from torch's global generator, or from an agent's `random`: see member_uniform_)."""
        bound = 1.0 / math.sqrt(self.in_features)
        member_uniform_(self.weight, -bound, bound, random)
        member_uniform_(self.bias, -bound, bound, random)

    def forward(
        self, x: torch.Tensor, members: slice | None = None, groups: int = 1, relu: bool = False
    ) -> torch.Tensor:
        """`members` selects members (within each of `groups` equal consecutive groups: a population's
        agents); x is (selected members, B, in) or shared (B, in). `relu`: ReLU applied in place on the
        product's fresh output (no second (E, B, out) tensor; the products' backward does not read their
        output, ReLU's reads its own result)."""
        weight, bias = self.weight, self.bias
        if members is not None:
            if groups == 1:
                weight, bias = weight[members], bias[members]
            else:
                weight = weight.view(groups, -1, *weight.shape[1:])[:, members].flatten(0, 1)
                bias = bias.view(groups, -1, *bias.shape[1:])[:, members].flatten(0, 1)
        if weight.shape[0] == 1 and (x.dim() == 2 or x.shape[0] == 1):  # one member: plain addmm is fastest
            out = torch.addmm(bias[0], x.reshape(-1, x.shape[-1]), weight[0])
            return (out.relu_() if relu else out).unsqueeze(0)  # ReLU before the view: in place on the base
        if self.out_features == 1:
            # A scalar head (Q-values): multiply-and-sum beats a batched matrix-vector product on CPU.
            out = (x * weight.transpose(1, 2)).sum(-1, keepdim=True) + bias
        else:
            if x.dim() == 2:  # the same input for every member
                x = x.expand(weight.shape[0], *x.shape)
            out = torch.baddbmm(bias, x, weight)
        return out.relu_() if relu else out

    def extra_repr(self) -> str:
        return f"n_members={self.n_members}, in_features={self.in_features}, out_features={self.out_features}"


class EnsembleMLP(nn.Module):
    """Linear -> [LayerNorm without affine] -> ReLU per hidden layer, for all members at once.

    LayerNorm sits after each Linear and before the ReLU, with no learnable scale/shift, as in
    "First Imitate, then Improve" (AdamJelley/EfficientOfflineRL).
    """

    def __init__(
        self,
        n_members: int,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (256, 256),
        layer_norm: bool = False,
        activate_output: bool = False,
    ):
        super().__init__()
        sizes = [in_features, *hidden, out_features]
        self.layers = nn.ModuleList(EnsembleLinear(n_members, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.layer_norm = layer_norm
        self.activate_output = (
            activate_output  # a feature extractor: [LayerNorm ->] ReLU after the last layer too
        )
        self.n_members = n_members

    def forward(self, x: torch.Tensor, members: slice | None = None, groups: int = 1) -> torch.Tensor:
        """ReLU works in place on each layer's fresh output (the product's, or LayerNorm's, whose backward
        reads its input and statistics, not its output): one (E, B, width) tensor per hidden layer, not two,
        which matters where those tensors outgrow the cache (a population's (K * 2, 256, 256) activations)."""
        for i, layer in enumerate(self.layers):
            activate = i < len(self.layers) - 1 or self.activate_output
            x = layer(x, members, groups, relu=activate and not self.layer_norm)
            if activate and self.layer_norm:
                x = F.layer_norm(x, x.shape[-1:]).relu_()
        return x


def initialize(mlp: EnsembleMLP, scheme: str = "default", output_bound: float | None = None) -> None:
    """Re-initialise every member of `mlp` the way a reference implementation does.

    - "default": nn.Linear's U(±1/sqrt(fan_in)) (what EnsembleLinear starts with).
    - "orthogonal": hidden weights orthogonal with gain sqrt(2), output gain 1e-2, biases 0
      (JaxCQL / Cal-QL `orthogonal_init`, CORL's CQL).
    - "edac": hidden biases 0.1, output weight and bias ~ U(±output_bound) (EDAC, SPOT on AntMaze).
    `output_bound` alone (any scheme) re-draws the output layer from U(±output_bound).
    """
    if scheme not in ("default", "orthogonal", "edac"):
        raise ValueError(f"Unknown initialisation '{scheme}': use 'default', 'orthogonal' or 'edac'.")
    *hidden, output = mlp.layers
    with torch.no_grad():
        if scheme == "orthogonal":
            for layer, gain in [*((h, math.sqrt(2.0)) for h in hidden), (output, 1e-2)]:
                for member in range(layer.n_members):
                    weight = torch.empty(layer.out_features, layer.in_features)
                    nn.init.orthogonal_(weight, gain)
                    layer.weight[member].copy_(weight.T)
                layer.bias.zero_()
        elif scheme == "edac":
            for layer in hidden:
                layer.bias.fill_(0.1)
        if output_bound is not None:
            nn.init.uniform_(output.weight, -output_bound, output_bound)
            nn.init.uniform_(output.bias, -output_bound, output_bound)
