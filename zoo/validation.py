"""Type and range checks of every hyperparameter and run setting, before any work starts.

Types come from the constructors' own signatures: the annotations of every `__init__` along the MRO of
the agent class (and of its policy class for `policy_kwargs`, of its pretraining recipe for
`pretrain_kwargs`), the most derived one winning, as `zoo.config` walks them for the allowed keys.
Ranges come from one table, `RANGES`, keyed by parameter name: an interval in the usual notation
("[0, 1)", "(0, inf)") or a tuple of choices. A parameter that is neither in the table nor structural
(`STRUCTURAL`) fails tests/test_bad_inputs.py, so a new hyperparameter cannot ship unchecked.

The same checks serve YAML files, `zoo train --set`, the CLI flags and the Python API (agents call
`validate_hyperparameters` from `OfflineAlgorithm.__new__`, so nothing is set up with a bad value); a
failure is a `zoo.errors.ConfigError` naming the setting, the value, what is allowed and where the value
came from.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from zoo.errors import ConfigError


@dataclass(frozen=True)
class Interval:
    """A real interval; `integer` asks for a whole number (an int, not a float holding one)."""

    low: float
    high: float
    low_closed: bool
    high_closed: bool

    @classmethod
    def parse(cls, text: str) -> "Interval":
        match = re.fullmatch(r"\s*([\[(])\s*([^,]+),\s*([^\])]+)\s*([\])])\s*", text)
        if not match:
            raise ValueError(f"Not an interval: {text!r} (write e.g. '[0, 1)').")
        return cls(float(match[2]), float(match[3]), match[1] == "[", match[4] == "]")

    def __contains__(self, value: float) -> bool:
        if math.isnan(value):
            return False
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def __str__(self) -> str:
        def number(x: float) -> str:
            return "inf" if x == math.inf else "-inf" if x == -math.inf else f"{x:g}"

        if self.high == math.inf and not self.high_closed:
            if self.low == -math.inf:
                return "finite"
            return f"{'>=' if self.low_closed else '>'} {number(self.low)}"
        left, right = "[" if self.low_closed else "(", "]" if self.high_closed else ")"
        return f"in {left}{number(self.low)}, {number(self.high)}{right}"


@dataclass(frozen=True)
class Rule:
    """A check beyond type and interval (several types, a cross-field shape): `check(value)` returns
    True when the value is allowed; `allowed` says what is, for the message."""

    check: Callable[[Any], bool]
    allowed: str | Callable[[], str]  # a callable when the choices live elsewhere (the recipe registry)


def _pretrain_steps_ok(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if isinstance(value, numbers.Integral):
        return value >= 0
    return 0.0 < float(value) < 1.0


def _ent_coef_ok(value: Any) -> bool:
    if isinstance(value, str):
        if value == "auto":
            return True
        if value.startswith("auto_"):
            try:
                return float(value[5:]) > 0
            except ValueError:
                return False
        return False
    return _is_real(value) and math.isfinite(value) and value > 0


def _log_std_bounds_ok(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(_is_real(v) and math.isfinite(v) for v in value)
        and value[0] < value[1]
    )


def _device_ok(value: Any) -> bool:
    import torch

    if isinstance(value, torch.device):
        return True
    if not isinstance(value, str):
        return False
    if value == "auto":
        return True
    try:
        torch.device(value)
    except (RuntimeError, ValueError):
        return False
    return True


POSITIVE = "(0, inf)"
NON_NEGATIVE = "[0, inf)"
AT_LEAST_ONE = "[1, inf)"
SHARE = "[0, 1]"
REAL = "(-inf, inf)"
BOOL = (True, False)

# One entry per parameter name, across agents, policies, pretraining recipes and run settings. An
# interval applies to numbers (whole numbers where the signature says int); a tuple lists the choices.
RANGES: dict[str, str | tuple | Rule] = {
    # OfflineAlgorithm
    "learning_rate": Rule(
        lambda v: callable(v) or (_is_real(v) and 0 < v < math.inf),
        "a number > 0 or an SB3 schedule (progress -> rate)",
    ),
    "batch_size": AT_LEAST_ONE,
    "tau": "(0, 1]",
    "gamma": "[0, 1)",
    "normalize_observations": BOOL,
    "pretrain": Rule(
        lambda v: v is None or pretraining_class(v) is not None,
        lambda: "null or one of the pretraining recipes " + ", ".join(repr(k) for k in sorted(_recipes())),
    ),
    "pretrain_steps": Rule(
        _pretrain_steps_ok, "a whole number of gradient steps >= 0, or a share of the budget in (0, 1)"
    ),
    "online_mixing_ratio": SHARE,
    "online_utd_ratio": AT_LEAST_ONE,
    "reward_scale": REAL,
    "reward_bias": REAL,
    "precision": ("float32", "bfloat16"),
    "compile": (  # zoo.agents.compiled: eager, torch.compile's modes, the aot_eager backend
        False, True, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "aot_eager"
    ),
    "tensorboard_log": Rule(lambda v: v is None or (isinstance(v, str) and v != ""), "a folder path or null"),
    "verbose": "[0, 2]",
    "device": Rule(_device_ok, "'auto', 'cpu', 'cuda', 'cuda:N' or another torch device"),
    "seed": NON_NEGATIVE,
    # TD3, TD3+BC
    "policy_delay": AT_LEAST_ONE,
    "target_policy_noise": NON_NEGATIVE,
    "target_noise_clip": NON_NEGATIVE,
    "exploration_noise": NON_NEGATIVE,
    "alpha": NON_NEGATIVE,
    # SAC family: CQL, Cal-QL, EDAC
    "actor_learning_rate": POSITIVE,
    "alpha_learning_rate": POSITIVE,
    "ent_coef": Rule(_ent_coef_ok, "'auto', 'auto_<initial value > 0>' or a fixed number > 0"),
    "target_entropy": Rule(
        lambda v: v == "auto" or (_is_real(v) and math.isfinite(v)), "'auto' (-|A|) or a finite number"
    ),
    "backup_entropy": BOOL,
    "cql_weight": NON_NEGATIVE,
    "n_actions": AT_LEAST_ONE,
    "importance_sample": BOOL,
    "cql_temp": POSITIVE,
    "cql_clip_diff_min": "[-inf, inf]",
    "cql_clip_diff_max": "[-inf, inf]",
    "cql_lagrange": BOOL,
    "cql_target_action_gap": REAL,
    "max_target_backup": BOOL,
    "failure_reward": REAL,
    "eta": NON_NEGATIVE,
    # SPOT
    "lambd": NON_NEGATIVE,
    "beta": NON_NEGATIVE,
    "vae_steps": NON_NEGATIVE,
    "vae_learning_rate": POSITIVE,
    "num_samples": AT_LEAST_ONE,
    "iwae": BOOL,
    "normalize_q": BOOL,
    "lambd_cool": BOOL,
    "lambd_end": SHARE,
    "actor_dropout": "[0, 1)",
    "actor_init_w": POSITIVE,
    "critic_init_w": POSITIVE,
    # OPT
    "n_tau": AT_LEAST_ONE,
    "n_pretrain": NON_NEGATIVE,
    "inner_lr": NON_NEGATIVE,
    "kappa_start": SHARE,
    "kappa_end": SHARE,
    "kappa_steps": NON_NEGATIVE,
    "temperature": POSITIVE,
    "density_learning_rate": POSITIVE,
    "reset_optimizers_online": BOOL,
    "online_gamma": "(0, 1]",
    # policy_kwargs
    "net_arch": AT_LEAST_ONE,  # each hidden size
    "actor_net_arch": AT_LEAST_ONE,
    "vae_net_arch": AT_LEAST_ONE,
    "density_net_arch": AT_LEAST_ONE,
    "n_critics": AT_LEAST_ONE,
    "actor_layer_norm": BOOL,
    "critic_layer_norm": BOOL,
    "shared_q": BOOL,
    "actor_lr": POSITIVE,
    "alpha_lr": POSITIVE,
    "actor_init": ("default", "orthogonal", "edac"),
    "critic_init": ("default", "orthogonal", "edac"),
    "actor_output_bound": POSITIVE,
    "critic_output_bound": POSITIVE,
    "log_std_bounds": Rule(_log_std_bounds_ok, "[low, high] with finite low < high"),
    "learnable_log_std_scale": BOOL,
    "initial_log_alpha": REAL,
    "initial_log_alpha_prime": REAL,
    "vae_latent_dim": AT_LEAST_ONE,
    "vae_lr": POSITIVE,
    # pretrain_kwargs
    "td_weight": SHARE,
    "freeze_backbone": BOOL,
    "bc_fraction": "(0, 1)",
    "chunk_size": AT_LEAST_ONE,
    # run settings (zoo.config.RUN_SETTINGS) and CLI flags
    "n_timesteps": AT_LEAST_ONE,
    "eval_freq": NON_NEGATIVE,  # 0: no periodic evaluation
    "n_eval_episodes": AT_LEAST_ONE,
    "n_finetune_timesteps": NON_NEGATIVE,
    "finetune_eval_freq": NON_NEGATIVE,
    "fraction": "(0, 1]",
    "episodes": AT_LEAST_ONE,
    "dataset_steps": AT_LEAST_ONE,
    "n_envs": AT_LEAST_ONE,
}

# The types of the run settings (zoo.config.RUN_SETTINGS) and CLI numbers, which have no constructor.
RUN_SETTING_TYPES: dict[str, Any] = {
    "n_timesteps": int,
    "eval_freq": int,
    "n_eval_episodes": int,
    "n_finetune_timesteps": int,
    "finetune_eval_freq": int,
    "fraction": float,
    "seed": int,
    "episodes": int,
    "dataset_steps": int,
    "n_envs": int,
}

# Constructor parameters that are not hyperparameters: objects the caller builds, checked elsewhere.
STRUCTURAL = frozenset(
    {
        "self",
        "args",
        "kwargs",
        "dataset",
        "env",
        "policy",
        "_init_setup_model",
        "observation_space",
        "action_space",
        "lr_schedule",
        "policy_kwargs",
        "pretrain_kwargs",
        "n_members",  # a policy's population size: set by zoo.agents.population, never by hand
    }
)
NESTED = ("policy_kwargs", "pretrain_kwargs")


# ---------------------------------------------------------------------- signatures


def _zoo_inits(cls: type) -> Iterable[Callable]:
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and klass.__module__.startswith("zoo."):
            yield vars(klass)["__init__"]


@functools.lru_cache(maxsize=None)
def parameters(cls: type) -> Mapping[str, inspect.Parameter]:
    """Every keyword the constructors along `cls`'s MRO take, with its annotation resolved to a type and
    its default (the most derived definition wins). Cached: classes do not change their signatures, and
    every agent construction asks (read-only mapping)."""
    found: dict[str, inspect.Parameter] = {}
    for init in _zoo_inits(cls):
        for name, parameter in inspect.signature(init).parameters.items():
            if name in STRUCTURAL or name in found or parameter.kind is parameter.VAR_KEYWORD:
                continue
            hint = _resolve(parameter.annotation, init)
            if hint is Any and parameter.default not in (None, inspect.Parameter.empty):
                hint = _type_of_default(parameter.default)
            found[name] = parameter.replace(annotation=hint)
    return types.MappingProxyType(found)


def _type_of_default(default: Any) -> Any:
    """The type an unannotated parameter takes, read from its default (a tuple of ints: hidden sizes)."""
    if isinstance(default, (tuple, list)):
        items = {type(item) for item in default}
        if items == {int}:
            return tuple[int, ...] | list[int]
        return tuple[float, ...] | list[float] if items <= {int, float} else Any
    return type(default) if isinstance(default, (bool, int, float, str)) else Any


def _resolve(annotation: Any, init: Callable) -> Any:
    """An annotation as a type: postponed annotations (PEP 563) are source text of zoo's own modules,
    evaluated in their module (as typing.get_type_hints does, one parameter at a time so that an
    unrelated unresolvable annotation, SB3's GymEnv, does not stop the others)."""
    if annotation is inspect.Parameter.empty:
        return Any
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, init.__globals__)  # noqa: S307 -- zoo's own annotations, never user input
    except (NameError, TypeError, AttributeError):
        return Any


