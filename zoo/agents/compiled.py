"""The `compile` setting: an agent's loss computations run through torch.compile, with no change in behaviour.

An update is: draw a batch, compute the losses (pure functions of the weights, the batch and the update's
random draws), backward, optimizer steps, Polyak averaging, logging. With `compile` on, the loss functions of
the agent's family (`compiled_losses`: TD3's `critic_loss` and `actor_objective`, the SAC family's
`actor_loss` and `critic_loss`) run through `torch.compile(fullgraph=True)`; AOTAutograd compiles their
backward too. Batch sampling, optimizer steps, target updates, phase switches and logging stay eager. Each
wrapper is an instance attribute shadowing the method of the same name, so every caller (the agent's update,
a pretraining recipe) gets the compiled function; nothing is saved of it (`_excluded_save_params`): a loaded
or copied agent with `compile` on compiles again on its first update.

Same numbers as eager. A compiled region must not draw random numbers itself: inductor generates its own
(Philox) numbers, and torch.Generator objects (a population's member generators) are not traceable. Every
draw of a loss goes through the agent's random source (`agent.random`, `module.random`: zoo.nn.members.
MemberRandom), so the wrapper draws the noise *before* the compiled call, eagerly, in the order the eager
code draws it, and hands it in on a tape:
1. The first call for each input signature (shapes, dtypes, autocast, training flags of the drawing
   modules) runs eagerly while a recording source logs every draw (kind, shape, strides, dtype, device).
   It then checks that these draws account for every generator's advance: the generators are set back,
   the logged draws replayed, and the states compared with the eager call's. A loss that draws elsewhere
   (torch.randn or F.dropout on torch's own generator) stays eager, with a warning: pre-drawing its noise
   would change the order of the draws, and so the numbers.
2. Later calls replay the log on the real source (the same numbers eager would draw, since the loss
   consumes nothing else), swap a tape source in for the agent's and its modules' `random`, and run the
   compiled function, whose draws read the tape in order. A trace that asks for a draw the tape does not
   hold stops before anything runs; the generators are restored and that call re-records eagerly.
So the compiled agent's weights equal the eager agent's up to the compiler's float rounding: on CPU, inductor
(which fuses and reorders elementwise and reduction code) left TD3+BC's weights 1.5e-8 from eager after 10
updates; the "aot_eager" backend runs the same aten kernels as eager and is bitwise equal
(tests/test_compile.py).

A loss whose graph needs a break (EDAC's gradient-diversity term calls torch.autograd.grad) cannot be one
graph: after a failed fullgraph trace the wrapper runs that loss eagerly, with a warning. (Partial graphs
around the break would not do either: the loss's backward would be a double backward through AOTAutograd's
compiled backward, which torch does not support.)

Settings (`compile=`): False (eager, the default), True or "default" (inductor), "reduce-overhead" (inductor
+ CUDA graphs: on a GPU it removes the kernel-launch overhead that dominates small-MLP updates),
"max-autotune", "max-autotune-no-cudagraphs" (torch.compile's modes), and "aot_eager" (torch.compile's
AOTAutograd backend without code generation: no C++ compiler needed; the exactness check on CPU).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from zoo.agents.replay import Batch
from zoo.errors import warn
from zoo.nn.members import MemberRandom

if TYPE_CHECKING:
    from zoo.agents.base import OfflineAlgorithm

# The `compile` setting's values: the eager default, torch.compile's modes (inductor) and one backend.
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
BACKENDS = ("aot_eager",)
CHOICES = (False, True, *MODES, *BACKENDS)

# The loss functions each family compiles (a class may name its own in `compiled_losses`).
FAMILY_LOSSES = {"td3": ("critic_loss", "actor_objective"), "sac": ("actor_loss", "critic_loss")}


def compile_options(setting: bool | str) -> dict[str, Any] | None:
    """torch.compile's keyword arguments for a `compile` setting (None: eager)."""
    if setting is False or setting is None:
        return None
    if setting is True or setting == "default":
        return {"backend": "inductor", "mode": "default"}
    if setting in MODES:
        return {"backend": "inductor", "mode": setting}
    if setting in BACKENDS:
        return {"backend": setting}
    raise ValueError(f"compile must be one of {', '.join(map(repr, CHOICES))}; got {setting!r}.")


