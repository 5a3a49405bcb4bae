"""zoo/hyperparams/<algo>.yml -> validated constructor kwargs and run settings. Plain YAML, nothing is
evaluated.

A file maps section keys to settings. The sections that apply to a dataset merge from general to specific:
`default`, the dataset's domain (`mujoco`, `antmaze`, `adroit`, `kitchen`, `exorl`), its env (`hopper`,
`pen`; for ExoRL the dm_control domain, `walker`), for ExoRL its task family (`walker-run`), then the
dataset id itself (`zoo/hopper/medium-v0`); `zoo train --set` overrides come last. `policy_kwargs` and
`pretrain_kwargs` merge key by key. Run settings (RUN_SETTINGS: budgets and evaluation frequencies) are
split from the agent's keyword arguments.

Three rules keep a file from being silently wrong:

* Every section key must name something the zoo knows (zoo.data.tasks.known_section_keys: `default`, a
  domain, an env, an ExoRL task family, a known dataset id, or a dataset in the local Minari root); a typo
  such as `hoper` or `zoo/hopper/medium-v1` is an error naming the nearest valid key.
* Every setting of every section must be a constructor argument of the agent (or a run setting), whether
  or not the section applies to the run at hand.
* Coverage: a file with a domain section (`mujoco:`, `antmaze:`, ...) covers only the datasets one of whose
  sections (domain, env, task family or id) it has; any other dataset is refused before anything runs. A
  method's `default` is tuned for the domains its paper ran: Cal-QL's locomotion defaults on AntMaze would
  mean no reward transform, no failure rule and no Lagrange multiplier. A file without any domain section
  (a user's `default`/env-only file) applies its `default` everywhere: the user wrote it for the run. Every
  shipped file names its domains (tests/test_hyperparams.py).

Each value keeps its provenance (file and section, or --set), so a value outside its range is reported
with where it came from (zoo.validation.validate_hyperparameters).
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo.data.tasks import DOMAINS, EXORL_TASKS, domain_of, known_section_keys, section_keys
from zoo.errors import ConfigError
from zoo.validation import validate_hyperparameters, validate_run_settings

HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"  # shipped inside the package
RUN_SETTINGS = {
    "n_timesteps": 1_000_000,
    "eval_freq": 5000,
    "n_eval_episodes": 10,
    "n_finetune_timesteps": 0,  # online env steps after offline learning (`zoo train --finetune-steps`)
    "finetune_eval_freq": 5000,  # in env steps
}
NESTED = ("policy_kwargs", "pretrain_kwargs")  # merged key by key across sections, not replaced whole
OVERRIDE_SOURCE = "--set"


@dataclass(frozen=True)
class Hyperparameters:
    """The resolved settings of one run and where each came from.

    kwargs: the agent's constructor arguments; run: RUN_SETTINGS; sources: setting -> provenance
    ("zoo/hyperparams/calql.yml section 'antmaze'" or "--set"), nested keys as `policy_kwargs.net_arch`;
    sections: the sections applied, general to specific."""

    kwargs: dict[str, Any]
    run: dict[str, Any]
    sources: dict[str, str]
    sections: tuple[str, ...]
    file: Path
    algo: str = ""
    agent_cls: type | None = field(default=None, repr=False)


def hyperparams_file(algo: str) -> Path:
    """The shipped YAML of an agent key."""
    return HYPERPARAMS_DIR / f"{algo}.yml"


def load_hyperparams(
    algo: str, dataset_id: str, path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (agent kwargs, run settings) for `algo` on `dataset_id`; `overrides` (e.g. `zoo train --set`)
    sit on top of the file's sections and are checked the same way."""
    resolved = resolve_hyperparams(algo, dataset_id, path, overrides)
    return resolved.kwargs, resolved.run


