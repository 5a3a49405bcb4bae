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

    With K generators (a population), a draw "like x" has x's shape (leading axis K) and row k is drawn from
    generator k alone, with the shape x[k] has: so member k's stream depends on its seed and on its own draws
    only, never on K or on the other members. The K draws are K small calls (one per member); they sit outside
    the batched matmuls and cost microseconds each. An ordinary agent (`MemberRandom.ordinary(seed)`) has one
    generator and no member axis: its draws are the ones member k of a population with seed k makes, so an
    ordinary agent with seed k trains as that member. Without generators (`GLOBAL_RANDOM`, what a network
    uses before an agent gives it its own) every draw is torch's own from the global generator.
    """

    def __init__(
        self, seeds: Sequence[int] | None = None, device: torch.device | str = "cpu", stacked: bool = True
    ):
        self.device = torch.device(device)
        self.stacked = stacked  # draws carry a leading member axis (a population) or not (an ordinary agent)
        self.generators: list[torch.Generator] | None = None
        if seeds is not None:
            self.generators = [torch.Generator(device=self.device) for _ in seeds]
            for generator, seed in zip(self.generators, seeds):
                if seed is None:
                    generator.seed()  # an unseeded agent: a non-deterministic stream
                else:
                    generator.manual_seed(int(seed))

    @classmethod
    def ordinary(cls, seed: int | None, device: torch.device | str = "cpu") -> "MemberRandom":
        """An ordinary agent's draws: its own generator seeded with its seed, shapes as asked."""
        return cls([seed], device, stacked=False)

    @property
    def n_members(self) -> int:
        return 1 if self.generators is None else len(self.generators)

    def _draw(self, draw, shape: Sequence[int], dtype: torch.dtype, device: torch.device,
              member_axis: bool) -> torch.Tensor:
        """`shape` per member: stacked (K, *shape) for a population, else one draw of `shape`."""
        if self.generators is None:
            return draw(tuple(shape), dtype=dtype, device=device)
        if not self.stacked:
            return draw(tuple(shape), generator=self.generators[0], dtype=dtype, device=device)
        if member_axis:  # `shape` is x's whole shape, its first axis the members'
            shape = shape[1:]
        return torch.stack([draw(tuple(shape), generator=g, dtype=dtype, device=device) for g in self.generators])

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like x."""
        return self._draw(torch.randn, x.shape, x.dtype, x.device, member_axis=True)

    def rand_like(self, x: torch.Tensor) -> torch.Tensor:
        """U[0, 1) noise shaped like x."""
        return self._draw(torch.rand, x.shape, x.dtype, x.device, member_axis=True)

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """Standard normal noise of `shape` per member: (*shape) for an ordinary agent, (K, *shape) otherwise."""
        return self._draw(torch.randn, shape, dtype, self.device if device is None else device, member_axis=False)

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """U[0, 1) noise of `shape` per member: (*shape), or (K, *shape) for a population."""
        return self._draw(torch.rand, shape, dtype, self.device if device is None else device, member_axis=False)

    def randint(self, high: int, n: int, device=None) -> torch.Tensor:
        """n uniform indices in [0, high): (n,), or (K, n) with each member's row from its own generator."""
        device = self.device if device is None else device
        if self.generators is None:
            return torch.randint(high, (n,), device=device)
        if not self.stacked:
            return torch.randint(high, (n,), generator=self.generators[0], device=device)
        return torch.stack([torch.randint(high, (n,), generator=g, device=device) for g in self.generators])

    def randint_member(self, member: int, high: int, n: int, device=None) -> torch.Tensor:
        """n uniform indices in [0, high) from member k's generator alone, (n,) (the global generator for an
        ordinary agent)."""
        device = self.device if device is None else device
        generator = None if self.generators is None else self.generators[0 if not self.stacked else member]
        return torch.randint(high, (n,), generator=generator, device=device)

    def manual_seed(self, seed: int) -> None:
        """Restart every generator from `seed` (to draw the same numbers twice, e.g. in a test)."""
        if self.generators is None:
            torch.manual_seed(seed)
        for generator in self.generators or []:
            generator.manual_seed(seed)

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
    if tensor.dim() == 0:  # a learned scalar of a population of one (policy.member_shape is () for it)
        return value.reshape(()).to(tensor.dtype)
    per_row = value.repeat_interleave(tensor.shape[0] // n_members)
    return per_row.view(-1, *[1] * max(tensor.dim() - 1, 0)).to(tensor.dtype)


class MemberAdam(torch.optim.Adam):
    """Adam on a population's stacked parameters, each member with its own learning rate.

    For every element of member k's slice, with g its gradient and t the step (all members step together):
        m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2,
        p <- p - lr_k / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    Adam is elementwise, so torch's fused Adam on the stacked tensors is each member's own Adam. When the
    members' learning rates agree (seeds of one configuration) that is the whole step. When they differ
    (tuning trials), the fused step runs with rate 1 and each member's move is then scaled by its rate:
    p <- p_old + lr_k (p_1 - p_old), which equals the formula above up to float rounding (about 1e-7 of the
    move). Parameters are stacked along their first axis, member k owning rows k * s0 ... (k + 1) * s0 - 1
    (a 0-dim parameter of an ordinary agent is a (K,) vector here).

    :param params: the stacked parameters
    :param lr: one learning rate per member, (K,)
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: torch.Tensor, betas=(0.9, 0.999), eps=1e-8):
        params = list(params)
        fused = bool(params) and params[0].device.type in ("cuda", "cpu")
        super().__init__(params, lr=1.0, betas=betas, eps=eps, fused=fused, foreach=None if fused else True)
        self.set_member_lr(lr)

    def set_member_lr(self, lr: torch.Tensor) -> None:
        """Member k's learning rate becomes lr[k]."""
        self.member_lr = torch.as_tensor(lr, dtype=torch.float32).reshape(-1).cpu()
        self.n_members = int(self.member_lr.numel())
        values = self.member_lr.tolist()
        self._shared_lr = values[0] if all(v == values[0] for v in values) else None
        for group in self.param_groups:
            group["lr"] = 1.0 if self._shared_lr is None else self._shared_lr
        self._lr_rows: dict[int, list[torch.Tensor]] = {}

    @torch.no_grad()
    def step(self, closure=None):
        if self._shared_lr is not None:
            return super().step(closure)
        before = []
        for index, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            if index not in self._lr_rows:
                lr = self.member_lr.to(group["params"][0].device)
                self._lr_rows[index] = [member_rows(lr, p, self.n_members) for p in group["params"]]
            rows = [r for p, r in zip(group["params"], self._lr_rows[index]) if p.grad is not None]
            before.append((params, rows, torch._foreach_mul(params, 1.0) if params else []))
        loss = super().step(closure)
        for params, rows, old in before:
            if params:
                torch._foreach_sub_(params, old)
                torch._foreach_mul_(params, rows)
                torch._foreach_add_(params, old)
        return loss