def policy_class(cls: type, policy: Any = None) -> type | None:
    """The policy class an agent builds: `policy` (a class or an alias), else its default alias."""
    if isinstance(policy, type):
        return policy
    if policy is None:
        for init in _zoo_inits(cls):
            default = inspect.signature(init).parameters.get("policy")
            if default is not None and default.default is not inspect.Parameter.empty:
                policy = default.default
                break
    return getattr(cls, "policy_aliases", {}).get(policy)


def _default(cls: type, name: str) -> Any:
    parameter = parameters(cls).get(name)
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def _recipes() -> dict[str, type]:
    from zoo.agents.pretraining import PRETRAINING

    return PRETRAINING


def pretraining_class(pretrain: Any) -> type | None:
    return _recipes().get(pretrain) if isinstance(pretrain, str) else None


# ---------------------------------------------------------------------- checks


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether `value` is of the annotated type (YAML lists stand for tuples; ints are floats)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return _is_real(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if origin is tuple and Ellipsis not in typing.get_args(hint) and len(args) != len(value):
            return False
        return all(
            _type_ok(v, args[0] if len(args) == 1 or origin is list else args[i]) for i, v in enumerate(value)
        )
    if origin is dict or hint is dict:
        return isinstance(value, Mapping)
    if origin is not None and callable(value) and "Callable" in repr(origin):
        return True
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _describe_type(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe_type(a) for a in typing.get_args(hint)]
        return " or ".join(dict.fromkeys(p for p in parts if p))
    if hint is type(None):
        return "null"
    if hint is bool:
        return "true/false"
    if hint is int:
        return "a whole number"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if origin in (tuple, list):
        return "a list of whole numbers" if int in typing.get_args(hint) else "a list of numbers"
    if origin is dict:
        return "a mapping"
    if origin is not None and "Callable" in repr(origin):
        return "a schedule (callable)"
    return getattr(hint, "__name__", str(hint))


def _rule(name: str) -> Interval | tuple | Rule | None:
    entry = RANGES.get(name)
    return Interval.parse(entry) if isinstance(entry, str) else entry


def _fail(name: str, value: Any, allowed: str, source: str | None, context: str = "") -> ConfigError:
    if context == "flag":  # a command-line flag names itself: "--steps 0: --steps must be ..."
        return ConfigError(f"{source} {value!r}: {source} must be {allowed}.")
    where = f" (from {source})" if source else ""
    return ConfigError(f"{context}{name}={value!r}{where}: {name} must be {allowed}.")


def check_value(name: str, value: Any, hint: Any, source: str | None = None, context: str = "") -> None:
    """Check one setting against its annotated type and its RANGES entry."""
    rule = _rule(name)
    if isinstance(rule, Rule):
        if not rule.check(value):
            allowed = rule.allowed() if callable(rule.allowed) else rule.allowed
            raise _fail(name, value, allowed, source, context)
        return
    if isinstance(rule, tuple):
        if not any(value is choice or (type(value) is type(choice) and value == choice) for choice in rule):
            if rule == BOOL:
                raise _fail(name, value, "true or false", source, context)
            shown = ", ".join("null" if c is None else repr(c) for c in rule)
            raise _fail(name, value, f"one of {shown}", source, context)
        return
    if not _type_ok(value, hint):
        allowed = _describe_type(hint)
        if isinstance(rule, Interval):
            allowed += f" {rule}"
        raise _fail(name, value, allowed, source, context)
    if rule is None or value is None:
        return
    numbers_in = value if isinstance(value, (list, tuple)) else [value]
    for number in numbers_in:
        if _is_real(number) and number not in rule:
            kind = "a whole number" if _wants_int(hint) else "a number"
            each = "each entry " if isinstance(value, (list, tuple)) else ""
            raise _fail(name, value, f"{each}{kind} {rule}", source, context)
    # An empty net_arch is a network without hidden layers (a linear map); other lists need entries.
    if isinstance(value, (list, tuple)) and not value and not name.endswith("net_arch"):
        raise _fail(name, value, "a non-empty list", source, context)


def _wants_int(hint: Any) -> bool:
    if hint is int:
        return True
    return any(_wants_int(a) for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis)


def validate_constructor_call(cls: type, args: tuple, kwargs: Mapping[str, Any]) -> None:
    """Check a constructor call `cls(*args, **kwargs)` before it runs (OfflineAlgorithm.__new__): the
    arguments are bound to the most derived signature, the ones it forwards (`**kwargs`) included."""
    init = vars(next(k for k in cls.__mro__ if "__init__" in vars(k)))["__init__"]
    try:
        bound = inspect.signature(init).bind(None, *args, **kwargs)
    except TypeError:
        return  # a wrong call: __init__ itself raises Python's own TypeError
    named: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        parameter = bound.signature.parameters[name]
        if parameter.kind is parameter.VAR_KEYWORD:
            named.update(value)
        elif parameter.kind is not parameter.VAR_POSITIONAL:
            named[name] = value
    known = parameters(cls)
    unknown = sorted(name for name in named if name not in known and name not in STRUCTURAL)
    if unknown:  # else a TypeError from deep in the MRO, naming OfflineAlgorithm.__init__
        raise ConfigError(
            f"{cls.__name__} takes no setting {', '.join(map(repr, unknown))}: its settings are "
            f"{', '.join(sorted(known))} (a setting of another agent, or of another base, does not "
            "carry over)."
        )
    validate_hyperparameters(cls, named, f"{cls.__name__}(...)")


def validate_hyperparameters(cls: type, kwargs: Mapping[str, Any], source: str | None = None) -> None:
    """Check the constructor keywords `kwargs` of agent class `cls` (policy_kwargs and pretrain_kwargs
    included, key by key) against their types and ranges; raise ConfigError on the first bad one.

    Keys the constructors do not take are left to the caller (zoo.config names the known ones), except
    inside policy_kwargs/pretrain_kwargs, which only this module inspects. `source` says where the values
    came from ("zoo/hyperparams/td3bc.yml section 'hopper'", "--set", "Python").
    """
    known = parameters(cls)
    for name, value in kwargs.items():
        if name in known:
            check_value(name, value, known[name].annotation, source)
    pretrain = kwargs.get("pretrain", _default(cls, "pretrain"))
    nested = {
        "policy_kwargs": policy_class(cls, kwargs.get("policy")),
        "pretrain_kwargs": pretraining_class(pretrain),
    }
    for field, owner in nested.items():
        value = kwargs.get(field)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise _fail(field, value, "a mapping of option names to values (e.g. {n_critics: 10})", source)
        if owner is None:
            if field == "pretrain_kwargs" and value:
                raise ConfigError(
                    f"pretrain_kwargs {dict(value)}{f' (from {source})' if source else ''} given without a "
                    "pretraining recipe: set pretrain too (imitate, transition or soft-imitate)."
                )
            continue
        options = parameters(owner)
        for key, item in value.items():
            if key not in options:
                raise ConfigError(
                    f"{field} has no option {key!r} for {owner.__name__}"
                    f"{f' (from {source})' if source else ''}. Known: {', '.join(sorted(options))}."
                )
            check_value(key, item, options[key].annotation, source, context=f"{field}: ")


def validate_run_settings(run: Mapping[str, Any], source: str | None = None) -> None:
    """Check run settings (budgets, evaluation frequencies, CLI numbers) by name; unknown names pass."""
    for name, value in run.items():
        if name in RUN_SETTING_TYPES and value is not None:
            check_value(name, value, RUN_SETTING_TYPES[name], source)


def validate_flag(flag: str, setting: str, value: Any) -> None:
    """Check a command-line number (`--steps`) as the run setting it sets (`n_timesteps`)."""
    check_value(setting, value, RUN_SETTING_TYPES[setting], source=flag, context="flag")


def hyperparameter_names(cls: type) -> dict[str, dict[str, inspect.Parameter]]:
    """Every checked name of an agent class: its own, its policy's and each pretraining recipe's
    (for tests and documentation)."""
    from zoo.agents.pretraining import PRETRAINING

    names = {cls.__name__: parameters(cls)}
    policy = policy_class(cls)
    if policy is not None:
        names[policy.__name__] = parameters(policy)
    for recipe in PRETRAINING.values():
        names[recipe.__name__] = parameters(recipe)
    return names