def resolve_hyperparams(
    algo: str, dataset_id: str, path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> Hyperparameters:
    """As load_hyperparams, with the provenance of every value and the sections that applied."""
    from zoo.registry import agent_spec

    spec = agent_spec(algo)
    file = Path(path) if path else hyperparams_file(algo)
    label = _label(file, path is None)
    table = read_table(file, label)
    allowed = _allowed_settings(spec)
    check_table(table, label, algo, allowed, dataset_id)

    applicable = [key for key in section_keys(dataset_id) if key in table]
    if _names_domains(table) and not applicable:
        raise ConfigError(_uncovered_message(label, table, dataset_id))

    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in ("default", *applicable):
        if table.get(key):
            _merge(merged, sources, table[key], f"{label} section '{key}'")
    if overrides:
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise ConfigError(_unknown_settings_message(OVERRIDE_SOURCE, algo, unknown, allowed))
        _merge(merged, sources, overrides, OVERRIDE_SOURCE)

    run = {name: merged.pop(name, default) for name, default in RUN_SETTINGS.items()}
    for name, value in run.items():
        validate_run_settings({name: value}, sources.get(name))

    cls = spec.cls
    base = merged.get("base")
    if base is not None:
        if base not in spec.bases:
            choices = ", ".join(sorted(spec.bases)) or "none besides its own"
            raise ConfigError(f"base={base!r} (from {sources['base']}): '{algo}' can be built on: {choices}.")
        cls = spec.bases[base]
    accepted = _init_parameters(cls) | {"base"}
    unusable = sorted(set(merged) - accepted)
    if unusable:
        origin = ", ".join(sorted({sources[name] for name in unusable}))
        raise ConfigError(
            f"Setting(s) {unusable} (from {origin}) do not apply to '{algo}' built on {cls.__name__}; "
            f"remove them or pick another base."
        )
    _validate(cls, merged, sources)
    return Hyperparameters(merged, run, sources, ("default", *applicable), file, algo, cls)


# ------------------------------------------------------------------------------------------- reading

def read_table(file: Path, label: str | None = None) -> dict[str, dict[str, Any]]:
    """The YAML file as {section key: settings}; a clear ConfigError for anything else."""
    label = label or str(file)
    if not file.is_file():
        raise ConfigError(f"No hyperparameter file {label}: create it or pass --hyperparams PATH.")
    try:
        table = _parse(file) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{label} is not valid YAML{where}: {problem}.") from None
    if not isinstance(table, dict):
        raise ConfigError(f"{label} must map dataset ids, envs, domains or 'default' to settings.")
    for key, section in table.items():
        if not isinstance(key, str):
            raise ConfigError(f"{label}: section key {key!r} must be a string (a dataset id, env or domain).")
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"Section '{key}' of {label} must be a mapping of settings, got {section!r}.")
    return {key: section or {} for key, section in table.items()}


def check_table(
    table: dict[str, dict[str, Any]], label: str, algo: str, allowed: set[str], dataset_id: str | None = None
) -> None:
    """Every section key names something known, every setting is one the agent takes."""
    known = known_section_keys() | set(section_keys(dataset_id) if dataset_id else ())
    unknown_keys = [key for key in table if key not in known]
    if unknown_keys:
        known = known | _local_dataset_ids()  # a user's own datasets count too (read only when needed)
    for key in unknown_keys:
        if key not in known:
            nearest = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.0)[0]
            raise ConfigError(
                f"{label}: section '{key}' matches no dataset id, env or domain the zoo knows; did you mean "
                f"'{nearest}'? (Sections: default, a domain ({', '.join(DOMAINS)}), an env (hopper, pen, "
                "walker), an ExoRL task family (walker-run) or a dataset id (zoo/hopper/medium-v0, "
                "D4RL/pen/human-v2).)"
            )
    for key, section in table.items():
        unknown = sorted(set(section) - allowed)
        if unknown:
            raise ConfigError(_unknown_settings_message(f"{label} section '{key}'", algo, unknown, allowed))
        for nested in NESTED:
            if nested in section and section[nested] is not None and not isinstance(section[nested], dict):
                raise ConfigError(
                    f"{nested} in {label} section '{key}' must be a mapping, got {section[nested]!r}."
                )


def coverage(table: dict[str, Any]) -> str:
    """What a file covers, for messages: its domain sections, and envs or ids of other domains
    (`mujoco, exorl (walker, quadruped)`)."""
    domains = [key for key in table if key in DOMAINS]
    partial: dict[str, list[str]] = {}
    for key in table:
        domain = None if key in DOMAINS or key == "default" else _domain_of_key(key)
        if domain and domain not in domains:
            partial.setdefault(domain, []).append(key)
    parts = domains + [f"{domain} ({', '.join(keys)})" for domain, keys in partial.items()]
    return ", ".join(parts) or "no domain"


# ------------------------------------------------------------------------------------------- helpers

def _label(file: Path, shipped: bool) -> str:
    return f"zoo/hyperparams/{file.name}" if shipped else str(file)