def inductor_missing(device_type: str = "cpu") -> str | None:
    """Why torch.compile's default backend (inductor) cannot run on this device type, or None: on the CPU it
    compiles C++, so it needs a C++ compiler (torch's own message names what it looked for)."""
    if device_type != "cpu":
        return None
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as error:  # torch raises its own error types for a missing compiler
        return f"inductor needs a C++ compiler on CPU: {str(error).strip().splitlines()[0]}"
    return None


def compiled_losses(agent: "OfflineAlgorithm") -> tuple[str, ...]:
    """Names of the loss methods that `compile` runs compiled for this agent's class."""
    names = getattr(type(agent), "compiled_losses", None)
    return tuple(names) if names is not None else FAMILY_LOSSES.get(type(agent).family, ())


def install(agent: "OfflineAlgorithm") -> None:
    """Shadow the agent's loss methods by compiled wrappers (nothing when `compile` is off). Called at the
    end of the agent's set-up; a second set-up (a resume) installs fresh wrappers."""
    for name in agent.__dict__.pop("_compiled_names", ()):
        agent.__dict__.pop(name, None)
    options = compile_options(getattr(agent, "compile", False))
    if options is None:
        return
    names = compiled_losses(agent)
    for name in names:
        setattr(agent, name, CompiledLoss(agent, name, options))
    agent._compiled_names = names


# ---------------------------------------------------------------------------------------------- the tape


class Draw(NamedTuple):
    """One draw of a MemberRandom: its method and arguments, with a "like" tensor kept as its layout."""

    method: str
    shape: tuple[int, ...]
    stride: tuple[int, ...] | None  # of torch.empty_like(x) for randn_like/rand_like (randn_like's layout)
    dtype: torch.dtype | None
    device: torch.device | None
    high: int | None = None  # randint's bound
    member: int | None = None  # randint_member's member

    def replay(self, random: MemberRandom) -> torch.Tensor:
        """The draw again, on `random`: the same numbers when its generators stand where they stood."""
        if self.method in ("randn_like", "rand_like"):
            template = torch.empty_strided(self.shape, self.stride, dtype=self.dtype, device=self.device)
            return getattr(random, self.method)(template)
        if self.method == "randint":
            return random.randint(self.high, self.shape[0], device=self.device)
        if self.method == "randint_member":
            return random.randint_member(self.member, self.high, self.shape[0], device=self.device)
        return getattr(random, self.method)(*self.shape, dtype=self.dtype, device=self.device)


class RecordingRandom(MemberRandom):
    """Delegates every draw to the agent's random source and logs it (the eager recording call)."""

    def __init__(self, source: MemberRandom):
        self.__dict__.update(source.__dict__)  # device, generators, layout flags: as the source's
        self.source, self.draws = source, []

    def _like(self, method: str, x: torch.Tensor) -> torch.Tensor:
        layout = torch.empty_like(x).stride()
        self.draws.append(Draw(method, tuple(x.shape), tuple(layout), x.dtype, x.device))
        return getattr(self.source, method)(x)

    def randn_like(self, x):
        return self._like("randn_like", x)

    def rand_like(self, x):
        return self._like("rand_like", x)

    def randn(self, *shape, dtype=torch.float32, device=None):
        self.draws.append(Draw("randn", tuple(shape), None, dtype, device))
        return self.source.randn(*shape, dtype=dtype, device=device)

    def rand(self, *shape, dtype=torch.float32, device=None):
        self.draws.append(Draw("rand", tuple(shape), None, dtype, device))
        return self.source.rand(*shape, dtype=dtype, device=device)

    def randint(self, high, n, device=None):
        self.draws.append(Draw("randint", (int(n),), None, None, device, int(high)))
        return self.source.randint(high, n, device=device)

    def randint_member(self, member, high, n, device=None):
        self.draws.append(Draw("randint_member", (int(n),), None, None, device, int(high), int(member)))
        return self.source.randint_member(member, high, n, device=device)


