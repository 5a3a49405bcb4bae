"""What K independent agents trained as one batched population need below the agents: their own random
streams, their own Adam learning rates, and per-member scalars that broadcast along the member axis.

A population keeps member k's randomness, optimizer state and hyperparameters apart from every other member's,
so that member k of a population trains exactly as a population of one with member k's seed (zoo.agents.
population). An ordinary agent keeps drawing from torch's global generator and stepping torch's fused Adam.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


class MemberRandom:
    """Random draws along the member axis: member k's slice comes from its own generator.

    With no generators (an ordinary agent) every draw is torch's own from the global generator, with the
    shape asked for. With K generators, a draw "like x" has x's shape (leading axis K) and row k is drawn
    from generator k alone, with the shape x[k] has: so member k's stream depends on its seed and on its own
    draws only, never on K or on the other members. The K draws are K small calls (one per member); they sit
    outside the batched matmuls and cost microseconds each.
    """

    def __init__(self, seeds: Sequence[int] | None = None, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.generators: list[torch.Generator] | None = None
        if seeds is not None:
            self.generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]

    @property
    def n_members(self) -> int:
        return 1 if self.generators is None else len(self.generators)

    def _draw(self, draw, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return torch.stack([draw(tuple(shape), generator=g, dtype=dtype, device=device) for g in self.generators])

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like x."""
        if self.generators is None:
            return torch.randn_like(x)
        return self._draw(torch.randn, x.shape[1:], x.dtype, x.device)

    def rand_like(self, x: torch.Tensor) -> torch.Tensor:
        """U[0, 1) noise shaped like x."""
        if self.generators is None:
            return torch.rand_like(x)
        return self._draw(torch.rand, x.shape[1:], x.dtype, x.device)

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """Standard normal noise of `shape` per member: (*shape) for an ordinary agent, (K, *shape) otherwise."""
        device = self.device if device is None else device
        if self.generators is None:
            return torch.randn(shape, dtype=dtype, device=device)
        return self._draw(torch.randn, shape, dtype, device)

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """U[0, 1) noise of `shape` per member: (*shape), or (K, *shape) for a population."""
        device = self.device if device is None else device
        if self.generators is None:
            return torch.rand(shape, dtype=dtype, device=device)
        return self._draw(torch.rand, shape, dtype, device)

    def randint(self, high: int, n: int, device=None) -> torch.Tensor:
        """n uniform indices in [0, high): (n,), or (K, n) with each member's row from its own generator."""
        device = self.device if device is None else device
        if self.generators is None:
            return torch.randint(high, (n,), device=device)
        return torch.stack([torch.randint(high, (n,), generator=g, device=device) for g in self.generators])

    def get_state(self) -> list[torch.Tensor]:
        """The generators' states (empty for an ordinary agent, whose draws are torch's global generator's)."""
        return [] if self.generators is None else [g.get_state() for g in self.generators]

    def set_state(self, states: Sequence[torch.Tensor]) -> None:
        for generator, state in zip(self.generators or [], states):
            generator.set_state(state)


GLOBAL_RANDOM = MemberRandom()  # an ordinary agent's draws: torch's global generator


def per_member(value, like: torch.Tensor):
    """A hyperparameter as it multiplies `like`: a float stays a float; a population's (K,) tensor of
    per-member values becomes (K, 1, ..., 1) so that member k's rows get member k's value."""
    if isinstance(value, torch.Tensor) and value.dim() == 1:
        return value.view(-1, *[1] * (like.dim() - 1))
    return value


def member_rows(value: torch.Tensor, tensor: torch.Tensor, n_members: int) -> torch.Tensor:
    """Per-member values (K,) broadcast over a stacked parameter `tensor` whose leading axis holds the K
    members' slices one after the other (K * s0 rows): (K * s0, 1, ..., 1)."""
    per_row = value.repeat_interleave(tensor.shape[0] // n_members) if tensor.dim() else value
    return per_row.view(-1, *[1] * max(tensor.dim() - 1, 0)).to(tensor.dtype)


class MemberAdam(torch.optim.Optimizer):
    """Adam on a population's stacked parameters, each member with its own learning rate.

    For every element of member k's slice, with g its gradient and t the step (all members step together):
        m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2,
        p <- p - lr_k / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    which is torch.optim.Adam's update written with foreach kernels and a per-member step size, so a member's
    update reads only its own slices. Parameters are stacked along their first axis, member k owning rows
    k * s0 ... (k + 1) * s0 - 1 (a 0-dim parameter of an ordinary agent is a (K,) vector here).

    :param params: the stacked parameters
    :param lr: one learning rate per member, (K,)
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: torch.Tensor, betas=(0.9, 0.999), eps=1e-8):
        lr = torch.as_tensor(lr, dtype=torch.float32).reshape(-1)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        self.n_members = int(lr.numel())
        self._lr_rows: dict[int, list[torch.Tensor]] = {}  # per group: each parameter's learning-rate rows

    def set_member_lr(self, lr: torch.Tensor) -> None:
        """Member k's learning rate becomes lr[k]."""
        for group in self.param_groups:
            group["lr"] = torch.as_tensor(lr, dtype=torch.float32).reshape(-1)
        self._lr_rows.clear()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            beta1, beta2 = group["betas"]
            lr_rows = self._lr_rows.get(index)
            if lr_rows is None:
                lr = group["lr"].to(group["params"][0].device)
                lr_rows = self._lr_rows[index] = [member_rows(lr, p, self.n_members) for p in group["params"]]
            rows = [r for p, r in zip(group["params"], lr_rows) if p.grad is not None]
            grads = [p.grad for p in params]
            for p in params:
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            states = [self.state[p] for p in params]
            exp_avgs = [s["exp_avg"] for s in states]
            exp_avg_sqs = [s["exp_avg_sq"] for s in states]
            # All members and all parameters of a group step together: one host-side count, no sync.
            step = group["step"] = group.get("step", 0) + 1
            torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - beta2)
            bias_correction1 = 1.0 - beta1**step
            bias_correction2_sqrt = (1.0 - beta2**step) ** 0.5
            denominators = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_div_(denominators, bias_correction2_sqrt)
            torch._foreach_add_(denominators, group["eps"])
            updates = torch._foreach_div(exp_avgs, denominators)
            torch._foreach_mul_(updates, rows)
            torch._foreach_mul_(updates, -1.0 / bias_correction1)
            torch._foreach_add_(params, updates)
        return loss