def _names_domains(table: dict[str, Any]) -> bool:
    return any(key in DOMAINS for key in table)


def _domain_of_key(key: str) -> str | None:
    if "/" in key:
        return domain_of(key)
    if key.split("-")[0] in EXORL_TASKS:
        return "exorl"
    return domain_of(f"x/{key}/x-v0")


def _uncovered_message(label: str, table: dict[str, Any], dataset_id: str) -> str:
    domain = domain_of(dataset_id)
    keys = " or ".join(f"'{key}'" for key in section_keys(dataset_id)[:-1]) or "its env"
    return (
        f"{label} has no settings for '{dataset_id}' (domain: {domain or 'unknown'}); it covers "
        f"{coverage(table)}, and its defaults are tuned for those. Write a "
        f"YAML with a section for {keys} (or for the id) and pass --hyperparams FILE."
    )


def _allowed_settings(spec) -> set[str]:
    """Constructor arguments of the agent class and of every base it can be built on, run settings, base."""
    names: set[str] = set()
    for cls in (spec.cls, *spec.bases.values()):
        names |= _init_parameters(cls)
    return names | set(RUN_SETTINGS) | {"base"}


def _init_parameters(cls: type) -> set[str]:
    return {
        name
        for klass in cls.__mro__
        if "__init__" in vars(klass) and klass.__module__.startswith("zoo.")
        for name in inspect.signature(klass.__init__).parameters
    } - {"self", "kwargs", "dataset", "policy", "env", "_init_setup_model"}


def _unknown_settings_message(where: str, algo: str, unknown: list[str], allowed: set[str]) -> str:
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(allowed), n=1)
        if close:
            hints.append(f"'{name}' -> '{close[0]}'?")
    hint = f" ({'; '.join(hints)})" if hints else ""
    return f"{where}: unknown setting(s) {unknown} for '{algo}'{hint}. Known: {sorted(allowed)}."


def _merge(merged: dict[str, Any], sources: dict[str, str], section: dict[str, Any], source: str) -> None:
    for key, value in section.items():
        if key in NESTED and isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
            for stale in [name for name in sources if name.startswith(f"{key}.")]:
                del sources[stale]
        sources[key] = source
        if key in NESTED and isinstance(value, dict):
            for inner in value:
                sources[f"{key}.{inner}"] = source


def _validate(cls: type, merged: dict[str, Any], sources: dict[str, str]) -> None:
    """RELIABILITY's type and range checks (zoo.validation), one call per provenance so that an error names
    the file and section, or the flag, its value came from. Plain settings first; then the nested options,
    each group with the setting it depends on (`pretrain` for pretrain_kwargs, `policy` for policy_kwargs)
    beside it, already checked on its own."""
    groups: dict[str, dict[str, Any]] = {}
    flat = {name: value for name, value in merged.items() if name not in NESTED and name != "base"}
    for name, value in flat.items():
        groups.setdefault(sources[name], {})[name] = value
    for source, values in groups.items():
        validate_hyperparameters(cls, values, source)
    context = {key: flat[key] for key in ("pretrain", "policy") if key in flat}
    nested_groups: dict[str, dict[str, Any]] = {}
    for name in NESTED:
        value = merged.get(name)
        if isinstance(value, dict):
            for inner, item in value.items():
                source = sources.get(f"{name}.{inner}", sources[name])
                nested_groups.setdefault(source, {}).setdefault(name, {})[inner] = item
        elif value is not None:
            nested_groups.setdefault(sources[name], {})[name] = value
    for source, values in nested_groups.items():
        validate_hyperparameters(cls, {**values, **context}, source)


def _parse(file: Path) -> Any:
    """The file's YAML through the safe loader (plain data, nothing executed; libyaml's when installed)."""
    with file.open() as handle:
        return yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _local_dataset_ids() -> set[str]:
    from zoo.data.minari_io import local_dataset_ids

    try:
        return set(local_dataset_ids())
    except OSError:
        return set()


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """`["pretrain_steps=2000", "policy_kwargs={n_critics: 10}"]` -> a dict; values are read as YAML."""
    parsed = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes KEY=VALUE (value in YAML, e.g. alpha=2.5), got {item!r}.")
        try:
            parsed[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(
                f"--set {item!r}: the value is not valid YAML (quote strings, e.g. key='a: b')."
            ) from None
    return parsed