class TapeMismatch(RuntimeError):
    """A compiled trace asked for a draw the tape does not hold (the loss draws differently than recorded)."""


class TapeRandom(MemberRandom):
    """Hands out pre-drawn tensors in order (inside the compiled region); each request is checked against
    the recorded draw at trace time (shapes are static there), so a differing trace stops before it runs."""

    def __init__(self, source: MemberRandom):
        self.__dict__.update(source.__dict__)
        self.draws: list[Draw] = []
        self.tensors: list[torch.Tensor] = []
        self.position = 0

    def _next(self, method: str, shape) -> torch.Tensor:
        i = self.position
        if i >= len(self.draws) or self.draws[i].method != method or self.draws[i].shape != tuple(shape):
            raise TapeMismatch(f"draw {i}: {method}{tuple(shape)} is not on the tape")
        self.position = i + 1
        return self.tensors[i]

    def randn_like(self, x):
        return self._next("randn_like", x.shape)

    def rand_like(self, x):
        return self._next("rand_like", x.shape)

    def randn(self, *shape, dtype=torch.float32, device=None):
        return self._next("randn", shape)

    def rand(self, *shape, dtype=torch.float32, device=None):
        return self._next("rand", shape)

    def randint(self, high, n, device=None):
        return self._next("randint", (n,))

    def randint_member(self, member, high, n, device=None):
        return self._next("randint_member", (n,))


# ---------------------------------------------------------------------------------------------- the wrapper

_EAGER = "eager"  # a plan: this signature's loss stays eager


class CompiledLoss:
    """One loss method of one agent, compiled (see the module docstring for the tape of random draws)."""

    def __init__(self, agent: "OfflineAlgorithm", name: str, options: dict[str, Any]):
        self.agent, self.name, self.options = agent, name, options
        self.method = getattr(type(agent), name).__get__(agent)  # the class's (eager) function, bound
        self.compiled = None
        self.eager_reason: str | None = None  # why this loss stays eager (it cannot be one graph)
        self.compiled_calls = 0  # calls that ran the compiled function (the tests read it)
        self.plans: dict[tuple, list[Draw] | str] = {}
        self.last_update = -1

    def __deepcopy__(self, memo):
        """A copy of the agent gets a fresh wrapper of its own (compiled again on its first call)."""
        return CompiledLoss(copy.deepcopy(self.agent, memo), self.name, self.options)

    def __reduce__(self):
        return CompiledLoss, (self.agent, self.name, self.options)

    # -- what decides the draws

    def _signature(self, args: tuple, kwargs: dict) -> tuple:
        def meta(value):
            if isinstance(value, torch.Tensor):
                return (tuple(value.shape), value.dtype, value.device.type, value.requires_grad)
            if isinstance(value, Batch):
                return tuple((name, meta(column)) for name, column in value.items())
            if isinstance(value, (int, float, str, bool, type(None))):
                return value
            return type(value).__name__

        device = self.agent.device.type
        return (
            tuple(meta(a) for a in args),
            tuple((k, meta(v)) for k, v in sorted(kwargs.items())),
            torch.is_grad_enabled(),
            torch.is_autocast_enabled(device),
            torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None,
            tuple(module.training for module in self._drawing_modules()),
        )

    def _drawing_modules(self) -> list[torch.nn.Module]:
        modules = self.agent.policy.modules()
        return [m for m in modules if isinstance(getattr(m, "random", None), MemberRandom)]

    def _generator_states(self) -> list[torch.Tensor]:
        """Every generator the loss could advance: torch's (CPU, and the agent's CUDA device) and the
        population's member generators."""
        states = [torch.get_rng_state()]
        if self.agent.device.type == "cuda":
            states.append(torch.cuda.get_rng_state(self.agent.device))
        return states + self.agent.random.get_state()

    def _set_generator_states(self, states: list[torch.Tensor]) -> None:
        torch.set_rng_state(states[0])
        rest = states[1:]
        if self.agent.device.type == "cuda":
            torch.cuda.set_rng_state(rest[0], self.agent.device)
            rest = rest[1:]
        self.agent.random.set_state(rest)

    def _with_random(self, random: MemberRandom, call):
        """Run `call` with `random` as the agent's and its drawing modules' source."""
        agent, real = self.agent, self.agent.random
        modules = [m for m in self._drawing_modules() if m.random is real]
        agent.random = random
        for module in modules:
            module.random = random
        try:
            return call()
        finally:
            agent.random = real
            for module in modules:
                module.random = real

    # -- the call

    def __call__(self, *args: Any, **kwargs: Any):
        key = self._signature(args, kwargs)
        plan = self.plans.get(key)
        if plan is None:
            return self._record(key, args, kwargs)
        if plan == _EAGER or self.eager_reason is not None:
            return self.method(*args, **kwargs)
        real = self.agent.random
        states = self._generator_states()
        tape = self._tape(real)
        tape.draws, tape.tensors, tape.position = plan, [draw.replay(real) for draw in plan], 0
        if self.options.get("mode") == "reduce-overhead" and self.agent.n_updates != self.last_update:
            torch.compiler.cudagraph_mark_step_begin()  # a new update: CUDA graph outputs of the last may go
        self.last_update = self.agent.n_updates
        try:
            result = self._with_random(tape, lambda: self._compiled()(*args, **kwargs))
        except Exception as error:
            # Both failures happen while tracing, before the graph runs: nothing was computed or changed
            # but the pre-drawn tape, so the generators go back and the call runs eagerly.
            if _caused_by(error, TapeMismatch):
                self._set_generator_states(states)
                return self._record(key, args, kwargs)  # the loss draws differently now: record it again
            if isinstance(error, torch._dynamo.exc.Unsupported):
                self._set_generator_states(states)
                self.eager_reason = str(error).strip().splitlines()[0]
                warn(
                    f"compile: {type(self.agent).__name__}.{self.name} cannot be traced as one graph "
                    f"({self.eager_reason}): it stays eager."
                )
                return self.method(*args, **kwargs)
            raise
        finally:
            tape.tensors, tape.position = [], 0
        self.compiled_calls += 1
        return result

    def _tape(self, real: MemberRandom) -> TapeRandom:
        tape = getattr(self, "tape", None)
        if tape is None or tape.generators is not real.generators:
            self.tape = tape = TapeRandom(real)
        return tape

    def _compiled(self):
        if self.compiled is None:
            import torch._dynamo  # noqa: F401  (its exceptions are read in __call__)

            self.compiled = torch.compile(self.method, fullgraph=True, dynamic=False, **self.options)
        return self.compiled

    def _record(self, key: tuple, args: tuple, kwargs: dict):
        """The eager call, its draws logged: the plan for this signature, or eager when the loss draws from
        a generator outside the agent's random source."""
        before = self._generator_states()
        recording = RecordingRandom(self.agent.random)
        result = self._with_random(recording, lambda: self.method(*args, **kwargs))
        after = self._generator_states()
        self._set_generator_states(before)
        for draw in recording.draws:
            draw.replay(self.agent.random)
        replayed = self._generator_states()
        self._set_generator_states(after)
        if all(torch.equal(a, b) for a, b in zip(after, replayed)):
            self.plans[key] = recording.draws
        else:
            self.plans[key] = _EAGER
            warn(
                f"compile: {type(self.agent).__name__}.{self.name} draws random numbers outside the agent's "
                "random source (torch's generator inside the loss): it stays eager, so that its numbers do "
                "not change."
            )
        return result


def _caused_by(error: BaseException, kind: type) -> bool:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind) or kind.__name__ in str(error):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False
